"""Finding experiment configs and the program that runs them.

An experiment is a plain Python file `experiments/<name>.py` exposing
`get_config() -> ml_collections.ConfigDict`. The config names the program that
runs it in `config.program`; the program is `vosjax.programs.<program>.run`.
Nothing needs registering: adding a file adds an experiment.
"""

import ast
import importlib
import importlib.util
import math
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


# Value checks of `validate_config`, by the last part of a field's name.
# Each bad value here failed late (a traceback after loading or training) or,
# worse, silently: `eval.scale=0` made every frame after the first
# background, a negative learning rate climbs the loss.
_WHOLE_AT_LEAST = {
    # Counts and sizes: 0 divides by zero, builds empty batches or windows.
    1: ("k", "clip_len", "clip_stride", "stride", "tile", "num_frames",
        "crop_size", "chunk_size", "ref_chunk_size", "clips_per_sequence",
        "pool_size", "steps_per_epoch", "length_bucket", "online_capacity",
        "anchors_per_object", "pool_per_object", "num_ref_frames",
        "max_objects", "image_size", "height", "width", "num_val",
        "embed_dim", "hidden_dim", "side_features"),
    # 0 means "none" or "automatic" (num_steps=0: no training where a
    # program allows it, e.g. pml; `train.fit` refuses 0).
    0: ("num_steps", "max_batch_sequences", "online_max_add_per_frame",
        "dilation_radius", "finetune_dilation_radius", "max_frames_apart",
        "warmup_steps"),
}
# (low, high, low included, high included) of real-valued fields.
_RANGES = {
    "scale": (0.0, 4.0, False, True),  # Resize factors of frames.
    "width_multiplier": (0.0, math.inf, False, False),
    "learning_rate": (0.0, math.inf, True, False),
    "weight_decay": (0.0, math.inf, True, False),
    "margin": (0.0, math.inf, True, False),
    "momentum": (0.0, 1.0, True, False),
    "min_foreground": (0.0, 1.0, True, True),
    "online_confidence_ratio": (0.0, 1.0, False, True),
}
# Comma-separated sequence names; empty chooses the whole split.
_SEQUENCE_LISTS = ("train_sequences", "val_sequences")
# (window, step) pairs where a step beyond the window skips frames or pixels.
_WINDOW_STEPS = (("inference.tile", "inference.stride"),
                 ("inference.clip_len", "inference.clip_stride"))


def _is_number(value):
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _interval(low, high, low_in, high_in):
  return (f"{'[' if low_in else '('}{low:g}, "
          f"{high:g}{']' if high_in else ')'}")


def _check_value(name, value, flag):
  """One-line `InputError` for a bad value of field `name` (its last part)."""
  for low, fields in _WHOLE_AT_LEAST.items():
    if name in fields or (low == 1 and (name.endswith("batch_size")
                                        or name.endswith("_every"))):
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{flag}={value!r}: must be a whole number >= {low}")
      return
  if name in _RANGES:
    low, high, low_in, high_in = _RANGES[name]
    if not _is_number(value) or not (
        (low <= value if low_in else low < value) and
        (value <= high if high_in else value < high)):
      what = (f">= {low:g}" if high == math.inf and low_in else
              f"> {low:g}" if high == math.inf else
              f"in {_interval(low, high, low_in, high_in)}")
      raise InputError(f"{flag}={value!r}: must be a number {what}")
  elif name == "scale_range":
    if (not isinstance(value, (list, tuple)) or len(value) != 2
        or not all(_is_number(v) for v in value)
        or not 0 < value[0] <= value[1]):
      raise InputError(f"{flag}={value!r}: must be two numbers low, high "
                       f"with 0 < low <= high")
  elif name == "scales":
    low, high, _, _ = _RANGES["scale"]
    if not isinstance(value, (list, tuple)) or not all(
        _is_number(v) and low < v <= high for v in value):
      raise InputError(f"{flag}={value!r}: must be resize factors, each "
                       f"in {_interval(*_RANGES['scale'])} (empty: the "
                       f"single `scale`)")
  elif name in _SEQUENCE_LISTS:
    if not isinstance(value, str):
      raise InputError(f"{flag}={value!r}: must be comma-separated sequence "
                       f"names (empty: the whole split)")
    parts = [p.strip() for p in value.split(",")]
    if value.strip() and not any(parts):
      raise InputError(f"{flag}={value!r}: names no sequence; give "
                       f"comma-separated names, or leave it empty for the "
                       f"whole split")


