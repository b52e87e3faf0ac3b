"""The scan propagation against a Python loop over frames."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vosjax import propagation
from vosjax.models import masktrack
from vosjax.programs import masktrack as masktrack_program


@functools.lru_cache(maxsize=None)
def _setup():
  config = ml_collections.ConfigDict({"init": "random",
                                      "width_multiplier": 1 / 16,
                                      "side_features": 4})
  model = masktrack.build_model(config)
  variables = masktrack.init_variables(model, config,
                                       jax.random.key(0, impl="rbg"))
  # Scale the fuse up so outputs are far from constant (random init gives
  # near-zero logits).
  params = dict(variables["params"])
  params["fuse"] = jax.tree.map(lambda x: x * 300.0, params["fuse"])
  return model, {"params": params}


def _loop(step, variables, frames, first, feed):
  """Reference: frame by frame on the host, each output fed to the next."""
  jitted = jax.jit(step)
  prev, out = np.asarray(first, np.float32), [np.asarray(first, np.float32)]
  for t in range(1, len(jax.tree.leaves(frames)[0])):
    frame = jax.tree.map(lambda x, t=t: x[t:t + 1], frames)
    prob = np.asarray(jitted(variables, frame, prev[None]))[0]
    out.append(prob)
    prev = (prob > 0.5).astype(np.float32) if feed == "binary" else prob
  return np.stack(out)


@pytest.mark.parametrize("feed", ["binary", "probability"])
def test_scan_equals_python_loop(feed):
  model, variables = _setup()
  step = masktrack_program._step_fn(model, False)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, size=(5, 16, 24, 3), dtype=np.uint8)
  first = np.zeros((16, 24), np.float32)
  first[4:12, 6:18] = 1
  got = np.asarray(propagation.propagate(step, variables, frames, first,
                                         feed=feed))
  want = _loop(step, variables, frames, first, feed)
  assert got.shape == (5, 16, 24)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert 0.05 < (want[1:] > 0.5).mean() < 0.95  # Not a trivial output.
  padded = propagation.propagate_padded(step, variables, frames, first,
                                        feed=feed, bucket=4)
  np.testing.assert_allclose(padded, got, atol=1e-6)


def test_two_streams_average_probabilities():
  """Reference: the loop with the mean of the two streams' sigmoids."""
  model, variables = _setup()
  flow_vars = jax.tree.map(lambda x: -x, variables)
  step = masktrack_program._step_fn(model, True)  # pylint: disable=protected-access
  rng = np.random.default_rng(1)
  frames = {"rgb": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
            "flow": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)}
  first = np.ones((16, 16), np.float32)
  both = {"rgb": variables, "flow": flow_vars}
  got = np.asarray(propagation.propagate(step, both, frames, first,
                                         feed="probability"))

  def naive(v, frame, prev):
    p = [jax.nn.sigmoid(masktrack.apply_fused(model, v[k], frame[k], prev))
         for k in ("rgb", "flow")]
    return (p[0] + p[1]) / 2

  np.testing.assert_allclose(got, _loop(naive, both, frames, first,
                                        "probability"), atol=1e-5)


def test_rejects_unknown_feed():
  model, variables = _setup()
  with pytest.raises(ValueError, match="feed"):
    propagation.propagate(masktrack_program._step_fn(model, False),  # pylint: disable=protected-access
                          variables, jnp.zeros((2, 8, 8, 3), jnp.uint8),
                          jnp.zeros((8, 8)), feed="soft")


def test_cap_area_growth_by_hand():
  """Reference: areas counted by hand. The fed mask has 10 pixels; the
  frame has 10 pixels at 0.995, 5 at 0.75, 5 at 0.55, the rest at 0.1."""
  prev = np.zeros((1, 10, 10), np.float32)
  prev[0, 0] = 1.0
  prob = np.full((1, 10, 10), 0.1, np.float32)
  prob[0, 1] = 0.995
  prob[0, 2, :5], prob[0, 2, 5:] = 0.75, 0.55
  cap = lambda p, c, fed=prev: np.asarray(
      propagation.cap_area_growth(jnp.asarray(p), jnp.asarray(fed), c))
  # At most 11 pixels: 0.5 gives 20, 0.6 and 0.7 give 15, 0.8 gives 10.
  out = cap(prob, 1.1)
  np.testing.assert_array_equal(out > 0.5, prob > 0.8)
  logit = lambda p: np.log(p) - np.log1p(-p)
  np.testing.assert_allclose(logit(out[0, 1, 0]), logit(0.995) - logit(0.8),
                             rtol=1e-5)
  # At most 20: the plain threshold, probabilities unchanged.
  np.testing.assert_allclose(cap(prob, 2.0), prob, rtol=1e-5)
  # Nothing fed: unchanged (a lost object may come back).
  np.testing.assert_allclose(cap(prob, 1.1, np.zeros_like(prev)), prob,
                             rtol=1e-5)
  # No threshold gets under the cap: the highest, 0.99.
  np.testing.assert_array_equal(cap(prob, 0.5) > 0.5, prob > 0.99)


def test_capped_masks_grow_at_most_the_cap():
  """Through the scan, MaskTrack's step with `area_cap`: every frame's mask
  has at most 1.1x the previous mask's pixels, or is the 0.99 mask when no
  threshold gets there, or, after an empty mask, the plain 0.5 mask; and
  without the cap the random network grows faster than that, so the cap
  is what holds it."""
  model, variables = _setup()
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)
  first = np.zeros((32, 48), np.float32)
  first[8:16, 8:20] = 1.0

  def masks(cap):
    step = masktrack_program.propagation_step(model, area_cap=cap)
    return np.asarray(propagation.propagate(step, variables, frames,
                                            first)) > 0.5

  area = lambda m: m.sum((1, 2))
  plain, capped = masks(0.0), masks(1.1)
  assert np.any(area(plain)[1:] > 1.1 * area(plain)[:-1]), area(plain)
  assert not np.array_equal(plain, capped)
  step = jax.jit(masktrack_program.propagation_step(model))
  for t in range(1, len(frames)):
    fed = capped[t - 1][None].astype(np.float32)
    raw = np.asarray(step(variables, frames[t:t + 1], fed))[0]
    if not fed.any():
      np.testing.assert_array_equal(capped[t], raw > 0.5)
    elif area(capped)[t] > 1.1 * area(capped)[t - 1]:
      np.testing.assert_array_equal(capped[t], raw > 0.99)
