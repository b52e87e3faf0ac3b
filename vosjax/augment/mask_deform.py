"""MaskTrack's input-mask deformation: a rough "previous frame" mask from GT.

Perazzi, Khoreva et al., "Learning Video Object Segmentation from Static
Images", CVPR 2017, Sec. 3.1: the mask fed to the network during training is
the ground truth deformed by an affine transformation and a non-rigid
thin-plate-spline warp, then coarsened by dilation. Settings follow the
public reference `augment_image_and_mask.m` (the MaskTrack / lucid data
dreaming MATLAB code, as mirrored in the Omkar Damle version with the affine
part):

  * every random shift is drawn from the grid -0.1:0.01:0.1 (`SHIFTS`);
  * affine: the object's box (h = bottom - top, w = right - left) is
    enlarged or shrunk by 5% (sign drawn at random, `scaleRatio = 5`) about
    the box centre, then translated by (h * shift, w * shift);
  * non-rigid: 5 random outer-boundary pixels (`imdilate(seg, disk 1) -
    seg`), each moved by (h * shift, w * shift); a thin-plate spline through
    the 5 correspondences warps the mask (skipped with fewer than 5 boundary
    pixels, as the reference does below 5);
  * coarsening: dilation by a disk of radius 5 (`strel('disk', 5)`).

Implementation: the TPS system is solved with NumPy (the interpolating
spline, kernel U(r) = r^2 log r^2) and the mask is warped backwards with
`cv2.remap` (nearest): the spline is fitted from moved to original points and
every output pixel samples the original mask, so the result has no holes.
Deviations: (1) the reference forward-maps each foreground pixel through
MATLAB's smoothing spline `tpaps` and splats it to its 4 neighbours;
(2) the displacement field is clipped to the largest control shift (0.1 h,
0.1 w) so a spline through nearly collinear points cannot fling pixels far
outside the box (this makes the bounds in `deformation_bounds` hold); (3) the
reference's `imtranslate(new_mask, [h*t, w*t])` passes (x, y), i.e. moves
columns by a fraction of the height; here rows move by h * shift and columns
by w * shift; (4) the reference writes the affine and the non-rigid results
as two separate samples; here they are composed (affine, then TPS, then
dilation), as the paper's text describes one deformed mask.

Several objects: each object id is deformed on its own (its own box and
draws) and painted in increasing id order, a later id overwriting an earlier
one where the coarsened masks overlap. Void pixels (255) count as background.
"""

import cv2
import numpy as np

from vosjax import davis_io
from vosjax.augment import tps

# augment_image_and_mask.m: shift = [-0.1:0.01:0.1] (translations and TPS).
SHIFTS = np.round(np.arange(-10, 11) * 0.01, 2)
SCALE_RATIO = 0.05  # scaleRatio = 5 (percent of the box size).
NUM_POINTS = 5  # num_points = 5 boundary control points.
DILATION_RADIUS = 5  # strel('disk', 5).


def disk(radius):
  """`[2r+1, 2r+1]` uint8 disk structuring element (|p| <= r)."""
  r = int(radius)
  yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
  return (yy * yy + xx * xx <= r * r).astype(np.uint8)


def _box(mask):
  rows, cols = np.nonzero(mask)
  return rows.min(), rows.max(), cols.min(), cols.max()


def affine(mask, rng, *, scale_ratio=SCALE_RATIO, shifts=SHIFTS):
  """The box rescaled by 1 +- `scale_ratio` about its centre, then shifted.

  Args:
    mask: `[H, W]` bool, non-empty.
    rng: `np.random.Generator`.

  Returns:
    `[H, W]` bool.
  """
  top, bottom, left, right = _box(mask)
  h, w = bottom - top, right - left
  scale = 1.0 + rng.choice([-1.0, 1.0]) * scale_ratio
  ty, tx = h * rng.choice(shifts), w * rng.choice(shifts)
  cy, cx = (top + bottom) / 2, (left + right) / 2
  # dest = scale * (src - c) + c + t, in cv2's (x, y) order.
  matrix = np.array([[scale, 0.0, (1 - scale) * cx + tx],
                     [0.0, scale, (1 - scale) * cy + ty]])
  out = cv2.warpAffine(mask.astype(np.uint8), matrix, mask.shape[::-1],
                       flags=cv2.INTER_NEAREST, borderValue=0)
  return out.astype(bool)


