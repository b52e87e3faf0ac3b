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
falls back to the newest readable one with a one-line warning naming the
step used and the step skipped.

Reading never modifies the folder (`segment_video`, `evaluate_only` read runs
they do not own, possibly read-only ones): the manager is opened without
creating anything, and an unreadable newer step is left where it is. Only a
writer moves it aside (`restore(..., set_aside=True)` in `train.fit`, or the
first `save` after a fallback), because Orbax would otherwise take that step
for the newest one: its `max_to_keep` clean-up would delete the readable
steps first, and saving the same step number again would fail.
"""

import base64
import contextlib
import gc
import logging as std_logging
import pathlib
import shutil
import sys
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


# Orbax wraps a failed array read in a bare `Exception` whose text is the
# index read and the repr of a bound method of the TensorStore (dozens of
# lines of JSON); the cause it chains holds TensorStore's own message.
_WRAPPER_MARKERS = ("See full TensorStore details", "<bound method")


def _one_line(exc):
  """A short one-line description of `exc` for an error message.

  Tensorstore errors carry their whole JSON spec after the useful part; only
  the first line, up to the spec, is kept. Orbax's read wrapper is replaced
  by the error it wraps.
  """
  for _ in range(8):  # A bounded walk down the chain of causes.
    cause = exc.__cause__ or exc.__context__
    if cause is None or not any(m in str(exc) for m in _WRAPPER_MARKERS):
      break
    exc = cause
  text = str(exc).strip().split("\n", 1)[0]
  text = text.split(" [tensorstore_spec=", 1)[0]
  for marker in _WRAPPER_MARKERS:
    text = text.split(marker, 1)[0].rstrip(" .:")
  if len(text) > _MAX_CAUSE:
    text = text[:_MAX_CAUSE] + "..."
  return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _DropOrbaxLogs(std_logging.Filter):
  """Drops Orbax's own log lines while steps are listed or read: a corrupt
  file makes it log an ERROR quoting the file's content, and the one-line
  warning or `CheckpointError` of `restore` already names the step and the
  cause."""

  def filter(self, record):
    return "/orbax/" not in record.pathname


@contextlib.contextmanager
def _without_orbax_logs():
  logger = std_logging.getLogger("absl")
  log_filter = _DropOrbaxLogs()
  logger.addFilter(log_filter)
  try:
    yield
  finally:
    logger.removeFilter(log_filter)


class _DropOrbaxTasks(std_logging.Filter):
  """asyncio's "Task exception was never retrieved" for Orbax's read tasks."""

  def filter(self, record):
    message = record.getMessage()
    return not ("exception was never retrieved" in message
                and "/orbax/" in message)


class _DropClosedLoopCallbacks(std_logging.Filter):
  """concurrent.futures' "exception calling callback" for a TensorStore read
  finishing after the failed read's event loop closed: asyncio checks
  `is_closed()` and then calls `call_soon_threadsafe`, which raises "Event
  loop is closed" when the loop closes in between (a rare race: one
  traceback in about ten test-suite runs)."""

  def filter(self, record):
    exc = record.exc_info[1] if record.exc_info else None
    return not (isinstance(exc, RuntimeError)
                and str(exc) == "Event loop is closed")


def _is_read_debris(unraisable):
  """Whether an unraisable exception is left over from a failed Orbax read.

  Orbax's array reads run concurrently; when one fails, the others are
  abandoned: pending coroutines raise again when closed (its read wrapper
  catches `BaseException`, GeneratorExit included, and raises `Exception`
  with the TensorStore spec), and TensorStore callbacks still arriving find
  the event loop closed.
  """
  code = getattr(unraisable.object, "cr_code", None)
  if code is not None and "/orbax/" in code.co_filename:
    return True
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed")


def _without_debris(previous):
  """`sys.unraisablehook` that drops `_is_read_debris`, else calls
  `previous`."""
  def hook(unraisable):
    if not _is_read_debris(unraisable):
      previous(unraisable)
  return hook


_debris_silenced = False


def _silence_read_debris():
  """After a failed read, keeps its debris off stderr for the process.

  Without this a fallback that `restore` reports in one line is followed,
  then or at exit, by dozens of lines: "Exception ignored in: <coroutine
  ...>", "Task exception was never retrieved", "Event loop is closed", each
  with a traceback and often a TensorStore spec. Only those are dropped
  (`_is_read_debris`, `_DropOrbaxTasks`, `_DropClosedLoopCallbacks`).
  Installed once, on the first failed read.
  """
  global _debris_silenced
  if not _debris_silenced:
    _debris_silenced = True
    std_logging.getLogger("asyncio").addFilter(_DropOrbaxTasks())
    std_logging.getLogger("concurrent.futures").addFilter(
        _DropClosedLoopCallbacks())
    sys.unraisablehook = _without_debris(sys.unraisablehook)


@contextlib.contextmanager
def _quiet_read():
  """Orbax's log lines dropped while a step is read, and its debris: a
  failed read's abandoned callbacks arrive before the read raises. On
  failure the debris stays silenced (`_silence_read_debris`)."""
  previous = sys.unraisablehook
  hook = sys.unraisablehook = _without_debris(previous)
  failed = True
  try:
    with _without_orbax_logs():
      yield
    failed = False
  finally:
    if sys.unraisablehook is hook:
      sys.unraisablehook = previous
    if failed:
      _silence_read_debris()


def _with_sharding(leaf):
  """`leaf` (a ShapeDtypeStruct) placed on this process's first device when
  the template leaves its placement open (an abstract state from
  `jax.eval_shape`, as `vosjax.segment` builds). Orbax would otherwise place
  it by the sharding saved in the checkpoint, which names the saving run's
  devices: a run trained on 8 devices failed to load where fewer exist
  ("Topology mismatch detected"), and so, now and then, did a readable
  older step read after a failed newer one."""
  if getattr(leaf, "sharding", None) is not None:
    return leaf
  return jax.ShapeDtypeStruct(
      leaf.shape, leaf.dtype,
      sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


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
  renames, a disk error, a truncated copy), with a one-line warning naming
  the step used and the steps skipped. A reader changes nothing on disk; a
  writer (`set_aside=True`, or the first `save` after a fallback) renames the
  unreadable folders `<step>.unreadable` (kept for inspection, ignored by
  Orbax), so the resumed run can write that step again.
  """

  def __init__(self, directory, max_to_keep=2, async_save=True):
    self.directory = pathlib.Path(directory).absolute()
    self._max_to_keep, self._async_save = max_to_keep, async_save
    self._pending = None  # The step of a save that may still be running.
    self._failed = False
    self._skipped = []  # Unreadable steps left in place by a reading restore.
    # Opened for reading (nothing created) until the first save.
    self._writable = False
    self._manager = self._open()

  def _open(self):
    # A writer also removes the temporary folders of saves a killed run left
    # (Orbax never lists them as steps; they would only take space).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self._max_to_keep, create=self._writable,
        cleanup_tmp_directories=self._writable,
        enable_async_checkpointing=self._async_save)
    try:
      with _without_orbax_logs():  # It reads every step's metadata.
        return ocp.CheckpointManager(self.directory, options=options,
                                     item_names=("state", "data"))
    except OSError as e:
      raise CheckpointError(f"cannot use checkpoint folder {self.directory}: "
                            f"{_one_line(e)}") from e

  def _reopen(self):
    self._manager.close()
    self._manager = self._open()

  def _make_writable(self):
    """Before the first save: moves skipped steps aside, creates the folder."""
    if self._writable:
      return
    if self._skipped:
      kept = self._set_aside(self._skipped)
      logging.warning("moved unreadable checkpoint step(s) %s in %s aside "
                      "(kept as %s) before saving",
                      ", ".join(str(s) for s in self._skipped),
                      self.directory, ", ".join(kept) or "-")
      self._skipped = []
    self._writable = True
    self._reopen()

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
    self._make_writable()
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
    abstract = jax.tree.map(_with_sharding,
                            jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                         state.checkpoint_tree()))
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=ocp.args.JsonRestore()))
    return state.replace_from_checkpoint(restored["state"]), restored["data"]

  def restore(self, state, step=None, *, set_aside=False):
    """`(state, data_state)` from `step` (default: newest readable), as `state`.

    `state` is the template: its structure, dtypes and shardings are kept.
    Unreadable newer steps are skipped with one warning line; they are
    renamed `<step>.unreadable` only with `set_aside` (a run about to write
    checkpoints here), else left as they are until a `save`.

    Raises:
      FileNotFoundError: no checkpoint at all.
      CheckpointError: `step` (or, by default, every checkpoint) cannot be
        read into `state`; one line naming the folder and the cause.
    """
    steps = [step] if step is not None else sorted(self.all_steps(),
                                                   reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    failed = []  # (step, one-line cause), newest first.
    for s in steps:
      result = None
      try:
        with _quiet_read():
          result = self._restore_step(state, s)
      except Exception as e:  # pylint: disable=broad-except
        # Corrupt files surface as ValueError, OSError, JSONDecodeError, ...
        # Only the text is kept: the exception holds the abandoned reads.
        failed.append((s, _one_line(e)))
      if result is None:
        gc.collect()  # The abandoned reads go now, their debris silenced.
        continue
      restored, saved = result
      _check_process_count(saved, self.directory, s)
      if failed:
        self._warn_skipped(s, failed, set_aside)
      return restored, _decode_data_state(saved)
    newest, cause = failed[0]
    raise CheckpointError(
        f"no readable checkpoint in {self.directory} (tried steps "
        f"{', '.join(str(s) for s, _ in failed)}; step {newest}: "
        f"{cause}); delete the folder or use another --workdir to start over")

  def _warn_skipped(self, used, failed, set_aside):
    """One warning line: the steps skipped, the cause, the step used."""
    skipped = [s for s, _ in failed]
    newest, cause = failed[0]
    if len(skipped) == 1:
      what = f"checkpoint step {newest} in {self.directory} is unreadable ("
    else:
      what = (f"checkpoint steps {', '.join(str(s) for s in skipped)} in "
              f"{self.directory} are unreadable (step {newest}: ")
    if set_aside:
      kept = self._set_aside(skipped)
      logging.warning("%s%s); resuming from step %d (unreadable folders kept "
                      "as %s)", what, cause, used, ", ".join(kept) or "-")
    else:
      self._skipped = skipped
      logging.warning("%s%s); using step %d instead (nothing renamed)", what,
                      cause, used)

  def _set_aside(self, steps):
    """Renames unreadable step folders `<step>.unreadable`; the new names.

    Process 0 renames, the others wait for it (one shared folder).
    """
    self._manager.close()
    kept, error = [], None
    for s in steps if distributed.is_writer() else ():
      src = self.directory / str(s)
      dst = self.directory / f"{s}{_UNREADABLE_SUFFIX}"
      n = 1
      while dst.exists():
        n += 1
        dst = self.directory / f"{s}{_UNREADABLE_SUFFIX}{n}"
      if not src.exists():
        continue
      try:
        src.rename(dst)
      except OSError as e:
        error = CheckpointError(
            f"checkpoint step {s} in {self.directory} is unreadable and "
            f"cannot be moved aside to {dst.name} ({e.strerror or e}); "
            f"delete it or use another --workdir")
        break
      kept.append(dst.name)
    distributed.sync("vosjax:checkpoint_set_aside")  # Renamed for everyone.
    self._manager = self._open()
    if error is not None:
      raise error
    return kept

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
