"""Finding experiment configs and the program that runs them.

An experiment is a plain Python file `experiments/<name>.py` exposing
`get_config() -> ml_collections.ConfigDict`. The config names the program that
runs it in `config.program`; the program is `vosjax.programs.<program>.run`.
Nothing needs registering: adding a file adds an experiment.
"""

import importlib
import os
import pathlib

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


def get_program(config):
  """The `run(config, workdir)` function of the config's program."""
  module = importlib.import_module(f"vosjax.programs.{config.program}")
  return module.run
