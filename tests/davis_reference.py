"""A naive transcription of the official DAVIS J and F, the oracle of vosjax.

Written from the published definitions of davisvideochallenge/
davis2017-evaluation (db_eval_iou, f_measure, _seg2bmap, skimage disk,
cv2.dilate with its -inf border, db_statistics) with plain loops and
whole-image shifts: no cropping, no integral images, no cv2 or scipy, and
nothing from vosjax. tests/test_evaluation.py checks vosjax.evaluation
against it on hand-made cases; `benchmarks/bench_evaluate.py --check` on the
whole DAVIS 2016 val set.
"""

import numpy as np


def ref_seg2bmap_loops(seg):
  seg = np.asarray(seg).astype(bool)
  h, w = seg.shape
  b = np.zeros((h, w), bool)
  for y in range(h):
    for x in range(w):
      e = seg[y, x + 1] if x + 1 < w else False
      s = seg[y + 1, x] if y + 1 < h else False
      se = seg[y + 1, x + 1] if (y + 1 < h and x + 1 < w) else False
      v = seg[y, x]
      if y == h - 1 and x == w - 1:
        b[y, x] = False
      elif y == h - 1:
        b[y, x] = v ^ e
      elif x == w - 1:
        b[y, x] = v ^ s
      else:
        b[y, x] = (v ^ e) or (v ^ s) or (v ^ se)
  return b


def ref_seg2bmap(seg):
  """The official _seg2bmap, transcribed (e, s, se shifted copies)."""
  seg = np.asarray(seg).astype(bool)
  e = np.zeros_like(seg)
  s = np.zeros_like(seg)
  se = np.zeros_like(seg)
  e[:, :-1] = seg[:, 1:]
  s[:-1, :] = seg[1:, :]
  se[:-1, :-1] = seg[1:, 1:]
  b = seg ^ e | seg ^ s | seg ^ se
  b[-1, :] = seg[-1, :] ^ e[-1, :]
  b[:, -1] = seg[:, -1] ^ s[:, -1]
  b[-1, -1] = 0
  return b


def ref_dilate(b, radius):
  """Binary dilation by the disk x² + y² <= r², pixels outside do not exist."""
  h, w = b.shape
  out = np.zeros_like(b)
  r = int(radius)
  for dy in range(-r, r + 1):
    for dx in range(-r, r + 1):
      if dx * dx + dy * dy > radius * radius:
        continue
      # out[y, x] |= b[y + dy, x + dx] where that pixel exists.
      ys, ye = max(0, -dy), min(h, h - dy)
      xs, xe = max(0, -dx), min(w, w - dx)
      if ys < ye and xs < xe:
        out[ys:ye, xs:xe] |= b[ys + dy:ye + dy, xs + dx:xe + dx]
  return out


def ref_j(gt, fg, void=None):
  void = np.zeros_like(gt, bool) if void is None else void
  inter = np.sum((gt & fg) & ~void)
  union = np.sum((gt | fg) & ~void)
  return 1.0 if union == 0 else inter / union


def ref_f(fg, gt, void=None, radius=None):
  void = np.zeros_like(gt, bool) if void is None else void
  if radius is None:
    radius = np.ceil(0.008 * np.sqrt(gt.shape[0] ** 2 + gt.shape[1] ** 2))
  fb = ref_seg2bmap(fg & ~void)
  gb = ref_seg2bmap(gt & ~void)
  fg_dil = ref_dilate(fb, radius)
  gt_dil = ref_dilate(gb, radius)
  n_fg, n_gt = fb.sum(), gb.sum()
  if n_fg == 0 and n_gt > 0:
    p, r = 1, 0
  elif n_fg > 0 and n_gt == 0:
    p, r = 0, 1
  elif n_fg == 0 and n_gt == 0:
    p, r = 1, 1
  else:
    p = np.sum(fb & gt_dil) / float(n_fg)
    r = np.sum(gb & fg_dil) / float(n_gt)
  return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def ref_stats(x):
  x = np.asarray(x, float)
  with np.errstate(all="ignore"):
    import warnings  # pylint: disable=g-import-not-at-top
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      m = np.nanmean(x)
      o = np.nanmean(x > 0.5)
      ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(np.uint8)
      bins = [x[ids[i]:ids[i + 1] + 1] for i in range(4)]
      d = np.nanmean(bins[0]) - np.nanmean(bins[3])
  return m, o, d


def ref_sequence(gt, pred):
  """Official semi-supervised evaluation of id arrays [T, H, W] (2017 style)."""
  void = gt == 255
  gt = np.where(void, 0, gt)
  n = int(gt[0].max())
  gt, pred, void = gt[1:-1], pred[1:-1], void[1:-1]
  j = np.zeros((n, len(gt)))
  f = np.zeros((n, len(gt)))
  for k in range(n):
    for t in range(len(gt)):
      g, p = gt[t] == k + 1, pred[t] == k + 1
      j[k, t] = ref_j(g, p, void[t])
      f[k, t] = ref_f(p, g, void[t])
  return j, f
