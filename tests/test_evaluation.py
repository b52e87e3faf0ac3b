"""Tests of vosjax.evaluation against a naive transcription of the official code.

The reference (tests/davis_reference.py) is written from the published
definitions of davisvideochallenge/davis2017-evaluation with plain loops and
whole-image shifts: no cropping, no integral images, no cv2 or scipy.
"""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.davis_reference import OfficialStop
from tests.davis_reference import ref_f
from tests.davis_reference import ref_j
from tests.davis_reference import ref_seg2bmap
from tests.davis_reference import ref_seg2bmap_loops
from tests.davis_reference import ref_sequence
from tests.davis_reference import ref_stats
from vosjax import davis_io
from vosjax.evaluation import davis as evdavis
from vosjax.evaluation import metrics
from vosjax.evaluation import png


def _square(h, w, y0, x0, size):
  m = np.zeros((h, w), bool)
  m[y0:y0 + size, x0:x0 + size] = True
  return m


def _blob(rng, h, w):
  yy, xx = np.mgrid[:h, :w]
  cy, cx = rng.uniform(0, h), rng.uniform(0, w)
  ry, rx = rng.uniform(2, h / 2), rng.uniform(2, w / 2)
  m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
  return m ^ (rng.random((h, w)) < 0.03)


def _frame_cases(h=48, w=64):
  rng = np.random.default_rng(0)
  empty = np.zeros((h, w), bool)
  full = np.ones((h, w), bool)
  sq = _square(h, w, 10, 12, 15)
  line_h = empty.copy()
  line_h[h - 1, 5:40] = True  # 1-px line on the last row.
  line_v = empty.copy()
  line_v[3:30, w - 1] = True  # 1-px line on the last column.
  diag = np.eye(h, w, dtype=bool)
  corner = empty.copy()
  corner[h - 1, w - 1] = True
  cases = {
      "empty_pred": (sq, empty),
      "empty_gt": (empty, sq),
      "both_empty": (empty, empty),
      "full_pred": (sq, full),
      "full_both": (full, full),
      "thin_lines": (line_h | line_v, np.roll(line_h, -1, 0) | line_v),
      "diagonal": (diag, np.roll(diag, 2, 1)),
      "corner_pixel": (corner, corner),
      "shift_1": (sq, np.roll(sq, 1, 1)),
      "shift_far": (sq, np.roll(sq, (9, 11), (0, 1))),
  }
  for i in range(6):
    cases[f"blobs_{i}"] = (_blob(rng, h, w), _blob(rng, h, w))
  return cases


# --------------------------------------------------------------------- tests


def test_seg2bmap_matches_loops_and_official_transcription():
  rng = np.random.default_rng(1)
  for shape in [(1, 1), (1, 7), (6, 1), (9, 13), (20, 17)]:
    for density in (0.1, 0.5, 0.9):
      seg = rng.random(shape) < density
      want = ref_seg2bmap_loops(seg)
      np.testing.assert_array_equal(ref_seg2bmap(seg), want)
      np.testing.assert_array_equal(metrics.seg2bmap(seg), want)
      # The form used on crops, also on a non-contiguous view.
      np.testing.assert_array_equal(metrics._bmap_crop(seg), want)
      padded = np.zeros((shape[0] + 2, shape[1] + 3), bool)
      padded[1:-1, 2:-1] = seg
      np.testing.assert_array_equal(
          metrics._bmap_crop(padded[1:-1, 2:-1]), want)


def test_disk_and_its_rectangles():
  for r in range(0, 21):
    k = metrics.disk(float(r))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    np.testing.assert_array_equal(k, (xx ** 2 + yy ** 2 <= r * r))
    union = np.zeros_like(k, bool)
    for hw, hh in metrics.disk_rectangles(k):
      union[r - hh:r + hh + 1, r - hw:r + hw + 1] = True
    np.testing.assert_array_equal(union, k.astype(bool), err_msg=f"r={r}")
  assert metrics.bound_pix(480, 854) == 8.0  # ceil(0.008 * 979.6)


@pytest.mark.parametrize("name", sorted(_frame_cases()))
def test_frame_jf_matches_reference(name):
  gt, pred = _frame_cases()[name]
  j, f = metrics.frame_jf(gt, pred)
  assert abs(j - ref_j(gt, pred)) < 1e-12, (j, ref_j(gt, pred))
  assert abs(f - ref_f(pred, gt)) < 1e-12, (f, ref_f(pred, gt))