def thin_plate(mask, rng, *, num_points=NUM_POINTS, shifts=SHIFTS):
  """Non-rigid warp: `num_points` boundary pixels moved by up to 10% of the box.

  Args:
    mask: `[H, W]` bool, non-empty.
    rng: `np.random.Generator`.

  Returns:
    `[H, W]` bool; the mask unchanged when its outer boundary has fewer than
    `num_points` pixels.
  """
  top, bottom, left, right = _box(mask)
  h, w = bottom - top, right - left
  m8 = mask.astype(np.uint8)
  boundary = cv2.dilate(m8, disk(1)) - m8
  rows, cols = np.nonzero(boundary)
  if len(rows) < num_points:
    return mask
  pick = rng.choice(len(rows), num_points, replace=False)
  original = np.stack([rows[pick], cols[pick]], 1).astype(np.float64)
  moved = original + np.stack([h * rng.choice(shifts, num_points),
                               w * rng.choice(shifts, num_points)], 1)
  # Backward map: output pixel p samples the input at g(p), g(moved) =
  # original, so original -> moved is what the mask undergoes.
  spline = tps.fit(moved, original, regularization=1e-6)
  # Only pixels within `limit` of the box can sample the mask (the
  # displacement is clipped to it): evaluate the spline on that window.
  limit = np.array([h, w]) * np.abs(shifts).max()
  height, width = mask.shape
  r0 = max(int(np.floor(top - limit[0])) - 1, 0)
  r1 = min(int(np.ceil(bottom + limit[0])) + 2, height)
  c0 = max(int(np.floor(left - limit[1])) - 1, 0)
  c1 = min(int(np.ceil(right + limit[1])) + 2, width)
  rows, cols = np.arange(r0, r1), np.arange(c0, c1)
  grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1)
  disp = tps.evaluate_grid(spline, rows, cols) - grid
  disp = np.clip(disp, -limit, limit)  # Deviation (2) of the module doc.
  src = (grid + disp).astype(np.float32)
  out = np.zeros_like(m8)
  out[r0:r1, c0:c1] = cv2.remap(m8, src[..., 1], src[..., 0],
                                cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return out.astype(bool)


def deform_binary(mask, rng, *, dilation_radius=DILATION_RADIUS,
                  use_affine=True, use_tps=True):
  """One object's deformed mask: affine, TPS, dilation (bool `[H, W]`).

  An empty mask stays empty (the reference writes zeros).
  """
  mask = np.asarray(mask, bool)
  if not mask.any():
    return mask.copy()
  if use_affine:
    mask = affine(mask, rng)
    if not mask.any():  # Shifted off the image: nothing left to warp.
      return mask
  if use_tps:
    mask = thin_plate(mask, rng)
  if dilation_radius > 0:
    mask = cv2.dilate(mask.astype(np.uint8), disk(dilation_radius)) > 0
  return mask


def deform(ids, seed, **kwargs):
  """The deformed input mask of `ids`, deterministic from `seed`.

  Args:
    ids: `[H, W]` uint8 object ids (0 background, 255 void).
    seed: int or `np.random.SeedSequence`-compatible entropy.
    **kwargs: `deform_binary`'s options.

  Returns:
    `[H, W]` uint8 ids with the same object ids (those that survive).
  """
  ids = np.asarray(ids)
  out = np.zeros(ids.shape, np.uint8)
  objects = [i for i in np.unique(ids) if i != 0 and i != davis_io.VOID_LABEL]
  for i, child in zip(objects,
                      np.random.SeedSequence(seed).spawn(len(objects))):
    out[deform_binary(ids == i, np.random.default_rng(child), **kwargs)] = i
  return out


def deformation_bounds(mask, dilation_radius=DILATION_RADIUS):
  """Box the deformed mask of a one-object `mask` must lie in.

  Each side of the box moves at most: the 5% rescale about the centre
  (0.025 of the size), the 10% translation, the clipped TPS displacement
  (10% of the rescaled box), the dilation radius, and 1 pixel of
  nearest-neighbour rounding per warp.

  Returns:
    `(top, bottom, left, right)` floats (inclusive).
  """
  top, bottom, left, right = _box(mask)
  h, w = bottom - top, right - left
  # The TPS limit is 10% of the rescaled box: at most (1 + 5%) h.
  grow = SCALE_RATIO / 2 + 0.1 + 0.1 * (1 + SCALE_RATIO)
  dh = grow * h + dilation_radius + 2
  dw = grow * w + dilation_radius + 2
  return top - dh, bottom + dh, left - dw, right + dw
