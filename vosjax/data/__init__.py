"""Data the library itself needs at run time: the DAVIS tfds builders (with
their shared base) and the synthetic DAVIS-format generator of the demos.

`datasets/` re-exports them for `tfds build` and other users; nothing in
`vosjax` imports `datasets/`.
"""
