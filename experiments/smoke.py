"""Smoke test of the whole stack: a tiny conv net segments synthetic disks."""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.program = "smoke"
  config.seed = 0
  config.image_size = 32
  config.batch_size = 16
  config.num_steps = 200
  config.learning_rate = 3e-2
  return config
