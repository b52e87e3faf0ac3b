"""DeepLab-v2-style ResNet (bottleneck, atrous last two stages, stride 8).

The PML embedding backbone (Chen et al., CVPR 2018) is DeepLab-v2 ResNet-101
(Chen et al., TPAMI 2017): a ResNet whose stages 4 and 5 ('block3', 'block4'
here) keep stride 1 and use dilation 2 and 4 instead, so features come out at
1/8 of the input resolution with the receptive field of the stride-32 net.

Weights: DeepLab's COCO-pretrained Caffe models are not obtainable offline.
The network starts from random init; `load_weights_npz` is the hook for
weights converted elsewhere into an .npz keyed by this module's parameter
paths ('/'-joined, e.g. 'params/block3_0/conv1/kernel').
"""

import os
from typing import Optional, Tuple

import flax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# (blocks per stage) for the depths of He et al. 2016, Table 1.
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# (bottleneck width, stride, dilation) per stage: output stride 8.
STAGES = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))
EXPANSION = 4

COCO_WEIGHTS_NOTE = (
    "DeepLab-v2 ResNet-101 COCO weights (Caffe, Chen et al. 2017) are not "
    "available offline; convert them to an .npz keyed by the Flax parameter "
    "paths of vosjax.models.resnet.ResNet and pass it to load_weights_npz.")


def _ch(c, width):
  return max(1, int(round(c * width)))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided / dilated) -> 1x1, with a projection shortcut."""
  width: int
  stride: int = 1
  dilation: int = 1
  project: bool = False

  @nn.compact
  def __call__(self, x, *, train=False):
    norm = lambda name: nn.BatchNorm(use_running_average=not train,
                                     momentum=0.9, name=name)
    y = nn.Conv(self.width, (1, 1), use_bias=False, name="conv1")(x)
    y = nn.relu(norm("bn1")(y))
    y = nn.Conv(self.width, (3, 3), strides=self.stride,
                kernel_dilation=self.dilation, padding=self.dilation,
                use_bias=False, name="conv2")(y)
    y = nn.relu(norm("bn2")(y))
    y = nn.Conv(self.width * EXPANSION, (1, 1), use_bias=False,
                name="conv3")(y)
    # Zero-init of the last BN scale makes each block start as identity.
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     scale_init=nn.initializers.zeros, name="bn3")(y)
    if self.project:
      x = nn.Conv(self.width * EXPANSION, (1, 1), strides=self.stride,
                  use_bias=False, name="proj_conv")(x)
      x = norm("proj_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """DeepLab-v2 ResNet trunk at output stride 8.

  Attributes:
    depth: 50, 101 or 152.
    width_multiplier: scales every channel count (tiny nets for tests).
    stage_blocks: optional blocks per stage overriding `depth` (e.g.
      (1, 1, 1, 1) for fast tests).
  """
  depth: int = 101
  width_multiplier: float = 1.0
  stage_blocks: Optional[Tuple[int, int, int, int]] = None

  @nn.compact
  def __call__(self, x, *, train=False):
    """Features of images.

    Args:
      x: `[B, H, W, 3]` float images in [-1, 1].
      train: batch statistics for BatchNorm when True.

    Returns:
      `(features [B, ceil(H/8), ceil(W/8), 2048 * width], endpoints)` with
      endpoints 'stem' (stride 4), 'block1' (4), 'block2' (8), 'block3' (8),
      'block4' (8).
    """
    blocks_per_stage = self.stage_blocks or STAGE_BLOCKS.get(self.depth)
    if blocks_per_stage is None:
      raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, "
                       f"got {self.depth}")
    endpoints = {}
    x = nn.Conv(_ch(64, self.width_multiplier), (7, 7), strides=2,
                padding=3, use_bias=False, name="stem_conv")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             name="stem_bn")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    endpoints["stem"] = x
    for s, (blocks, (width, stride, dilation)) in enumerate(
        zip(blocks_per_stage, STAGES)):
      for b in range(blocks):
        x = Bottleneck(_ch(width, self.width_multiplier),
                       stride=stride if b == 0 else 1, dilation=dilation,
                       project=b == 0, name=f"block{s + 1}_{b}")(
                           x, train=train)
      endpoints[f"block{s + 1}"] = x
    return x, endpoints


def load_weights_npz(variables, path):
  """Replaces `variables` leaves with arrays from an .npz (the weights hook).

  Args:
    variables: the model's variables (e.g. from `ResNet().init`).
    path: .npz whose keys are '/'-joined variable paths
      ('params/stem_conv/kernel', 'batch_stats/stem_bn/mean', ...).

  Returns:
    New variables with every leaf loaded.

  Raises:
    FileNotFoundError: no such file (the COCO DeepLab weights are not
      shipped; see COCO_WEIGHTS_NOTE).
    ValueError: a missing key or a shape mismatch, named.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: not found. {COCO_WEIGHTS_NOTE}")
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables),
                                         sep="/")
  with np.load(path) as data:
    out = {}
    for key, leaf in flat.items():
      if key not in data:
        raise ValueError(f"{path}: missing weight {key!r}")
      arr = data[key]
      if arr.shape != leaf.shape:
        raise ValueError(f"{path}: {key!r} has shape {arr.shape}, model "
                         f"expects {leaf.shape}")
      out[key] = jnp.asarray(arr, leaf.dtype)
  return flax.traverse_util.unflatten_dict(out, sep="/")
