"""Tests for vosjax.models.inflate: the I3D paper's boring-video fixed point."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models import conv3d
from vosjax.models import inflate


class Net2D(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), padding='SAME', name='c1')(x))
    return nn.Conv(2, (3, 3), strides=(2, 2), padding='SAME', name='c2')(x)


class Net3D(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(conv3d.Conv3D(4, (3, 3, 3), use_bias=True, name='c1')(x))
    return conv3d.Conv3D(2, (3, 3, 3), (1, 2, 2), use_bias=True,
                         name='c2')(x)


@pytest.mark.parametrize('method', ['mean', 'center'])
def test_boring_video_fixed_point(method):
  rng = np.random.default_rng(0)
  frame = jnp.asarray(rng.uniform(-1, 1, (1, 8, 8, 3)), jnp.float32)
  p2 = jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), jnp.float32),
      jax.eval_shape(Net2D().init, jax.random.key(0), frame))
  video = jnp.repeat(frame[:, None], 7, axis=1)  # [1, 7, 8, 8, 3]
  target = jax.eval_shape(Net3D().init, jax.random.key(0), video)
  p3 = inflate.inflate_params(p2, target, method)
  want = Net2D().apply(p2, frame)
  got = Net3D().apply(p3, video)
  # Two 3-tap layers: frames 2..4 never see temporal zero padding.
  lo, hi = (0, 7) if method == 'center' else (2, 5)
  for t in range(lo, hi):
    np.testing.assert_allclose(got[:, t], want, atol=1e-5, rtol=1e-5)


def test_inflate_kernel_and_errors():
  k = jnp.arange(8.0).reshape(1, 2, 2, 2)
  np.testing.assert_allclose(inflate.inflate_kernel(k, 4).sum(0), k)
  c = inflate.inflate_kernel(k, 3, 'center')
  np.testing.assert_array_equal(c[1], k)
  assert not np.any(c[0]) and not np.any(c[2])
  with pytest.raises(ValueError, match='bogus'):
    inflate.inflate_kernel(k, 3, 'bogus')
  with pytest.raises(ValueError, match='c1/kernel'):
    inflate.inflate_params({'c1': {'kernel': k}},
                           {'c1': {'kernel': jnp.zeros((3, 2, 2, 2, 5))}})
