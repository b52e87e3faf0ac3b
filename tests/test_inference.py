"""Tests of vosjax.inference: exact coverage counts, tiling vs untiled."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax import davis_io
from vosjax import inference
from vosjax import sharding


def _key(seed):
  # 'rbg' keys: XLA:CPU compiles threefry random numbers very slowly (~15 s
  # for a small normal draw on the shared test machine); rbg takes ~1 s.
  return jax.random.key(seed, impl="rbg")


def _identity(clips):
  return clips.astype(jnp.float32)


def test_window_starts_hand_cases():
  assert inference.window_starts(10, 4, 3) == [0, 3, 6]
  assert inference.window_starts(11, 4, 3) == [0, 3, 6, 7]
  assert inference.window_starts(4, 4, 3) == [0]
  assert inference.window_starts(3, 4, 3) == [0]  # Shorter: one padded window.


@pytest.mark.parametrize("shape,tile,stride,clip_len,clip_stride", [
    ((5, 13, 17, 3), (8, 6), (3, 5), 3, 2),  # Odd sizes, last windows aligned.
    ((2, 5, 30, 3), 8, 7, 4, 4),  # Shorter than the window in T and H.
])
def test_identity_model_is_reproduced_exactly(shape, tile, stride, clip_len,
                                              clip_stride):
  # Sum of covering windows / true count == the input; a counter that starts
  # at 1 (the released FC-I3D code) would shrink every value.
  frames = np.random.default_rng(0).uniform(1, 2, shape).astype(np.float32)
  out = inference.tiled_logits(_identity, frames, tile=tile, stride=stride,
                               clip_len=clip_len, clip_stride=clip_stride,
                               batch_size=4)
  assert out.shape == shape and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), frames, rtol=1e-6)


def test_sharded_over_every_device_matches_one_device():
  frames = np.random.default_rng(3).normal(size=(5, 13, 17, 2)).astype(
      np.float32)

  def square(clips):
    return clips ** 2

  kwargs = dict(tile=8, stride=5, clip_len=3, clip_stride=2, batch_size=8)
  single = inference.tiled_logits(square, frames, **kwargs)
  sharded = inference.tiled_logits(square, frames, mesh=sharding.make_mesh(),
                                   **kwargs)
  np.testing.assert_allclose(np.asarray(sharded), frames ** 2, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(single),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="batch_size 6 must be a multiple"):
    inference.tiled_logits(square, frames, mesh=sharding.make_mesh(),
                           **dict(kwargs, batch_size=6))


def test_average_of_window_dependent_model_matches_naive_loop():
  # Each window outputs its own mean: the result at a pixel is the mean over
  # the windows covering it, checked against explicit loops.
  rng = np.random.default_rng(1)
  frames = rng.normal(size=(7, 11, 9, 1)).astype(np.float32)
  tile, stride, clip_len, clip_stride = 5, 3, 3, 2

  def window_mean(clips):
    return jnp.broadcast_to(clips.mean(axis=(1, 2, 3), keepdims=True),
                            clips.shape)

  out = np.asarray(inference.tiled_logits(
      window_mean, frames, tile=tile, stride=stride, clip_len=clip_len,
      clip_stride=clip_stride, batch_size=3))
  total = np.zeros(frames.shape, np.float64)
  count = np.zeros(frames.shape, np.float64)
  for t in range(0, 7 - clip_len + 1):
    for y in range(0, 11 - tile + 1):
      for x in range(0, 9 - tile + 1):
        used = ((t in (0, 2, 4)) and (y in (0, 3, 6)) and (x in (0, 3, 4)))
        if not used:
          continue
        window = frames[t:t + clip_len, y:y + tile, x:x + tile]
        total[t:t + clip_len, y:y + tile, x:x + tile] += window.mean()
        count[t:t + clip_len, y:y + tile, x:x + tile] += 1
  assert count.min() >= 1
  np.testing.assert_allclose(out, total / count, rtol=1e-5, atol=1e-6)


def test_balanced_batch_size_hand_cases():
  """Hand-counted: fewest calls batch_size allows, windows spread evenly."""
  bbs = inference.balanced_batch_size
  assert bbs(12, 8) == 6  # 2 calls of 6, not 8 + 8 with 4 padding windows.
  assert bbs(12, 4) == 4 and bbs(12, 1) == 1 and bbs(12, 12) == 12
  assert bbs(13, 8) == 7  # 2 calls: 7 + 6 (one padding window).
  assert bbs(5, 8) == 5  # One call of exactly the windows.
  assert bbs(10, 8, multiple=2) == 6  # 2 calls of 5 -> 6 for 2 devices.
  assert bbs(12, 8, multiple=8) == 8  # Cannot go below the device count.
  for n in range(1, 40):
    for b in range(1, 12):
      size = bbs(n, b)
      # Same number of calls as plain batches of b, never larger batches,
      # and less than one padding window per call.
      assert -(-n // size) == -(-n // b) and size <= b
      assert -(-n // size) * size - n < -(-n // size)


def test_larger_batch_computes_no_padding_windows():
  """12 windows with batch_size 8: the model sees 2 batches of 6, and the
  result equals batch_size 1's (the identity model, hand-checkable)."""
  seen = []

  def recording_identity(clips):
    seen.append(clips.shape[0])  # At trace time: one entry per shape.
    return clips.astype(jnp.float32) * 2

  frames = np.random.default_rng(5).normal(size=(4, 6, 8, 1)).astype(
      np.float32)
  # 1 x 3 x 4 = 12 windows of 4 x 2 x 2.
  kwargs = dict(tile=2, stride=2, clip_len=4, clip_stride=4)
  out8 = inference.tiled_logits(recording_identity, frames, batch_size=8,
                                **kwargs)
  assert seen == [6]
  out1 = inference.tiled_logits(recording_identity, frames, batch_size=1,
                                **kwargs)
  np.testing.assert_array_equal(np.asarray(out8), frames * 2)
  np.testing.assert_array_equal(np.asarray(out1), np.asarray(out8))


