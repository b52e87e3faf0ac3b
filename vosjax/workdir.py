"""One run per workdir, and resumes that respect the config.

A run's folder is `<workdir>/<experiment>/`. Before a program runs, run.py:

1. `prepare`s it: created if missing; a path that is a file, or a folder that
   cannot be written, is a one-line `WorkdirError`. The default workdir,
   `default_workdir()` = `$TMPDIR/vosjax-<user>`, is created private (0700)
   and refused if another user owns it, so users never share it.
2. `lock`s it: an exclusive `fcntl.flock` on `<folder>/.lock`, held for the
   life of the process (the kernel releases it when the process ends, even on
   a crash or kill -9); the holder's pid is written inside. A second run on
   the same folder stops at once with one line naming that pid.
3. `check_config`s it: the resolved config is stored as `<folder>/config.json`
   by the first run; a later run (a resume) compares its config with it and
   stops with one line naming every field that differs, unless all of them
   are in `RESUMABLE_FIELDS`: logging and checkpoint cadence, and the stages
   every run redoes from the trained model (fine-tuning, inference,
   evaluation, the choice of validation sequences). Everything else (model,
   training, training data, synthetic data sizes, seed, data folder) decides
   the trained model or the generated data a resume would reuse.
   A folder holding nothing but `.lock` and `config.json` (a run that stopped
   before writing anything) takes the new config without comparison.

To start over, use another --workdir or delete the folder.
"""

import errno
import fcntl
import fnmatch
import getpass
import json
import os
import pathlib
import tempfile

from absl import logging

from vosjax import davis_io
from vosjax.errors import InputError

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"

# Config fields (dotted, fnmatch patterns) a resumed run may change: they do
# not decide the trained model or the generated data, because every run
# redoes these stages from the restored model.
# Fields added after runs were stored, with the value that reproduces what
# those runs did: a stored config without one resumes as if it had it.
ADDED_FIELDS = {
    # Mixed precision (issue #20): runs stored before it computed in float32.
    "model.compute_dtype": "float32",
    "model.train_backbone": True,  # PML's frozen-backbone option.
}

RESUMABLE_FIELDS = (
    "train.log_every",         # logging cadence
    "train.checkpoint_every",  # checkpoint cadence
    "finetune.*",              # one-shot fine-tuning is redone each run
    "inference.*",             # prediction is redone each run
    "eval.*",                  # retrieval/evaluation is redone each run
    "data.val_split",          # which sequences are evaluated
    "data.val_sequences",
    "evaluate_only",           # predicts from the stored checkpoint
    "tfds_data_dir",           # where the same training data is prepared
)
_MAX_LISTED = 6  # Differing fields named in the one-line error.


class WorkdirError(InputError):
  """A workdir that cannot be used: not a folder, read-only, busy, or holding
  a run with a different config."""


def default_workdir():
  """`$TMPDIR/vosjax-<user>` (e.g. /tmp/vosjax-alice): one per user."""
  try:
    user = getpass.getuser()
  except (KeyError, OSError):  # No passwd entry, e.g. in some containers.
    user = str(os.getuid())
  return os.path.join(tempfile.gettempdir(), f"vosjax-{user}")


def prepare(folder, private_root=None):
  """Creates `folder` (and parents) and checks that it can be written.

  Args:
    folder: the run's folder, `<workdir>/<experiment>`.
    private_root: the default workdir, when it is the one used: created mode
      0700 and refused when owned by another user.

  Returns:
    `folder` as a `pathlib.Path`.

  Raises:
    WorkdirError: one line naming the path and the cause.
  """
  folder = pathlib.Path(folder)
  try:
    if private_root is not None:
      root = pathlib.Path(private_root)
      root.mkdir(mode=0o700, parents=True, exist_ok=True)
      owner = root.stat().st_uid
      if owner != os.geteuid():
        raise WorkdirError(
            f"the default workdir {root} belongs to another user (uid "
            f"{owner}); pass --workdir=DIR")
    folder.mkdir(parents=True, exist_ok=True)
  except (FileExistsError, NotADirectoryError) as e:
    blocker = next((p for p in [folder, *folder.parents]
                    if p.exists() and not p.is_dir()), e.filename)
    raise WorkdirError(f"--workdir: {blocker} is a file, not a folder") from e
  except OSError as e:
    raise WorkdirError(f"--workdir: cannot create {folder}: "
                       f"{e.strerror or e}") from e
  if not os.access(folder, os.W_OK | os.X_OK):
    raise WorkdirError(f"--workdir: {folder} is not writable")
  return folder


