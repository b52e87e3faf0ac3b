"""PML on the CPU protocol: DAVIS 2016 (train sequences at hand -> val).

`python run.py --experiment=pml_davis16_cpu --config.data_dir=../shared/data/DAVIS`

The paper's COCO DeepLab ResNet-101 is not obtainable offline; this trains
the embedding head (and the backbone with it) on the Kinetics-400 I3D
features of `pml_i3d_zero_shot`, which scores J&F 0.348 on val at half
resolution untrained. Measured on 2 shared cores: a step of 2 videos (3
frames each, every frame embedded in its own 8-frame retrieval clip, 160x160
crops) takes 6-11 s, retrieval at half resolution about 0.3 s a frame. So:
150 Adam steps (~20 min), retrieval at half resolution with the paper's
online adaptation (~7 min).
"""

from experiments import _davis
from experiments import pml_i3d_zero_shot


def get_config():
  config = pml_i3d_zero_shot.get_config()
  config.data_dir = ""
  config.data.train_sequences = _davis.CPU_PROTOCOL_TRAIN
  config.model.use_head = True
  config.train.num_steps = 150
  config.train.batch_size = 2
  config.train.crop_size = 160
  config.train.checkpoint_every = 25
  config.train.log_every = 10
  config.eval.name = "pml_i3d_trained"
  config.eval.clip_len = 8
  config.eval.scale = 0.5
  config.eval.online = True
  return config
