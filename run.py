"""Runs an experiment: `python run.py --experiment=NAME [--config.a.b=value]`.

Experiments are `experiments/NAME.py` files returning a ConfigDict; any field
can be overridden on the command line. The work lives in `vosjax.programs`.
"""

import logging as std_logging
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vosjax import experiments
from vosjax.errors import InputError

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


flags.DEFINE_string("experiment", DEFAULT_EXPERIMENT,
                    "Experiment to run: the name of a file in experiments/.")
flags.DEFINE_string(
    "workdir", os.path.join(tempfile.gettempdir(), "vosjax"),
    "Directory for checkpoints, metrics, predictions and evaluation results "
    "(created if missing; a run in an existing workdir resumes).")


def _usage_error(message):
  print(f"run.py: {message}", file=sys.stderr)
  sys.exit(2)


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
    _usage_error(f"unknown config field {str(e).strip(chr(34) + chr(39))!r} "
                 f"in experiment {_experiment_from_argv(argv)!r}")
  except (flags.Error, TypeError, ValueError) as e:
    _usage_error(str(e).splitlines()[0])


class _QuietLibraries(std_logging.Filter):
  """Drops library INFO chatter (Orbax logs ~20 lines per checkpoint)."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or "/orbax/" not in record.pathname)


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  config = flags.FLAGS.config
  workdir = os.path.join(flags.FLAGS.workdir, flags.FLAGS.experiment)
  logging.info("experiment %s, workdir %s\n%s", flags.FLAGS.experiment,
               workdir, config)
  try:
    experiments.get_program(config)(config, workdir)
  except InputError as e:
    print(f"run.py: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
