"""Orbax checkpoints of a train state together with the input position.

A checkpoint is `<directory>/<step>/{state,data}`: the train state's arrays
(Orbax StandardSave: tensors only, restoring executes nothing from the files)
and the batch iterator's position as JSON, so a restarted run continues on
exactly the batches an uninterrupted one would have seen.

Several processes (`vosjax.distributed`) save and restore together: Orbax
writes each array once and the JSON item from the primary process. The
input position saved is process 0's; every process's is the same (grain's
`next_index` counts that process's own clips, and all advance in step), but
it means another position with another process count, so the number of
processes is saved with it and a resume with a different number is refused.

Failures are one line (`CheckpointError`): a save that fails in the
background surfaces at the next `poll()` (every training step in
`train.fit`) naming the path and the cause, and a corrupt newest checkpoint
falls back to the newest readable one with a one-line warning.
"""

import base64
import pathlib
import shutil
from typing import Protocol

from absl import logging
import jax
import orbax.checkpoint as ocp

from vosjax import distributed
from vosjax.errors import RunError

# Orbax writes a step into `<step>.orbax-checkpoint-tmp...` and renames it.
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_UNREADABLE_SUFFIX = ".unreadable"
_MAX_CAUSE = 300


class CheckpointableIterator(Protocol):
  """A batch iterator whose position can be saved and restored.

  `get_state()` returns a JSON-serialisable dict (or bytes, e.g. grain's
  DataLoader state) describing the position after the batches yielded so
  far; `set_state(state)` moves a fresh iterator to that position.
  """

  def __iter__(self):
    ...

  def __next__(self):
    ...

  def get_state(self):
    ...

  def set_state(self, state):
    ...


def _process_count():
  return jax.process_count()


def _encode_data_state(state):
  if isinstance(state, bytes):
    saved = {"kind": "bytes", "value": base64.b64encode(state).decode("ascii")}
  else:
    saved = {"kind": "json", "value": state}
  saved["process_count"] = _process_count()
  return saved


def _decode_data_state(saved):
  if saved["kind"] == "bytes":
    return base64.b64decode(saved["value"])
  return saved["value"]


def _check_process_count(saved, directory, step):
  """A resume must keep the number of processes (checkpoints before this
  field was written are single-process ones)."""
  count = saved.get("process_count", 1)
  if count != _process_count():
    raise CheckpointError(
        f"checkpoint step {step} in {directory} was written by {count} "
        f"processes, this run has {_process_count()}: the input position "
        f"depends on it; resume with --num_processes={count} or use another "
        f"--workdir to start over")


def _one_line(exc):
  """A short one-line description of `exc` for an error message.

  Tensorstore errors carry their whole JSON spec after the useful part; only
  the first line, up to the spec, is kept.
  """
  text = str(exc).strip().split("\n", 1)[0]
  text = text.split(" [tensorstore_spec=", 1)[0]
  if len(text) > _MAX_CAUSE:
    text = text[:_MAX_CAUSE] + "..."
  return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class CheckpointError(RunError):
  """A checkpoint could not be written, or no saved one could be read."""


