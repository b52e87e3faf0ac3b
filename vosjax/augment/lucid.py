"""Lucid data dreaming: a training clip hallucinated from one annotated frame.

Khoreva et al., "Lucid Data Dreaming for Video Object Segmentation" (IJCV
2019 / arXiv 1703.09554, 2017), Sec. 3: from the first frame and its mask,
each synthetic frame is made by

  1. cutting out the foreground object(s) and inpainting the background,
  2. perturbing background and each object independently: affine (rotation,
     scale, translation), non-rigid (a smooth deformation; the paper uses
     thin-plate splines; here a smooth random divergence-free displacement
     field, the curl of a bicubically upsampled coarse stream function, does
     the same job and keeps the object's area) and illumination
     (per-channel gain and offset),
  3. pasting the objects back over the background with a blurred (soft) alpha
     edge so no cut-out seam is learnt.

The masks go through exactly the same warps with nearest-neighbour sampling,
so every pixel keeps an input id. Objects are composited in increasing id
order (a fixed depth order: a higher id occludes a lower one). The paper's
released code only flipped and noised the first frame; this implements the
method the paper describes.

`dream_frames` gives the full-resolution clip (frame 0 is the input);
`dream_clip` adds the clip-consistent crop and horizontal flip used for
training. All randomness comes from `numpy.random.default_rng(seed)`, drawn
in a fixed order, so a seed gives the same clip on every machine.
"""

import dataclasses

import cv2
import numpy as np

# cv2 spawns its own thread pool per call; the callers already parallelise
# over sequences, and the shared CPUs are few.
cv2.setNumThreads(1)


@dataclasses.dataclass(frozen=True)
class DreamConfig:
  """Ranges of the random perturbations (uniform unless said otherwise).

  Attributes:
    bg_rotation: max |rotation| of the background, degrees.
    bg_scale: (min, max) isotropic scale of the background.
    bg_translation: max |shift| of the background, fraction of (W, H).
    fg_rotation: max |rotation| of each object about its centroid, degrees.
    fg_scale: (min, max) isotropic scale of each object about its centroid.
    fg_translation: max |shift| of each object, fraction of (W, H).
    elastic_grid: control points per side of the non-rigid displacement field.
    elastic_amplitude: typical non-rigid displacement, as a fraction of the
      object's bounding-box size (sqrt(w * h)); the field is divergence-free
      (area-preserving) and clipped to 3x this.
    gain: (min, max) per-channel multiplicative colour gain.
    brightness: max |additive brightness shift|, in [0, 255] units.
    alpha_blur: std (pixels) of the Gaussian that softens the alpha edge.
    inpaint_dilation: pixels the object region is grown by before inpainting,
      so the object's anti-aliased rim is not smeared into the background.
    inpaint_radius: cv2.inpaint neighbourhood radius (pixels).
  """
  bg_rotation: float = 5.0
  bg_scale: tuple = (0.95, 1.05)
  bg_translation: float = 0.03
  fg_rotation: float = 15.0
  fg_scale: tuple = (0.85, 1.15)
  fg_translation: float = 0.08
  elastic_grid: int = 5
  elastic_amplitude: float = 0.02
  gain: tuple = (0.9, 1.1)
  brightness: float = 15.0
  alpha_blur: float = 1.5
  inpaint_dilation: int = 7
  inpaint_radius: int = 5


def inpaint_background(frame, mask, config=DreamConfig()):
  """The background with all objects removed.

  Args:
    frame: `[H, W, 3]` uint8 RGB.
    mask: `[H, W]` uint8 ids, 0 background.
    config: `DreamConfig` (uses `inpaint_dilation`, `inpaint_radius`).

  Returns:
    `[H, W, 3]` uint8: `frame` with the (dilated) object region filled by
    cv2.inpaint (Telea). Large holes are inpainted at reduced resolution (the
    fill is smooth anyway) and pasted into the hole only, which keeps the
    cost of a 480p frame to a few tens of milliseconds.
  """
  hole = (mask > 0).astype(np.uint8)
  if not hole.any():
    return frame.copy()
  d = config.inpaint_dilation
  if d > 0:
    hole = cv2.dilate(hole, np.ones((2 * d + 1, 2 * d + 1), np.uint8))
  h, w = hole.shape
  # Telea's cost grows with the hole area; a 4x smaller image is 16x cheaper.
  factor = max(1, int(np.sqrt(hole.sum() / 4000.0)))
  factor = min(factor, 4)
  if factor == 1:
    return cv2.inpaint(frame, hole, config.inpaint_radius, cv2.INPAINT_TELEA)
  small = cv2.resize(frame, (w // factor, h // factor),
                     interpolation=cv2.INTER_AREA)
  # Area averaging then > 0: a small pixel is in the hole if any of the
  # pixels it covers is, so the hole never shrinks.
  small_hole = cv2.resize(hole.astype(np.float32), (w // factor, h // factor),
                          interpolation=cv2.INTER_AREA)
  small_hole = (small_hole > 0).astype(np.uint8)
  small = cv2.inpaint(small, small_hole, config.inpaint_radius,
                      cv2.INPAINT_TELEA)
  fill = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
  return np.where(hole[..., None] > 0, fill, frame)


def _affine(center, angle, scale, shift):
  """2x3 matrix: rotate/scale about `center`, then translate by `shift`."""
  m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])),
                              float(angle), float(scale))
  m[:, 2] += shift
  return m


