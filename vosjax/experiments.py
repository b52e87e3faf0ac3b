"""Finding experiment configs and the program that runs them.

An experiment is a plain Python file `experiments/<name>.py` exposing
`get_config() -> ml_collections.ConfigDict`. The config names the program that
runs it in `config.program`; the program is `vosjax.programs.<program>.run`.
Nothing needs registering: adding a file adds an experiment.
"""

import ast
import importlib
import os
import pathlib

from vosjax.errors import InputError

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def available_experiments(directory=EXPERIMENTS_DIR):
  """Names of the experiment files in `directory`, sorted."""
  return sorted(
      p.stem for p in pathlib.Path(directory).glob("*.py")
      if not p.stem.startswith("_"))


def experiment_path(name, directory=EXPERIMENTS_DIR):
  """Path of experiment `name`; ValueError naming the choices if unknown."""
  names = available_experiments(directory)
  if name not in names:
    raise ValueError(
        f"unknown experiment {name!r}; available: {', '.join(names)}")
  return os.fspath(pathlib.Path(directory) / f"{name}.py")


def describe(name, directory=EXPERIMENTS_DIR):
  """The first line of experiment `name`'s docstring ('' if none).

  Read with `ast`, so listing the experiments imports none of them.
  """
  path = pathlib.Path(directory) / f"{name}.py"
  try:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
  except (OSError, SyntaxError, ValueError):
    return ""
  return doc.strip().splitlines()[0] if doc.strip() else ""


def validate_config(config):
  """One-line `InputError` for counts that can only be meant as >= 1 (or 0).

  Checked before anything is compiled: every field named `batch_size`,
  `*_batch_size` or `*_every` must be a whole number >= 1 (0 divides by zero
  or builds an empty batch), every `num_steps` one >= 0 (0 means "no
  training" where a program allows it, e.g. pml; `train.fit` refuses 0).
  Every field named `compute_dtype` must be one of
  `vosjax.models.conv3d.COMPUTE_DTYPES` ("float32", "bfloat16").
  """
  # pylint: disable=g-import-not-at-top
  from vosjax import workdir
  from vosjax.models import conv3d
  # pylint: enable=g-import-not-at-top
  for field, value in sorted(workdir.config_to_dict(config).items()):
    name = field.rsplit(".", 1)[-1]
    if name == "compute_dtype":
      conv3d.compute_dtype(value, flag=f"--config.{field}")
      continue
    if name == "num_steps":
      low = 0
    elif name.endswith("batch_size") or name.endswith("_every"):
      low = 1
    else:
      continue
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise InputError(f"--config.{field}={value!r}: must be a whole number "
                       f">= {low}")


def get_program(config):
  """The `run(config, workdir)` function of the config's program."""
  module = importlib.import_module(f"vosjax.programs.{config.program}")
  return module.run
