"""Thin-plate splines (Bookstein, "Principal Warps", TPAMI 1989), in numpy.

f(x) = a0 + a1 x1 + a2 x2 + sum_i w_i U(|x - p_i|^2), U(r2) = r2 log r2 (a
constant factor of Bookstein's r^2 log r: the same spline), with
sum_i w_i = 0 and sum_i w_i p_i = 0. Used by lucid dreaming (smooth object
deformations) and MaskTrack's mask deformation (its non-rigid step).
"""

from typing import NamedTuple

import numpy as np


class Spline(NamedTuple):
  points: np.ndarray  # [n, 2] control points, float64
  weights: np.ndarray  # [n, c] kernel weights
  affine: np.ndarray  # [3, c]: a0, a1, a2


def kernel(r2):
  """U(r2) = r2 log r2 for squared distances `r2` (0 at 0)."""
  return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-300)), 0.0)


def fit(points, values, regularization=0.0):
  """The spline with f(points_i) = values_i.

  Args:
    points: `[n, 2]` control points (n >= 3).
    values: `[n, c]` values there.
    regularization: added to the kernel's diagonal (a tiny smoothing that
      keeps nearly coincident points solvable; 0 interpolates exactly).

  Returns:
    A `Spline` for `evaluate` and `evaluate_grid`. Solved by least squares:
    collinear points leave the affine part underdetermined, and the
    minimum-norm solution is still an interpolant.
  """
  points = np.asarray(points, np.float64)
  values = np.asarray(values, np.float64)
  n = len(points)
  d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
  p = np.concatenate([np.ones((n, 1)), points], axis=1)
  system = np.zeros((n + 3, n + 3))
  system[:n, :n] = kernel(d2) + regularization * np.eye(n)
  system[:n, n:] = p
  system[n:, :n] = p.T
  rhs = np.zeros((n + 3, values.shape[1]))
  rhs[:n] = values
  solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
  return Spline(points, solution[:n], solution[n:])


def evaluate(spline, x):
  """f(x) `[m, c]` at points `x` `[m, 2]`."""
  x = np.asarray(x, np.float64)
  d2 = ((x[:, None] - spline.points[None]) ** 2).sum(-1)
  return kernel(d2) @ spline.weights + spline.affine[0] + x @ spline.affine[1:]


def evaluate_grid(spline, rows, cols):
  """f on the grid `rows x cols` (first coordinate the row): `[R, C, c]`.

  Separable distances, one control point at a time: no `[R * C, n]` matrix.
  """
  aff, weights = spline.affine, spline.weights
  rr = np.asarray(rows, np.float64)[:, None]
  cc = np.asarray(cols, np.float64)[None, :]
  out = [aff[0, j] + rr * aff[1, j] + cc * aff[2, j]
         for j in range(aff.shape[1])]
  for (pr, pc), w in zip(spline.points, weights):
    u = kernel((rr - pr) ** 2 + (cc - pc) ** 2)
    for j in range(len(out)):
      out[j] = out[j] + u * w[j]
  return np.stack(out, -1)
