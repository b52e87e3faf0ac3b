"""MaskTrack's mask deformation: bounds, determinism, ids, TPS, edge cases."""

import cv2
import numpy as np
import pytest

from vosjax.augment import mask_deform as md


def _box(mask):
  rows, cols = np.nonzero(mask)
  return rows.min(), rows.max(), cols.min(), cols.max()


def _disk_mask(shape, centre, radius):
  yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
  return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_affine_box_change_within_the_reference_ranges():
  """Box size x(1 +- 5%) and shift <= 10% of the box (+1 px rounding), over
  many seeds (augment_image_and_mask.m: scaleRatio 5, shift +-0.1)."""
  mask = np.zeros((120, 160), bool)
  mask[30:91, 40:121] = True  # box h = 60, w = 80
  seen = set()
  for seed in range(100):
    out = md.affine(mask, np.random.default_rng(seed))
    top, bottom, left, right = _box(out)
    h, w = bottom - top, right - left
    assert abs(h / 60 - 1) <= 0.05 + 1.5 / 60 and abs(w / 80 - 1) <= \
        0.05 + 1.5 / 80
    assert abs((top + bottom) / 2 - 60) <= 0.1 * 60 + 1
    assert abs((left + right) / 2 - 80) <= 0.1 * 80 + 1
    seen.add(h > 60)
  assert seen == {True, False}  # Both enlarged and shrunk boxes occur.


def test_full_deformation_bounds_over_many_seeds():
  """Box within `deformation_bounds`; area of a disk of radius R within
  pi (R +- d)^2 + dilation, d = the largest displacement (every warp moves a
  pixel by at most d: scale 2.5% R... composed as in the module doc)."""
  r0 = 20
  mask = _disk_mask((128, 128), (64, 64), r0)
  h = 2 * r0
  for seed in range(60):
    out = md.deform(mask.astype(np.uint8), seed) > 0
    assert out.any()
    t, b, l, r = md.deformation_bounds(mask)
    top, bottom, left, right = _box(out)
    assert t <= top and bottom <= b and l <= left and right <= r
    # Every pixel moves by <= |(dy, dx)|: affine (scale about the centre +
    # shift) then TPS, both bounded per axis; inner disk of radius R - d
    # stays covered, nothing beyond R + d + dilation appears.
    per_axis = 0.05 * r0 + 0.1 * h + 0.1 * 1.05 * h + 2
    d = np.hypot(per_axis, per_axis)
    area = out.sum()
    assert area >= np.pi * max(r0 - d, 0) ** 2
    assert area <= np.pi * (r0 + d + md.DILATION_RADIUS + 1) ** 2
  # Without warps the result is the disk dilation (cv2 with the same disk).
  plain = md.deform_binary(mask, np.random.default_rng(0), use_affine=False,
                           use_tps=False)
  np.testing.assert_array_equal(
      plain, cv2.dilate(mask.astype(np.uint8), md.disk(5)) > 0)


def test_disk_matches_strel_definition():
  """strel('disk', 1) is the 3x3 cross; radius 5 spans 11 pixels."""
  np.testing.assert_array_equal(md.disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
  assert md.disk(5).shape == (11, 11) and md.disk(5)[5].all()


def test_deterministic_ids_kept_void_dropped_empty_and_tiny():
  ids = np.zeros((64, 80), np.uint8)
  ids[10:30, 10:30] = 1
  ids[35:60, 40:75] = 2
  ids[0:3, 70:80] = 255
  a, b = md.deform(ids, 7), md.deform(ids, 7)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, md.deform(ids, 8))
  assert set(np.unique(a)) == {0, 1, 2}
  np.testing.assert_array_equal(md.deform(np.zeros((8, 9), np.uint8), 1), 0)
  tiny = np.zeros((20, 20), np.uint8)
  tiny[10, 10] = 1  # A single pixel: zero-size box, 4 boundary pixels.
  out = md.deform(tiny, 3)
  assert out[10, 10] == 1 and out.sum() == md.disk(5).sum()
  line = np.zeros((30, 30), np.uint8)
  line[15, 5:25] = 1  # Collinear boundary points: TPS stays finite.
  assert md.deform(line, 5).any()


@pytest.mark.parametrize("shape", [(7, 7), (40, 3)])
def test_small_images_do_not_fail(shape):
  ids = np.ones(shape, np.uint8)
  out = md.deform(ids, 0)
  assert out.shape == shape and out.dtype == np.uint8
