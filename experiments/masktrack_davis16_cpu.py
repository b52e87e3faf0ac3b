"""MaskTrack on the CPU protocol: DAVIS 2016 (train sequences at hand -> val).

`python run.py --experiment=masktrack_davis16_cpu --config.data_dir=../shared/data/DAVIS`

The recipe (masktrack_davis16) cut to 120 offline steps of 4 224 crops of
the 9 train sequences with deformed masks, a short online stage (15 steps of
2 224 crops of the half-resolution first frame), and propagation at 0.375
scale (320x180: about 0.15 s a frame, 2 x 1,376 val frames for the offline
and online variants), probabilities upsampled bilinearly to 854x480 before
the threshold. The flow stream is off: its fine-tuning doubles the online
stage, its network doubles the propagation cost, and DIS flow (medium
preset) costs 0.17 s per 854x480 frame (0.018 s at 320x180), measured on 2
shared cores at load ~11 (`masktrack.flow_images`).

Measured in its first run, on 2 cores shared with other runs (load 4-7):
the offline stage took 2,523 s (about 21 s per step of 4 images; the guess
of about 1 s per 224x224 image this budget was chosen by was 3-5x too low
on shared cores), and a VGG16 fine-tuning step of 2 160x160 images about
4.4 s (`benchmarks/bench_finetune.py --model osvos`): the whole run takes
well over an hour on shared cores.
"""

from experiments import _davis
from experiments import masktrack_davis16


def get_config():
  config = masktrack_davis16.get_config()
  config.data.train_sequences = _davis.CPU_PROTOCOL_TRAIN
  config.train.batch_size = 4
  config.train.num_steps = 120
  config.train.steps_per_epoch = 40
  config.train.crop_size = 224
  config.train.checkpoint_every = 40
  config.train.log_every = 10

  # Fine-tuning pools at half resolution: radius 5 * 0.5.
  config.deform.finetune_dilation_radius = 3

  config.finetune.num_steps = 15
  config.finetune.batch_size = 2
  config.finetune.pool_size = 16
  config.finetune.scale = 0.5
  config.finetune.crop_size = 224

  config.flow.enabled = False
  config.inference.scale = 0.375
  config.inference.length_bucket = 16
  return config
