"""Losses against hand-computed cases and naive references."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from vosjax import losses


def test_class_balanced_bce_hand_computed():
  # One example, 4 pixels: labels 1,0,0,0; logits 0, 0, ln 3, -ln 3.
  # |Y+|=1, |Y-|=3, |Y|=4. Positive weight 3/4, negative weight 1/4.
  logits = jnp.array([[0.0, 0.0, math.log(3), -math.log(3)]])
  labels = jnp.array([[1, 0, 0, 0]])
  pos = (3 / 4) * math.log(0.5)
  neg = (1 / 4) * (math.log(0.5) + math.log(1 - 0.75) + math.log(1 - 0.25))
  expected = -(pos + neg) / 4
  got = losses.class_balanced_bce(logits, labels)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_class_balanced_bce_matches_naive_per_example_mean():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 5, 7, 1)).astype(np.float32) * 3
  labels = (rng.random((3, 2, 5, 7, 1)) < 0.3).astype(np.float32)
  naive = []
  for x, y in zip(logits, labels):
    p = 1 / (1 + np.exp(-x.astype(np.float64)))
    n_pos, n_neg = y.sum(), (1 - y).sum()
    n = y.size
    ll = (n_neg / n) * y * np.log(p) + (n_pos / n) * (1 - y) * np.log(1 - p)
    naive.append(-ll.sum() / n)
  np.testing.assert_allclose(losses.class_balanced_bce(logits, labels),
                             np.mean(naive), rtol=1e-5)


def test_class_balanced_bce_is_finite_for_huge_logits():
  logits = jnp.array([[1e4, -1e4, 80.0, -80.0]])
  labels = jnp.array([[0, 1, 1, 0]])
  value, grad = jax.value_and_grad(losses.class_balanced_bce)(logits, labels)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  assert value > 100  # confidently wrong on half the pixels


def test_class_balanced_bce_ignores_masked_pixels():
  logits = jnp.array([[2.0, -1.0, 50.0]])
  labels = jnp.array([[1, 0, 0]])
  masked = losses.class_balanced_bce(logits, labels, mask=jnp.array([[1, 1, 0]]))
  unmasked = losses.class_balanced_bce(logits[:, :2], labels[:, :2])
  np.testing.assert_allclose(masked, unmasked, rtol=1e-6)
