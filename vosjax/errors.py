"""The error type for bad user input.

Library code raises `InputError` (or a subclass) for anything the user can fix
(a missing folder, a malformed file, a bad flag value) with a one-line message
naming the file, sequence or flag; run.py and the CLIs print that line and
exit non-zero instead of a traceback. Anything else is a bug and keeps its
traceback.
"""


class InputError(ValueError):
  """Bad user input: a missing or malformed file, folder, sequence or flag."""