class Lock:
  """An exclusive lock on a run folder, held until `release` or exit."""

  def __init__(self, fd, path):
    self._fd, self.path = fd, path

  def release(self):
    if self._fd is not None:
      os.close(self._fd)  # Closing the descriptor drops the flock.
      self._fd = None


def lock(folder):
  """Takes the exclusive lock of `folder`; `WorkdirError` if another run has it.

  The lock is `fcntl.flock` on `<folder>/.lock` (the descriptor is not
  inherited by executed programs); the kernel drops it when the process
  ends, so a killed run never leaves a stale lock. Keep the returned `Lock`
  referenced for as long as the run works in `folder`.
  """
  path = pathlib.Path(folder) / LOCK_FILE
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(f"--workdir: cannot write {path}: "
                       f"{e.strerror or e}") from e
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    os.close(fd)
    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise WorkdirError(f"--workdir: cannot lock {path}: "
                         f"{e.strerror or e}") from e
    raise WorkdirError(
        f"{folder} is in use by another run (pid {holder or 'unknown'}, "
        f"holding {path}); wait for it to finish or pass another "
        f"--workdir") from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
  return Lock(fd, path)


def _flatten(tree, prefix=""):
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def config_to_dict(config):
  """The config as plain JSON data (tuples become lists), dotted keys."""
  return _flatten(json.loads(config.to_json_best_effort(sort_keys=True)))


def is_resumable(field):
  """Whether a resumed run may change config field `field` ('a.b')."""
  return any(fnmatch.fnmatchcase(field, p) for p in RESUMABLE_FIELDS)


def _holds_results(folder):
  return any(p.name not in (LOCK_FILE, CONFIG_FILE)
             for p in pathlib.Path(folder).iterdir())


_ABSENT = object()


def _show(value):
  return "(absent)" if value is _ABSENT else json.dumps(value)


def check_config(config, folder):
  """Compares `config` with the one stored in `folder`, then stores `config`.

  Args:
    config: the run's resolved `ml_collections.ConfigDict`.
    folder: the run's folder (prepared and locked).

  Returns:
    The fields that differ from the stored config and may change on resume
    (logged), `[]` for a fresh folder.

  Raises:
    WorkdirError: `folder` holds results of a run whose config differs in a
      field outside `RESUMABLE_FIELDS`, or results without a `config.json`;
      one line naming the fields, the old and new values, and the way out.
  """
  folder = pathlib.Path(folder)
  path = folder / CONFIG_FILE
  current = config_to_dict(config)
  changed = []
  if _holds_results(folder):
    if not path.is_file():
      raise WorkdirError(
          f"{folder} holds results but no {CONFIG_FILE}, so a resume cannot "
          f"be checked against its config; use another --workdir or delete "
          f"{folder}")
    try:
      stored = json.loads(path.read_text())
      if not isinstance(stored, dict):
        raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
      raise WorkdirError(f"{path}: unreadable ({e}); use another --workdir "
                         f"or delete {folder}") from e
    stored = _flatten(stored)
    for k, value in ADDED_FIELDS.items():
      if k in current:
        stored.setdefault(k, value)
    differ = [k for k in sorted(set(stored) | set(current))
              if stored.get(k, _ABSENT) != current.get(k, _ABSENT)]
    fixed = [k for k in differ if not is_resumable(k)]
    if fixed:
      listed = ", ".join(
          f"{k} {_show(stored.get(k, _ABSENT))} -> "
          f"{_show(current.get(k, _ABSENT))}" for k in fixed[:_MAX_LISTED])
      more = (f" and {len(fixed) - _MAX_LISTED} more"
              if len(fixed) > _MAX_LISTED else "")
      raise WorkdirError(
          f"{folder} holds a run with a different config: {listed}{more}. "
          f"A resume may only change {', '.join(RESUMABLE_FIELDS)}; use "
          f"another --workdir or delete {folder} to start over")
    changed = differ
    if changed:
      logging.info("resuming %s with changed fields: %s", folder,
                   ", ".join(changed))
  davis_io.atomic_write(
      path, lambda f: f.write(config.to_json_best_effort(sort_keys=True,
                                                         indent=2) + "\n"),
      mode="w")
  return changed
