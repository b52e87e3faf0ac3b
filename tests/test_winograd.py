"""Winograd F(2x2, 3x3) against XLA's own convolution and its gradients.

Reference: `lax.conv_general_dilated` (SAME, stride 1, NHWC/HWIO) and
`jax.vjp` of it, which XLA differentiates with its own transpose rules.
"""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models import winograd


def _reference(x, k):
  return lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _inputs(shape, cout, seed=3):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, shape[-1], cout)), jnp.float32)
  g = jnp.asarray(rng.normal(size=shape[:-1] + (cout,)), jnp.float32)
  return x, k, g


def _close(got, want):
  np.testing.assert_allclose(got, want, rtol=0,
                             atol=2e-6 * float(jnp.abs(want).max()))


# Even and odd sizes (odd ones end in a padded half tile), a 1x1 image.
SHAPES = [(2, 6, 4, 5), (1, 7, 9, 3), (1, 1, 1, 4), (2, 3, 8, 6)]


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_equals_xla_convolution(shape):
  x, k, _ = _inputs(shape, 7)
  _close(jax.jit(winograd.conv3x3)(x, k), _reference(x, k))


@pytest.mark.parametrize("shape", SHAPES)
def test_input_and_kernel_gradients_equal_xla_autodiff(shape):
  x, k, g = _inputs(shape, 7)
  dx_ref, dk_ref = jax.vjp(_reference, x, k)[1](g)
  _close(jax.jit(winograd.conv3x3_transpose)(g, k), dx_ref)
  _close(jax.jit(winograd.kernel_grad)(x, g, k), dk_ref)


def test_kernel_transform_by_hand():
  # One channel pair, kernel rows (1, 2, 3), (4, 5, 6), (7, 8, 9):
  # G g G^T, G = [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]].
  k = jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)
  g = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
  want = g @ np.arange(1.0, 10.0).reshape(3, 3) @ g.T
  np.testing.assert_allclose(
      np.asarray(winograd.kernel_transform(k)).reshape(4, 4), want)
  # The centre positions are half-sums along both axes: [1, 1] = 45 / 4.
  assert want[1, 1] == pytest.approx(45 / 4)


def test_applies_only_where_measured_faster():
  f32 = lambda *s: jnp.zeros(s, jnp.float32)
  x, k = f32(1, 8, 8, 128), f32(3, 3, 128, 256)
  assert winograd.applies(x, k, rate=1)
  assert not winograd.applies(x, k, rate=2)  # Dilated: XLA's.
  assert not winograd.applies(f32(1, 8, 8, 64), f32(3, 3, 64, 128), 1)
  assert winograd.applies(x, f32(3, 3, 128, 16), 1)  # OSVOS side prep.
  bf16 = jnp.zeros((1, 8, 8, 128), jnp.bfloat16)
  assert not winograd.applies(bf16, k.astype(jnp.bfloat16), 1)


def test_vgg_conv_gradient_under_shard_map_with_per_device_kernels():
  """The fine-tuning programs differentiate vgg.conv3x3 inside shard_map,
  each device holding its own sequences' parameters (varying over the
  mesh axis); the custom gradient must carry that type (it once returned
  a kernel gradient that did not, and jax refused it).

  Reference: the same gradient outside shard_map (XLA's autodiff).
  """
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from vosjax import sharding  # pylint: disable=g-import-not-at-top
  from vosjax.models import vgg  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  n = mesh.size
  x, k, _ = _inputs((n, 5, 6, 128), 16)
  ks = jnp.stack([k] * n)  # [devices, 3, 3, 128, 16]
  bs = jnp.zeros((n, 16))

  def loss(k, b, x):
    return jnp.sum(vgg.conv3x3(x, k, b, relu=False) ** 2)

  per_device = jax.jit(jax.shard_map(
      lambda ks, bs, x: jax.grad(loss)(ks[0], bs[0], x)[None], mesh=mesh,
      in_specs=(P("data"), P("data"), P("data")), out_specs=P("data")))
  want = jnp.stack([jax.grad(lambda k: jnp.sum(_reference(x[i:i + 1], k)
                                               ** 2))(k) for i in range(n)])
  _close(per_device(ks, bs, x), want)