def test_frame_jf_large_radius_and_void():
  rng = np.random.default_rng(2)
  for radius in (3.0, 5.0, 9.0):
    rects = metrics.disk_rectangles(metrics.disk(radius))
    for _ in range(4):
      gt, pred = _blob(rng, 50, 70), _blob(rng, 50, 70)
      void = rng.random((50, 70)) < 0.05
      void[10:20, 30:50] = True
      j, f = metrics.frame_jf(gt, pred, void, rects)
      assert abs(j - ref_j(gt, pred, void)) < 1e-12
      assert abs(f - ref_f(pred, gt, void, radius)) < 1e-12


def test_hand_computed_shifted_square():
  # 40x40 frame: radius ceil(0.008 * 56.6) = 1 (a 5-pixel cross).
  gt = _square(40, 40, 10, 10, 10)
  assert metrics.seg2bmap(gt).sum() == 40  # 11 + 11 on rows 9, 19; 2 x 9.
  # 1-pixel shift: overlap 10x9 of a 10x11 union; every boundary pixel is
  # within 1 pixel of the other boundary.
  j, f = metrics.frame_jf(gt, np.roll(gt, 1, 1))
  assert j == 90 / 110 and f == 1.0
  # 3-pixel shift: J = 70 / 130; 20 of 40 boundary pixels match each way
  # (rows 9 and 19: 9 each; 2 on the near vertical side), so P = R = F = 0.5.
  j, f = metrics.frame_jf(gt, np.roll(gt, 3, 1))
  assert j == 70 / 130 and f == 0.5


