"""Tests of vosjax.checkpoint: fallback from unreadable checkpoints and
failed saves that surface at once, in one line, leaving no partial folder.

The reference for the resumed parameters is an uninterrupted run of the same
steps (training is deterministic given the step and the data position).
"""

import errno
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import ml_collections
import pytest

from orbax.checkpoint._src.path import async_path
from tests import test_train as tt
from tests.conftest import REPO_ROOT
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


# ---------------------------------------------------------------------------
# Reading a run (segment_video, --config.evaluate_only=True) never changes it.


def _tree(folder):
  """Every path under `folder` with its bytes (None for a folder)."""
  folder = pathlib.Path(folder)
  return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
          for p in sorted(folder.rglob("*"))}


def truncate(step_dir):
  """Cuts every array data file of a saved step to half its size, as a copy
  or a disk cut short would (Orbax's reads then fail inside TensorStore)."""
  hit = 0
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
      hit += 1
  assert hit, f"no data files under {step_dir}"


_TRAIN_CONFIG = {"num_steps": 4, "batch_size": 8, "checkpoint_every": 2,
                 "log_every": 2}


def evaluate_only(workdir):
  """`pipeline.fit_parent(evaluate_only=True)` on the toy model: the read
  that segment_video and `--config.evaluate_only=True` make."""
  from vosjax import pipeline  # pylint: disable=g-import-not-at-top
  state = tt._init_state()
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  return pipeline.fit_parent(
      variables, tt._loss_fn, None, ml_collections.ConfigDict(_TRAIN_CONFIG),
      workdir, seed=1, evaluate_only=True, tx=tt._TX)


def _read_only_copy_runner():
  """argv prefix that runs a command as a user who cannot write the run
  (root writes anywhere: `setpriv` to nobody), or [] if this user already
  cannot once the folder is made read-only.

  Where nobody cannot import this environment (CI's virtual environment
  lives in a 0700 temporary folder), the read runs as root: the folder is
  then writable, and the test still proves that the read changed nothing.
  """
  if os.geteuid() != 0:
    return []
  setpriv = shutil.which("setpriv")
  if setpriv is None:
    pytest.skip("root without setpriv: no read-only folder to test")
  nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
  probe = subprocess.run(
      [*nobody, sys.executable, "-c", "import jax, orbax.checkpoint, vosjax"],
      cwd=REPO_ROOT, capture_output=True, timeout=120,
      env={**os.environ, "HOME": "/tmp"})
  return nobody if probe.returncode == 0 else []


