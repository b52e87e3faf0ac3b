"""A naive transcription of the official DAVIS J and F, the oracle of vosjax.

Written from the published code of davisvideochallenge/davis2017-evaluation
(davis2017/metrics.py db_eval_iou, f_measure, _seg2bmap with skimage's disk
and cv2.dilate's -inf border; utils.py db_statistics; davis.py get_all_masks;
results.py read_masks; evaluation.py _evaluate_semisupervised; the globals of
evaluation_method.py) with plain loops and whole-image shifts: no cropping, no
integral images, no cv2 or scipy, and nothing from vosjax.
tests/test_evaluation.py and tests/test_evaluate_cli.py check
vosjax.evaluation against it; `benchmarks/bench_evaluate.py --check` on the
whole DAVIS 2016 val set.

Official semi-supervised semantics transcribed here (not vosjax's reading):
  * ground truth: every `Annotations/480p/<seq>/*.png`, sorted; 255 (void)
    becomes 0 (`masks[masks == 255] = 0`) and NO void mask reaches J or F
    (`_evaluate_semisupervised(all_gt_masks, all_res_masks, None, metric)`),
    so a prediction on void pixels is a false positive;
  * objects: 1..N, N = the largest id of the first ground-truth frame;
  * frames: the first and the last are dropped (`[:, 1:-1]`), results are read
    for the remaining ground-truth frame names only, a missing one stops the
    tool;
  * results: ids 1..M with M the largest id in the frames read; M > N stops
    the tool, M < N pads with empty masks;
  * F: `bound_pix = ceil(0.008 * ||(H, W)||)`, boundaries of both masks dilated
    by `disk(bound_pix)`.
DAVIS 2016 (0/255 single-object masks) is read as vosjax does, both ground
truth and results binarised (nonzero = object 1): the official 2017 loader
would turn the 255 objects into void.
"""

import pathlib
import warnings

import numpy as np
from PIL import Image


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
  """Official db_statistics: (Mean, Recall, Decay) of per-frame values."""
  x = np.asarray(x, float)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    m = np.nanmean(x)
    o = np.nanmean(x > 0.5)
    ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [x[ids[i]:ids[i + 1] + 1] for i in range(4)]
    d = np.nanmean(bins[0]) - np.nanmean(bins[3])
  return m, o, d


class OfficialStop(Exception):
  """Where the official tool prints a message and exits (sys.exit())."""


def ref_sequence(gt, pred):
  """Official semi-supervised per-frame J and F of one sequence.

  Args:
    gt: `[T, H, W]` ground-truth ids, all frames (255 = void).
    pred: `[T, H, W]` predicted ids for the same frames (frames 0 and T-1 are
      never read, as officially).

  Returns:
    (j, f): `[N, T-2]` float arrays, N = the largest id in `gt[0]` (void
    excluded).
  """
  gt = np.where(np.asarray(gt) == 255, 0, gt)  # void becomes background
  n = int(gt[0].max())
  gt, pred = gt[1:-1], np.asarray(pred)[1:-1]
  m = int(pred.max()) if pred.size else 0
  if m > n:
    raise OfficialStop(f"result index {m} higher than {n} objects")
  t = len(gt)
  j = np.zeros((n, t))
  f = np.zeros((n, t))
  for k in range(n):
    for i in range(t):
      # Ids above M are the zero padding: k + 1 > m never matches pred.
      g, p = gt[i] == k + 1, pred[i] == k + 1
      j[k, i] = ref_j(g, p)  # void_pixels=None
      f[k, i] = ref_f(p, g)
  return j, f


def _read_png(path):
  arr = np.array(Image.open(path))
  return arr[..., 0] if arr.ndim == 3 else arr  # LA masks: luminance


def ref_evaluate_folder(davis_root, results_root, sequences, year=2017):
  """Official evaluation of a results folder; `{"global", "sequences"}`.

  `sequences` in order; globals are means over all objects of all sequences,
  J&F-Mean = (J-Mean + F-Mean) / 2 (evaluation_method.py).
  """
  davis_root, results_root = pathlib.Path(davis_root), pathlib.Path(
      results_root)
  rows = {}
  stats = []
  for seq in sequences:
    gt_paths = sorted((davis_root / "Annotations" / "480p" / seq).glob("*.png"))
    gt = np.stack([_read_png(p) for p in gt_paths])
    names = [p.stem for p in gt_paths]
    pred = np.zeros_like(gt)
    for i, name in enumerate(names[1:-1], start=1):
      path = results_root / seq / f"{name}.png"
      if not path.is_file():
        raise OfficialStop(f"{seq} frame {name} not found")
      pred[i] = _read_png(path)
    if year == 2016:
      gt, pred = (gt > 0).astype(np.uint8), (pred > 0).astype(np.uint8)
    j, f = ref_sequence(gt, pred)
    for k in range(len(j)):
      jm, jr, jd = ref_stats(j[k])
      fm, fr, fd = ref_stats(f[k])
      rows[f"{seq}_{k + 1}"] = {"J-Mean": jm, "F-Mean": fm}
      stats.append([jm, jr, jd, fm, fr, fd])
  means = np.mean(stats, axis=0)
  glob = dict(zip(("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
                   "F-Decay"), (float(v) for v in means)))
  glob["J&F-Mean"] = (glob["J-Mean"] + glob["F-Mean"]) / 2
  return {"global": glob, "sequences": rows}