def _paste_object(out, out_mask, frame, alpha, obj_id, matrix, corners,
                  coarse, amp, blur, colour_lut):
  """Warps one object and composites it over `out`/`out_mask` in place.

  Only the output region the object can reach is touched: the forward image
  of its bounding box, grown by the largest elastic displacement (the field
  is clipped to 3 std) and the alpha blur. That keeps a 480p frame's cost
  proportional to the object, not the frame.

  The warp is backward: output pixel p samples the source at
  A^-1 (p + d(p)), d a smooth divergence-free field of about `amp` pixels
  built from the coarse `[g, g]` unit-normal stream-function grid.
  """
  h, w = out_mask.shape
  fwd = corners @ matrix[:, :2].T + matrix[:, 2]
  margin = 3.0 * amp + 3.0 * blur + 2.0
  x0 = int(max(0, np.floor(fwd[:, 0].min() - margin)))
  y0 = int(max(0, np.floor(fwd[:, 1].min() - margin)))
  x1 = int(min(w, np.ceil(fwd[:, 0].max() + margin)))
  y1 = int(min(h, np.ceil(fwd[:, 1].max() + margin)))
  if x1 <= x0 or y1 <= y0:
    return  # Moved out of view.
  rw, rh = x1 - x0, y1 - y0
  # Divergence-free field: the rotated gradient of a smooth random stream
  # function psi (bicubic upsampling of a coarse grid). Its Jacobian has
  # trace 0, so it bends the object without changing its area to first
  # order; the area then follows the affine scale alone.
  g = coarse.shape[0]
  cell = np.sqrt(rw * rh) / max(g - 1, 1)
  psi = cv2.resize(coarse.astype(np.float32) * np.float32(amp * cell),
                   (rw, rh), interpolation=cv2.INTER_CUBIC)
  dpsi_dy, dpsi_dx = np.gradient(psi)
  lim = np.float32(3.0 * amp)
  xs = np.arange(x0, x1, dtype=np.float32)[None, :]
  ys = np.arange(y0, y1, dtype=np.float32)[:, None]
  px = np.clip(dpsi_dy, -lim, lim, out=dpsi_dy)
  px += xs
  py = np.clip(dpsi_dx, -lim, lim, out=dpsi_dx)
  np.subtract(ys, py, out=py)
  inv = cv2.invertAffineTransform(matrix).astype(np.float32)
  map_x = inv[0, 0] * px + inv[0, 1] * py + inv[0, 2]
  map_y = inv[1, 0] * px + inv[1, 1] * py + inv[1, 2]
  hard = cv2.remap(alpha, map_x, map_y, cv2.INTER_NEAREST,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  rgb = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_REPLICATE)
  rgb = cv2.LUT(rgb, colour_lut).astype(np.float32)
  # The label is the hard warped alpha; the image uses its blur, which is
  # 0.5 on the label boundary, so image and mask agree there.
  soft = hard.astype(np.float32)
  if blur > 0:
    soft = cv2.GaussianBlur(soft, (0, 0), blur)
  region = out[y0:y1, x0:x1].astype(np.float32)
  region += soft[..., None] * (rgb - region)
  out[y0:y1, x0:x1] = np.clip(np.rint(region), 0, 255)
  out_mask[y0:y1, x0:x1][hard > 0] = obj_id


