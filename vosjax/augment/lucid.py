"""Lucid data dreaming: a training clip hallucinated from one annotated frame.

Khoreva, Benenson, Ilg, Brox, Schiele, "Lucid Data Dreaming for Video Object
Segmentation" (IJCV 2019), Sec. 3, and its released MATLAB code
(github.com/ankhoreva/LucidDataDreaming: lucid_dream.m, src/*.m). From the
first frame and its mask:

  1. the objects are cut out and the hole is filled by exemplar-based
     inpainting (the code: patch_inpaint.m, CSH patch matching, on the mask
     dilated by a disk of radius 7); here OpenCV contrib's
     `xphoto.inpaint(..., INPAINT_SHIFTMAP)` (copies shifted background
     pixels, so the hole keeps the surrounding texture),
  2. the background (the camera) and every object follow their own smooth
     trajectory: affine steps (translation, rotation, scale) whose velocity
     has momentum, the object's non-rigid thin-plate-spline deformation
     (spline_transform_multi.m: 5 boundary points moved by up to 5% of the
     object's box) evolving over time, and an illumination change in HSV
     (change_illumination.m) for the background and each object separately,
     eased in from the identity,
  3. the objects are pasted back over the background in a fixed depth order
     (increasing id, a higher id occludes a lower one) by Poisson blending
     (the code: SeamlessClone_trimap.m; here a sparse solve of the same
     equation, see `_poisson_paste`).

The code dreams a pair of frames; a clip here is a trajectory of K frames
whose per-frame object motion matches real DAVIS motion (see `DreamConfig`).
Masks go through exactly the same warps with nearest-neighbour sampling, and
Poisson blending only changes pixels inside the pasted object's mask, so the
masks are exactly the pasted objects' pixels.

`dream_frames` gives the full-resolution clip (frame 0 is the input);
`dream_clip` adds the clip-consistent crop and horizontal flip used for
training; `contact_sheet` draws clips for people. All randomness comes from
`numpy.random.default_rng(seed)`, drawn in a fixed order.
"""

import collections
import dataclasses
import hashlib

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from vosjax.augment import crops
from vosjax.augment import tps

# cv2 spawns its own thread pool per call; the callers already parallelise
# over sequences, and the shared CPUs are few.
cv2.setNumThreads(1)


@dataclasses.dataclass(frozen=True)
class DreamConfig:
  """Motion, deformation, appearance and inpainting settings.

  Distances are in pixels of a 480-line frame and are scaled by
  min(H, W) / 480 for other sizes. A per-axis velocity with momentum rho is
  v_k = rho v_{k-1} + sqrt(1 - rho^2) sigma eps_k (stationary std sigma,
  v_0 drawn from the stationary law), so consecutive steps are correlated.

  Attributes:
    speed_medians: median per-frame object centroid steps (pixels) to draw
      each clip's speed from, uniformly. Measured on the ground-truth masks
      of the 9 DAVIS 2016 train sequences present, one per sequence
      (benchmarks/measure_lucid.py motion): bear 1.58, bmx-bumps 14.05,
      dog-agility 23.27, drift-turn 10.79, mallard-fly 18.73, motorbike
      8.41, rollerblade 19.89, surf 11.92, tennis 9.20 (pooled over all
      steps: median 11.5, 90th percentile 27.6).
    speed_jitter: the drawn speed is multiplied by exp(this * N(0, 1)), so
      clips do not repeat 9 speeds exactly (an assumption).
    momentum: rho of every velocity (translation, rotation, scale).
    bg_speed_ratio: the camera's (background's) translation speed relative
      to the clip's object speed, drawn per clip uniformly in [0, this]
      (assumption: DAVIS has no background annotation to measure).
    rotation_step: per-frame object rotation std, degrees (the code,
      augment_background.m, draws up to +-3 degrees per frame pair for the
      background; an assumption for objects).
    bg_rotation_step: per-frame camera rotation std, degrees.
    scale_step: per-frame std of the object's log scale. Measured on the
      same 9 train sequences: median |log sqrt(area) step| 0.013, which is
      0.6745 sigma for a Gaussian, so sigma = 0.019.
    bg_scale_step: per-frame std of the camera's log zoom.
    max_scale: the object's accumulated scale stays in [1/this, this].
    tps_points: moving control points on the object boundary (the code: 5).
    tps_amplitude: their largest displacement, fraction of the object box
      (the code: 0.05 of its height / width).
    hsv_power: S and V are raised to a power in [1 - this, 1 + this]
      (change_illumination.m: 0.8..1.2),
    hsv_gain: then multiplied by [1 - this, 1 + this] (0.97..1.03),
    hsv_offset: then shifted by [-this, this] (in [0, 1] units, +-0.05).
    hsv_ramp: (min, max) frames over which each entity's illumination eases
      from the identity (frame 0) to its drawn target.
    blend: "poisson" (Poisson blending, as the code) or "hard" (paste).
    inpaint: "shiftmap" (xphoto, exemplar-based) or "telea" (smooth
      diffusion, fast; leaves a smooth, learnable ghost of the object).
    inpaint_dilation: the hole is the objects grown by a disk of this radius
      (the code: strel('disk', 7)) so their anti-aliased rim is removed.
    inpaint_scale: shift-map runs at 1/this resolution (full resolution
      takes 30-50 s per 480p frame; 1/2 keeps most texture, see
      benchmarks/measure_lucid.py inpaint).
    inpaint_margin: shift-map sees the hole's box grown by this fraction of
      its larger side on each side (the source of exemplars).
  """
  speed_medians: tuple = (1.58, 14.05, 23.27, 10.79, 18.73, 8.41, 19.89,
                          11.92, 9.20)
  speed_jitter: float = 0.2
  momentum: float = 0.8
  bg_speed_ratio: float = 1.0
  rotation_step: float = 1.0
  bg_rotation_step: float = 0.3
  scale_step: float = 0.019
  bg_scale_step: float = 0.005
  max_scale: float = 1.6
  tps_points: int = 5
  tps_amplitude: float = 0.05
  hsv_power: float = 0.2
  hsv_gain: float = 0.03
  hsv_offset: float = 0.05
  hsv_ramp: tuple = (4, 16)
  blend: str = "poisson"
  inpaint: str = "shiftmap"
  inpaint_dilation: int = 7
  inpaint_scale: int = 2
  inpaint_margin: float = 0.5


