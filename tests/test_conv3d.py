"""Tests for vosjax.models.conv3d: implementations agree with a naive oracle."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models import conv3d

# (input [B, T, H, W, C], kernel (kt, kh, kw), strides, Cout): odd and even
# kernels, strides that do and do not divide the size, kt > T.
CASES = [
    ((1, 5, 7, 6, 3), (3, 3, 3), (1, 1, 1), 4),
    ((2, 6, 9, 8, 2), (7, 7, 7), (2, 2, 2), 3),
    ((1, 7, 6, 7, 3), (2, 2, 2), (2, 2, 2), 2),
    ((1, 4, 5, 5, 2), (4, 1, 2), (3, 1, 2), 3),
    ((1, 3, 4, 4, 2), (1, 1, 1), (1, 1, 1), 5),
    ((1, 2, 5, 5, 2), (5, 3, 3), (1, 2, 1), 2),
]


def _tf_same_pad(n, k, s):
  out = -(-n // s)
  total = max((out - 1) * s + k - n, 0)
  return total // 2, total - total // 2, out


def naive_conv3d(x, w, strides):
  """Direct loops over output positions, TF 'SAME' padding from its formula."""
  x = np.asarray(x, np.float64)
  w = np.asarray(w, np.float64)
  pads = [_tf_same_pad(n, k, s) for n, k, s in
          zip(x.shape[1:4], w.shape[:3], strides)]
  xp = np.pad(x, [(0, 0)] + [(lo, hi) for lo, hi, _ in pads] + [(0, 0)])
  outs = [o for _, _, o in pads]
  y = np.zeros((x.shape[0], *outs, w.shape[-1]))
  for t, h, c in itertools.product(*[range(o) for o in outs]):
    patch = xp[:, t * strides[0]:t * strides[0] + w.shape[0],
               h * strides[1]:h * strides[1] + w.shape[1],
               c * strides[2]:c * strides[2] + w.shape[2]]
    y[:, t, h, c] = np.einsum('bijkc,ijkcd->bd', patch, w)
  return y


def _data(case, seed=0):
  shape, ksize, strides, cout = case
  # NumPy RNG: jax.random.normal takes seconds to compile on XLA:CPU.
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape, np.float32)
  w = rng.standard_normal((*ksize, shape[-1], cout), np.float32) / np.sqrt(
      np.prod(ksize) * shape[-1])
  return jnp.asarray(x), jnp.asarray(w, jnp.float32), strides


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('impl', ['native', 'fold_time'])
def test_conv3d_matches_naive_oracle(case, impl):
  x, w, strides = _data(case)
  got = conv3d.conv3d(x, w, strides, impl=impl)
  want = naive_conv3d(x, w, strides)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('case', CASES)
def test_fold_time_gradients_match_native(case):
  x, w, strides = _data(case, seed=1)
  cot = np.random.default_rng(2).standard_normal(
      conv3d.conv3d_native(x, w, strides).shape, np.float32)

  @jax.jit
  def grads(x, w):
    def loss(impl):
      return lambda x, w: jnp.sum(conv3d.conv3d(x, w, strides, impl) * cot)
    return (jax.grad(loss('native'), argnums=(0, 1))(x, w),
            jax.grad(loss('fold_time'), argnums=(0, 1))(x, w))

  (gx_n, gw_n), (gx_f, gw_f) = grads(x, w)
  np.testing.assert_allclose(gx_f, gx_n, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(gw_f, gw_n, atol=1e-5, rtol=1e-5)


def test_module_params_like_nn_conv_and_impls_agree():
  x = np.random.default_rng(0).standard_normal((1, 4, 6, 6, 3), np.float32)
  mods = {impl: conv3d.Conv3D(5, (3, 3, 3), (2, 1, 2), use_bias=True,
                              impl=impl)
          for impl in ('native', 'fold_time', 'auto')}
  shapes = jax.eval_shape(mods['native'].init, jax.random.key(1), x)
  shapes = jax.tree_util.tree_map(jnp.shape, shapes['params'])
  assert shapes == {'kernel': (3, 3, 3, 3, 5), 'bias': (5,)}
  rng = np.random.default_rng(1)
  variables = {'params': {
      'kernel': rng.standard_normal((3, 3, 3, 3, 5), np.float32),
      'bias': rng.standard_normal((5,), np.float32)}}
  ref = mods['native'].apply(variables, x)
  for impl in ('fold_time', 'auto'):
    np.testing.assert_allclose(mods[impl].apply(variables, x), ref,
                               atol=1e-5, rtol=1e-5)


def test_resolve_impl():
  assert conv3d.resolve_impl('native') == 'native'
  assert conv3d.resolve_impl('auto') in ('native', 'fold_time')
  with pytest.raises(ValueError, match='bogus'):
    conv3d.resolve_impl('bogus')


@pytest.mark.parametrize('window,strides', [((1, 3, 3), (1, 2, 2)),
                                            ((3, 3, 3), (2, 2, 2)),
                                            ((2, 2, 2), (2, 2, 2)),
                                            ((3, 3, 3), (1, 1, 1))])
def test_max_pool_tf_same(window, strides):
  x = np.random.default_rng(3).standard_normal((1, 5, 7, 6, 2), np.float32)
  pads = [_tf_same_pad(n, k, s) for n, k, s in zip(x.shape[1:4], window,
                                                    strides)]
  xp = np.pad(x, [(0, 0)] + [(lo, hi) for lo, hi, _ in pads] + [(0, 0)],
              constant_values=-np.inf)
  outs = [o for _, _, o in pads]
  want = np.zeros((1, *outs, 2))
  for t, h, c in itertools.product(*[range(o) for o in outs]):
    want[:, t, h, c] = xp[:, t * strides[0]:t * strides[0] + window[0],
                          h * strides[1]:h * strides[1] + window[1],
                          c * strides[2]:c * strides[2] + window[2]].max(
                              axis=(1, 2, 3))
  np.testing.assert_array_equal(conv3d.max_pool_3d(x, window, strides), want)


@pytest.mark.parametrize('window,strides', [((1, 3, 3), (1, 2, 2)),
                                            ((3, 3, 3), (2, 2, 2)),
                                            ((2, 2, 2), (2, 2, 2)),
                                            ((3, 3, 3), (1, 1, 1)),
                                            ((1, 1, 3), (1, 1, 1))])
def test_max_pool_gradient_routes_like_select_and_scatter(window, strides):
  """The reference is autodiff of one 3-D `lax.reduce_window` (XLA's
  select-and-scatter). ReLU'd small integers make ties the rule, and integer
  cotangents make every sum exact, so the routing must match exactly."""
  rng = np.random.default_rng(7)
  x = jnp.asarray(np.maximum(rng.integers(-2, 3, (2, 5, 7, 6, 3)), 0),
                  jnp.float32)
  pads = [(0, 0)] + [conv3d.same_padding(n, k, s) for n, k, s in
                     zip(x.shape[1:4], window, strides)] + [(0, 0)]

  def reference(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1),
                                 (1, *strides, 1), pads)

  y, ref_vjp = jax.vjp(reference, x)
  got_y, got_vjp = jax.vjp(lambda x: conv3d.max_pool_3d(x, window, strides),
                           x)
  dy = jnp.asarray(rng.integers(-3, 4, y.shape), jnp.float32)
  np.testing.assert_array_equal(got_y, y)
  np.testing.assert_array_equal(got_vjp(dy)[0], ref_vjp(dy)[0])
