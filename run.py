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

Errors the user can act on print one line `run.py: ...` and exit non-zero:
2 for a bad command line (unknown experiment or field, a bad value), 1 for a
failed run (data, workdir busy or unusable, config differs from the
workdir's, NaN loss, checkpoint write or read).
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vosjax import experiments
from vosjax import workdir as workdir_lib
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


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  config = flags.FLAGS.config
  try:
    experiments.validate_config(config)
  except InputError as e:
    _usage_error(e)
  root = flags.FLAGS.workdir
  workdir = os.path.join(root, flags.FLAGS.experiment)
  is_default = os.path.abspath(root) == os.path.abspath(
      workdir_lib.default_workdir())
  try:
    workdir_lib.prepare(workdir, private_root=root if is_default else None)
    lock = workdir_lib.lock(workdir)  # Held until the process exits.
    workdir_lib.check_config(config, workdir)
    logging.info("experiment %s, workdir %s\n%s", flags.FLAGS.experiment,
                 workdir, config)
    experiments.get_program(config)(config, workdir)
  except (InputError, RunError) as e:
    message = " ".join(str(e).split())  # One line, whatever the source.
    print(f"run.py: {message}", file=sys.stderr)
    sys.exit(1)
  lock.release()


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
