"""DAVIS region similarity J and contour accuracy F, as the official code.

Definitions follow davisvideochallenge/davis2017-evaluation (davis2017/
metrics.py, utils.py, evaluation.py), which this module reproduces to the bit
on the same boolean inputs:

  J = |A ∩ B| / |A ∪ B|, and 1 when that union is empty.
  F: boundaries by `seg2bmap`; each boundary dilated by a
     disk of radius ceil(0.008 * ||(H, W)||) (skimage `disk`, x² + y² <= r²,
     applied with cv2.dilate as the official code does); precision = matched
     predicted boundary pixels / predicted boundary pixels, recall likewise for
     the ground truth, with the official conventions for empty boundaries;
     F = 2PR / (P + R), 0 when P + R = 0.
  Void: the official semi-supervised evaluation passes no void mask, so
  ground-truth void pixels (255) are plain background and a prediction that
  covers them is wrong there (see `evaluate_sequence`). Removing a void mask
  from both masks first (`mask & ~void`, as the official `db_eval_iou` /
  `f_measure` do when given one) is available but is not the protocol.
  Statistics per object over the evaluated frames: Mean = nanmean, Recall =
  nanmean(X > 0.5), Decay = nanmean(first bin) - nanmean(last bin) of 4
  overlapping temporal bins with the official (uint8-cast) edges.

Speed, with identical numbers (the official code takes ~20 ms a frame here):
  * every frame is cropped to the bounding box of the union of the two masks
    plus one pixel. Outside it both masks and both boundary maps are zero, and
    the crop keeps the image's last row/column whenever the masks reach it, so
    `seg2bmap`'s special-cased last row/column stay exact;
  * the disk dilation is never materialised: the disk is an exact union of a
    few centred rectangles, and "some boundary pixel of B within the disk
    around boundary pixel p of A" is a handful of integral-image rectangle
    sums at A's (sparse) boundary pixels; clipping the rectangles to the image
    reproduces cv2.dilate's border (pixels outside the image do not exist).
"""

import warnings

import cv2
import numpy as np

BOUND_TH = 0.008


def bound_pix(height, width, bound_th=BOUND_TH):
  """Boundary tolerance in pixels: ceil(bound_th * image diagonal)."""
  if bound_th >= 1:
    return float(bound_th)
  return float(np.ceil(bound_th * np.linalg.norm((height, width))))


def disk(radius):
  """skimage.morphology.disk(radius): `[2r+1, 2r+1]` uint8, x² + y² <= r²."""
  grid = np.arange(-radius, radius + 1)
  x, y = np.meshgrid(grid, grid)
  return ((x ** 2 + y ** 2) <= radius ** 2).astype(np.uint8)