def hole_mask(mask, config=DreamConfig()):
  """`[H, W]` uint8 {0, 1}: the objects grown by `config.inpaint_dilation`."""
  hole = (np.asarray(mask) > 0).astype(np.uint8)
  d = config.inpaint_dilation
  if d > 0 and hole.any():
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1,) * 2)
    hole = cv2.dilate(hole, disk)
  return hole


def inpaint_background(frame, mask, config=DreamConfig()):
  """The background with all objects removed.

  Args:
    frame: `[H, W, 3]` uint8 RGB.
    mask: `[H, W]` uint8 ids, 0 background.
    config: `DreamConfig` (uses the `inpaint*` fields).

  Returns:
    `[H, W, 3]` uint8: `frame` outside `hole_mask`, the fill inside. With
    "shiftmap" the fill is computed on the hole's box grown by
    `inpaint_margin` at 1/`inpaint_scale` resolution and upsampled bicubically.
  """
  if config.inpaint not in ("shiftmap", "telea"):
    raise ValueError(f"DreamConfig.inpaint must be 'shiftmap' or 'telea', "
                     f"got {config.inpaint!r}")
  hole = hole_mask(mask, config)
  if not hole.any():
    return frame.copy()
  if config.inpaint == "telea":
    return cv2.inpaint(frame, hole, 5, cv2.INPAINT_TELEA)
  h, w = hole.shape
  ys, xs = np.nonzero(hole)
  m = int(config.inpaint_margin * max(np.ptp(ys), np.ptp(xs)))
  y0, y1 = max(0, ys.min() - m), min(h, ys.max() + m + 1)
  x0, x1 = max(0, xs.min() - m), min(w, xs.max() + m + 1)
  crop, crop_hole = frame[y0:y1, x0:x1], hole[y0:y1, x0:x1]
  s = max(1, int(config.inpaint_scale))
  size = (max(1, (x1 - x0) // s), max(1, (y1 - y0) // s))
  small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
  # Area averaging then > 0: a small pixel is in the hole if any pixel it
  # covers is, so no object pixel leaks into the exemplars.
  small_hole = cv2.resize(crop_hole.astype(np.float32), size,
                          interpolation=cv2.INTER_AREA) > 0
  if small_hole.all():  # Nothing to copy from: fall back to diffusion.
    return cv2.inpaint(frame, hole, 5, cv2.INPAINT_TELEA)
  filled = np.zeros_like(small)
  # xphoto's mask marks the known pixels (non-zero), not the hole.
  cv2.xphoto.inpaint(small, np.where(small_hole, 0, 255).astype(np.uint8),
                     filled, cv2.xphoto.INPAINT_SHIFTMAP)
  fill = cv2.resize(filled, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
  out = frame.copy()
  out[y0:y1, x0:x1] = np.where(crop_hole[..., None] > 0, fill, crop)
  return out


_CACHE = collections.OrderedDict()


def _cached_background(frame, mask, config):
  """`inpaint_background`, memoised on the bytes of its inputs (4 entries).

  Callers dream several clips from one first frame; the fill is the slow
  part and depends on nothing random.
  """
  key = hashlib.blake2b(frame.tobytes() + mask.tobytes() + repr(
      (frame.shape, config.inpaint, config.inpaint_dilation,
       config.inpaint_scale, config.inpaint_margin)).encode()).hexdigest()
  if key not in _CACHE:
    _CACHE[key] = inpaint_background(frame, mask, config)
    while len(_CACHE) > 4:
      _CACHE.popitem(last=False)
  _CACHE.move_to_end(key)
  return _CACHE[key]


class _Walk:
  """A vector whose velocity has momentum: smooth, correlated steps."""

  def __init__(self, rng, sigma, momentum):
    self.sigma = np.asarray(sigma, np.float64)
    self.rho = momentum
    self.value = np.zeros_like(self.sigma)
    self.velocity = rng.normal(size=self.sigma.shape) * self.sigma

  def step(self, rng):
    noise = rng.normal(size=self.sigma.shape)
    self.velocity = (self.rho * self.velocity +
                     np.sqrt(1 - self.rho**2) * self.sigma * noise)
    self.value = self.value + self.velocity
    return self.value


def _hsv_target(rng, config):
  """(power, gain, offset) for S and V, `[2, 3]`, ranges of the code."""
  return np.stack([
      np.stack([rng.uniform(1 - config.hsv_power, 1 + config.hsv_power),
                rng.uniform(1 - config.hsv_gain, 1 + config.hsv_gain),
                rng.uniform(-config.hsv_offset, config.hsv_offset)])
      for _ in range(2)])


def _hsv_lut(params):
  """`[1, 256, 3]` uint8 LUT on OpenCV HSV: H kept, S and V remapped."""
  x = np.arange(256) / 255.0
  lut = [np.arange(256.0)]
  for power, gain, offset in params:
    lut.append(np.clip(gain * x**power + offset, 0, 1) * 255)
  return np.clip(np.rint(np.stack(lut, -1)), 0, 255).astype(np.uint8)[None]


def _illuminate(rgb, params):
  """`rgb` with S and V remapped by `params` (`[2, 3]`) in OpenCV HSV."""
  if np.allclose(params, [[1.0, 1.0, 0.0]] * 2):
    return rgb  # The uint8 HSV round trip is lossy; skip it when idle.
  hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
  return cv2.cvtColor(cv2.LUT(hsv, _hsv_lut(params)), cv2.COLOR_HSV2RGB)


class _Illumination:
  """HSV parameters eased (cosine) from the identity to a drawn target."""

  def __init__(self, rng, config):
    self.target = _hsv_target(rng, config)
    self.ramp = rng.uniform(*config.hsv_ramp)

  def at(self, k):
    t = 0.5 - 0.5 * np.cos(np.pi * min(1.0, k / self.ramp))
    identity = np.array([[1.0, 1.0, 0.0]] * 2)
    return identity + t * (self.target - identity)


def _affine(center, angle, log_scale, shift):
  """2x3 forward matrix: rotate/scale about `center`, then translate."""
  m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])),
                              float(angle), float(np.exp(log_scale)))
  m[:, 2] += shift
  return m


