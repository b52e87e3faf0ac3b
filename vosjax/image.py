"""The one home of the model input range: RGB uint8 <-> [-1, 1] float32.

Every network here (I3D, FC-I3D, PML, the VGG16 of OSVOS/MaskTrack) takes RGB
in [-1, 1], I3D's input range (Carreira & Zisserman 2017, kinetics-i3d);
a model that needs another normalisation (torchvision's ImageNet mean/std)
converts from this range itself.

Also the one home of resizing frames, masks and logits by a scale factor
(methods that predict below 854x480 and upsample before the threshold).
"""

import cv2
import numpy as np


def to_model_range(rgb):
  """`uint8` RGB in [0, 255] -> float32 in [-1, 1] (NumPy or JAX arrays)."""
  return rgb.astype(np.float32) / 127.5 - 1.0


def to_uint8(x):
  """float in [-1, 1] -> uint8 RGB in [0, 255], rounded and clipped."""
  return np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(
      np.uint8)


def resize(images, scale, nearest=False):
  """`[N, H, W(, C)]` resized by `scale`: INTER_AREA (frames), or nearest
  for object ids (`nearest=True`). `scale == 1` returns `images` itself."""
  if scale == 1.0:
    return images
  h, w = images.shape[1:3]
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  mode = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_AREA
  return np.stack([cv2.resize(x, size, interpolation=mode) for x in images])


def upsample(maps, height, width):
  """float `[N, h, w]` logits or probabilities -> `[N, height, width]`,
  bilinear (the threshold comes after, at the original resolution)."""
  maps = np.asarray(maps)
  if maps.shape[1:3] == (height, width):
    return maps
  return np.stack([cv2.resize(m, (width, height),
                              interpolation=cv2.INTER_LINEAR) for m in maps])


def logits_at_scales(predict, frames, scales, flip=False):
  """Test-time augmentation: the mean over `scales` (and, with `flip`, over
  each scale's frames and their mirror image) of `predict(frames resized by
  scale)`, each upsampled bilinearly to the frames' size.

  Args:
    predict: uint8 `[N, h, w, 3]` -> float `[N, h, w]` logits.
    frames: uint8 `[N, H, W, 3]`.
    scales: one or more resize factors (one without `flip`:
      `upsample(predict(resize))`, the single-scale path, exactly).
    flip: also predict the horizontally mirrored frames and mirror their
      logits back before averaging.

  Returns:
    float `[N, H, W]`, averaged before any threshold.
  """
  height, width = frames.shape[1:3]
  total, count = None, 0
  for scale in scales:
    small = resize(frames, scale)
    views = [predict(small)]
    if flip:
      mirrored = predict(np.ascontiguousarray(small[:, :, ::-1]))
      views.append(np.ascontiguousarray(np.asarray(mirrored)[:, :, ::-1]))
    for logits in views:
      logits = upsample(logits, height, width)
      total = logits if total is None else total + logits
      count += 1
  return total if count == 1 else total / count


def augmented_logits(predict, frames, inference_config):
  """`logits_at_scales` with an `inference` config section's views.

  `inference.scales` (a tuple; empty or absent: `(inference.scale,)`, scale
  1.0 when that is absent too) and `inference.flip` (default False): the one
  place where methods read their test-time augmentation.
  """
  ic = inference_config
  scales = tuple(ic.get("scales", ())) or (ic.get("scale", 1.0),)
  return logits_at_scales(predict, frames, scales, flip=ic.get("flip", False))