def test_reading_a_truncated_newest_checkpoint_warns_once_and_changes_nothing():
  """A truncated newest step in a read-only run: one clean line naming the
  step used and the step skipped, no traceback, not one byte changed."""
  # Under /tmp (not pytest's 0700 tmp_path) so that nobody can read it.
  root = pathlib.Path(tempfile.mkdtemp(prefix="vosjax-ro-run-"))
  try:
    tt._fit(root, tt._Batches(), num_steps=4)  # Checkpoints 2 and 4.
    truncate(root / train.CHECKPOINT_DIR / "4")
    for path in [root, *root.rglob("*")]:
      path.chmod(0o555 if path.is_dir() else 0o444)
    before = _tree(root)
    code = ("import sys\nfrom tests import test_checkpoint\n"
            "test_checkpoint.evaluate_only(sys.argv[1])\nprint('read')\n")
    result = subprocess.run(
        [*_read_only_copy_runner(), sys.executable, "-c", code, str(root)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HOME": "/tmp"})
    assert result.returncode == 0 and result.stdout == "read\n", result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    ckpt_dir = root / train.CHECKPOINT_DIR
    assert (f"checkpoint step 4 in {ckpt_dir} is unreadable (ValueError: "
            "OUT_OF_RANGE: ") in lines[0], lines[0]
    assert lines[0].endswith("); using step 2 instead (nothing renamed)")
    assert "TensorStore" not in lines[0]
    assert "<bound method" not in lines[0] and len(lines[0]) < 600
    assert _tree(root) == before  # Nothing renamed, created or written.
  finally:
    for path in [root, *root.rglob("*")]:
      path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(root)


def test_a_reading_restore_leaves_the_step_to_the_first_save(tmp_path,
                                                            caplog):
  """A `Checkpointer` that restored without `set_aside` and then saves moves
  the unreadable step aside first (Orbax would otherwise count it as the
  newest step and refuse to write that step number again)."""
  tt._fit(tmp_path, tt._Batches(), num_steps=4)
  ckpt_dir = tmp_path / train.CHECKPOINT_DIR
  _corrupt(ckpt_dir / "4")
  ckpt = checkpoint.Checkpointer(ckpt_dir, async_save=False)
  with caplog.at_level(logging.WARNING):
    state, data_state = ckpt.restore(tt._init_state())
  assert int(state.step) == 2 and data_state == {"pos": 2}
  assert sorted(p.name for p in ckpt_dir.iterdir()) == ["2", "4"]
  ckpt.save(state.replace(step=state.step + 2), {"pos": 4})
  ckpt.close()
  assert sorted(p.name for p in ckpt_dir.iterdir()) == ["2", "4",
                                                        "4.unreadable"]
  # Only vosjax's own lines: Orbax logs its own, and asyncio may report here a
  # failed read future that an earlier test in this worker left behind.
  messages = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING
              and r.pathname.endswith("vosjax/checkpoint.py")]
  assert len(messages) == 2, messages
  assert messages[0].startswith(
      f"checkpoint step 4 in {ckpt_dir} is unreadable (ValueError: ")
  assert messages[0].endswith("); using step 2 instead (nothing renamed)")
  assert messages[1] == (
      f"moved unreadable checkpoint step(s) 4 in {ckpt_dir} aside (kept as "
      f"4.unreadable) before saving")


def test_a_checkpointer_creates_nothing_until_it_saves(tmp_path):
  folder = tmp_path / "run" / train.CHECKPOINT_DIR
  ckpt = checkpoint.Checkpointer(folder)
  assert ckpt.latest_step() is None
  with pytest.raises(FileNotFoundError, match=f"no checkpoint in {folder}"):
    ckpt.restore(tt._init_state())
  ckpt.close()
  assert not (tmp_path / "run").exists()


def test_orbax_read_wrapper_is_replaced_by_its_cause():
  cause = ValueError('OUT_OF_RANGE: Error reading "a/0.0" in OCDBT database '
                     "[tensorstore_spec='{...}']")
  try:
    try:
      raise cause
    except ValueError as e:
      raise Exception(  # pylint: disable=broad-exception-raised
          "Encountered error while reading array index: (slice(0, 3, 1),). "
          "See full TensorStore details: <bound method pybind11_detail.spec "
          "of TensorStore({\n  'base': {\n") from e
  except Exception as e:  # pylint: disable=broad-except
    text = checkpoint._one_line(e)  # pylint: disable=protected-access
  assert text == ('ValueError: OUT_OF_RANGE: Error reading "a/0.0" in OCDBT '
                  "database")


def test_an_abstract_template_is_placed_here_not_where_it_was_saved(tmp_path):
  """A state saved on a 2-device mesh and read into an abstract template
  (`jax.eval_shape`, as `vosjax.segment` builds) lands on this process's
  first device. Reference: the template's placement, not the checkpoint's
  (Orbax's default, which fails with "Topology mismatch" where the saving
  run's devices do not exist: a model trained on 8 devices read on 1)."""
  devices = jax.devices()[1:3]
  assert len(devices) == 2, "the suite runs with 4 host devices"
  mesh = jax.sharding.Mesh(devices, ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.device_put(tt._init_state(), replicated)
  ckpt = checkpoint.Checkpointer(tmp_path, async_save=False)
  ckpt.save(state, {"pos": 0})
  ckpt.close()
  abstract = jax.eval_shape(tt._init_state)
  restored, _ = checkpoint.Checkpointer(tmp_path).restore(
      state.replace(params=abstract.params,
                    batch_stats=abstract.batch_stats,
                    opt_state=abstract.opt_state, step=abstract.step))
  for leaf in jax.tree.leaves(restored.checkpoint_tree()):
    assert leaf.sharding.device_set == {jax.local_devices()[0]}, leaf.sharding
  tt._assert_trees_close(restored.params, state.params, rtol=0, atol=0)


def test_a_read_finishing_after_its_loop_closed_logs_nothing(caplog):
  """The race behind a rare traceback after a fallback: a TensorStore read
  of the abandoned step completes in another thread just as its event loop
  closes, so asyncio's `call_soon_threadsafe` raises "Event loop is closed"
  inside a concurrent future's callback, which concurrent.futures logs with
  a traceback. Reproduced here by calling back into a closed loop; after a
  failed read that line is dropped, while any other callback error is
  still logged (reference: concurrent.futures' own `LOGGER.exception`)."""
  import asyncio  # pylint: disable=g-import-not-at-top
  import concurrent.futures  # pylint: disable=g-import-not-at-top

  checkpoint._silence_read_debris()  # pylint: disable=protected-access
  loop = asyncio.new_event_loop()
  loop.close()

  def call_back(error):
    future = concurrent.futures.Future()
    future.add_done_callback(lambda _: error())
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
      caplog.clear()
      future.set_result(None)
      return [r.getMessage() for r in caplog.records]

  assert call_back(lambda: loop.call_soon_threadsafe(print)) == []
  other = call_back(lambda: 1 / 0)
  assert len(other) == 1 and "exception calling callback" in other[0], other
