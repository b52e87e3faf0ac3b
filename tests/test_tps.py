"""Thin-plate splines against their definition (Bookstein 1989)."""

import numpy as np

from vosjax.augment import tps


def test_interpolates_control_points_and_reproduces_affine_maps():
  """Exact at the control points; an affine map (zero bending energy) is
  reproduced everywhere with zero kernel weights."""
  rng = np.random.default_rng(0)
  points = rng.uniform(0, 50, size=(9, 2))
  values = rng.normal(size=(9, 2))
  spline = tps.fit(points, values)
  np.testing.assert_allclose(tps.evaluate(spline, points), values, atol=1e-8)
  a = np.array([[0.3, -1.2], [0.7, 0.1]])
  b = np.array([2.0, -5.0])
  spline = tps.fit(points, points @ a.T + b)
  x = rng.uniform(-20, 70, size=(30, 2))
  np.testing.assert_allclose(tps.evaluate(spline, x), x @ a.T + b, atol=1e-7)
  np.testing.assert_allclose(spline.weights, 0, atol=1e-9)


def test_kernel_is_r2_log_r2_by_hand():
  r2 = np.array([0.0, 1.0, 4.0, 0.25])
  np.testing.assert_allclose(tps.kernel(r2),
                             [0.0, 0.0, 4 * np.log(4), 0.25 * np.log(0.25)])


def test_grid_evaluation_equals_pointwise_and_regularization_smooths():
  rng = np.random.default_rng(1)
  src = rng.uniform(0, 50, size=(5, 2))
  spline = tps.fit(src, src + rng.uniform(-5, 5, size=(5, 2)),
                   regularization=1e-6)
  rows, cols = np.arange(3, 9), np.arange(5, 12)
  grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1)
  np.testing.assert_allclose(
      tps.evaluate_grid(spline, rows, cols),
      tps.evaluate(spline, grid.reshape(-1, 2)).reshape(grid.shape),
      atol=1e-9)
  # A large smoothing no longer passes through the points.
  dst = src + rng.uniform(-5, 5, size=(5, 2))
  assert np.abs(tps.evaluate(tps.fit(src, dst, regularization=1e3), src)
                - dst).max() > 0.1
