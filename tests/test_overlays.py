"""Tests of vosjax.overlays: blending, outline, GIF and contact sheet files."""

import numpy as np
from PIL import Image
import pytest

from vosjax import davis_io
from vosjax import overlays


def _sequence(num_frames=5, height=40, width=60):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (num_frames, height, width, 3), np.uint8)
  masks = np.zeros((num_frames, height, width), np.uint8)
  masks[:, 10:30, 15:45] = 1  # Object 1 (red in the DAVIS palette).
  masks[:, 0:4, 0:4] = davis_io.VOID_LABEL
  return frames, masks


def test_overlay_tints_inside_and_keeps_outside():
  frames, masks = _sequence()
  out = overlays.overlay_frame(frames[0], masks[0], alpha=0.5)
  assert out.shape == frames[0].shape and out.dtype == np.uint8
  red = davis_io.davis_palette()[1].astype(float)
  np.testing.assert_array_equal(red, [128, 0, 0])
  # Deep inside: half frame, half red.
  expected = np.round(0.5 * frames[0, 20, 30].astype(float) + 0.5 * red)
  np.testing.assert_allclose(out[20, 30], expected, atol=1)
  # Far outside (and the void corner): untouched.
  np.testing.assert_array_equal(out[35, 5], frames[0, 35, 5])
  np.testing.assert_array_equal(out[2, 2], frames[0, 2, 2])
  # The outline: on the boundary, full object colour.
  np.testing.assert_array_equal(out[10, 30], red)
  np.testing.assert_array_equal(out[20, 15], red)


def test_overlay_rejects_mismatched_shapes():
  frames, masks = _sequence()
  with pytest.raises(ValueError, match="same size"):
    overlays.overlay_frame(frames[0], masks[0, :10])


def test_sequence_overlay_files(tmp_path):
  frames, masks = _sequence(num_frames=5)
  gif, sheet = overlays.write_sequence_overlays(
      frames, masks, tmp_path, "blackswan", gif_width=30, sheet_frames=3,
      sheet_columns=2, sheet_width=60)
  assert gif == tmp_path / "blackswan.gif"
  assert sheet == tmp_path / "blackswan_sheet.png"
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "blackswan.gif", "blackswan_sheet.png"]  # No temp files left.

  with Image.open(gif) as im:
    assert im.size == (30, 20)  # Shrunk to 30 wide, aspect kept.
    assert im.n_frames == 5

  with Image.open(sheet) as im:
    sheet_pixels = np.asarray(im.convert("RGB"))
  # 3 frames, 2 columns -> 2 rows of 40x60 cells; the 4th cell is black.
  assert sheet_pixels.shape == (80, 120, 3)
  np.testing.assert_array_equal(sheet_pixels[40:, 60:], 0)
  # Cells are frames 0, 2, 4: frame 4 sits bottom-left.
  cell = sheet_pixels[40:80, 0:60]
  np.testing.assert_array_equal(
      cell, overlays.overlay_frame(frames[4], masks[4]))
  np.testing.assert_array_equal(cell[35, 5], frames[4, 35, 5])
  assert not np.array_equal(cell[20, 30], frames[4, 20, 30])


def test_ground_truth_outline_and_caption():
  """GT boundary pixels turn white; the caption names the variant and frame.

  Reference: the ground truth's boundary computed independently as the mask
  pixels with a 4-neighbour outside it (what `cv2.findContours` traces for a
  rectangle), and the untouched input frame everywhere else.
  """
  frames, masks = _sequence(num_frames=3)
  gt = np.zeros_like(masks)
  gt[:, 20:35, 30:55] = 1  # Overlaps the prediction, away from the caption.
  inside = gt[0] == 1
  padded = np.pad(inside, 1)
  interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
              & padded[1:-1, 2:])
  boundary = inside & ~interior
  plain = overlays.overlay_frame(frames[0], masks[0])
  out = overlays.outline_ground_truth(plain, gt[0])
  np.testing.assert_array_equal(out[boundary], 255)
  np.testing.assert_array_equal(out[~boundary], plain[~boundary])

  # The caption: a box in the top-left corner, the rest as without it.
  a = overlays._render(frames, masks, 1, gt, "oneshot", {})
  c = overlays._render(frames, masks, 1, gt, "parent", {})
  ref1 = overlays.outline_ground_truth(
      overlays.overlay_frame(frames[1], masks[1]), gt[1])
  box = np.any(a != ref1, axis=-1)
  rows, cols = np.nonzero(box)
  assert rows.min() == 0 and cols.min() == 0 and rows.max() < 20
  assert np.array_equal(a[~box], ref1[~box])
  # The text is the frame number and the label: same image, other text,
  # other box; no text, no box.
  grey = np.full((40, 60, 3), 128, np.uint8)
  one, two = (overlays.caption(grey, f"oneshot {t:05d}") for t in (1, 2))
  assert not np.array_equal(one, two)
  np.testing.assert_array_equal(overlays.caption(grey, ""), grey)
  np.testing.assert_array_equal(
      a, overlays.caption(ref1, "oneshot 00001"))
  assert not np.array_equal(a, c)


def test_sequence_overlays_with_ground_truth_and_label(tmp_path):
  frames, masks = _sequence(num_frames=4)
  gt = [masks[0], None, masks[2], masks[3]]  # Frame 1 has no annotation.
  gif, sheet = overlays.write_overlays(
      frames, masks, tmp_path, "seq", sheet_frames=4, sheet_columns=4,
      sheet_width=60, gt_masks=gt, label="oneshot")
  with Image.open(sheet) as im:
    pixels = np.asarray(im.convert("RGB"))
  for t in range(4):  # Each cell is the frame's full rendering.
    np.testing.assert_array_equal(
        pixels[:, 60 * t:60 * (t + 1)],
        overlays._render(frames, masks, t, gt, "oneshot", {}))
  with Image.open(gif) as im:
    assert im.n_frames == 4
  with pytest.raises(ValueError, match="3 ground-truth masks for 4"):
    overlays.write_overlays(frames, masks, tmp_path, "seq", gt_masks=gt[:3])
