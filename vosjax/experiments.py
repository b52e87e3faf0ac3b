"""Finding experiment configs and the program that runs them.

An experiment is a plain Python file `experiments/<name>.py` exposing
`get_config() -> ml_collections.ConfigDict`. The config names the program that
runs it in `config.program`; the program is `vosjax.programs.<program>.run`.
Nothing needs registering: adding a file adds an experiment.
"""

import ast
import importlib
import importlib.util
import os
import pathlib
import sys

from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

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


def load_config(name, directory=EXPERIMENTS_DIR):
  """`experiments/<name>.py:get_config()`, loaded by path as run.py's
  `config_flags.DEFINE_config_file` loads it.

  Experiment files import each other as `experiments.x`, so the folder above
  `directory` (the repository root) is put on `sys.path` if missing.

  Raises:
    ValueError: unknown `name`, naming the choices.
  """
  path = experiment_path(name, directory)
  root = os.fspath(pathlib.Path(directory).resolve().parent)
  if root not in sys.path:
    sys.path.insert(0, root)
  spec = importlib.util.spec_from_file_location(f"_vosjax_experiment_{name}",
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def override_config(config, overrides):
  """Sets `{"a.b": value}` fields of `config` in place and returns it.

  String values are parsed to the field's type by ml_collections' own
  `--config.a.b=value` parsers, exactly as run.py's command line is; other
  values are assigned (the ConfigDict checks their type).

  Raises:
    ValueError: one line naming the field: no such field, or a value that
      does not parse or has the wrong type.
  """
  args = []
  for field, value in (overrides or {}).items():
    try:
      config_path.get_value(field, config)
    except (KeyError, AttributeError, IndexError):
      raise ValueError(f"--config.{field}: no such field") from None
    if isinstance(value, str):
      args.append(f"--config.{field}={value}")
      continue
    holder, _, leaf = field.rpartition(".")
    try:
      (config_path.get_value(holder, config) if holder else config)[leaf] = (
          value)
    except (TypeError, ValueError) as e:
      raise ValueError(f"--config.{field}={value!r}: {e}") from None
  if args:
    argv = ["override_config"] + args
    parsed = flags.FlagValues()
    try:
      config_flags.DEFINE_config_dict("config", config, flag_values=parsed,
                                      lock_config=False, sys_argv=argv)
      parsed(argv)
    except (flags.Error, TypeError, ValueError) as e:
      raise ValueError(str(e).splitlines()[0]) from None
  return config


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