def _colour(rng, config):
  """Per-channel gain, brightness offset and their uint8 lookup table."""
  gain = rng.uniform(*config.gain, size=3)
  offset = rng.uniform(-config.brightness, config.brightness)
  values = np.arange(256, dtype=np.float64)[:, None] * gain + offset
  lut = np.clip(np.rint(values), 0, 255).astype(np.uint8)[None]  # [1,256,3]
  return gain, offset, lut


def dream_frames(frame, mask, *, num_frames=16, seed=0, config=DreamConfig()):
  """A full-resolution dreamed clip; frame 0 is the input, unchanged.

  Args:
    frame: `[H, W, 3]` uint8 RGB.
    mask: `[H, W]` uint8 object ids (0 background). The DAVIS void label 255
      is treated as background. DAVIS 2016 `{0, 255}` masks must be mapped
      to ids first (`davis_io.to_object_ids(raw, 2016)`).
    num_frames: K, frames in the clip (>= 1).
    seed: integer seed; the clip is a deterministic function of it.
    config: `DreamConfig` perturbation ranges.

  Returns:
    frames: `[K, H, W, 3]` uint8.
    masks: `[K, H, W]` uint8, values in the input ids and 0.
    info: dict with the sampled parameters, for checks:
      'ids': object ids in depth order (back to front), list of int;
      'background': list (length K - 1, frames 1..K-1) of dicts with
        'matrix' (2x3 float64 forward affine), 'angle', 'scale', 'shift';
      'objects': list (length K - 1) of dicts id -> dict with 'matrix',
        'angle', 'scale', 'shift', 'gain', 'offset', 'elastic_px'.
  """
  frame = np.asarray(frame)
  mask = np.asarray(mask)
  if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"frame must be [H, W, 3] uint8, got {frame.shape} "
                     f"{frame.dtype}")
  if mask.shape != frame.shape[:2]:
    raise ValueError(f"mask shape {mask.shape} does not match frame "
                     f"{frame.shape[:2]}")
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  mask = np.where(mask == 255, 0, mask).astype(np.uint8)
  h, w = mask.shape
  rng = np.random.default_rng(seed)
  ids = [int(i) for i in np.unique(mask) if i != 0]
  background = inpaint_background(frame, mask, config)

  objects = {}
  for i in ids:
    ys, xs = np.nonzero(mask == i)
    objects[i] = dict(
        centroid=np.array([xs.mean(), ys.mean()]),
        size=float(np.sqrt((np.ptp(xs) + 1) * (np.ptp(ys) + 1))),
        corners=np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()],
                          [xs.min(), ys.max() + 1],
                          [xs.max() + 1, ys.max() + 1]], np.float64),
        alpha=(mask == i).astype(np.uint8))

  frames = np.empty((num_frames, h, w, 3), np.uint8)
  masks = np.zeros((num_frames, h, w), np.uint8)
  frames[0] = frame
  masks[0] = mask
  info = dict(ids=ids, background=[], objects=[])
  for k in range(1, num_frames):
    angle = rng.uniform(-config.bg_rotation, config.bg_rotation)
    scale = rng.uniform(*config.bg_scale)
    shift = rng.uniform(-1, 1, size=2) * config.bg_translation * np.array(
        [w, h])
    m_bg = _affine((w / 2, h / 2), angle, scale, shift)
    gain, offset, lut = _colour(rng, config)
    # Colour changes go through uint8 lookup tables: no full-frame floats.
    cv2.LUT(cv2.warpAffine(background, m_bg, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101), lut,
            dst=frames[k])
    info["background"].append(dict(matrix=m_bg, angle=angle, scale=scale,
                                   shift=shift, gain=gain, offset=offset))
    per_object = {}
    for i in ids:
      obj = objects[i]
      o_angle = rng.uniform(-config.fg_rotation, config.fg_rotation)
      o_scale = rng.uniform(*config.fg_scale)
      o_shift = rng.uniform(-1, 1, size=2) * config.fg_translation * np.array(
          [w, h])
      m = _affine(obj["centroid"], o_angle, o_scale, o_shift)
      o_gain, o_offset, o_lut = _colour(rng, config)
      amp = config.elastic_amplitude * obj["size"] * o_scale
      coarse = rng.normal(0.0, 1.0, size=(config.elastic_grid,
                                          config.elastic_grid))
      per_object[i] = dict(matrix=m, angle=o_angle, scale=o_scale,
                           shift=o_shift, gain=o_gain, offset=o_offset,
                           elastic_px=amp)
      _paste_object(frames[k], masks[k], frame, obj["alpha"], i, m,
                    obj["corners"], coarse, amp, config.alpha_blur, o_lut)
    info["objects"].append(per_object)
  return frames, masks, info


