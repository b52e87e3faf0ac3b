"""Tests for vosjax.augment.lucid (lucid data dreaming)."""

import dataclasses

import cv2
import numpy as np
import pytest

from vosjax import davis_io
from vosjax.augment import lucid

K = 5


def _synthetic(h=192, w=256, seed=0):
  """A textured frame with three separated objects (ids 1, 2, 5)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  frame = np.stack([80 + 60 * xx / w, 90 + 50 * yy / h,
                    120 + 20 * np.sin(xx / 9.0)], -1)
  frame = frame + rng.normal(0, 6, size=frame.shape)
  mask = np.zeros((h, w), np.uint8)
  cv2.circle(mask, (55, 60), 28, 1, -1)
  cv2.rectangle(mask, (150, 30), (215, 80), 2, -1)
  cv2.ellipse(mask, (120, 145), (50, 25), 20, 0, 360, 5, -1)
  colours = {1: (220, 40, 40), 2: (30, 200, 60), 5: (250, 230, 20)}
  for i, c in colours.items():
    stripes = (np.sin(xx / 3.0) > 0)[..., None] * 30.0
    frame = np.where((mask == i)[..., None], np.array(c) - stripes, frame)
  return np.clip(frame, 0, 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def blackswan(davis_root):
  frame = davis_io.read_frame(davis_io.frame_paths(davis_root, "blackswan")[0])
  raw = davis_io.read_mask(davis_io.mask_paths(davis_root, "blackswan")[0])
  return frame, davis_io.to_object_ids(raw, 2016)


def _strip(frames, masks):
  """Frames over id-coloured masks, side by side: `[2h, K*w, 3]` uint8."""
  palette = davis_io.davis_palette()
  return np.concatenate(
      [np.concatenate([f, palette[m]], 0) for f, m in zip(frames, masks)], 1)


def _check_ids_and_first_frame(frame, mask, frames, masks):
  assert frames.shape == (K,) + frame.shape and frames.dtype == np.uint8
  assert masks.shape == (K,) + mask.shape and masks.dtype == np.uint8
  np.testing.assert_array_equal(frames[0], frame)
  np.testing.assert_array_equal(masks[0], mask)
  allowed = set(np.unique(mask).tolist()) | {0}
  assert set(np.unique(masks).tolist()) <= allowed


def _check_area_within_scale(mask, masks, info, config, rel_tol=0.1):
  """Each object's area ratio follows its sampled scale squared."""
  lo, hi = config.fg_scale
  for k in range(1, K):
    for i in info["ids"]:
      ratio = (masks[k] == i).sum() / (mask == i).sum()
      s = info["objects"][k - 1][i]["scale"]
      assert lo <= s <= hi
      assert abs(ratio / s**2 - 1) < rel_tol, (k, i, ratio, s)


def _hole_and_ring(mask, info, masks, k):
  """Where frame k shows inpainted background, and a background ring."""
  fg = (mask > 0).astype(np.uint8)
  h, w = mask.shape
  m_bg = info["background"][k - 1]["matrix"]
  warp = lambda a: cv2.warpAffine(a, m_bg, (w, h), flags=cv2.INTER_NEAREST)
  # Stay clear of the pasted objects' soft edges.
  near_fg = cv2.dilate((masks[k] > 0).astype(np.uint8), np.ones((9, 9)))
  hole = warp(cv2.erode(fg, np.ones((5, 5)))) & (1 - near_fg)
  ring = warp(cv2.dilate(fg, np.ones((41, 41))) -
              cv2.dilate(fg, np.ones((21, 21)))) & (1 - near_fg)
  return hole.astype(bool), ring.astype(bool)


def test_synthetic_multi_object():
  frame, mask = _synthetic()
  config = lucid.DreamConfig(fg_translation=0.04, fg_scale=(0.85, 1.15))
  frames, masks, info = lucid.dream_frames(frame, mask, num_frames=K, seed=3,
                                           config=config)
  _check_ids_and_first_frame(frame, mask, frames, masks)
  assert info["ids"] == [1, 2, 5]
  _check_area_within_scale(mask, masks, info, config)
  # The objects really move, independently of each other.
  for i in info["ids"]:
    assert ((masks[1] == i) != (mask == i)).sum() > 0.1 * (mask == i).sum()
  shifts = [info["objects"][0][i]["shift"] for i in info["ids"]]
  assert not np.allclose(shifts[0], shifts[1])


def test_synthetic_inpainted_not_black():
  frame, mask = _synthetic()
  background = lucid.inpaint_background(frame, mask)
  fg = mask > 0
  np.testing.assert_array_equal(background[~cv2.dilate(
      fg.astype(np.uint8), np.ones((15, 15))).astype(bool)],
                                frame[~cv2.dilate(fg.astype(np.uint8),
                                                  np.ones((15, 15))).astype(
                                                      bool)])
  # The bright, saturated object colours are gone from under the objects:
  # what is there now resembles the background around them.
  bg_mean = frame[~fg].reshape(-1, 3).mean(0)
  under = background[cv2.erode(fg.astype(np.uint8),
                               np.ones((5, 5))).astype(bool)].mean(0)
  orig = frame[fg].mean(0)
  assert np.abs(under - bg_mean).max() < 30, (under, bg_mean)
  assert np.abs(orig - bg_mean).max() > 60  # The check can fail.