def _membrane(values, inside):
  """Harmonic interpolation into `inside` of `values` around it.

  Solves the 4-neighbour Laplace equation on the pixels of `inside` with
  Dirichlet data `values` at their outside neighbours (neighbours beyond
  the image edge are left out: a free boundary), by a sparse direct solve.

  Args:
    values: `[h, w, c]` float.
    inside: `[h, w]` bool.

  Returns:
    `[h, w, c]` float: `values` outside, the harmonic fill inside.
  """
  h, w = inside.shape
  n = int(inside.sum())
  out = values.astype(np.float64).copy()
  if n == 0:
    return out
  index = -np.ones((h, w), np.int64)
  index[inside] = np.arange(n)
  ys, xs = np.nonzero(inside)
  # A tiny diagonal term keeps a region without any Dirichlet neighbour
  # solvable (its fill then stays 0: the patch is pasted unchanged).
  diag = np.full(n, 1e-9)
  rows, cols = [], []
  rhs = np.zeros((n, values.shape[-1]))
  for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
    yy, xx = ys + dy, xs + dx
    ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    diag += ok
    p, yy, xx = np.nonzero(ok)[0], yy[ok], xx[ok]
    q = index[yy, xx]
    rows.append(p[q >= 0])
    cols.append(q[q >= 0])
    np.add.at(rhs, p[q < 0], values[yy[q < 0], xx[q < 0]])
  rows = np.concatenate([np.arange(n)] + rows)
  cols = np.concatenate([np.arange(n)] + cols)
  vals = np.concatenate([diag, -np.ones(len(rows) - n)])
  a = sparse.csc_matrix((vals, (rows, cols)), shape=(n, n))
  out[inside] = sparse_linalg.splu(a).solve(rhs)
  return out


