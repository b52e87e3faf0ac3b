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