def _inpainted_like_surroundings(frame, mask, frames, masks, info):
  """Per dreamed frame: is the uncovered old object region like its ring?"""
  verdicts = []
  for k in range(1, len(frames)):
    hole, ring = _hole_and_ring(mask, info, masks, k)
    assert hole.sum() > 1000 and ring.sum() > 1000
    inside = frames[k][hole].astype(np.float64).mean()
    around = frames[k][ring].astype(np.float64).mean()
    verdicts.append(abs(inside - around) < 0.25 * around)
  return verdicts


def test_blackswan_dreaming(blackswan, tmp_path, monkeypatch):
  frame, mask = blackswan
  config = lucid.DreamConfig()
  frames, masks, info = lucid.dream_frames(frame, mask, num_frames=K, seed=0,
                                           config=config)
  _check_ids_and_first_frame(frame, mask, frames, masks)
  assert set(np.unique(masks).tolist()) == {0, 1}
  _check_area_within_scale(mask, masks, info, config)
  assert all(_inpainted_like_surroundings(frame, mask, frames, masks, info))
  # The same check on a clip whose "inpainting" leaves the hole black fails.
  def black_hole(frame, mask, config):
    hole = cv2.dilate((mask > 0).astype(np.uint8),
                      np.ones((2 * config.inpaint_dilation + 1,) * 2))
    return np.where(hole[..., None] > 0, 0, frame).astype(np.uint8)
  monkeypatch.setattr(lucid, "inpaint_background", black_hole)
  bad = lucid.dream_frames(frame, mask, num_frames=K, seed=0, config=config)
  assert not any(_inpainted_like_surroundings(frame, mask, *bad))
  path = tmp_path / "lucid_blackswan_strip.png"
  strip = _strip(frames[:, ::2, ::2], masks[:, ::2, ::2])
  cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
  print(f"lucid sample strip: {path}")
  assert path.stat().st_size > 0


def test_deterministic_from_seed():
  frame, mask = _synthetic()
  a = lucid.dream_clip(frame, mask, num_frames=3, crop_size=96, seed=7)
  b = lucid.dream_clip(frame, mask, num_frames=3, crop_size=96, seed=7)
  c = lucid.dream_clip(frame, mask, num_frames=3, crop_size=96, seed=8)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert a[2]["crop"] == b[2]["crop"] and a[2]["flip"] == b[2]["flip"]
  assert not np.array_equal(a[0][1:], c[0][1:])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_clip_crop_and_flip(seed):
  frame, mask = _synthetic()
  frames, masks, info = lucid.dream_clip(frame, mask, num_frames=3,
                                         crop_size=96, seed=seed)
  assert frames.shape == (3, 96, 96, 3) and masks.shape == (3, 96, 96)
  assert (masks[0] > 0).mean() > 0.1
  assert np.isclose((masks[0] > 0).mean(), info["crop_foreground"])
  y0, x0 = info["crop"]
  ref = frame[y0:y0 + 96, x0:x0 + 96]
  ref_mask = mask[y0:y0 + 96, x0:x0 + 96]
  if info["flip"]:
    ref, ref_mask = ref[:, ::-1], ref_mask[:, ::-1]
  np.testing.assert_array_equal(frames[0], ref)
  np.testing.assert_array_equal(masks[0], ref_mask)


def test_clip_flips_happen_both_ways():
  frame, mask = _synthetic()
  flips = {lucid.dream_clip(frame, mask, num_frames=1, crop_size=64,
                            seed=s)[2]["flip"] for s in range(12)}
  assert flips == {True, False}


def test_choose_crop_matches_brute_force():
  rng = np.random.default_rng(0)
  mask = np.zeros((30, 40), np.uint8)
  mask[5:9, 30:36] = 1  # 24 pixels: no 10x10 crop is > 10% except near it.
  fractions = np.array([[(mask[y:y + 10, x:x + 10] > 0).mean()
                         for x in range(31)] for y in range(21)])
  for _ in range(5):
    y0, x0, frac = lucid.choose_crop(mask, 10, rng, 0.1)
    assert fractions[y0, x0] > 0.1 and np.isclose(frac, fractions[y0, x0])
  # No crop reaches 50%: the best one is taken.
  y0, x0, frac = lucid.choose_crop(mask, 10, rng, 0.5)
  assert np.isclose(frac, fractions.max())
  assert fractions[y0, x0] == fractions.max()


def test_small_frame_is_upscaled_to_crop():
  frame, mask = _synthetic(h=96, w=128)
  frames, masks, info = lucid.dream_clip(frame, mask, num_frames=2,
                                         crop_size=112, seed=0)
  assert frames.shape == (2, 112, 112, 3)
  assert info["resized_hw"] == (112, 149)
  assert set(np.unique(masks).tolist()) <= {0, 1, 2, 5}


def test_bad_input_is_refused():
  frame, mask = _synthetic()
  with pytest.raises(ValueError, match="mask shape"):
    lucid.dream_frames(frame, mask[:-1])
  with pytest.raises(ValueError, match="uint8"):
    lucid.dream_frames(frame.astype(np.float32), mask)


def test_config_is_a_frozen_dataclass():
  config = lucid.DreamConfig()
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.fg_rotation = 1.0  # pytype: disable=attribute-error
