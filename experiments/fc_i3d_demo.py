"""The embedded demo: FC-I3D end to end on synthetic DAVIS-format videos.

A tiny FC-I3D (random init) is trained on generated sequences, fine-tuned one
shot per validation sequence, and evaluated with the official J and F beside
the "copy the first-frame mask" baseline, in a few minutes on 2 CPU cores.
"""

from experiments import fc_i3d_davis16


def get_config():
  config = fc_i3d_davis16.get_config()
  config.data.synthetic = True
  config.data.num_train = 6
  config.data.num_val = 3
  config.data.num_frames = 16
  config.data.height = 96
  config.data.width = 160

  config.model.width_multiplier = 1 / 8
  config.model.side_features = 8
  config.model.init = "random"

  config.train.num_steps = 240
  config.train.batch_size = 8
  config.train.clip_len = 8
  config.train.crop_size = 64
  config.train.learning_rate = 1e-2
  config.train.steps_per_epoch = 50
  config.train.checkpoint_every = 80
  config.train.log_every = 25

  # Fewer, larger one-shot steps than the paper: the demo's budget is compile
  # time plus minutes, and the dreamed clips are small.
  config.finetune.num_steps = 30
  config.finetune.learning_rate = 1e-2
  config.finetune.num_frames = 8

  config.inference.tile = 64
  config.inference.stride = 32
  config.inference.clip_len = 8
  config.inference.clip_stride = 4
  return config
