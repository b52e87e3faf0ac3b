"""Tests for vosjax.augment.lucid (lucid data dreaming)."""

import dataclasses

import cv2
import numpy as np
import pytest
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from vosjax import davis_io
from vosjax.augment import lucid

K = 5
# No illumination change: pixel values can be compared exactly.
FLAT = dict(hsv_power=0.0, hsv_gain=0.0, hsv_offset=0.0)


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


def _blocks(h=96, w=128, cell=8, seed=0):
  """Random grey blocks of `cell` px: strong texture everywhere."""
  rng = np.random.default_rng(seed)
  grid = rng.integers(0, 256, size=(h // cell, w // cell, 1))
  return np.repeat(np.repeat(grid, cell, 0), cell, 1).repeat(
      3, -1).astype(np.uint8)


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


def _gradient(image):
  grey = image.astype(np.float64).mean(-1)
  gy, gx = np.gradient(grey)
  return np.hypot(gx, gy)


def _texture_ratio(image, hole):
  """Mean gradient magnitude inside the (eroded) hole / in a ring outside."""
  hole = hole.astype(np.uint8)
  inner = cv2.erode(hole, np.ones((5, 5), np.uint8)) > 0
  ring = ((cv2.dilate(hole, np.ones((25, 25), np.uint8)) > 0) &
          ~(cv2.dilate(hole, np.ones((9, 9), np.uint8)) > 0))
  g = _gradient(image)
  return g[inner].mean() / g[ring].mean()


def _object_track(info, obj_id, centroid):
  """Frame-by-frame position of the object's frame-0 centroid, `[K, 2]`."""
  c = np.append(centroid, 1.0)
  track = [centroid] + [f[obj_id]["matrix"] @ c for f in info["objects"]]
  return np.array(track)


def test_motion_is_smooth_and_matches_davis_steps():
  """Steps follow the clip's drawn speed and are correlated in time.

  Reference: each clip's speed is its median step (Rayleigh steps), so the
  steps divided by it have median 1 pooled over clips; an independent
  redraw per frame (the old scheme) gives steps whose consecutive
  correlation is -0.5, a trajectory with momentum 0.8 about +0.8. The
  speeds come from the configured DAVIS medians (times the jitter).
  """
  h, w = 96, 128
  frame = _blocks(h, w)
  mask = np.zeros((h, w), np.uint8)
  cv2.circle(mask, (64, 48), 12, 1, -1)
  config = lucid.DreamConfig(inpaint="telea", blend="hard")
  centroid = np.argwhere(mask > 0)[:, ::-1].mean(0)
  unit = h / 480.0
  lo = min(config.speed_medians) * np.exp(-4 * config.speed_jitter)
  hi = max(config.speed_medians) * np.exp(4 * config.speed_jitter)
  relative, corr, checked = [], [], 0
  for seed in range(24):
    _, masks, info = lucid.dream_frames(frame, mask, num_frames=16,
                                        seed=seed, config=config)
    assert lo < info["speed"] / unit < hi
    v = np.diff(_object_track(info, 1, centroid), axis=0)
    s = np.linalg.norm(v, axis=1)
    relative.append(s / info["speed"])
    # Bounded: a step's norm is Rayleigh(sigma), sigma = speed /
    # sqrt(2 ln 2); P(norm > 5 sigma) = exp(-12.5) ~ 4e-6 per step.
    assert s.max() < 5.0 / np.sqrt(2 * np.log(2)) * info["speed"]
    corr.append((v[1:] * v[:-1]).sum() / np.sqrt(
        (v[1:]**2).sum() * (v[:-1]**2).sum()))
    # The rendered mask follows the trajectory (TPS moves it a little).
    for k in (5, 15):
      inner = masks[k][1:-1, 1:-1]
      if (masks[k] == 1).sum() == (inner == 1).sum() > 0:  # Fully in view.
        ys, xs = np.nonzero(masks[k] == 1)
        d = np.hypot(xs.mean() - v[:k, 0].sum() - centroid[0],
                     ys.mean() - v[:k, 1].sum() - centroid[1])
        assert d < 3.0, (seed, k, d)
        checked += 1
  assert checked >= 10, checked
  assert 0.8 < np.median(np.concatenate(relative)) < 1.25
  assert np.mean(corr) > 0.5, corr


def test_masks_are_exactly_the_pasted_pixels():
  """Hard paste: pixel differs from the uniform background iff masked.

  Reference: a flat background (its inpainting and warps stay flat) and a
  flat object colour; any misregistered mask pixel shows the background
  colour, any unlabelled object pixel a different one.
  """
  h, w = 80, 112
  bg = np.array([20, 40, 220], np.uint8)
  frame = np.broadcast_to(bg, (h, w, 3)).copy()
  mask = np.zeros((h, w), np.uint8)
  cv2.ellipse(mask, (40, 40), (18, 10), 30, 0, 360, 1, -1)
  cv2.circle(mask, (80, 35), 9, 2, -1)
  frame[mask == 1] = (230, 200, 10)
  frame[mask == 2] = (240, 30, 120)
  config = lucid.DreamConfig(blend="hard", **FLAT)
  # The ideal fill of a flat background (a Telea fill is off by 1 here).
  empty = np.broadcast_to(bg, (h, w, 3)).copy()
  frames, masks, _ = lucid.dream_frames(frame, mask, num_frames=K, seed=4,
                                        config=config, background=empty)
  for k in range(1, K):
    differs = (frames[k] != bg).any(-1)
    np.testing.assert_array_equal(differs, masks[k] > 0)
    assert (masks[k] > 0).sum() > 0.5 * (mask > 0).sum()
  # Poisson blending changes colours, but never outside the masks.
  config = dataclasses.replace(config, blend="poisson")
  frames, masks, _ = lucid.dream_frames(frame, mask, num_frames=K, seed=4,
                                        config=config, background=empty)
  for k in range(1, K):
    assert (frames[k][masks[k] == 0] == bg).all()


def _naive_poisson(region, patch, hard):
  """Direct sparse solve of the 4-neighbour Poisson equation (Perez 2003).

  Inside `hard`: 4 f_p - sum f_q = 4 g_p - sum g_q (g the patch), with f_q
  the region's value for neighbours outside the mask.
  """
  h, w = hard.shape
  inside = np.argwhere(hard > 0)
  index = -np.ones((h, w), np.int64)
  index[tuple(inside.T)] = np.arange(len(inside))
  rows, cols, vals = [], [], []
  rhs = np.zeros((len(inside), 3))
  g = patch.astype(np.float64)
  f = region.astype(np.float64)
  for n, (y, x) in enumerate(inside):
    rows.append(n)
    cols.append(n)
    vals.append(4.0)
    rhs[n] += 4 * g[y, x]
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
      yy, xx = y + dy, x + dx
      rhs[n] -= g[yy, xx]
      if index[yy, xx] >= 0:
        rows.append(n)
        cols.append(index[yy, xx])
        vals.append(-1.0)
      else:
        rhs[n] += f[yy, xx]
  a = sparse.csr_matrix((vals, (rows, cols)), shape=(len(inside),) * 2)
  out = f.copy()
  out[tuple(inside.T)] = sparse_linalg.spsolve(a, rhs)
  return out


@pytest.mark.parametrize("size", [40, 160])
def test_poisson_paste_matches_direct_solve(size):
  """`_poisson_paste` against a direct solve; full and 1/4-resolution paths.

  At 40 px the solve is at full resolution (it must match closely); at
  160 px the membrane is solved at 1/3 resolution and upsampled. A plain
  paste is tens of levels away.
  """
  yy, xx = np.mgrid[:size, :size] * (40.0 / size)
  patch = np.stack([128 + 60 * np.sin(xx / 3.0 + yy / 5.0),
                    100 + 40 * np.cos(yy / 4.0), 90 + xx], -1)
  region = np.stack([60 + xx, 180 - yy, 50 + 0 * xx], -1)
  patch, region = (np.clip(a, 0, 255).astype(np.uint8)
                   for a in (patch, region))
  hard = np.zeros((size, size), np.uint8)
  cv2.ellipse(hard, (size // 2, size // 2), (size // 3, size // 4), 15, 0,
              360, 1, -1)
  got = lucid._poisson_paste(region, patch, hard).astype(np.float64)
  want = _naive_poisson(region, patch, hard)
  inside = hard > 0
  err = np.abs(got - want)[inside]
  assert err.mean() < (0.6 if size == 40 else 2.5), err.mean()
  assert (got[~inside] == region[~inside]).all()
  # The reference can fail: a plain paste is far from it.
  assert np.abs(patch.astype(np.float64) - want)[inside].mean() > 15


def test_occlusion_follows_depth_order():
  """Where two objects overlap, the higher id is seen and labelled.

  Reference: each object's own warp of its frame-0 alpha (no TPS here, so
  the warp is the recorded affine matrix; nearest-neighbour rounding can
  differ on the rim, so the overlap is eroded by a pixel). Two touching
  disks drift into each other in some frames of some seeds. With the ids
  swapped (the left disk now in front) the overlap goes to the other disk:
  the id decides, not the position.
  """
  h, w = 96, 128
  frame = _blocks(h, w)
  mask = np.zeros((h, w), np.uint8)
  cv2.circle(mask, (45, 48), 20, 1, -1)
  cv2.circle(mask, (85, 48), 20, 2, -1)
  config = lucid.DreamConfig(inpaint="telea", blend="hard",
                             speed_medians=(6.0,), speed_jitter=0.0,
                             tps_amplitude=0.0, **FLAT)
  swapped = np.where(mask > 0, 3 - mask, 0).astype(np.uint8)
  front = 2
  for ids in (mask, swapped):
    overlapping = 0
    for seed in range(6):
      _, masks, info = lucid.dream_frames(frame, ids, num_frames=12,
                                          seed=seed, config=config)
      assert info["ids"] == [1, 2]
      for k in range(1, 12):
        warped = [cv2.warpAffine((ids == i).astype(np.uint8),
                                 info["objects"][k - 1][i]["matrix"],
                                 (w, h), flags=cv2.INTER_NEAREST)
                  for i in (1, 2)]
        both = cv2.erode(warped[0] & warped[1], np.ones((3, 3))) > 0
        overlapping += both.sum() > 20
        assert (masks[k][both] == front).all()
        for i in (1, 2):  # Each object's own, unshared pixels are its own.
          own = cv2.erode(warped[i - 1] & (1 - warped[2 - i]),
                          np.ones((3, 3))) > 0
          assert (masks[k][own] == i).all()
    assert overlapping >= 5, overlapping


def test_inpainting_keeps_texture_where_telea_fails():
  """Shift-map fill of a hole in block texture is as textured as around it.

  Reference: Telea on the same hole (the previous method) is a smooth
  diffusion, its texture ratio well below 1.
  """
  frame = _blocks(96, 128, cell=8, seed=1)
  mask = np.zeros((96, 128), np.uint8)
  cv2.circle(mask, (64, 48), 16, 1, -1)
  config = lucid.DreamConfig()
  hole = lucid.hole_mask(mask, config)
  new = lucid.inpaint_background(frame, mask, config)
  old = lucid.inpaint_background(frame, mask, dataclasses.replace(
      config, inpaint="telea"))
  np.testing.assert_array_equal(new[hole == 0], frame[hole == 0])
  assert _texture_ratio(old, hole) < 0.4
  assert _texture_ratio(new, hole) > 0.6
  # Deterministic (no hidden randomness in the fill).
  np.testing.assert_array_equal(new, lucid.inpaint_background(frame, mask,
                                                              config))


def test_synthetic_multi_object():
  frame, mask = _synthetic()
  frames, masks, info = lucid.dream_frames(frame, mask, num_frames=K, seed=3)
  _check_ids_and_first_frame(frame, mask, frames, masks)
  assert info["ids"] == [1, 2, 5]
  # The objects move independently of each other.
  for i in info["ids"]:
    assert ((masks[K - 1] == i) != (mask == i)).sum() > 0.05 * (
        mask == i).sum()
  shifts = [info["objects"][K - 2][i]["matrix"][:, 2] for i in info["ids"]]
  assert not np.allclose(shifts[0], shifts[1])


def _hole_and_ring(mask, info, masks, k):
  """Where frame k shows inpainted background, and a background ring."""
  fg = (mask > 0).astype(np.uint8)
  h, w = mask.shape
  m_bg = info["background"][k - 1]["matrix"]
  warp = lambda a: cv2.warpAffine(a, m_bg, (w, h), flags=cv2.INTER_NEAREST)
  near_fg = cv2.dilate((masks[k] > 0).astype(np.uint8), np.ones((9, 9)))
  hole = warp(cv2.erode(fg, np.ones((5, 5)))) & (1 - near_fg)
  ring = warp(cv2.dilate(fg, np.ones((41, 41))) -
              cv2.dilate(fg, np.ones((21, 21)))) & (1 - near_fg)
  return hole.astype(bool), ring.astype(bool)


def _inpainted_like_surroundings(frame, mask, frames, masks, info):
  """Per dreamed frame: is the uncovered old object region like its ring?

  Returns:
    (verdicts, ratios): per frame, whether the hole's mean grey level is a
    typical ring value (between the ring's 10th and 90th percentiles), and
    the hole's mean gradient magnitude over the ring's.
  """
  verdicts, ratios = [], []
  for k in range(1, len(frames)):
    hole, ring = _hole_and_ring(mask, info, masks, k)
    assert hole.sum() > 1000 and ring.sum() > 1000
    grey = frames[k].astype(np.float64).mean(-1)
    lo, hi = np.percentile(grey[ring], [10, 90])
    verdicts.append(lo < grey[hole].mean() < hi)
    g = _gradient(frames[k])
    ratios.append(g[hole].mean() / g[ring].mean())
  return verdicts, np.array(ratios)


def test_blackswan_dreaming(blackswan, tmp_path):
  frame, mask = blackswan
  # 1/4-resolution shift-map keeps the test to a few seconds; fast motion
  # uncovers enough of the filled hole to compare it with its ring.
  config = lucid.DreamConfig(inpaint_scale=4, speed_medians=(40.0,),
                             speed_jitter=0.0)
  frames, masks, info = lucid.dream_frames(frame, mask, num_frames=K, seed=0,
                                           config=config)
  _check_ids_and_first_frame(frame, mask, frames, masks)
  assert set(np.unique(masks).tolist()) == {0, 1}
  verdicts, ratios = _inpainted_like_surroundings(frame, mask, frames, masks,
                                                  info)
  assert all(verdicts)
  # The same clip over a black hole fails the check; over the Telea fill
  # (the previous method, a smooth ghost) it has much less texture.
  black = np.where(lucid.hole_mask(mask, config)[..., None] > 0, 0,
                   frame).astype(np.uint8)
  bad = lucid.dream_frames(frame, mask, num_frames=K, seed=0, config=config,
                           background=black)
  assert not any(_inpainted_like_surroundings(frame, mask, *bad)[0])
  telea = lucid.inpaint_background(frame, mask, dataclasses.replace(
      config, inpaint="telea"))
  old = lucid.dream_frames(frame, mask, num_frames=K, seed=0, config=config,
                           background=telea)
  old_ratios = _inpainted_like_surroundings(frame, mask, *old)[1]
  assert (ratios > 1.5 * old_ratios).all(), (ratios, old_ratios)
  path = tmp_path / "lucid_blackswan_sheet.png"
  sheet = lucid.contact_sheet([(frames, masks), old[:2]], num_frames=K)
  assert sheet.shape[0] == 2 * round(160 * 480 / 854)
  cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
  print(f"lucid sample sheet: {path}")
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
