"""Ctrl-C (`vosjax.interrupt`): a deferred block finishes before the
interrupt is raised, and a CLI interrupted during its first XLA compilation
ends with its one line and exit 130 (it used to segfault, exit 139, after
printing the line: interpreter teardown under running compiler threads)."""

import os
import pathlib
import signal
import subprocess
import sys
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
    err = proc.stderr.read()
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 130, err
  assert "Traceback" not in err, err
  assert err == f"segment_video: interrupted; nothing was written to {out}\n"
  assert not out.exists()
  assert tree_hashes(tmp_path / "v") == before
