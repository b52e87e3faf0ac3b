"""A PyTorch VGG16 trunk that loads vosjax's parameters: the side-by-side baseline.

Written for `bench_vgg.py` from the architecture `vosjax.models.vgg`
implements (VGG16 configuration D up to conv5_3, Simonyan & Zisserman 2015),
in torchvision's conventions (NCHW, `nn.Conv2d(padding=1)`, `MaxPool2d(2, 2,
ceil_mode=True)` as OSVOS-PyTorch's networks/vgg_osvos.py), plus the
DeepLab-LargeFOV dense variant (pool4 3x3 stride 1 pad 1, conv5 dilated by
2). No code is taken from torchvision. PyTorch is optional: nothing in
vosjax imports this module.

`load_flax(model, params)` copies a `vosjax.models.vgg.VGG16`'s params
(HWIO kernels -> OIHW) into the module, so both frameworks run the same
network on the same image; `bench_vgg.py` prints their largest output
difference as the check that they do.
"""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from vosjax.models import vgg as vgg_lib


class VGG16(nn.Module):
  """VGG16 trunk up to conv5_3 (post-ReLU), NCHW, input already normalised
  as `vgg.normalize` does (the normalisation is not timed on either side:
  vosjax's is one fused elementwise pass)."""

  def __init__(self, in_channels=3, output_stride=16):
    super().__init__()
    self.output_stride = output_stride
    self.convs = nn.ModuleDict()
    cin = in_channels
    for stage, chans in vgg_lib.STAGES:
      dense = 2 ** (stage - 1) > output_stride
      rate = 2 if dense else 1
      for i, c in enumerate(chans):
        self.convs[f"conv{stage}_{i + 1}"] = nn.Conv2d(
            cin, c, 3, padding=rate, dilation=rate)
        cin = c

  def forward(self, x):
    for stage, chans in vgg_lib.STAGES:
      if stage > 1 and 2 ** (stage - 1) > self.output_stride:
        x = F.max_pool2d(x, 3, 1, 1)
      elif stage > 1:
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
      for i in range(len(chans)):
        x = F.relu(self.convs[f"conv{stage}_{i + 1}"](x))
    return x


def load_flax(model, params):
  """Copies vosjax VGG16 params ({'conv1_1': {'kernel', 'bias'}, ...}) in."""
  with torch.no_grad():
    for name, conv in model.convs.items():
      kernel = np.asarray(params[name]["kernel"])  # HWIO
      conv.weight.copy_(torch.from_numpy(
          np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
      conv.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"])))
  return model