class _ToyFCN(nn.Module):
  """Two 3x3x3 SAME convs: receptive-field radius 2 on every axis."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3, 3), name="conv1")(x))
    return nn.Conv(2, (3, 3, 3), name="logits")(x)


_RADIUS = 2


def _clean_positions(size, window, stride):
  """Positions whose every covering window has them >= radius from its
  interior borders (frame borders do not count)."""
  padded = max(size, window)
  clean = np.ones(size, bool)
  for s in inference.window_starts(padded, window, stride):
    for p in range(s, min(s + window, size)):
      ok_lo = s == 0 or p - s >= _RADIUS
      ok_hi = s + window == padded or s + window - 1 - p >= _RADIUS
      clean[p] &= ok_lo and ok_hi
  return clean


def test_tiled_toy_fcn_matches_untiled_output():
  model = _ToyFCN()
  frames = np.random.default_rng(2).normal(size=(9, 20, 23, 3)).astype(
      np.float32)
  variables = jax.jit(model.init)(_key(0),
                                  frames[None, :6, :10, :10])
  full = np.asarray(jax.jit(model.apply)(variables, frames[None]))[0]

  def apply_fn(variables, clips):
    return model.apply(variables, clips)

  kwargs = dict(params=variables, tile=10, stride=4, clip_len=6,
                clip_stride=2, batch_size=8)
  # 1. Plain averaging: exact away from interior tile borders only.
  plain = np.asarray(inference.tiled_logits(apply_fn, frames, **kwargs))
  clean = (_clean_positions(9, 6, 2)[:, None, None] &
           _clean_positions(20, 10, 4)[None, :, None] &
           _clean_positions(23, 10, 4)[None, None, :])
  assert 0 < clean.sum() < clean.size
  np.testing.assert_allclose(plain[clean], full[clean], rtol=1e-4, atol=1e-5)
  assert np.abs(plain[~clean] - full[~clean]).max() > 1e-3  # A real effect.
  # 2. Margin = receptive-field radius: exact everywhere.
  exact = np.asarray(inference.tiled_logits(
      apply_fn, frames, margin=(_RADIUS,) * 3, **kwargs))
  np.testing.assert_allclose(exact, full, rtol=1e-4, atol=1e-5)
  # 3. A margin below the radius is not enough.
  short = np.asarray(inference.tiled_logits(
      apply_fn, frames, margin=(_RADIUS - 1,) * 3, **kwargs))
  assert np.abs(short - full).max() > 1e-3


def test_margin_too_large_for_stride_is_refused():
  with pytest.raises(ValueError, match="height.*stride <= window - 2"):
    inference.tiled_logits(_identity, np.zeros((4, 30, 30, 3)), tile=10,
                           stride=8, clip_len=4, margin=(0, 2, 0))


def test_predict_masks_binary_and_multiclass():
  binary = np.array([-1e-3, 0.0, 2.0, -5.0], np.float32).reshape(1, 1, 4, 1)
  np.testing.assert_array_equal(inference.predict_masks(binary),
                                [[[0, 0, 1, 0]]])  # sigmoid(0) is not > 0.5.
  multi = np.array([[0.1, 0.9, 0.0], [2.0, -1.0, 0.5]],
                   np.float32).reshape(1, 1, 2, 3)
  masks = inference.predict_masks(multi)
  assert masks.dtype == np.uint8
  np.testing.assert_array_equal(masks, [[[1, 0]]])


def test_write_sequence_masks_round_trip(tmp_path):
  masks = np.zeros((3, 4, 5), np.uint8)
  masks[1, 1:3, 2:4] = 1
  paths = inference.write_sequence_masks(masks, tmp_path, "blackswan")
  assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
  assert paths[0].parent == tmp_path / "blackswan"
  for path, mask in zip(paths, masks):
    np.testing.assert_array_equal(davis_io.read_mask(path), mask)
  with pytest.raises(ValueError, match="blackswan.*\\[T, H, W\\]"):
    inference.write_sequence_masks(masks[0], tmp_path, "blackswan")
