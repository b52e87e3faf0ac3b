"""Orbax checkpoints of a train state together with the input position.

A checkpoint is `<directory>/<step>/{state,data}`: the train state's arrays
(Orbax StandardSave: tensors only, restoring executes nothing from the files)
and the batch iterator's position as JSON, so a restarted run continues on
exactly the batches an uninterrupted one would have seen.
"""

import base64
import pathlib
from typing import Protocol

import jax
import orbax.checkpoint as ocp


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


def _encode_data_state(state):
  if isinstance(state, bytes):
    return {"kind": "bytes", "value": base64.b64encode(state).decode("ascii")}
  return {"kind": "json", "value": state}


def _decode_data_state(saved):
  if saved["kind"] == "bytes":
    return base64.b64decode(saved["value"])
  return saved["value"]


class Checkpointer:
  """Orbax checkpoints of a `TrainState` plus the input-pipeline state.

  Layout: `<directory>/<step>/{state,data}`. Saving is asynchronous (Orbax
  copies the arrays to host before `save` returns, so the buffers may be
  donated right after); `wait()` blocks until files are complete, `close()`
  waits too.
  """

  def __init__(self, directory, max_to_keep=2, async_save=True):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data"))

  def latest_step(self):
    """The last complete saved step, or None."""
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, state, data_state=None):
    """Saves `state` under its step (an int read from `state.step`)."""
    step = int(jax.device_get(state.step))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state.checkpoint_tree()),
        data=ocp.args.JsonSave(_encode_data_state(data_state))), force=True)
    return step

  def restore(self, state, step=None):
    """`(state, data_state)` from `step` (default latest), shaped as `state`.

    `state` is the template: its structure, dtypes and shardings are kept.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            state.checkpoint_tree())
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=ocp.args.JsonRestore()))
    return (state.replace_from_checkpoint(restored["state"]),
            _decode_data_state(restored["data"]))

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
