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
