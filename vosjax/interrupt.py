"""Ctrl-C in the command-line tools: writes finish whole, the exit is clean.

`deferred()` holds a Ctrl-C back for the few statements that must not be cut
(a checkpoint handed to Orbax, the renames that swap outputs in) and raises
it once they are done. `exit_interrupted(line)` ends the process with the
one line and exit 130 (128 + SIGINT, what a shell reports for a process
Ctrl-C ended).
"""

import contextlib
import os
import signal
import sys
import threading

EXIT_CODE = 130


class InterruptedAfterBlock(KeyboardInterrupt):
  """Ctrl-C that arrived inside `deferred()`, raised when the block ended."""


@contextlib.contextmanager
def deferred():
  """Within: Ctrl-C waits until the block ends, then is raised as
  `InterruptedAfterBlock` (or handed to a custom SIGINT handler).

  Only the main thread receives signals; elsewhere this does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  pending = []
  previous = signal.signal(signal.SIGINT, lambda *_: pending.append(True))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if pending and previous is signal.default_int_handler:
    raise InterruptedAfterBlock()
  if pending and callable(previous):
    previous(signal.SIGINT, None)


def exit_interrupted(line):
  """Prints `line` to stderr and ends the process now with exit 130.

  `os._exit`, not `sys.exit`: a Ctrl-C during the first XLA compilation
  leaves compiler threads running, and interpreter teardown under them
  segfaults (measured: segment_video exited 139 after its one line in 2 of
  3 Ctrl-Cs 8-11 s after start). Call it only where everything that must
  be on disk is there: the `finally` blocks that complete checkpoints and
  remove build folders have run by the time the interrupt reaches a CLI's
  top level.
  """
  print(line, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(EXIT_CODE)  # pylint: disable=protected-access