def _poisson_paste(region, patch, hard):
  """`patch` Poisson-blended into `region` inside `hard`; outside unchanged.

  Poisson blending (Perez et al. 2003; the code's SeamlessClone_trimap.m)
  finds f whose Laplacian equals the patch's inside the mask, with f equal
  to `region` around it; so f = patch + c, c harmonic inside the mask with
  c = region - patch around it. c is smooth, so it is solved on a grid of
  at most 64 pixels a side and upsampled. (cv2.seamlessClone is not used:
  in OpenCV 5.0.0 its output varies between identical calls, and at full
  resolution it takes ~0.2 s per 480p object.) Only pixels inside `hard`
  change, so the label stays exact.

  Args:
    region, patch: `[h, w, 3]` uint8.
    hard: `[h, w]` uint8 {0, 1}.

  Returns:
    `[h, w, 3]` uint8.
  """
  h, w = hard.shape
  s = max(1, -(-max(h, w) // 64))
  size = (max(1, w // s), max(1, h // s))
  small = [cv2.resize(a, size, interpolation=cv2.INTER_AREA).astype(
      np.float32) for a in (region, patch)]
  inside = cv2.resize(hard, size, interpolation=cv2.INTER_NEAREST) > 0
  membrane = _membrane(small[0] - small[1], inside).astype(np.float32)
  if s > 1:
    membrane = cv2.resize(membrane, (w, h), interpolation=cv2.INTER_LINEAR)
  out = np.clip(np.rint(patch + membrane), 0, 255).astype(np.uint8)
  return np.where(hard[..., None] > 0, out, region)


class _Object:
  """One object's cut-out and its trajectory (affine, TPS, illumination)."""

  def __init__(self, rng, mask, obj_id, speed, config):
    ys, xs = np.nonzero(mask == obj_id)
    self.id = obj_id
    self.alpha = (mask == obj_id).astype(np.uint8)
    self.centroid = np.array([xs.mean(), ys.mean()])
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    self.corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]],
                            np.float64)
    box = np.array([x1 - x0, y1 - y0], np.float64)
    # Per-axis velocity std whose 2-D step has median `speed`: the norm of
    # a 2-D isotropic Gaussian is Rayleigh, median sigma sqrt(2 ln 2).
    sigma_t = speed / np.sqrt(2 * np.log(2))
    self.motion = _Walk(rng, [sigma_t, sigma_t, config.rotation_step,
                              config.scale_step], config.momentum)
    # TPS: `tps_points` boundary points that move (spline_transform_multi.m)
    # and the 4 corners of the box grown by 10%, fixed, so the spline bends
    # the object rather than shifting or scaling it as a whole.
    contours, _ = cv2.findContours(self.alpha, cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    boundary = np.concatenate([c[:, 0] for c in contours]).astype(np.float64)
    picks = rng.choice(len(boundary), size=config.tps_points,
                       replace=len(boundary) < config.tps_points)
    grow = 0.1 * box
    anchors = self.corners + np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]
                                      ) * grow
    self.tps_points = np.concatenate([boundary[picks], anchors])
    self.tps_limit = config.tps_amplitude * np.tile(box, (config.tps_points,
                                                          1))
    self.tps = _Walk(rng, self.tps_limit / 4, config.momentum)
    self.light = _Illumination(rng, config)
    self.max_log_scale = np.log(config.max_scale)

  def advance(self, rng):
    """One frame: (forward 2x3 affine, `[n, 2]` TPS displacements)."""
    value = self.motion.step(rng)
    # The centroid bounces off the frame edges, so the object stays in view
    # (a real camera follows its object) without changing the step sizes.
    h, w = self.alpha.shape
    for axis, size in ((0, w), (1, h)):
      pos = self.centroid[axis] + value[axis]
      if not 0 <= pos <= size - 1:
        edge = min(max(pos, 0), size - 1)
        value[axis] += 2 * (edge - pos)
        self.motion.velocity[axis] *= -1
    # Reflect at the scale bound so the scale stays plausible.
    if abs(value[3]) > self.max_log_scale:
      value[3] = np.sign(value[3]) * self.max_log_scale
      self.motion.velocity[3] *= -1
    disp = self.tps.step(rng)
    over = np.abs(disp) > self.tps_limit
    disp[over] = np.sign(disp[over]) * self.tps_limit[over]
    self.tps.velocity[over] *= -1
    return _affine(self.centroid, value[2], value[3], value[:2]), disp

  def paste(self, out, out_mask, frame, matrix, disp, k, config):
    """Warps the object into frame k and composites it in place."""
    h, w = out_mask.shape
    fwd = self.corners @ matrix[:, :2].T + matrix[:, 2]
    margin = np.abs(disp).max() * np.exp(self.max_log_scale) + 3.0
    x0 = int(max(0, np.floor(fwd[:, 0].min() - margin)))
    y0 = int(max(0, np.floor(fwd[:, 1].min() - margin)))
    x1 = int(min(w, np.ceil(fwd[:, 0].max() + margin)))
    y1 = int(min(h, np.ceil(fwd[:, 1].max() + margin)))
    if x1 - x0 < 2 or y1 - y0 < 2:
      return None  # Moved out of view.
    inv = cv2.invertAffineTransform(matrix).astype(np.float32)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    # Backward map: output p -> canonical q = A^-1 p -> source q + t(q),
    # t the TPS of the control displacements. t is smooth, so it is
    # evaluated on a 4-pixel grid and upsampled.
    map_x = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    map_y = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    coarse = (map_x[::4, ::4], map_y[::4, ::4])
    if np.abs(disp).max() > 0:
      spline = tps.fit(self.tps_points, np.concatenate(
          [disp, np.zeros((4, 2))]))
      q = np.stack([c.ravel() for c in coarse], -1)
      t = tps.evaluate(spline, q).astype(np.float32).reshape(
          coarse[0].shape + (2,))
      t = cv2.resize(t, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
      map_x += t[..., 0]
      map_y += t[..., 1]
    hard = cv2.remap(self.alpha, map_x, map_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if not hard.any():
      return None
    rgb = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    rgb = _illuminate(rgb, self.light.at(k))
    region = out[y0:y1, x0:x1]
    if config.blend == "poisson":
      out[y0:y1, x0:x1] = _poisson_paste(region, rgb, hard)
    else:
      out[y0:y1, x0:x1] = np.where(hard[..., None] > 0, rgb, region)
    out_mask[y0:y1, x0:x1][hard > 0] = self.id
    return (x0, y0, x1, y1)


def dream_frames(frame, mask, *, num_frames=16, seed=0, config=DreamConfig(),
                 background=None):
  """A full-resolution dreamed clip; frame 0 is the input, unchanged.

  Args:
    frame: `[H, W, 3]` uint8 RGB.
    mask: `[H, W]` uint8 object ids (0 background). The DAVIS void label 255
      is treated as background. DAVIS 2016 `{0, 255}` masks must be mapped
      to ids first (`davis_io.to_object_ids(raw, 2016)`).
    num_frames: K, frames in the clip (>= 1).
    seed: integer seed; the clip is a deterministic function of it.
    config: `DreamConfig`.
    background: optional `[H, W, 3]` uint8 `inpaint_background(frame, mask,
      config)`; computed (and memoised) when None.

  Returns:
    frames: `[K, H, W, 3]` uint8.
    masks: `[K, H, W]` uint8, values in the input ids and 0.
    info: dict with the sampled trajectory, for checks:
      'ids': object ids in depth order (back to front), list of int;
      'speed': the clip's median object step, pixels;
      'background': list (frames 1..K-1) of dicts with 'matrix' (2x3
        forward affine about the frame centre) and 'hsv' (`[2, 3]` power,
        gain, offset of S and V);
      'objects': list (frames 1..K-1) of dicts id -> dict with 'matrix'
        (2x3 forward affine about the object's frame-0 centroid), 'tps'
        (`[n, 2]` control displacements, pixels), 'hsv', 'box' (x0, y0, x1,
        y1 of the pasted region, or None when out of view).
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
  if config.blend not in ("poisson", "hard"):
    raise ValueError(f"DreamConfig.blend must be 'poisson' or 'hard', got "
                     f"{config.blend!r}")
  mask = np.where(mask == 255, 0, mask).astype(np.uint8)
  h, w = mask.shape
  if background is None:
    background = _cached_background(frame, mask, config)
  rng = np.random.default_rng(seed)
  unit = min(h, w) / 480.0  # DAVIS 480p pixels -> this frame's pixels.
  speed = (config.speed_medians[rng.integers(len(config.speed_medians))] *
           unit * np.exp(config.speed_jitter * rng.normal()))
  bg_sigma = rng.uniform(0, config.bg_speed_ratio) * speed / np.sqrt(
      2 * np.log(2))
  camera = _Walk(rng, [bg_sigma, bg_sigma, config.bg_rotation_step,
                       config.bg_scale_step], config.momentum)
  bg_light = _Illumination(rng, config)
  ids = [int(i) for i in np.unique(mask) if i != 0]
  objects = [_Object(rng, mask, i, speed, config) for i in ids]

  frames = np.empty((num_frames, h, w, 3), np.uint8)
  masks = np.zeros((num_frames, h, w), np.uint8)
  frames[0] = frame
  masks[0] = mask
  info = dict(ids=ids, speed=speed, background=[], objects=[])
  for k in range(1, num_frames):
    tx, ty, angle, log_scale = camera.step(rng)
    m_bg = _affine((w / 2, h / 2), angle, log_scale, (tx, ty))
    # Mirrored borders, as the code's padarray(..., 'symmetric')
    # (augment_background.m).
    warped = cv2.warpAffine(background, m_bg, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
    hsv = bg_light.at(k)
    frames[k] = _illuminate(warped, hsv)
    info["background"].append(dict(matrix=m_bg, hsv=hsv))
    per_object = {}
    for obj in objects:  # Increasing id: later objects occlude earlier.
      matrix, disp = obj.advance(rng)
      box = obj.paste(frames[k], masks[k], frame, matrix, disp, k, config)
      per_object[obj.id] = dict(matrix=matrix, tps=disp, hsv=obj.light.at(k),
                                box=box)
    info["objects"].append(per_object)
  return frames, masks, info


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
      the first frame, if any position does (see `crops.choose_crop`).
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
  y0, x0 = crops.choose_crop(masks[0] > 0, (crop_size, crop_size), rng,
                             min_foreground)
  fraction = float((masks[0, y0:y0 + crop_size, x0:x0 + crop_size] > 0).mean())
  flip = bool(rng.uniform() < flip_probability)
  frames = frames[:, y0:y0 + crop_size, x0:x0 + crop_size]
  masks = masks[:, y0:y0 + crop_size, x0:x0 + crop_size]
  if flip:
    frames = frames[:, :, ::-1]
    masks = masks[:, :, ::-1]
  info.update(crop=(y0, x0), crop_foreground=fraction, flip=flip,
              resized_hw=mask.shape)
  return (np.ascontiguousarray(frames), np.ascontiguousarray(masks), info)


def contact_sheet(clips, num_frames=8, width=160):
  """One row per clip of evenly spaced overlaid frames, `[H', W', 3]` uint8.

  Args:
    clips: list of (frames `[K, H, W, 3]` uint8, masks `[K, H, W]` ids)
      pairs, e.g. `dream_clip` outputs; all rows get the width of the first.
    num_frames: frames per row (evenly spaced, first and last included).
    width: width in pixels of each cell.

  Returns:
    The rows stacked, drawn by `vosjax.overlays.contact_sheet` (a pair of
    clips of different sizes is padded black on the right).
  """
  from vosjax import overlays  # pylint: disable=g-import-not-at-top
  rows = [overlays.contact_sheet(f, m, num_frames=num_frames,
                                 columns=num_frames, width=width)
          for f, m in clips]
  full = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 0), (0, full - r.shape[1]), (0, 0))) for r in rows]
  return np.concatenate(rows, 0)
