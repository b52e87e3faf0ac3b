"""Ctrl-C (`vosjax.interrupt`): a deferred block finishes before the
interrupt is raised, and a CLI interrupted during its first XLA compilation
ends with its one line and exit 130 (it used to segfault, exit 139, after
printing the line: interpreter teardown under running compiler threads)."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tests.test_segment_video_cli import mask_png
from tests.test_video_io import tree_hashes
from tests.test_video_io import write_frames
from vosjax import interrupt

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_ctrl_c_inside_deferred_is_raised_once_the_block_is_done():
  done = []
  # Python's own handler, as in a terminal (a background job's pytest
  # starts with SIGINT ignored).
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(interrupt.InterruptedAfterBlock):
      with interrupt.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done.append(True)
    assert done  # The block ran to its end.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, previous)


def test_without_ctrl_c_deferred_changes_nothing():
  previous = signal.getsignal(signal.SIGINT)
  with interrupt.deferred():
    pass
  assert signal.getsignal(signal.SIGINT) is previous


# A Ctrl-C whose handler runs where Python drops exceptions: a gc callback
# (as JAX's `_xla_gc_callback` during lowering, seen once in CI: the CLI
# went on), a `__del__` (both seen by the handler) or a weakref callback
# (no frame tells it apart: the unraisable hook catches it).
_CTRL_C_IN_CALLBACK = textwrap.dedent("""
    import gc, signal, sys, time, weakref
    from vosjax import interrupt
    place, hook = sys.argv[1:]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hook == "installed":
      interrupt.install()
    def callback(*_):
      signal.raise_signal(signal.SIGINT)
      sum(range(10))  # The handler runs here, inside the callback.
    class Thing:
      def __del__(self):
        if place == "__del__":
          callback()
    fired = []
    def on_gc(phase, info):
      if phase == "start" and not fired:
        fired.append(True)
        callback()
    try:
      if place == "gc":
        gc.callbacks.append(on_gc)
        gc.collect()
      else:
        thing = Thing()
        ref = weakref.ref(thing, callback if place == "weakref" else None)
        del thing
      end = time.time() + 5
      while time.time() < end:
        pass
      print("lost")
    except KeyboardInterrupt:
      print("raised")
    """)


@pytest.mark.parametrize("place", ["gc", "__del__", "weakref"])
@pytest.mark.parametrize("hook,expected", [("installed", "raised"),
                                           ("python's own", "lost")])
def test_ctrl_c_in_a_callback_is_raised_after_it(place, hook, expected):
  """Python alone drops it ("Exception ignored in", then goes on): the
  second case checks that this reproduction still reproduces."""
  result = subprocess.run(
      [sys.executable, "-c", _CTRL_C_IN_CALLBACK, place, hook],
      capture_output=True, text=True, cwd=REPO, timeout=60,
      env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert result.stdout == f"{expected}\n", result.stderr
  if hook == "installed":
    assert result.stderr == "", result.stderr


def test_install_leaves_other_unraisable_exceptions_to_the_previous_hook():
  seen = []
  previous_hook = sys.unraisablehook
  sys.unraisablehook = seen.append
  try:
    interrupt.install()
    interrupt.install()  # Idempotent: no hook chained to itself.

    class Noisy:
      def __del__(self):
        raise ValueError("from __del__")

    Noisy()
    assert [type(u.exc_value) for u in seen] == [ValueError]
  finally:
    sys.unraisablehook = previous_hook


def test_ctrl_c_during_the_first_compilation_is_one_line_exit_130(tmp_path):
  """The real CLI and model (untrained OSVOS from ImageNet VGG16): Ctrl-C
  2.5 s after fine-tuning starts, while XLA compiles its step (the old code
  segfaulted there in 4 of 4 runs)."""
  frames = tmp_path / "v" / "clip"
  write_frames(frames, [f"{i:05d}.jpg" for i in range(4)])
  mask = mask_png(tmp_path / "v" / "mask.png")
  out = tmp_path / "out"
  before = tree_hashes(tmp_path / "v")
  proc = subprocess.Popen(
      [sys.executable, "-m", "vosjax.tools.segment_video", "--experiment",
       "osvos_davis16_cpu", "--frames", str(frames), "--first_mask",
       str(mask), "--out", str(out), "--config.finetune.num_steps=2000"],
      stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=str(REPO)),
      # A shell's background job starts with SIGINT ignored (inherited):
      # give the child a real Ctrl-C.
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    lines = []
    for line in proc.stderr:
      lines.append(line)
      if "fine-tuning" in line:
        break
    assert lines and "fine-tuning" in lines[-1], lines
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    rest = []
    reader = threading.Thread(target=lambda: rest.append(proc.stderr.read()),
                              daemon=True)
    reader.start()
    try:  # Uninterrupted, the 2000 steps would take over 20 minutes.
      proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
      pytest.fail("Ctrl-C was not acted on within 120 s")
    reader.join(timeout=30)
    err = "".join(rest)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 130, err
  assert "Traceback" not in err, err
  assert err == f"segment_video: interrupted; nothing was written to {out}\n"
  assert not out.exists()
  assert tree_hashes(tmp_path / "v") == before
