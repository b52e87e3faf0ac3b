"""vosjax.experiments: loading experiment files and overriding their fields."""

import pytest

from vosjax import experiments


def test_load_config_by_name_and_unknown_name():
  config = experiments.load_config("pml_vgg16_davis16_cpu")
  # A variant: its base's fields plus its own (pml_davis16_cpu -> ...).
  assert config.program == "pml" and config.model.backbone == "vgg"
  assert config.data.train_sequences.startswith("bear,")
  with pytest.raises(ValueError, match="unknown experiment 'nope'.*smoke"):
    experiments.load_config("nope")


def test_override_config_parses_strings_like_the_command_line():
  """Reference: the types run.py's --config.a.b=v flags give each field."""
  config = experiments.load_config("pml_davis16")
  got = experiments.override_config(config, {
      "eval.scale": "0.5", "eval.online": "false", "train.num_steps": "7",
      "data.val_sequences": "a,b", "eval.k": 3})
  assert got is config
  assert config.eval.scale == 0.5 and isinstance(config.eval.scale, float)
  assert config.eval.online is False
  assert config.train.num_steps == 7
  assert config.data.val_sequences == "a,b"
  assert config.eval.k == 3


@pytest.mark.parametrize("overrides, message", [
    ({"eval.scalez": "1"}, r"^--config.eval.scalez: no such field$"),
    ({"nope.x": 1}, r"^--config.nope.x: no such field$"),
    ({"eval.scale": "abc"}, r"--config.eval.scale=abc"),
    ({"eval.online": "maybe"}, r"--config.eval.online=maybe"),
    ({"eval.scale": "[1]"}, r"--config.eval.scale"),
    ({"train.num_steps": 1.5}, r"^--config.train.num_steps=1.5: "),
])
def test_override_config_bad_field_or_value_is_one_line(overrides, message):
  config = experiments.load_config("pml_davis16")
  with pytest.raises(ValueError, match=message) as info:
    experiments.override_config(config, overrides)
  assert "\n" not in str(info.value)


def test_every_experiment_passes_validate_config():
  for name in experiments.available_experiments():
    experiments.validate_config(experiments.load_config(name))


@pytest.mark.parametrize("name, overrides, message", [
    ("pml_i3d_zero_shot", {"eval.scale": 0.0},
     "config.eval.scale=0.0: must be a number in (0, 4]"),
    ("pml_i3d_zero_shot", {"eval.scale": 4.5},
     "config.eval.scale=4.5: must be a number in (0, 4]"),
    ("pml_i3d_zero_shot", {"eval.scale": float("nan")},
     "config.eval.scale=nan: must be a number in (0, 4]"),
    ("osvos_demo", {"inference.scale": -1.0},
     "config.inference.scale=-1.0: must be a number in (0, 4]"),
    ("osvos_demo", {"finetune.scale": 0.0},
     "config.finetune.scale=0.0: must be a number in (0, 4]"),
    ("pml_i3d_zero_shot", {"eval.k": 0},
     "config.eval.k=0: must be a whole number >= 1"),
    ("pml_i3d_zero_shot", {"eval.clip_len": 0},
     "config.eval.clip_len=0: must be a whole number >= 1"),
    ("fc_i3d_demo", {"inference.tile": 0},
     "config.inference.tile=0: must be a whole number >= 1"),
    ("fc_i3d_demo", {"inference.stride": 300},
     "config.inference.stride=300: must be <= config.inference.tile (64); a "
     "larger step leaves frames or pixels between windows unpredicted"),
    ("fc_i3d_demo", {"inference.clip_stride": 9},
     "config.inference.clip_stride=9: must be <= config.inference.clip_len "
     "(8); a larger step leaves frames or pixels between windows "
     "unpredicted"),
    ("pml_demo", {"train.learning_rate": -0.001},
     "config.train.learning_rate=-0.001: must be a number >= 0"),
    ("osvos_demo", {"train.momentum": 1.0},
     "config.train.momentum=1.0: must be a number in [0, 1)"),
    ("pml_demo", {"eval.online_confidence_ratio": 0.0},
     "config.eval.online_confidence_ratio=0.0: must be a number in (0, 1]"),
    ("osvos_demo", {"train.scale_range": (1.25, 0.75)},
     "config.train.scale_range=[1.25, 0.75]: must be two numbers low, high "
     "with 0 < low <= high"),
    ("fc_i3d_demo", {"inference.scales": (0.5, 0.0)},
     "config.inference.scales=[0.5, 0.0]: must be resize factors, each in "
     "(0, 4] (empty: the single `scale`)"),
    ("osvos_demo", {"data.val_sequences": ","},
     "config.data.val_sequences=',': names no sequence; give "
     "comma-separated names, or leave it empty for the whole split"),
    ("osvos_demo", {"data.train_sequences": " , "},
     "config.data.train_sequences=' , ': names no sequence; give "
     "comma-separated names, or leave it empty for the whole split"),
    ("pml_demo", {"eval.upsample": "bilinear"},
     "config.eval.upsample='bilinear': must be 'labels' or 'distances'"),
    ("pml_demo", {"eval.upsample": "distances", "eval.k": 3},
     "config.eval.upsample=distances needs config.eval.k=1 (got 3): "
     "distances are upsampled for the nearest neighbour"),
    ("fc_i3d_demo", {"model.compute_dtype": "float16"},
     "config.model.compute_dtype='float16': expected one of 'float32', "
     "'bfloat16'"),
])
def test_validate_config_names_the_field_in_one_line(name, overrides,
                                                     message):
  config = experiments.override_config(experiments.load_config(name),
                                       overrides)
  with pytest.raises(experiments.InputError) as info:
    experiments.validate_config(config, prefix="config.")
  assert str(info.value) == message
  # By default it names the command line's flag (run.py, segment_video).
  with pytest.raises(experiments.InputError) as info:
    experiments.validate_config(config)
  assert str(info.value) == message.replace("config.", "--config.")


def test_validate_config_keeps_legitimate_edge_values():
  config = experiments.override_config(experiments.load_config("osvos_demo"), {
      "inference.scale": 4.0, "train.momentum": 0.0,
      "train.learning_rate": 0.0, "data.val_sequences": "a, b,",
      "finetune.max_batch_sequences": 0, "train.num_steps": 0})
  experiments.validate_config(config)
