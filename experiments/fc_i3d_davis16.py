"""FC-I3D on DAVIS 2016 with the paper's settings.

Munukutla & Jain: Kinetics-400 I3D backbone, side taps before each pooling
stage, class-balanced loss with fading side supervision, SGD momentum 0.9 at
learning rate 1e-3, 224x224 crops of 16-frame clips with >10% foreground,
one-shot fine-tuning on a lucid-dreamed first frame, tiled inference (224,
stride 100).

Real-data smoke run on CPU (see README):
  python run.py --experiment=fc_i3d_davis16 \
    --config.data_dir=../shared/data/DAVIS \
    --config.data.train_sequences=surf,dog-agility \
    --config.data.val_sequences=blackswan ...
"""

import ml_collections

from vosjax.programs import common


def get_config():
  config = ml_collections.ConfigDict()
  config.program = "fc_i3d"
  config.seed = 0

  # --config.data_dir=/path/to/DAVIS, --config.data.val_sequences=a,b, ...
  common.add_davis2016_data(config)

  config.model = ml_collections.ConfigDict()
  # Side taps before each pooling stage; add ",Mixed_5c" for the fifth.
  config.model.taps = "Conv3d_1a_7x7,Conv3d_2c_3x3,Mixed_3c,Mixed_4f"
  config.model.side_features = 16
  config.model.width_multiplier = 1.0
  config.model.conv_impl = "auto"
  config.model.init = "kinetics400"  # or "random"

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 20000
  config.train.batch_size = 8
  config.train.clip_len = 16
  config.train.crop_size = 224
  config.train.min_foreground = 0.1
  config.train.learning_rate = 1e-3
  config.train.momentum = 0.9
  config.train.weight_decay = 2e-4
  # Side supervision fades as (1 - epoch / num_epochs).
  config.train.steps_per_epoch = 500
  config.train.checkpoint_every = 1000
  config.train.log_every = 50

  config.finetune = ml_collections.ConfigDict()
  config.finetune.enabled = True
  config.finetune.num_steps = 200
  config.finetune.learning_rate = 1e-4
  config.finetune.num_frames = 16
  # Dreamed clips per sequence; each step samples batch_size of them.
  config.finetune.clips_per_sequence = 4
  # Side supervision stays on during fine-tuning (the paper's loss at epoch 0).
  config.finetune.side_loss_weight = 1.0
  config.finetune.batch_size = 1
  config.finetune.max_batch_sequences = 4

  config.inference = ml_collections.ConfigDict()
  config.inference.tile = 224
  config.inference.stride = 100
  config.inference.clip_len = 16
  config.inference.clip_stride = 8
  config.inference.batch_size = 8
  config.inference.overlays = True
  return config
