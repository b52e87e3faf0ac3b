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


def test_deeply_supervised_bce_hand_computed():
  """total = L(fused) + w * sum L(side), each L worked out by hand.

  Labels 1,0,0,0 (|Y+|=1, |Y-|=3). All-zero logits: every pixel has
  log s = log(1 - s) = -ln 2, so L = [(3/4) ln 2 + (1/4) 3 ln 2] / 4
  = (3/8) ln 2. Logits 0, 0, ln 3, -ln 3: the case of the test above.
  """
  labels = jnp.array([[1, 0, 0, 0]])
  zeros = jnp.zeros((1, 4))
  case = jnp.array([[0.0, 0.0, math.log(3), -math.log(3)]])
  l_zero = 3 / 8 * math.log(2)
  l_case = -((3 / 4) * math.log(0.5) + (1 / 4) * (
      math.log(0.5) + math.log(0.25) + math.log(0.75))) / 4
  total, metrics = losses.deeply_supervised_bce(zeros, [case, zeros, case],
                                                labels, 0.25)
  np.testing.assert_allclose(total, l_zero + 0.25 * (2 * l_case + l_zero),
                             rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_fused"], l_zero, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_side0"], l_case, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_side2"], l_case, rtol=1e-6)
  assert sorted(metrics) == ["loss_fused", "loss_side0", "loss_side1",
                             "loss_side2"]


def test_deeply_supervised_bce_zero_weight_is_online_loss():
  """Side weight 0 (OSVOS online): fused loss only, no side gradient; the
  mask reaches every term."""
  rng = np.random.default_rng(0)
  fused = rng.normal(size=(2, 5, 6, 1)).astype(np.float32)
  sides = [rng.normal(size=(2, 5, 6, 1)).astype(np.float32) for _ in range(4)]
  labels = (rng.random((2, 5, 6, 1)) < 0.3).astype(np.float32)
  mask = (rng.random((2, 5, 6, 1)) < 0.8).astype(np.float32)
  f = lambda fu, si, w: losses.deeply_supervised_bce(fu, si, labels, w,
                                                     mask)[0]
  np.testing.assert_allclose(
      f(fused, sides, 0.0),
      losses.class_balanced_bce(fused, labels, mask), rtol=1e-6)
  g_fused, g_sides = jax.grad(f, argnums=(0, 1))(fused, sides, 0.0)
  assert np.abs(g_fused).max() > 0
  assert all(not np.any(g) for g in g_sides)
  # Weight 1: masked pixels get no gradient in any head.
  _, g_sides = jax.grad(f, argnums=(0, 1))(fused, sides, 1.0)
  for g in g_sides:
    assert not np.any(np.asarray(g)[mask == 0]) and np.abs(g).max() > 0


# --- modified_triplet_loss (PML) -------------------------------------------


def _naive_triplet(anchor, alab, ref, rlab, margin):
  """Double loop in float64: the definition of the issue, term by term."""
  total, count = 0.0, 0
  for i in range(anchor.shape[0]):
    if alab[i] < 0:
      continue
    dpos, dneg = [], []
    for j in range(ref.shape[0]):
      if rlab[j] < 0:
        continue
      d = float(np.sum((anchor[i].astype(np.float64) - ref[j]) ** 2))
      (dpos if rlab[j] == alab[i] else dneg).append(d)
    if dpos and dneg:
      total += max(0.0, min(dpos) - min(dneg) + margin)
      count += 1
  return total / count if count else 0.0


def _triplet_case(seed, a=23, r=37, d=5, num_labels=3):
  rng = np.random.default_rng(seed)
  anchor = rng.normal(size=(a, d)).astype(np.float32)
  ref = rng.normal(size=(r, d)).astype(np.float32)
  alab = rng.integers(-1, num_labels, size=a).astype(np.int32)
  rlab = rng.integers(-1, num_labels, size=r).astype(np.int32)
  return anchor, alab, ref, rlab


def test_modified_triplet_matches_naive_multi_object_with_ignore():
  anchor, alab, ref, rlab = _triplet_case(0)
  want = _naive_triplet(anchor, alab, ref, rlab, 0.5)
  got = losses.modified_triplet_loss(anchor, alab, ref, rlab, 0.5,
                                     chunk_size=4, ref_chunk_size=5)
  assert want > 0
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_modified_triplet_chunked_equals_unchunked_and_jits():
  anchor, alab, ref, rlab = _triplet_case(1)
  fn = jax.jit(losses.modified_triplet_loss,
               static_argnames=("chunk_size", "ref_chunk_size"))
  whole = fn(anchor, alab, ref, rlab, 1.0, chunk_size=1000,
             ref_chunk_size=1000)
  for c, rc in [(1, 1), (7, 3), (23, 37), (5, 100)]:
    np.testing.assert_allclose(
        fn(anchor, alab, ref, rlab, 1.0, chunk_size=c, ref_chunk_size=rc),
        whole, rtol=1e-6)


def test_modified_triplet_empty_pools_give_zero():
  anchor, _, ref, _ = _triplet_case(2)
  ones_a = np.ones(anchor.shape[0], np.int32)
  # Every reference has the anchors' label: negative pools are empty.
  assert float(losses.modified_triplet_loss(
      anchor, ones_a, ref, np.ones(ref.shape[0], np.int32), 1.0)) == 0.0
  # Every reference is ignored: both pools empty.
  assert float(losses.modified_triplet_loss(
      anchor, ones_a, ref, -np.ones(ref.shape[0], np.int32), 1.0)) == 0.0
  # Only anchors without a positive pool are skipped, not zero-averaged.
  alab = np.array([1, 2], np.int32)
  a2 = np.array([[0.0], [5.0]], np.float32)
  r2 = np.array([[1.0], [0.5]], np.float32)
  rlab = np.array([1, 0], np.int32)
  # Anchor 0: d_pos = 1, d_neg = 0.25 -> 1 - 0.25 + 0.1 = 0.85;
  # anchor 1 (no positive) is skipped.
  np.testing.assert_allclose(
      losses.modified_triplet_loss(a2, alab, r2, rlab, 0.1), 0.85, rtol=1e-6)


def test_modified_triplet_gradients_match_finite_differences():
  anchor, alab, ref, rlab = _triplet_case(3, a=9, r=11, d=3)
  anchor, ref = anchor.astype(np.float64), ref.astype(np.float64)
  f = lambda x, y: losses.modified_triplet_loss(
      x, alab, y, rlab, 2.0, chunk_size=4, ref_chunk_size=3)
  x, y = jnp.asarray(anchor, jnp.float32), jnp.asarray(ref, jnp.float32)
  gx, gy = jax.grad(f, argnums=(0, 1))(x, y)
  # Central differences of the float64 naive loss (piecewise smooth: with
  # random data no hinge or argmin switches within eps).
  eps = 1e-4
  for arr, g, which in [(anchor, gx, 0), (ref, gy, 1)]:
    num = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
      plus, minus = arr.copy(), arr.copy()
      plus[idx] += eps
      minus[idx] -= eps
      args_p = (plus, ref) if which == 0 else (anchor, plus)
      args_m = (minus, ref) if which == 0 else (anchor, minus)
      num[idx] = (_naive_triplet(args_p[0], alab, args_p[1], rlab, 2.0)
                  - _naive_triplet(args_m[0], alab, args_m[1], rlab, 2.0)) / (
                      2 * eps)
    assert np.abs(num).max() > 0
    np.testing.assert_allclose(g, num, atol=2e-3)
