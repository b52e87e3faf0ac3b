"""The one home of the model input range: RGB uint8 <-> [-1, 1] float32.

Every network here (I3D, FC-I3D, PML, the VGG16 of OSVOS/MaskTrack) takes RGB
in [-1, 1], I3D's input range (Carreira & Zisserman 2017, kinetics-i3d);
a model that needs another normalisation (torchvision's ImageNet mean/std)
converts from this range itself.
"""

import numpy as np


def to_model_range(rgb):
  """`uint8` RGB in [0, 255] -> float32 in [-1, 1] (NumPy or JAX arrays)."""
  return rgb.astype(np.float32) / 127.5 - 1.0


def to_uint8(x):
  """float in [-1, 1] -> uint8 RGB in [0, 255], rounded and clipped."""
  return np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(
      np.uint8)
