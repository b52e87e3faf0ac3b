"""Ctrl-C in the command-line tools: writes finish whole, the exit is clean.

`deferred()` holds a Ctrl-C back for the few statements that must not be cut
(a checkpoint handed to Orbax, the renames that swap outputs in) and raises
it once they are done. `exit_interrupted(line)` ends the process with the
one line and exit 130 (128 + SIGINT, what a shell reports for a process
Ctrl-C ended). `install()`, called first by each command-line tool, makes
sure no Ctrl-C is dropped on the way.
"""

import _thread
import contextlib
import gc
import os
import signal
import sys
import threading

EXIT_CODE = 130


class InterruptedAfterBlock(KeyboardInterrupt):
  """Ctrl-C that arrived inside `deferred()`, raised when the block ended."""


def install():
  """Ctrl-C is never dropped: call first in each command-line tool.

  Python runs the SIGINT handler at whatever bytecode the main thread is at.
  Inside a garbage-collector callback, a `__del__` or a weakref callback,
  its `KeyboardInterrupt` cannot propagate: Python prints "Exception ignored
  in" and goes on. JAX's tracing and lowering allocate enough to run its gc
  callback (`jax._src.lib._xla_gc_callback`) often: a Ctrl-C during the
  first compilation was swallowed there once in CI, and segment_video went
  on fine-tuning for 23 minutes.

  So the handler (Python's own otherwise) does not raise inside a gc
  callback or a `__del__`, and the rest (weakref callbacks) reach
  `sys.unraisablehook`, replaced here; either way the interrupt is
  delivered again `_REDELIVER_SECS` later, from a timer thread, and the
  handler runs at the main thread's next bytecode. Other unraisable
  exceptions go to the previous hook. A SIGINT handler other than Python's
  own (a background job's SIG_IGN) is left as it is. Idempotent.
  """
  global _previous_hook
  if sys.unraisablehook is not _unraisable:
    _previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable
  if (threading.current_thread() is threading.main_thread()
      and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
    signal.signal(signal.SIGINT, _on_ctrl_c)


# Long enough for the main thread to leave the callback it is in (a few
# bytecodes), short against a person's patience.
_REDELIVER_SECS = 0.05
_previous_hook = sys.__unraisablehook__


def _on_ctrl_c(signum, frame):
  """Python's default SIGINT handler, except where the raise would be lost."""
  del signum
  if _would_be_dropped(frame):
    _deliver_again()
  else:
    raise KeyboardInterrupt


def _would_be_dropped(frame):
  callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
  while frame is not None:
    code = frame.f_code
    if (code in callbacks or code.co_name == "__del__"
        or code is _unraisable.__code__):
      return True
    frame = frame.f_back
  return False


def _deliver_again():
  timer = threading.Timer(_REDELIVER_SECS, _thread.interrupt_main,
                          args=(signal.SIGINT,))
  timer.daemon = True
  timer.start()


def _unraisable(unraisable):
  if isinstance(unraisable.exc_type, type) and issubclass(
      unraisable.exc_type, KeyboardInterrupt):
    _deliver_again()
  else:
    _previous_hook(unraisable)


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
  if pending and previous in (signal.default_int_handler, _on_ctrl_c):
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