def choose_crop(first_mask, crop_size, rng, min_foreground=0.1):
  """Top-left corner of a `crop_size` square crop of `first_mask`.

  Every position is scored at once with an integral image; one is drawn
  uniformly among those whose foreground fraction exceeds `min_foreground`,
  or, when none does, the position with the most foreground is taken. This
  replaces the bounded retry loop of the usual recipe with its limit
  (infinitely many retries) at the cost of one cumulative sum.

  Args:
    first_mask: `[H, W]` ids, H, W >= crop_size.
    crop_size: side of the square crop.
    rng: `numpy.random.Generator`.
    min_foreground: required foreground fraction (strictly greater).

  Returns:
    (y0, x0, fraction) with the fraction of foreground in the chosen crop.
  """
  fg = (first_mask > 0).astype(np.int64)
  integral = np.pad(fg.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
  c = crop_size
  sums = (integral[c:, c:] - integral[:-c, c:] - integral[c:, :-c] +
          integral[:-c, :-c])
  fractions = sums / float(c * c)
  good = np.flatnonzero(fractions.ravel() > min_foreground)
  if good.size:
    flat = int(good[rng.integers(good.size)])
  else:
    flat = int(np.argmax(fractions))
  y0, x0 = np.unravel_index(flat, fractions.shape)
  return int(y0), int(x0), float(fractions.ravel()[flat])


def dream_clip(frame, mask, *, num_frames=16, crop_size=224, seed=0,
               short_side=None, flip_probability=0.5, min_foreground=0.1,
               config=DreamConfig()):
  """A dreamed training clip: `dream_frames`, then crop and flip per clip.

  Args:
    frame: `[H, W, 3]` uint8 RGB.
    mask: `[H, W]` uint8 ids (0 background, 255 void treated as background).
    num_frames: K.
    crop_size: side of the square crop.
    seed: integer seed; output is a deterministic function of it.
    short_side: if set, the input is first resized (bilinear frame, nearest
      mask) so its shorter side is this many pixels. Independently, an input
      whose shorter side is below `crop_size` is upscaled so it equals
      `crop_size` (resizing rather than padding keeps every pixel real).
    flip_probability: chance that the whole clip is mirrored left-right.
    min_foreground: the crop must hold more than this foreground fraction in
      the first frame, if any position does (see `choose_crop`).
    config: `DreamConfig`.

  Returns:
    frames: `[K, crop_size, crop_size, 3]` uint8; frame 0 is a crop of the
      input (flipped if the clip is).
    masks: `[K, crop_size, crop_size]` uint8 ids.
    info: `dream_frames` info plus 'crop' (y0, x0 in the resized frame),
      'crop_foreground' (fraction in frame 0), 'flip' (bool) and 'resized_hw'.
  """
  frame = np.asarray(frame)
  mask = np.asarray(mask)
  if mask.shape != frame.shape[:2]:
    raise ValueError(f"mask shape {mask.shape} does not match frame "
                     f"{frame.shape[:2]}")
  h, w = mask.shape
  target = short_side if short_side is not None else min(h, w)
  target = max(target, crop_size)
  if target != min(h, w):
    s = target / min(h, w)
    size = (max(crop_size, int(round(w * s))), max(crop_size,
                                                   int(round(h * s))))
    frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
  # The crop and flip draw from their own stream so that they do not shift
  # the dreaming parameters of the same seed.
  frames, masks, info = dream_frames(frame, mask, num_frames=num_frames,
                                     seed=seed, config=config)
  rng = np.random.default_rng([seed, 1])
  y0, x0, fraction = choose_crop(masks[0], crop_size, rng, min_foreground)
  flip = bool(rng.uniform() < flip_probability)
  frames = frames[:, y0:y0 + crop_size, x0:x0 + crop_size]
  masks = masks[:, y0:y0 + crop_size, x0:x0 + crop_size]
  if flip:
    frames = frames[:, :, ::-1]
    masks = masks[:, :, ::-1]
  info.update(crop=(y0, x0), crop_foreground=fraction, flip=flip,
              resized_hw=mask.shape)
  return (np.ascontiguousarray(frames), np.ascontiguousarray(masks), info)