def test_db_statistics_matches_reference():
  rng = np.random.default_rng(3)
  for n in [1, 2, 3, 4, 5, 7, 10, 48, 100, 255, 256, 300]:
    x = rng.random(n)
    if n > 5:
      x[rng.integers(0, n, 2)] = np.nan
    got = metrics.db_statistics(x)
    want = ref_stats(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
  # Hand-computed: 8 frames, linspace(1, 8, 5) = 1, 2.75, 4.5(+1e-10), 6.25,
  # 8 -> edges 0, 2, 4, 5, 7 -> bins [0:3], [2:5], [4:6], [5:8]: the first
  # bin averages 0.1, the last 0.6.
  x = np.arange(8) / 10
  m, o, d = metrics.db_statistics(x)
  assert abs(m - 0.35) < 1e-12 and o == 2 / 8
  assert abs(d - (0.1 - 0.6)) < 1e-12


def _multi_object_sequence(rng, t=6, h=40, w=56):
  gt = np.zeros((t, h, w), np.uint8)
  pred = np.zeros((t, h, w), np.uint8)
  for i in range(t):
    gt[i][_blob(rng, h, w)] = 1
    gt[i][_square(h, w, 5 + i, 30, 9)] = 2
    gt[i][_square(h, w, 25, 5 + i, 3)] = 3
    gt[i][rng.random((h, w)) < 0.02] = 255  # void
    pred[i] = np.roll(np.where(gt[i] == 255, 0, gt[i]), i % 3, axis=1)
    pred[i][rng.random((h, w)) < 0.02] = 2
  pred[3][pred[3] == 3] = 0  # object 3 lost in one frame
  return gt, pred


def test_evaluate_sequence_multi_object_with_void():
  """Official protocol (void = background) against the transcription."""
  rng = np.random.default_rng(4)
  gt, pred = _multi_object_sequence(rng)
  pred[2][gt[2] == 255] = 1  # object 1 predicted on the void pixels
  res = metrics.evaluate_sequence(gt, pred)
  j_ref, f_ref = ref_sequence(gt, pred)
  assert res["J"].shape == (3, 4)
  np.testing.assert_allclose(res["J"], j_ref, rtol=0, atol=1e-12)
  np.testing.assert_allclose(res["F"], f_ref, rtol=0, atol=1e-12)
  for k in range(3):
    for name, values in (("J", j_ref[k]), ("F", f_ref[k])):
      m, o, d = ref_stats(values)
      assert abs(res[f"{name}-Mean"][k] - m) < 1e-12
      assert abs(res[f"{name}-Recall"][k] - o) < 1e-12
      assert abs(res[f"{name}-Decay"][k] - d) < 1e-12
  # The non-official option: void pixels dropped from both masks, as the
  # official db_eval_iou / f_measure do when handed a void mask.
  res = metrics.evaluate_sequence(gt, pred, exclude_void=True)
  for k in range(3):
    for t in range(1, 5):
      g, p, v = gt[t] == k + 1, pred[t] == k + 1, gt[t] == 255
      assert abs(res["J"][k, t - 1] - ref_j(g, p, v)) < 1e-12
      assert abs(res["F"][k, t - 1] - ref_f(p, g, v)) < 1e-12


def _void_band_case():
  """60x80 frames: a 20x20 object, a 20x10 void band on its right."""
  gt = np.zeros((3, 60, 80), np.uint8)
  gt[:, 20:40, 20:40] = 1
  gt[:, 20:40, 40:50] = 255
  pred = np.where(gt == 255, 1, gt)  # the prediction covers object + void
  return gt, pred


def test_void_band_hand_computed():
  """Hand-computed official figures: void band counted as false positives.

  J = 400 / 600. F: bound_pix = ceil(0.008 * 100) = 1. seg2bmap gives the
  20x20 object 80 boundary pixels and the 20x30 prediction 100. Within one
  pixel (a 5-pixel cross) of the other boundary: 63 of the prediction's
  (top row 21 + 1, bottom row 20 + 1, left column 20; its right column is 10
  pixels away) and 63 of the ground truth's (top 21, bottom 20, left 20 and
  the two ends of its right column). P = 63/100, R = 63/80,
  F = 2PR / (P + R) = 63/90 = 0.7. Excluding void (not official) gives 1, 1.
  """
  gt, pred = _void_band_case()
  res = metrics.evaluate_sequence(gt, pred)
  assert res["J"].shape == (1, 1)
  assert abs(res["J"][0, 0] - 400 / 600) < 1e-12
  assert abs(res["F"][0, 0] - 0.7) < 1e-12
  j_ref, f_ref = ref_sequence(gt, pred)
  assert abs(j_ref[0, 0] - 400 / 600) < 1e-12
  assert abs(f_ref[0, 0] - 0.7) < 1e-12
  res = metrics.evaluate_sequence(gt, pred, exclude_void=True)
  assert res["J"][0, 0] == 1.0 and res["F"][0, 0] == 1.0


def test_evaluate_sequence_fewer_and_more_objects():
  rng = np.random.default_rng(5)
  gt, pred = _multi_object_sequence(rng)
  # Object 3 never predicted: scored as an empty mask (official zero padding).
  fewer = np.where(pred == 3, 0, pred)
  res = metrics.evaluate_sequence(gt, fewer)
  j_ref, f_ref = ref_sequence(gt, fewer)
  np.testing.assert_allclose(res["J"], j_ref, rtol=0, atol=1e-12)
  np.testing.assert_allclose(res["F"], f_ref, rtol=0, atol=1e-12)
  more = pred.copy()
  more[2, 0, 0] = 4
  with pytest.raises(OfficialStop):
    ref_sequence(gt, more)
  with pytest.raises(ValueError, match="object id 4"):
    metrics.evaluate_sequence(gt, more)
  # Id 4 in the first (never read) frame is no error, as officially.
  more = pred.copy()
  more[0, 0, 0] = 4
  res = metrics.evaluate_sequence(gt, more)
  np.testing.assert_allclose(res["J"], ref_sequence(gt, more)[0], rtol=0,
                             atol=1e-12)


def test_evaluate_sequence_identity_and_explicit_void():
  rng = np.random.default_rng(6)
  gt, _ = _multi_object_sequence(rng)
  clean = np.where(gt == 255, 0, gt)
  res = metrics.evaluate_sequence(clean, clean, skip_first_last=False)
  assert res["J"].shape == (3, 6)
  assert np.all(res["J"] == 1) and np.all(res["F"] == 1)
  # An explicit void mask excludes those pixels from both masks.
  void = np.zeros(gt.shape, bool)
  void[:, :, :20] = True
  pred = clean.copy()
  pred[:, :, :20] = 0  # wrong only inside the void region
  res = metrics.evaluate_sequence(clean, pred, void=void)
  for k in range(3):
    for t in range(1, 5):
      g, p = clean[t] == k + 1, pred[t] == k + 1
      assert res["J"][k, t - 1] == ref_j(g, p, void[t])
      assert res["F"][k, t - 1] == ref_f(p, g, void[t])


# ------------------------------------------------------------------------ png


def _png_bytes(rows, color_type, filters):
  """A hand-made 8-bit PNG with the given per-row filter types."""
  h, w = rows.shape
  raw = bytearray()
  prev = np.zeros(w, np.int64)
  for y in range(h):
    cur = rows[y].astype(np.int64)
    ft = filters[y % len(filters)]
    if ft == 0:
      enc = cur
    elif ft == 1:
      enc = cur - np.concatenate([[0], cur[:-1]])
    else:
      enc = cur - prev
    raw.append(ft)
    raw.extend((enc % 256).astype(np.uint8).tobytes())
    prev = cur

  def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))

  out = b"\x89PNG\r\n\x1a\n"
  out += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
  if color_type == 3:
    out += chunk(b"PLTE", davis_io.davis_palette().tobytes())
  data = zlib.compress(bytes(raw))
  out += chunk(b"IDAT", data[:len(data) // 2])  # split IDAT on purpose
  out += chunk(b"IDAT", data[len(data) // 2:])
  return out + chunk(b"IEND", b"")


@pytest.mark.parametrize("filters", [[0], [1], [2], [0, 1, 2], [2, 2, 1, 0, 2]])
@pytest.mark.parametrize("color_type", [0, 3])
def test_png_decoder_matches_pil(tmp_path, filters, color_type):
  rng = np.random.default_rng(7)
  rows = rng.integers(0, 256, (23, 31)).astype(np.uint8)
  rows[5:12] = 0
  path = tmp_path / "m.png"
  path.write_bytes(_png_bytes(rows, color_type, filters))
  np.testing.assert_array_equal(davis_io.read_mask(path), rows)
  np.testing.assert_array_equal(png.decode_mask(path), rows)
  # A view of the inflated rows only when no row is filtered; the same values.
  out = np.zeros_like(rows)
  got = png.decode_mask(path, out=out, allow_view=True)
  np.testing.assert_array_equal(got, rows)
  assert (got is not out) == (filters == [0])
  with pytest.raises(davis_io.DavisFormatError, match="m.png"):
    png.decode_mask(path, out=np.zeros((2, 3), np.uint8), allow_view=True)


def test_png_decoder_zlib_fallback(tmp_path, monkeypatch):
  # Without libdeflate / ISA-L the stdlib zlib inflates the same bytes.
  monkeypatch.setattr(png, "_deflate", None)
  monkeypatch.setattr(png, "_isal", None)
  assert png.inflate_backend() == "zlib"
  rows = np.random.default_rng(9).integers(0, 256, (9, 14)).astype(np.uint8)
  (tmp_path / "m.png").write_bytes(_png_bytes(rows, 3, [1, 2, 0]))
  np.testing.assert_array_equal(png.decode_mask(tmp_path / "m.png"), rows)


def test_png_decoder_pil_written_and_errors(tmp_path):
  rng = np.random.default_rng(8)
  m = rng.integers(0, 256, (17, 29)).astype(np.uint8)
  # PIL's adaptive filters (Paeth, Average) take the PIL fallback.
  Image.fromarray(m).save(tmp_path / "l.png")
  davis_io.write_mask(tmp_path / "p.png", m)
  buf = io.BytesIO()
  Image.fromarray(m).convert("LA").save(buf, format="PNG")
  (tmp_path / "la.png").write_bytes(buf.getvalue())
  for name in ("l.png", "p.png", "la.png"):
    np.testing.assert_array_equal(png.decode_mask(tmp_path / name), m)
  (tmp_path / "bad.png").write_bytes(b"not a png at all")
  with pytest.raises(davis_io.DavisFormatError, match="bad.png"):
    png.decode_mask(tmp_path / "bad.png")


# ------------------------------------------------------------ real DAVIS data


def test_real_davis_ground_truth_and_perturbed(davis_root, tmp_path):
  seqs = ["blackswan", "car-shadow"]
  for seq in seqs:
    for p in davis_io.mask_paths(davis_root, seq):
      m = davis_io.read_mask(p) > 0
      davis_io.write_mask(tmp_path / "gt" / seq / p.name, m.astype(np.uint8))
  res = evdavis.evaluate_davis(davis_root, tmp_path / "gt", sequences=seqs,
                               write=False)
  assert list(res["sequences"]) == ["blackswan_1", "car-shadow_1"]
  for key, value in res["global"].items():
    assert value == (0.0 if key.endswith("Decay") else 1.0), key
  for value in res["sequences"].values():
    assert value == {"J-Mean": 1.0, "F-Mean": 1.0}

  # Perturbed (eroded + shifted, one frame emptied) on a few frames, full size,
  # against the naive reference.
  paths = davis_io.mask_paths(davis_root, "blackswan")[10:15]
  gt = np.stack([davis_io.read_mask(p) > 0 for p in paths]).astype(np.uint8)
  pred = np.zeros_like(gt)
  for t in range(len(gt)):
    g = gt[t].astype(bool)
    eroded = g[1:-1, 1:-1] & g[:-2, 1:-1] & g[2:, 1:-1] & g[1:-1, :-2]
    pred[t, 1:-1, 1:-1] = np.roll(eroded, (t, 5 * t), (0, 1))
  pred[2] = 0
  res = metrics.evaluate_sequence(gt, pred, skip_first_last=False)
  for t in range(len(gt)):
    g, p = gt[t].astype(bool), pred[t].astype(bool)
    assert abs(res["J"][0, t] - ref_j(g, p)) < 1e-12
    assert abs(res["F"][0, t] - ref_f(p, g)) < 1e-12
