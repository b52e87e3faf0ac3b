"""Tests of vosjax.image: the model range, resizing by a scale, upsampling,
multi-scale logits and the config section that selects them.

References: hand-computed values, and a naive bilinear interpolation with
OpenCV's half-pixel-centre convention (pixel i covers [i, i + 1), its centre
at i + 0.5).
"""

import ml_collections
import numpy as np

from vosjax import image


def _naive_bilinear(m, height, width):
  h, w = m.shape
  out = np.zeros((height, width), np.float64)
  for y in range(height):
    sy = min(max((y + 0.5) * h / height - 0.5, 0.0), h - 1.0)
    y0 = int(np.floor(sy))
    y1, fy = min(y0 + 1, h - 1), sy - y0
    for x in range(width):
      sx = min(max((x + 0.5) * w / width - 0.5, 0.0), w - 1.0)
      x0 = int(np.floor(sx))
      x1, fx = min(x0 + 1, w - 1), sx - x0
      out[y, x] = ((1 - fy) * ((1 - fx) * m[y0, x0] + fx * m[y0, x1])
                   + fy * ((1 - fx) * m[y1, x0] + fx * m[y1, x1]))
  return out


def test_model_range_round_trips_uint8():
  rgb = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
  x = image.to_model_range(rgb)
  assert x.min() == -1.0 and x.max() == 1.0
  np.testing.assert_array_equal(image.to_uint8(x), rgb)


def test_resize_by_half_averages_and_keeps_ids_exact():
  frames = np.zeros((1, 4, 6, 3), np.uint8)
  frames[0, :2, :2] = 200  # One 2x2 block -> one output pixel of 200.
  small = image.resize(frames, 0.5)
  assert small.shape == (1, 2, 3, 3)
  assert small[0, 0, 0].tolist() == [200, 200, 200]
  assert small[0, 1, 2].tolist() == [0, 0, 0]
  ids = np.array([[[0, 0, 3, 3, 255, 255]] * 4], np.uint8)
  small_ids = image.resize(ids, 0.5, nearest=True)
  assert set(np.unique(small_ids)) <= {0, 3, 255}
  assert image.resize(frames, 1.0) is frames


def test_upsample_is_bilinear_with_half_pixel_centres():
  rng = np.random.default_rng(7)
  maps = rng.normal(size=(2, 5, 7)).astype(np.float32)
  up = image.upsample(maps, 12, 17)
  assert up.shape == (2, 12, 17)
  for m, u in zip(maps, up):
    np.testing.assert_allclose(u, _naive_bilinear(m, 12, 17), atol=1e-4)
  assert image.upsample(maps, 5, 7) is maps


def test_logits_at_scales_averages_each_scale_upsampled():
  """Reference: resize, predict, upsample by hand for each scale, then the
  mean; the predictor's logits depend on the scale it sees."""
  rng = np.random.default_rng(3)
  frames = rng.integers(0, 256, size=(2, 8, 12, 3), dtype=np.uint8)

  def predict(x):  # [N, h, w, 3] -> [N, h, w], a function of the size too.
    return x.mean(-1).astype(np.float32) / 255 + x.shape[1]

  got = image.logits_at_scales(predict, frames, (0.5, 1.0, 0.25))
  per_scale = [np.stack([_naive_bilinear(m, 8, 12)
                         for m in predict(image.resize(frames, s))])
               for s in (0.5, 1.0, 0.25)]
  want = np.mean(per_scale, axis=0)
  assert got.shape == (2, 8, 12)
  np.testing.assert_allclose(got, want, atol=1e-4)
  # The sizes' offsets (4, 8, 2) average to 14 / 3.
  assert abs(got.mean() - (frames.mean() / 255 + 14 / 3)) < 0.05
  # One scale is the single-scale path itself, bit for bit.
  np.testing.assert_array_equal(
      image.logits_at_scales(predict, frames, (0.5,)),
      image.upsample(predict(image.resize(frames, 0.5)), 8, 12))


def test_logits_at_scales_with_flip_averages_the_mirrored_view():
  """Reference: each scale predicted on the frames and on their mirror image
  (whose logits are mirrored back), upsampled by hand, then the mean over
  all views; a predictor that is not mirror-symmetric shows the flip."""
  rng = np.random.default_rng(5)
  frames = rng.integers(0, 256, size=(2, 8, 12, 3), dtype=np.uint8)
  ramp = np.linspace(0.0, 1.0, 12, dtype=np.float32)

  def predict(x):  # Adds a left-to-right ramp: mirroring changes the result.
    return (x[..., 0].astype(np.float32) / 255
            + np.interp(np.linspace(0, 11, x.shape[2]), np.arange(12), ramp))

  got = image.logits_at_scales(predict, frames, (0.5, 1.0), flip=True)
  views = []
  for s in (0.5, 1.0):
    small = image.resize(frames, s)
    views.append(predict(small))
    views.append(predict(small[:, :, ::-1])[:, :, ::-1])
  want = np.mean([np.stack([_naive_bilinear(m, 8, 12) for m in v])
                  for v in views], axis=0)
  np.testing.assert_allclose(got, want, atol=1e-4)
  # At full scale the ramp and its mirror average to a constant 0.5.
  full = image.logits_at_scales(predict, frames, (1.0,), flip=True)
  np.testing.assert_allclose(full, frames[..., 0] / 255 + 0.5, atol=1e-6)


def test_augmented_logits_reads_scales_scale_and_flip_from_the_config():
  """Reference: `logits_at_scales` called with the views spelled out."""
  rng = np.random.default_rng(11)
  frames = rng.integers(0, 256, size=(1, 8, 12, 3), dtype=np.uint8)
  ramp = np.linspace(0.0, 1.0, 12, dtype=np.float32)

  def predict(x):  # Size- and mirror-dependent, so each view differs.
    return (x[..., 1].astype(np.float32) / 255 + x.shape[1]
            + np.interp(np.linspace(0, 11, x.shape[2]), np.arange(12), ramp))

  def got(**fields):
    return image.augmented_logits(predict, frames,
                                  ml_collections.ConfigDict(fields))

  def want(scales, flip=False):
    return image.logits_at_scales(predict, frames, scales, flip=flip)

  np.testing.assert_array_equal(got(scale=0.5), want((0.5,)))
  np.testing.assert_array_equal(got(scale=0.5, scales=()), want((0.5,)))
  np.testing.assert_array_equal(got(), want((1.0,)))
  np.testing.assert_array_equal(got(scale=0.5, scales=(1.0, 0.25)),
                                want((1.0, 0.25)))
  np.testing.assert_array_equal(got(scale=0.5, flip=True),
                                want((0.5,), flip=True))
  assert not np.array_equal(want((0.5,)), want((0.5,), flip=True))
