"""OSVOS on the CPU protocol: DAVIS 2016 (train sequences at hand -> val).

`python run.py --experiment=osvos_davis16_cpu --config.data_dir=../shared/data/DAVIS`

The released recipe (osvos_davis16) cut to about 75 minutes on 2 CPU cores.
Measured there: a VGG16 OSVOS training step of 4 crops of 224x224 takes
about 14 s (XLA:CPU), so the budget buys few images. The ImageNet trunk does
most of the work; the choices, each to fit the budget:
  * parent: 150 steps of 4 crops of 160x160 (about 7 s a step);
  * one-shot: 20 steps of 2 augmented 160x160 crops of the half-resolution
    first frame per sequence (the release: 2000 steps of 5 full frames);
  * prediction of the one-shot variant only, at 0.25 scale (214x120),
    logits upsampled bilinearly to 854x480 before the threshold; the
    parent's prediction would double the stage (enable it with
    --config.inference.parent=True).
The first-frame masks given to the method are the originals.
"""

from experiments import _davis
from experiments import osvos_davis16


def get_config():
  config = osvos_davis16.get_config()
  config.data.train_sequences = _davis.CPU_PROTOCOL_TRAIN
  config.train.batch_size = 4
  config.train.num_steps = 150
  config.train.steps_per_epoch = 25
  config.train.crop_size = 160
  config.train.checkpoint_every = 25
  config.train.log_every = 5

  config.finetune.num_steps = 20
  config.finetune.batch_size = 2
  config.finetune.pool_size = 16
  config.finetune.scale = 0.5
  config.finetune.crop_size = 160

  config.inference.parent = False
  config.inference.scale = 0.25
  config.inference.batch_size = 8
  return config
