"""The error types that end a run with one line instead of a traceback.

Library code raises `InputError` (or a subclass) for anything the user can fix
(a missing folder, a malformed file, a bad flag value) with a one-line message
naming the file, sequence or flag, and `RunError` (or a subclass) when a run
cannot go on for a reason the user can act on (a NaN loss, a checkpoint that
cannot be written, a workdir held by another run). run.py and the CLIs print
that line and exit non-zero instead of a traceback. Anything else is a bug and
keeps its traceback.
"""


class InputError(ValueError):
  """Bad user input: a missing or malformed file, folder, sequence or flag."""


class RunError(RuntimeError):
  """A run stopped for a reason the user can act on; the message says which.

  E.g. the loss became NaN (`train.NonFiniteLossError`), a checkpoint could
  not be written or read (`checkpoint.CheckpointError`).
  """