class Checkpointer:
  """Orbax checkpoints of a `TrainState` plus the input-pipeline state.

  Layout: `<directory>/<step>/{state,data}`. Saving is asynchronous (Orbax
  copies the arrays to host before `save` returns, so the buffers may be
  donated right after); `poll()` (cheap, never blocks) raises
  `CheckpointError` as soon as a background save has failed, `wait()` blocks
  until files are complete, `close()` waits too. A failed save removes its
  `*.orbax-checkpoint-tmp*` folder.

  `restore()` falls back to the newest readable checkpoint when newer ones
  cannot be read (a run killed mid-write on a filesystem without atomic
  renames, a disk error), with a one-line warning; the unreadable folders are
  renamed `<step>.unreadable` (kept for inspection, ignored by Orbax), so the
  resumed run can write that step again.
  """

  def __init__(self, directory, max_to_keep=2, async_save=True):
    self.directory = pathlib.Path(directory).absolute()
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=async_save)
    self._pending = None  # The step of a save that may still be running.
    self._failed = False
    self._manager = self._open()

  def _open(self):
    try:
      return ocp.CheckpointManager(self.directory, options=self._options,
                                   item_names=("state", "data"))
    except OSError as e:
      raise CheckpointError(f"cannot use checkpoint folder {self.directory}: "
                            f"{_one_line(e)}") from e

  def latest_step(self):
    """The last complete saved step, or None."""
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, state, data_state=None):
    """Saves `state` under its step (an int read from `state.step`).

    Raises:
      CheckpointError: this save, or an earlier background one, failed.
    """
    if self._pending is not None:
      # Orbax would wait for the previous save inside `save` and raise its
      # error there; waiting first names the step that failed.
      self.wait()
    step = int(jax.device_get(state.step))
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state.checkpoint_tree()),
          data=ocp.args.JsonSave(_encode_data_state(data_state))),
                         force=True)
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises OSError, ValueError or its own types; all mean the same.
      self._fail(step, e)
    self._pending = step
    return step

  def poll(self):
    """Raises `CheckpointError` if a background save has failed; never blocks.

    Call it often (every training step): a failure then surfaces within a
    step instead of at the next save or at the end of training.
    """
    if self._pending is not None and not self._manager.is_saving_in_progress():
      self.wait()

  def wait(self):
    """Blocks until pending saves are complete; `CheckpointError` if one failed."""
    if self._failed:
      return
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._fail(self._pending, e)
    self._pending = None

  def _fail(self, step, exc):
    self._failed, self._pending = True, None
    removed = []
    for tmp in sorted(self.directory.glob(f"*{_TMP_SUFFIX}*")):
      shutil.rmtree(tmp, ignore_errors=True)
      removed.append(tmp.name)
    cleaned = f"; removed {', '.join(removed)}" if removed else ""
    raise CheckpointError(
        f"saving checkpoint step {step} to {self.directory / str(step)} "
        f"failed: {_one_line(exc)}{cleaned}") from exc

  def _restore_step(self, state, step):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            state.checkpoint_tree())
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=ocp.args.JsonRestore()))
    return state.replace_from_checkpoint(restored["state"]), restored["data"]

  def restore(self, state, step=None):
    """`(state, data_state)` from `step` (default: newest readable), as `state`.

    `state` is the template: its structure, dtypes and shardings are kept.

    Raises:
      FileNotFoundError: no checkpoint at all.
      CheckpointError: `step` (or, by default, every checkpoint) cannot be
        read into `state`; one line naming the folder and the cause.
    """
    steps = [step] if step is not None else sorted(self.all_steps(),
                                                   reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    failed = []
    for s in steps:
      try:
        result = self._restore_step(state, s)
      except Exception as e:  # pylint: disable=broad-except
        # Corrupt files surface as ValueError, OSError, JSONDecodeError, ...
        failed.append((s, e))
        continue
      if failed:
        self._set_aside(s, failed)
      restored, saved = result
      _check_process_count(saved, self.directory, s)
      return restored, _decode_data_state(saved)
    newest, exc = failed[0]
    raise CheckpointError(
        f"no readable checkpoint in {self.directory} (tried steps "
        f"{', '.join(str(s) for s, _ in failed)}; step {newest}: "
        f"{_one_line(exc)}); delete the folder or use another --workdir to "
        f"start over") from exc

  def _set_aside(self, good_step, failed):
    """Renames unreadable checkpoints newer than `good_step`; logs one line."""
    self._manager.close()
    kept = []
    for s, _ in failed if distributed.is_writer() else ():
      src = self.directory / str(s)
      dst = self.directory / f"{s}{_UNREADABLE_SUFFIX}"
      n = 1
      while dst.exists():
        n += 1
        dst = self.directory / f"{s}{_UNREADABLE_SUFFIX}{n}"
      if src.exists():
        src.rename(dst)
        kept.append(dst.name)
    distributed.sync("vosjax:checkpoint_set_aside")  # Renamed for everyone.
    self._manager = self._open()
    s, exc = failed[0]
    logging.warning(
        "checkpoint step %d in %s is unreadable (%s); resuming from step %d "
        "(unreadable folders kept as %s)", s, self.directory, _one_line(exc),
        good_step, ", ".join(kept) or "-")

  def close(self):
    """Waits for pending saves (`CheckpointError` if one failed), then closes."""
    try:
      self.wait()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        if not self._failed:  # Already reported once; do not mask it.
          raise