def seg2bmap(seg):
  """Boundary map of a binary mask, as the official `_seg2bmap`.

  A pixel is a boundary pixel when it differs from its right, lower or
  lower-right neighbour; the last row only compares with the right neighbour,
  the last column only with the lower one, and the bottom-right corner is 0.

  Args:
    seg: `[..., H, W]` mask (nonzero = foreground).

  Returns:
    `[..., H, W]` bool boundary map.
  """
  seg = np.asarray(seg).astype(bool)
  b = np.zeros_like(seg)
  # Interior: XOR with right, down and down-right neighbours.
  b[..., :-1, :-1] = ((seg[..., :-1, :-1] ^ seg[..., :-1, 1:])
                      | (seg[..., :-1, :-1] ^ seg[..., 1:, :-1])
                      | (seg[..., :-1, :-1] ^ seg[..., 1:, 1:]))
  # Last column (except the corner): only the lower neighbour exists.
  b[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
  # Last row (except the corner): only the right neighbour.
  b[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
  b[..., -1, -1] = False
  return b


def _bbox_1d(any_along):
  idx = np.flatnonzero(any_along)
  return (idx[0], idx[-1]) if idx.size else None


def frame_jf(gt, pred, void=None, rects=None):
  """J and F of one object in one frame.

  Args:
    gt: `[H, W]` bool ground-truth mask of the object.
    pred: `[H, W]` bool predicted mask of the object.
    void: optional `[H, W]` bool mask of pixels to ignore.
    rects: `disk_rectangles(disk(bound_pix(H, W)))`, computed when None.

  Returns:
    (j, f): Python floats in [0, 1].
  """
  h, w = gt.shape
  if rects is None:
    rects = disk_rectangles(disk(bound_pix(h, w)))
  both = gt | pred
  rows = _bbox_1d(both.any(axis=1))
  if rows is None:
    return 1.0, 1.0  # Empty union: J = 1; no boundaries: P = R = 1.
  return _crop_jf(gt, pred, void, rows, _bbox_1d(both.any(axis=0)), rects)


def _crop_jf(gt, pred, void, rows, cols, rects):
  """J and F on the crop around the masks' bounding box (rows, cols)."""
  h, w = gt.shape
  # Boundary pixels lie in [min - 1, max]; one more row/column (all zero) is
  # needed below/right of the masks for seg2bmap's neighbours.
  y0, y1 = max(rows[0] - 1, 0), min(rows[1] + 2, h)
  x0, x1 = max(cols[0] - 1, 0), min(cols[1] + 2, w)
  g = gt[y0:y1, x0:x1]
  p = pred[y0:y1, x0:x1]
  if void is not None:
    keep = ~void[y0:y1, x0:x1]
    g = g & keep
    p = p & keep
  n_g = np.count_nonzero(g)
  n_p = np.count_nonzero(p)
  inter = np.count_nonzero(g & p)
  union = n_g + n_p - inter
  j = 1.0 if union == 0 else inter / union
  return j, _boundary_f(g, p, rects)


def _bmap_crop(seg, out=None):
  """`seg2bmap` of a 2-D bool mask (any strides): `[H, W]` bool.

  A pixel is a boundary pixel iff its 2x2 window (itself, right, lower,
  lower-right) is not uniform, i.e. iff its row differs from the right
  neighbour, or the next row does, or it differs from the pixel below:
  three XORs of neighbouring rows/columns instead of seg2bmap's three
  shifted copies. The last row/column/corner follow the official rule.

  Args:
    seg: `[H, W]` bool mask.
    out: optional `[H, W]` bool array (any strides) to write into.
  """
  h, w = seg.shape
  b = np.empty((h, w), bool) if out is None else out
  horiz = seg[:, :-1] ^ seg[:, 1:]  # [H, W-1]
  vert = seg[:-1] ^ seg[1:]  # [H-1, W]
  np.bitwise_or(horiz[:-1], horiz[1:], out=b[:-1, :-1])
  b[:-1, :-1] |= vert[:, :-1]
  b[:-1, -1] = vert[:, -1]  # last column: only the lower neighbour
  b[-1, :-1] = horiz[-1]  # last row: only the right neighbour
  b[-1, -1] = False
  return b


def _padded_bmap(seg, pad):
  """`_bmap_crop(seg)` inside a zero border: `[H + 2 pad, W + 2 pad + 1]`.

  `pad` zero rows above and below, `pad` zero columns left and `pad + 1`
  right. Zeros are exact there: pixels outside the crop have no boundary
  (see `_boundary_f`) and pixels outside the image do not exist for
  cv2.dilate. The extra right column makes a pixel's flat index in this
  array equal to its top-left corner's flat index in the integral image of
  `[:, :-1]` (whose rows are one longer), so `_matches` needs no division.
  """
  h, w = seg.shape
  out = np.zeros((h + 2 * pad, w + 2 * pad + 1), bool)
  _bmap_crop(seg, out=out[pad:pad + h, pad:pad + w])
  return out


def disk_rectangles(kernel):
  """The disk as a union of centred rectangles: `[(half_w, half_h), ...]`.

  Row dy of the disk spans |dx| <= w(dy), with w non-increasing in |dy|, so
  the disk is the union over distinct widths w of [-w, w] x [-h(w), h(w)],
  h(w) = the largest |dy| whose row is at least w wide.
  """
  kernel = np.asarray(kernel, bool)
  r = kernel.shape[0] // 2
  widths = [int(np.count_nonzero(kernel[r + dy])) // 2 for dy in range(r + 1)]
  rects = {}
  for dy, w in enumerate(widths):
    rects[w] = dy  # Widths only shrink with dy: the last dy is the largest.
  return tuple(sorted(rects.items()))


def _matches(points, other, rects):
  """How many of `points` have an `other` pixel within the disk.

  Equivalent to `count(points_mask & cv2.dilate(other, disk))` (the official
  formulation, where pixels outside the image do not exist), computed with
  rectangle sums of an integral image at the boundary pixels only: boundaries
  are sparse, so this is far cheaper than dilating the whole frame.

  Args:
    points: `_padded_bmap` whose pixels are tested.
    other: `_padded_bmap` of the same shape, (virtually) dilated. Both
      padded by at least the disk's radius, so no rectangle leaves the
      integral image and its four corners are fixed offsets from a pixel's
      flat index.
    rects: `disk_rectangles(kernel)`.
  """
  stride = other.shape[1]  # The integral of [:, :-1] has rows this long.
  integral = cv2.integral(other[:, :-1].view(np.uint8)).ravel()  # int32
  # nonzero is several times faster on bool than on uint8.
  idx = np.flatnonzero(points)
  hit = 0
  # Largest rectangles first; a pixel found near `other` is not tested again
  # (most are, for a decent prediction, after the first rectangle).
  for half_w, half_h in _by_area(rects):
    if not idx.size:
      break
    top, bottom = -half_h * stride, (half_h + 1) * stride
    total = integral[idx + (bottom + half_w + 1)]
    total -= integral[idx + (top + half_w + 1)]
    total -= integral[idx + (bottom - half_w)]
    total += integral[idx + (top - half_w)]
    found = total > 0
    n_found = int(np.count_nonzero(found))
    if n_found:
      hit += n_found
      idx = idx[~found]
  return hit


def _by_area(rects):
  """`rects` largest area first (cached: the same few tuples every frame)."""
  order = _AREA_ORDER.get(rects)
  if order is None:
    order = tuple(sorted(rects, key=lambda r: -(2 * r[0] + 1) *
                         (2 * r[1] + 1)))
    _AREA_ORDER[rects] = order
  return order


_AREA_ORDER = {}


def _boundary_f(g, p, rects):
  """Official boundary F of bool masks `g` (ground truth) and `p`.

  Exact on the crops of `frame_jf`: off the image edge a crop's last row and
  column are all zero in both masks, where seg2bmap's special case and the
  full rule both give 0.
  """
  pad = _radius(rects)
  gb = _padded_bmap(g, pad)
  fb = _padded_bmap(p, pad)
  n_fg = np.count_nonzero(fb)
  n_gt = np.count_nonzero(gb)
  if n_fg == 0 and n_gt > 0:
    precision, recall = 1.0, 0.0
  elif n_fg > 0 and n_gt == 0:
    precision, recall = 0.0, 1.0
  elif n_fg == 0 and n_gt == 0:
    precision, recall = 1.0, 1.0
  else:
    precision = _matches(fb, gb, rects) / float(n_fg)
    recall = _matches(gb, fb, rects) / float(n_gt)
  if precision + recall == 0:
    return 0.0
  return 2 * precision * recall / (precision + recall)


def _radius(rects):
  """The disk's radius: the largest half-extent of its rectangles."""
  return max(max(r) for r in rects)


def db_statistics(per_frame):
  """Official Mean, Recall and Decay of per-frame values `[T]` (NaN-aware)."""
  x = np.asarray(per_frame, np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", category=RuntimeWarning)
    mean = np.nanmean(x)
    recall = np.nanmean(x > 0.5)
    n_bins = 4
    # Official bin edges, including its uint8 cast.
    ids = np.round(np.linspace(1, len(x), n_bins + 1) + 1e-10) - 1
    ids = ids.astype(np.uint8)
    bins = [x[ids[i]:ids[i + 1] + 1] for i in range(n_bins)]
    decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
  return float(mean), float(recall), float(decay)


def num_objects(gt_first_frame, void_label=255):
  """Objects of a sequence, as officially: the largest id in its first mask."""
  ids = np.asarray(gt_first_frame)
  ids = np.where(ids == void_label, 0, ids)
  return int(ids.max()) if ids.size else 0


def evaluate_sequence(gt, pred, *, exclude_void=False, void=None,
                      skip_first_last=True, n_objects=None, void_label=255):
  """Per-object, per-frame J and F of one sequence, and their statistics.

  Official protocol (davis2017/davis.py `get_all_masks`, evaluation.py
  `_evaluate_semisupervised(..., None, metric)`): ground-truth void pixels are
  background for every object and are NOT excluded, so a prediction covering
  them counts as false positives. Objects are ids 1..N with N the largest
  non-void id in the ground truth's first frame. Each is evaluated separately;
  prediction ids above N are an error (the official tool stops), objects
  missing from the prediction score as empty masks (its zero padding).

  Args:
    gt: `[T, H, W]` integer ground-truth ids (0 = background; `void_label`
      marks void pixels). DAVIS 2016 0/255 masks must be binarised first
      (`davis_io.to_object_ids(raw, 2016)`), or 255 reads as void.
    pred: `[T, H, W]` integer predicted ids.
    exclude_void: NOT the official protocol: drop the pixels where
      `gt == void_label` from both masks before J and F (what the official
      `db_eval_iou` / `f_measure` do with a void mask, which its
      semi-supervised path never passes).
    void: optional `[T, H, W]` bool mask of pixels to drop from both masks
      (also not the official protocol; implies exclusion of exactly these).
    skip_first_last: drop frames 0 and T-1 (semi-supervised protocol).
    n_objects: override the object count (default: from `gt[0]`).
    void_label: the ground-truth void value.

  Returns:
    dict with 'J' and 'F': `[N, T']` float64 per-frame values (T' = T - 2 when
    skipping); 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean', 'F-Recall',
    'F-Decay': `[N]` float64; 'object_ids': `[N]` int.
  """
  gt = np.asarray(gt)
  pred = np.asarray(pred)
  if gt.ndim != 3 or gt.shape != pred.shape:
    raise ValueError(f"gt {gt.shape} and pred {pred.shape} must be equal "
                     "[T, H, W] shapes")
  if void is not None:
    void = np.asarray(void, bool)
    if void.shape != gt.shape:
      raise ValueError(f"void {void.shape} must have the shape of gt "
                       f"{gt.shape}")
  elif exclude_void:
    void = gt == void_label
  if n_objects is None:
    n_objects = num_objects(gt[0], void_label)
  if skip_first_last:
    gt, pred = gt[1:-1], pred[1:-1]
    void = None if void is None else void[1:-1]
  if pred.size and int(pred.max()) > n_objects:
    raise ValueError(f"prediction has object id {int(pred.max())} but the "
                     f"ground truth has {n_objects} object(s)")
  if void is not None and not void.any():
    void = None
  t, h, w = gt.shape
  rects = disk_rectangles(disk(bound_pix(h, w)))
  binary = _is_binary(gt, n_objects) and _is_binary(pred, n_objects)
  j = np.ones((n_objects, t))
  f = np.ones((n_objects, t))
  # Frame by frame: each frame's masks stay in cache for all their passes.
  for i in range(t):
    score_frame(gt[i], pred[i], n_objects, rects,
                None if void is None else void[i], binary=binary,
                j_out=j[:, i], f_out=f[:, i])
  return sequence_statistics(j, f)


def sequence_statistics(j, f):
  """The figures of `evaluate_sequence` from per-frame `[N, T]` J and F."""
  out = {"J": j, "F": f, "object_ids": np.arange(1, len(j) + 1)}
  for name, values in (("J", j), ("F", f)):
    stats = np.array([db_statistics(v) for v in values]).reshape(-1, 3)
    out[f"{name}-Mean"] = stats[:, 0]
    out[f"{name}-Recall"] = stats[:, 1]
    out[f"{name}-Decay"] = stats[:, 2]
  return out


def score_frame(gt, pred, n_objects, rects, void=None, *, binary=False,
                j_out=None, f_out=None):
  """J and F of objects 1..N in one frame.

  Ground-truth void (255) never equals an object id 1..254: void pixels are
  background for every object, as officially.

  Args:
    gt: `[H, W]` integer ground-truth ids.
    pred: `[H, W]` integer predicted ids.
    n_objects: N.
    rects: `disk_rectangles(disk(bound_pix(H, W)))`.
    void: optional `[H, W]` bool pixels to drop from both masks.
    binary: both are uint8 holding only 0 and 1 and N == 1: their bool
      views are the object's masks (no comparison pass).
    j_out, f_out: optional `[N]` float arrays to write into.

  Returns:
    (j, f): `[N]` float64 arrays.
  """
  j = np.ones(n_objects) if j_out is None else j_out
  f = np.ones(n_objects) if f_out is None else f_out
  for k in range(n_objects):
    if binary:
      g, p = gt.view(bool), pred.view(bool)
    else:
      g, p = gt == k + 1, pred == k + 1
    j[k], f[k] = frame_jf(g, p, void, rects)
  return j, f


def _is_binary(ids, n_objects):
  """uint8 ids holding only 0 and 1, with one object: bool views are masks."""
  return (n_objects == 1 and ids.dtype == np.uint8
          and int(ids.max(initial=0)) <= 1)
