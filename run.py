"""Runs an experiment: `python run.py --experiment=NAME [--config.a.b=value]`.

Experiments are `experiments/NAME.py` files returning a ConfigDict; any field
can be overridden on the command line. The work lives in `vosjax.programs`.

A run works in `<workdir>/<experiment>/` (default workdir `$TMPDIR/vosjax-$USER`,
private to the user). It holds an exclusive lock on that folder for its
lifetime (a second run there stops at once, naming the first one's pid) and
stores its config there as `config.json`: running again resumes, and a
resume may only change logging, checkpoint cadence, fine-tuning, inference,
evaluation and validation-sequence fields (`vosjax.workdir.RESUMABLE_FIELDS`);
to change anything else use another --workdir or delete the folder.

Several processes (hosts) run one job with `--coordinator_address`,
`--num_processes` and `--process_id` (or none of them where
`jax.distributed.initialize()` finds them, as on Cloud TPU): every process
trains on its share of each global batch; process 0 holds the lock, writes
`config.json`, the predictions and `summary.json`, and alone logs
(`vosjax.distributed`). The workdir must be a folder every process sees.

Compiled programs are kept in JAX's persistent compilation cache,
`--compilation_cache` (default `$XDG_CACHE_HOME/vosjax/jax`, i.e.
`~/.cache/vosjax/jax`; empty to turn it off), shared by every run and
workdir: a second run compiles nothing the first compiled.

Errors the user can act on print one line `run.py: ...` and exit non-zero:
2 for a bad command line (unknown experiment or field, a bad value: all
config values are checked by `experiments.validate_config` before any work),
1 for a failed run (data, workdir busy or unusable, config differs from the
workdir's, NaN loss, checkpoint write or read). Ctrl-C prints one line,
`run.py: interrupted at step N; rerun the same command to resume (...)`, and
exits 130: checkpoints are written whole (a save under way is completed
first), every other output is written to a temporary name and renamed.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vosjax import experiments
from vosjax import interrupt
from vosjax import workdir as workdir_lib
from vosjax import xla_flags
from vosjax.errors import InputError
from vosjax.errors import RunError

DEFAULT_EXPERIMENT = "fc_i3d_demo"


def _experiment_from_argv(argv):
  """The --experiment value, read before absl parses flags.

  The config flag must be defined from the experiment's file before parsing,
  so that `--config.x=y` overrides are validated against that config.
  """
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--experiment="):
      return arg.split("=", 1)[1]
    if arg == "--experiment" and i + 1 < len(argv):
      return argv[i + 1]
  return DEFAULT_EXPERIMENT


def _experiment_help():
  lines = ["Experiment to run (a file in experiments/):"]
  for name in experiments.available_experiments():
    lines.append(f"  {name}: {experiments.describe(name)}")
  return "\n".join(lines)


flags.DEFINE_string("experiment", DEFAULT_EXPERIMENT, _experiment_help())
flags.DEFINE_string(
    "workdir", workdir_lib.default_workdir(),
    "Directory for checkpoints, metrics, predictions and evaluation results, "
    "in <workdir>/<experiment>/ (created if missing; one run at a time; a "
    "run in an existing one resumes, and must then keep the config fields "
    "that decide the trained model). The default is private to the user.")


flags.DEFINE_string(
    "coordinator_address", None,
    "Several processes: host:port of process 0, where it serves JAX's "
    "coordination (any free port), the same on every process. Leave "
    "--coordinator_address, --num_processes and --process_id unset where "
    "jax.distributed.initialize() finds them itself (Cloud TPU pod slices, "
    "Slurm, Open MPI); unset and undetected means one process.")
flags.DEFINE_integer(
    "num_processes", None,
    "Several processes: how many take part in the run.", lower_bound=1)
flags.DEFINE_integer(
    "process_id", None,
    "Several processes: this process's index, 0 .. num_processes - 1; "
    "process 0 writes the outputs.", lower_bound=0)


def default_compilation_cache():
  """`$XDG_CACHE_HOME/vosjax/jax` (default `~/.cache/vosjax/jax`)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "vosjax", "jax")


flags.DEFINE_string(
    "compilation_cache", default_compilation_cache(),
    "Folder of JAX's persistent compilation cache, shared by all runs and "
    "workdirs (a later run loads the programs an earlier one compiled "
    "instead of compiling them again); empty turns it off.")


def _usage_error(message):
  print(f"run.py: {message}", file=sys.stderr)
  sys.exit(2)


