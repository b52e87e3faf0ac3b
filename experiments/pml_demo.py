"""The embedded PML demo: synthetic DAVIS-format videos, a tiny model, CPU.

A tiny DeepLab-style ResNet (random init) is trained with the modified triplet
loss on generated sequences, then every validation video is segmented by
nearest-neighbour retrieval from its first-frame mask (with online
adaptation) and scored with the official J and F beside the "copy the
first-frame mask" baseline, in a few minutes on 2 CPU cores.
"""

from experiments import pml_davis16


def get_config():
  config = pml_davis16.get_config()
  config.data.synthetic = True
  config.data.num_train = 6
  config.data.num_val = 3
  config.data.num_frames = 16
  config.data.height = 96
  config.data.width = 160

  config.model.width_multiplier = 1 / 16
  config.model.resnet_stage_blocks = "1,1,1,1"
  config.model.embed_dim = 32
  config.model.hidden_dim = 64

  config.train.num_steps = 300
  config.train.batch_size = 4
  config.train.crop_size = 64
  config.train.num_ref_frames = 2
  config.train.max_frames_apart = 4
  config.train.anchors_per_object = 64
  config.train.pool_per_object = 256
  config.train.learning_rate = 1e-3
  config.train.checkpoint_every = 100
  config.train.log_every = 25

  config.eval.clip_len = 16
  config.eval.online_capacity = 1024
  config.eval.online_max_add_per_frame = 64
  config.eval.chunk_size = 1024
  config.eval.ref_chunk_size = 1024
  return config
