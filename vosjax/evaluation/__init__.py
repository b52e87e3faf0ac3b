"""Official DAVIS J and F evaluation: exact, and fast.

In memory: `evaluate_sequence(gt, pred)` on `[T, H, W]` integer label arrays.
Folders: `evaluate_davis(davis_path, results_path, ...)`, also the CLI
`python -m vosjax.evaluate`.
"""

from vosjax.evaluation.davis import evaluate_davis
from vosjax.evaluation.davis import print_results
from vosjax.evaluation.davis import write_results
from vosjax.evaluation.metrics import bound_pix
from vosjax.evaluation.metrics import db_statistics
from vosjax.evaluation.metrics import disk
from vosjax.evaluation.metrics import evaluate_sequence
from vosjax.evaluation.metrics import frame_jf
from vosjax.evaluation.metrics import seg2bmap

__all__ = [
    "bound_pix", "db_statistics", "disk", "evaluate_davis",
    "evaluate_sequence", "frame_jf", "print_results", "seg2bmap",
    "write_results",
]