def validate_config(config, prefix="--config."):
  """One-line `InputError` for a config value that cannot be meant.

  Checked before anything is read, compiled or written, by run.py and by
  `segment.load` (after its overrides), so both refuse the same values:

  - counts: every field named `batch_size`, `*_batch_size` or `*_every`,
    and those in `_WHOLE_AT_LEAST[1]` (`eval.k`, clip lengths, strides,
    tiles, crop sizes, chunk sizes, ...), a whole number >= 1; `num_steps`
    and the others of `_WHOLE_AT_LEAST[0]` >= 0;
  - real values in `_RANGES`: `eval.scale`, `inference.scale` and
    `finetune.scale` in (0, 4]; learning rates, weight decay and the triplet
    margin >= 0; momentum in [0, 1); ...; `scale_range` 0 < low <= high;
    `inference.scales` resize factors each in (0, 4], or empty;
  - `inference.stride <= inference.tile` and `inference.clip_stride <=
    inference.clip_len` (a larger step never predicts what lies between);
  - `data.train_sequences` / `data.val_sequences`: empty (the whole split)
    or naming at least one sequence (`,` is an error, as `--sequences ,` is
    for `python -m vosjax.evaluate`);
  - `eval.upsample` "labels" or "distances" (the latter with `eval.k=1`);
  - every field named `compute_dtype` one of
    `vosjax.models.conv3d.COMPUTE_DTYPES` ("float32", "bfloat16").

  Args:
    config: the resolved `ml_collections.ConfigDict`.
    prefix: put before the dotted field in messages: "--config." (the
      command line's flag, `--config.eval.scale=0.0: ...`; `segment.load`
      rewrites it in its caller's terms), or e.g. "config." elsewhere.
  """
  # pylint: disable=g-import-not-at-top
  from vosjax import workdir
  from vosjax.models import conv3d
  # pylint: enable=g-import-not-at-top
  fields = workdir.config_to_dict(config)
  for field, value in sorted(fields.items()):
    name = field.rsplit(".", 1)[-1]
    if name == "compute_dtype":
      conv3d.compute_dtype(value, flag=f"{prefix}{field}")
    else:
      _check_value(name, value, f"{prefix}{field}")
  upsample = fields.get("eval.upsample")
  if upsample is not None:
    # Literal here: importing vosjax.retrieval would pull in JAX.
    if upsample not in ("labels", "distances"):
      raise InputError(f"{prefix}eval.upsample={upsample!r}: must be "
                       f"'labels' or 'distances'")
    if upsample == "distances" and fields.get("eval.k", 1) != 1:
      raise InputError(f"{prefix}eval.upsample=distances needs "
                       f"{prefix}eval.k=1 (got {fields['eval.k']!r}): "
                       f"distances are upsampled for the nearest neighbour")
  for window, step in _WINDOW_STEPS:
    if window in fields and step in fields and fields[step] > fields[window]:
      raise InputError(
          f"{prefix}{step}={fields[step]!r}: must be <= {prefix}{window} "
          f"({fields[window]!r}); a larger step leaves frames or pixels "
          f"between windows unpredicted")


def get_program(config):
  """The `run(config, workdir)` function of the config's program."""
  module = importlib.import_module(f"vosjax.programs.{config.program}")
  return module.run