def _unknown_field_message(error, experiment, argv):
  """One plain line from ml_collections' error for a mistyped field.

  It raises AttributeError(KeyError("'num_stepz'\\nDid you mean ...?")), and
  a KeyError's str() is the repr of its message: unwrap to the message.
  """
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  field, _, suggestion = text.partition("\n")
  field = field.strip().strip(chr(34) + chr(39))
  suggestion = " ".join(suggestion.split())
  for arg in argv:  # Name the flag as typed: --config.train.num_stepz.
    name = arg.split("=", 1)[0]
    if name.startswith("--config.") and field in name.split(".")[1:]:
      field = name
      break
  return (f"unknown config field {field} in experiment {experiment!r}"
          f"{'; ' + suggestion if suggestion else ''}")


def _parse_flags(argv):
  try:
    path = experiments.experiment_path(_experiment_from_argv(argv))
  except ValueError as e:
    _usage_error(e)
  # ml_collections applies --config.* overrides while defining the flag, and
  # reports a bad key as KeyError/AttributeError rather than a flags error.
  try:
    config_flags.DEFINE_config_file(
        "config", path,
        "Experiment config; override fields with --config.a.b=value.",
        lock_config=True)
    return flags.FLAGS(argv)
  except (KeyError, AttributeError) as e:
    _usage_error(_unknown_field_message(e, _experiment_from_argv(argv),
                                       argv))
  except (flags.Error, TypeError, ValueError) as e:
    _usage_error(str(e).splitlines()[0])


class _QuietLibraries(std_logging.Filter):
  """Drops library INFO chatter (Orbax logs ~20 lines per checkpoint).

  Orbax's warnings and errors keep their one-line message but lose the
  traceback attached to it: the failures it logs from its background threads
  surface again as one `CheckpointError` line naming the path and the cause.
  """

  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    if record.levelno < std_logging.WARNING:
      return False
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    return True


def _fail(error):
  message = " ".join(str(error).split())  # One line, whatever the source.
  print(f"run.py: {message}", file=sys.stderr)
  sys.exit(1)


def _interrupted(error):
  """Ctrl-C: one line instead of a traceback, exit 130 (128 + SIGINT, what a
  shell reports for a process Ctrl-C ended)."""
  step = getattr(error, "step", None)
  if step is None:
    line = "interrupted; rerun the same command to resume"
  else:
    saved = getattr(error, "checkpoint", None)
    line = (f"interrupted at step {step}; rerun the same command to resume "
            + (f"(from the step-{saved} checkpoint)" if saved is not None
               else "(no checkpoint yet: training starts over)"))
  interrupt.exit_interrupted(f"run.py: {line}")


def _claim_workdir(config, workdir, root, is_default):
  """Prepares, locks and checks `workdir`; returns the `Lock` (or None).

  Process 0 alone takes the lock and checks and writes `config.json`: one
  run (all its processes) per workdir, and one writer of the stored config.
  The others only create the folder, then learn process 0's outcome, so a
  refused workdir stops every process before any training.
  """
  from vosjax import distributed  # pylint: disable=g-import-not-at-top
  lock, error = None, None
  try:
    workdir_lib.prepare(workdir, private_root=root if is_default else None)
    if distributed.is_writer():
      lock = workdir_lib.lock(workdir)  # Held until the process exits.
      workdir_lib.check_config(config, workdir)
  except (InputError, RunError) as e:
    error = e
  distributed.writer_ok(error if distributed.is_writer() else None)
  if error is not None:
    raise error
  return lock


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  config = flags.FLAGS.config
  try:
    experiments.validate_config(config, prefix="--config.")
  except InputError as e:
    _usage_error(e)
  root = flags.FLAGS.workdir
  workdir = os.path.join(root, flags.FLAGS.experiment)
  is_default = os.path.abspath(root) == os.path.abspath(
      workdir_lib.default_workdir())
  # JAX is imported once the command line is known to be valid, so that a
  # usage error prints in a quarter of a second instead of 1.7 s.
  from vosjax import distributed  # pylint: disable=g-import-not-at-top
  try:
    # Before any JAX computation (jax.distributed's requirement).
    distributed.initialize(flags.FLAGS.coordinator_address,
                           flags.FLAGS.num_processes, flags.FLAGS.process_id)
  except InputError as e:
    _usage_error(e)
  if not distributed.is_writer():
    logging.set_verbosity(logging.WARNING)  # Logs come from process 0.
  xla_flags.configure_compilation_cache(flags.FLAGS.compilation_cache)
  try:
    lock = _claim_workdir(config, workdir, root, is_default)
    logging.info("experiment %s, workdir %s\n%s", flags.FLAGS.experiment,
                 workdir, config)
    experiments.get_program(config)(config, workdir)
  except (InputError, RunError) as e:
    _fail(e)
  except KeyboardInterrupt as e:  # `train.TrainingInterrupted` names a step.
    _interrupted(e)
  if lock is not None:
    lock.release()


if __name__ == "__main__":
  interrupt.install()
  try:
    app.run(main, flags_parser=_parse_flags)
  except KeyboardInterrupt as e:  # While parsing or starting.
    _interrupted(e)
