"""Tests of vosjax.checkpoint: fallback from unreadable checkpoints and
failed saves that surface at once, in one line, leaving no partial folder.

The reference for the resumed parameters is an uninterrupted run of the same
steps (training is deterministic given the step and the data position).
"""

import errno
import logging
import time

import jax
import pytest

from orbax.checkpoint._src.path import async_path
from tests import test_train as tt
from vosjax import checkpoint
from vosjax import train


def _corrupt(step_dir):
  """Overwrites every array data file of a saved step with a few bytes."""
  hit = 0
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(b"garbage")
      hit += 1
  assert hit, f"no data files under {step_dir}"


def test_unreadable_newest_checkpoint_falls_back_with_one_line_warning(
    tmp_path, caplog):
  full = jax.device_get(tt._fit(tmp_path / "full", tt._Batches()))
  work = tmp_path / "run"
  tt._fit(work, tt._Batches(), num_steps=4)  # Checkpoints 2 and 4.
  ckpt_dir = work / train.CHECKPOINT_DIR
  _corrupt(ckpt_dir / "4")

  batches = tt._Batches()
  with caplog.at_level(logging.WARNING):
    resumed = jax.device_get(tt._fit(work, batches))  # To step 6.
  warnings = [r.getMessage() for r in caplog.records
              if "unreadable" in r.getMessage()]
  assert len(warnings) == 1 and "\n" not in warnings[0], warnings
  assert "step 4" in warnings[0] and "resuming from step 2" in warnings[0]
  assert batches.pos == 6  # Batches 2..5: the data position of step 2.
  tt._assert_trees_close(resumed.params, full.params, rtol=1e-6, atol=1e-7)
  # The unreadable folder is kept aside; step 4 was written again, readable.
  assert (ckpt_dir / "4.unreadable").is_dir()
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  assert ckpt.all_steps() == [4, 6]
  state, data_state = ckpt.restore(tt._init_state(), step=4)
  ckpt.close()
  assert int(state.step) == 4 and data_state == {"pos": 4}
  assert [r["step"] for r in tt._read_metrics(work)] == [2, 4, 6]


def test_no_readable_checkpoint_is_one_line_error(tmp_path):
  tt._fit(tmp_path, tt._Batches(), num_steps=2)
  _corrupt(tmp_path / train.CHECKPOINT_DIR / "2")
  with pytest.raises(checkpoint.CheckpointError) as info:
    tt._fit(tmp_path, tt._Batches())
  message = str(info.value)
  assert "\n" not in message and len(message) < 700, message
  assert str(tmp_path / train.CHECKPOINT_DIR) in message
  assert "step 2" in message and "another --workdir" in message


class _SlowBatches(tt._Batches):
  """Batches from position 2 on take 1 s, like real training steps."""

  def __next__(self):
    if self.pos >= 2:
      time.sleep(1.0)
    return super().__next__()


def test_failed_background_save_stops_at_once_in_one_line(tmp_path,
                                                         monkeypatch):
  """A full disk while finishing the step-2 save (Orbax's final rename)."""
  real_rename = async_path.rename

  async def full_disk(src, dst):
    if str(dst).endswith("/2"):
      raise OSError(errno.ENOSPC, "No space left on device")
    return await real_rename(src, dst)

  monkeypatch.setattr(async_path, "rename", full_disk)
  batches = _SlowBatches()
  with pytest.raises(checkpoint.CheckpointError) as info:
    tt._fit(tmp_path, batches)
  message = str(info.value)
  ckpt_dir = tmp_path / train.CHECKPOINT_DIR
  assert "\n" not in message, message
  assert f"step 2 to {ckpt_dir / '2'}" in message
  assert "No space left on device" in message
  # Surfaced after step 3, the first step after the failure; not at the
  # next save (step 4) or at the end.
  assert batches.pos == 3, batches.pos
  assert not list(ckpt_dir.glob("*orbax-checkpoint-tmp*"))
  assert not (ckpt_dir / "2").exists()


def test_failed_synchronous_save_is_one_line(tmp_path, monkeypatch):
  """The same through a synchronous save: raised by `save` itself."""
  async def full_disk(src, dst):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(async_path, "rename", full_disk)
  ckpt = checkpoint.Checkpointer(tmp_path, async_save=False)
  state = tt._init_state()
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"step 0 to .*No space left on device"):
    ckpt.save(state, {"pos": 0})
  ckpt.close()  # Already reported: closing does not raise it again.
  assert not list(tmp_path.glob("*orbax-checkpoint-tmp*"))


def test_fit_rejects_counts_below_one_before_compiling(tmp_path):
  for kwargs, name in (({"num_steps": 0}, "num_steps"),
                       ({"checkpoint_every": 0}, "checkpoint_every"),
                       ({"log_every": -1}, "log_every")):
    args = dict(num_steps=6, workdir=tmp_path, rng=tt._key(1),
                checkpoint_every=2, log_every=2)
    args.update(kwargs)
    batches = tt._Batches()
    with pytest.raises(train.InputError, match=rf"^{name}=.*config\.train"):
      train.fit(tt._init_state(), tt._TRAIN_STEP, batches, **args)
    assert batches.pos == 0
  assert not any(tmp_path.iterdir())  # Nothing written.
