"""FC-I3D on the CPU protocol: DAVIS 2016 (train sequences at hand -> val).

`python run.py --experiment=fc_i3d_davis16_cpu --config.data_dir=../shared/data/DAVIS`

The paper's recipe (fc_i3d_davis16) cut to about 60-90 minutes on 2 CPU
cores, from figures measured there: a Kinetics-400 FC-I3D training step of 2
clips of 8x160x160 takes about 1.2 s; one-shot fine-tuning costs about 1.25x
a parent step per sequence-step (`finetune` strategy 'loop'); tiled inference
at 224 with stride 224 and clip stride 16 covers a 480x854 frame with 12
tiles per 16-frame window (about 0.5 s each). Choices:
  * parent: 600 steps of 2 clips of 8x160x160 (~12 min);
  * one-shot: 40 steps per sequence on 8 lucid-dreamed 8-frame 160x160
    clips (~20 min for 20 sequences, plus ~4 min of inpainting);
  * prediction at full resolution with non-overlapping tiles (~9 min per
    variant; the paper's stride 100 would be ~4x that).
"""

from experiments import _davis
from experiments import fc_i3d_davis16


def get_config():
  config = fc_i3d_davis16.get_config()
  config.data.train_sequences = _davis.CPU_PROTOCOL_TRAIN
  config.train.num_steps = 600
  config.train.batch_size = 2
  config.train.clip_len = 8
  config.train.crop_size = 160
  config.train.steps_per_epoch = 100
  config.train.checkpoint_every = 100
  config.train.log_every = 10

  config.finetune.num_steps = 40
  config.finetune.num_frames = 8
  config.finetune.clips_per_sequence = 8

  config.inference.stride = 224
  config.inference.clip_len = 16
  config.inference.clip_stride = 16
  return config
