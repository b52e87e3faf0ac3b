"""MaskTrack's network: a segmentation convnet with the previous mask as input.

Perazzi, Khoreva et al., "Learning Video Object Segmentation from Static
Images", CVPR 2017, Sec. 3.1: the RGB input of DeepLabv2-VGG16 is extended
by a fourth channel holding the previous frame's mask estimate; the network
refines it into the current frame's mask.

Here the network is OSVOS's (`vosjax.models.osvos.OSVOS`: ImageNet VGG16 with
HED side outputs and full-resolution fused logits) with its first conv
widened to 4 input channels by zero taps (`vgg.widen_first_conv`), so before
any training the mask channel is ignored and the network is exactly the
3-channel one. Deviation: the paper's DeepLabv2-VGG16 (atrous convolutions,
output stride 8, bilinear upsampling) is not available as weights here; the
OSVOS network is the closest faithful choice over the ImageNet VGG16 at hand.

Mask channel encoding: `2 * m - 1` for a mask (or foreground probability) m
in [0, 1], i.e. in [-1, 1] like the RGB channels (vgg.normalize leaves extra
channels as they are): background -1, foreground +1, undecided 0.
"""

import jax.numpy as jnp
import numpy as np

from vosjax import image
from vosjax.models import osvos

INPUT_CHANNELS = 4
build_model = osvos.build_model
learning_rate_multipliers = osvos.learning_rate_multipliers


def init_variables(model, model_config, rng, height=32, width=32):
  """Initial 4-channel variables (ImageNet trunk widened with zero taps).

  Args:
    model: an OSVOS (`build_model`).
    model_config: `config.model` (`init`: "imagenet" or "random").
    rng: jax PRNG key.
    height, width: the sample input's size (parameters do not depend on it).
  """
  return osvos.init_variables(model, model_config,
                              (1, height, width, INPUT_CHANNELS), rng)


def mask_channel(mask):
  """`[..., H, W]` mask / probability in [0, 1] -> `[..., H, W, 1]` in [-1, 1]."""
  return (2.0 * jnp.asarray(mask, jnp.float32) - 1.0)[..., None]


def model_input(frames, masks):
  """The 4-channel input.

  Args:
    frames: `[..., H, W, 3]` uint8 RGB, or float32 in [-1, 1].
    masks: `[..., H, W]` in [0, 1] (binary {0, 1} or probabilities).

  Returns:
    `[..., H, W, 4]` float32: RGB in [-1, 1], then `mask_channel(masks)`.
  """
  frames = jnp.asarray(frames)
  if frames.dtype == jnp.uint8:
    frames = image.to_model_range(frames)
  return jnp.concatenate([frames.astype(jnp.float32), mask_channel(masks)],
                         axis=-1)


def apply_fused(model, variables, frames, masks):
  """Fused logits `[B, H, W]` of frames `[B, H, W, 3]` given masks `[B, H, W]`."""
  return model.apply(variables, model_input(frames, masks))[0][..., 0]


def flow_image(flow, min_scale=1.0):
  """Optical flow `[H, W, 2]` -> its magnitude as a gray RGB image.

  MaskTrack's flow stream sees the flow magnitude as an image (Sec. 3.3).
  The magnitude is divided by the frame's maximum (at least `min_scale`
  pixels, so a still frame stays dark instead of amplifying noise) and
  replicated over 3 channels, so it goes through the RGB path unchanged.

  Returns:
    `[H, W, 3]` uint8: 0 = no motion, 255 = the frame's fastest motion.
  """
  mag = np.sqrt((np.asarray(flow, np.float32) ** 2).sum(-1))
  scaled = mag / max(float(mag.max()), min_scale)
  gray = np.clip(np.round(255.0 * scaled), 0, 255).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1)
