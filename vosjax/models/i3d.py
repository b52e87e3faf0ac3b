"""Inflated 3-D Inception-v1 (I3D), Carreira & Zisserman, CVPR 2017.

Layer names, channel counts and endpoints follow DeepMind's kinetics-i3d
(`i3d.py`, Apache-2.0) so checkpoints port by name: a unit is a 3-D conv
without bias + Sonnet-v1 batch norm (eps 1e-3, offset but no scale) + ReLU,
all with TF 'SAME' padding. Parameter scopes are, for example,
`Mixed_4b/Branch_2/Conv3d_0b_3x3/conv_3d/kernel` and
`Mixed_4b/Branch_2/Conv3d_0b_3x3/batch_norm/{bias | mean, var}`.

Mixed precision: `dtype` (float32 or bfloat16) is the computation dtype of
every conv and batch norm; parameters and batch-norm statistics stay float32
(flax's BatchNorm reduces in at least float32) and the classification logits
are returned in float32.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vosjax.models import conv3d as conv3d_lib

VALID_ENDPOINTS = (
    'Conv3d_1a_7x7', 'MaxPool3d_2a_3x3', 'Conv3d_2b_1x1', 'Conv3d_2c_3x3',
    'MaxPool3d_3a_3x3', 'Mixed_3b', 'Mixed_3c', 'MaxPool3d_4a_3x3',
    'Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f',
    'MaxPool3d_5a_2x2', 'Mixed_5b', 'Mixed_5c', 'Logits', 'Predictions',
)

# Inception branch widths: (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1).
_MIXED = {
    'Mixed_3b': (64, 96, 128, 16, 32, 32),
    'Mixed_3c': (128, 128, 192, 32, 96, 64),
    'Mixed_4b': (192, 96, 208, 16, 48, 64),
    'Mixed_4c': (160, 112, 224, 24, 64, 64),
    'Mixed_4d': (128, 128, 256, 24, 64, 64),
    'Mixed_4e': (112, 144, 288, 32, 64, 64),
    'Mixed_4f': (256, 160, 320, 32, 128, 128),
    'Mixed_5b': (256, 160, 320, 32, 128, 128),
    'Mixed_5c': (384, 192, 384, 48, 128, 128),
}

# (endpoint, kind, spec) in network order.
_LAYERS = (
    ('Conv3d_1a_7x7', 'unit', (64, (7, 7, 7), (2, 2, 2))),
    ('MaxPool3d_2a_3x3', 'pool', ((1, 3, 3), (1, 2, 2))),
    ('Conv3d_2b_1x1', 'unit', (64, (1, 1, 1), (1, 1, 1))),
    ('Conv3d_2c_3x3', 'unit', (192, (3, 3, 3), (1, 1, 1))),
    ('MaxPool3d_3a_3x3', 'pool', ((1, 3, 3), (1, 2, 2))),
    ('Mixed_3b', 'mixed', None),
    ('Mixed_3c', 'mixed', None),
    ('MaxPool3d_4a_3x3', 'pool', ((3, 3, 3), (2, 2, 2))),
    ('Mixed_4b', 'mixed', None),
    ('Mixed_4c', 'mixed', None),
    ('Mixed_4d', 'mixed', None),
    ('Mixed_4e', 'mixed', None),
    ('Mixed_4f', 'mixed', None),
    ('MaxPool3d_5a_2x2', 'pool', ((2, 2, 2), (2, 2, 2))),
    ('Mixed_5b', 'mixed', None),
    ('Mixed_5c', 'mixed', None),
)


def scaled(channels: int, width_multiplier: float) -> int:
  """Channel count under a width multiplier (at least one channel)."""
  return max(1, int(channels * width_multiplier))


class Unit3D(nn.Module):
  """Conv3D (+ batch norm) (+ ReLU), as DeepMind's Unit3D.

  Attributes:
    features: output channels.
    kernel_size: (kt, kh, kw).
    strides: (st, sh, sw).
    use_batch_norm: Sonnet-v1 batch norm (eps 1e-3, momentum 0.999, no scale).
    use_bias: conv bias (only the logits layer has one).
    activation: apply ReLU.
    conv_impl: Conv3D implementation.
    dtype: computation dtype (parameters stay float32).
  """
  features: int
  kernel_size: Sequence[int] = (1, 1, 1)
  strides: Sequence[int] = (1, 1, 1)
  use_batch_norm: bool = True
  use_bias: bool = False
  activation: bool = True
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """x: [B, T, H, W, C] -> [B, T', H', W', features]."""
    x = conv3d_lib.Conv3D(self.features, tuple(self.kernel_size),
                          tuple(self.strides), use_bias=self.use_bias,
                          impl=self.conv_impl, dtype=self.dtype,
                          name='conv_3d')(x)
    if self.use_batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.999,
                       epsilon=1e-3, use_scale=False, dtype=self.dtype,
                       param_dtype=jnp.float32, name='batch_norm')(x)
    if self.activation:
      x = nn.relu(x)
    return x


class _Branch(nn.Module):
  """One Inception branch: optional 3x3x3 stride-1 max pool, then units."""
  units: Sequence[tuple[str, int, tuple[int, int, int]]]
  pool_first: bool = False
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.pool_first:
      x = conv3d_lib.max_pool_3d(x, (3, 3, 3), (1, 1, 1))
    for name, features, kernel in self.units:
      x = Unit3D(features, kernel, conv_impl=self.conv_impl, dtype=self.dtype,
                 name=name)(x, train=train)
    return x


class InceptionModule(nn.Module):
  """Inception block with four branches concatenated on channels."""
  widths: Sequence[int]
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    w = self.widths
    one, three = (1, 1, 1), (3, 3, 3)
    specs = (
        ((('Conv3d_0a_1x1', w[0], one),), False),
        ((('Conv3d_0a_1x1', w[1], one), ('Conv3d_0b_3x3', w[2], three)),
         False),
        ((('Conv3d_0a_1x1', w[3], one), ('Conv3d_0b_3x3', w[4], three)),
         False),
        ((('Conv3d_0b_1x1', w[5], one),), True),
    )
    outs = [
        _Branch(units, pool_first, self.conv_impl, self.dtype,
                name=f'Branch_{i}')(x, train=train)
        for i, (units, pool_first) in enumerate(specs)]
    return jnp.concatenate(outs, axis=-1)


class _Logits(nn.Module):
  """2x7x7 average pool, dropout, 1x1x1 conv with bias, mean over T, H, W."""
  num_classes: int
  dropout_rate: float = 0.0
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x: [B, T, H, W, C] -> [B, num_classes] float32."""
    # DeepMind: VALID average pool, stride 1. The window is clipped to the
    # feature map so small inputs still work (no change for 224x224 inputs
    # with at least 9 frames, where Mixed_5c is [B, >=2, 7, 7, C]).
    window = tuple(min(k, n) for k, n in zip((2, 7, 7), x.shape[1:4]))
    x = nn.avg_pool(x, window, strides=(1, 1, 1), padding='VALID')
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = Unit3D(self.num_classes, use_batch_norm=False, use_bias=True,
               activation=False, conv_impl=self.conv_impl, dtype=self.dtype,
               name='Conv3d_0c_1x1')(x, train=train)
    # Spatial squeeze (1x1 for 224 inputs) then the mean over time, in
    # float32 (logits feed a softmax / loss).
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))


class InceptionI3d(nn.Module):
  """I3D (Inception-v1 inflated) on RGB clips.

  Attributes:
    num_classes: logits width (400 for Kinetics-400).
    final_endpoint: last endpoint to build; one of VALID_ENDPOINTS.
    dropout_rate: dropout before the logits conv (active only when train).
    width_multiplier: scales every channel count, max(1, int(c * m)); for
      tiny test models (the 400 logits are not scaled).
    conv_impl: Conv3D implementation ('auto' | 'native' | 'fold_time').
    dtype: computation dtype, float32 or bfloat16 (feature endpoints come
      out in it; parameters, batch-norm statistics and logits are float32).
  """
  num_classes: int = 400
  final_endpoint: str = 'Logits'
  dropout_rate: float = 0.0
  width_multiplier: float = 1.0
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs the network up to `final_endpoint`.

    Args:
      x: [B, T, H, W, 3] float, RGB in [-1, 1].
      train: batch statistics from the batch (and updated) and dropout on.

    Returns:
      (output of final_endpoint, endpoints dict). 'Logits' is [B, classes]
      (averaged over time), 'Predictions' its softmax; the others are
      [B, T', H', W', C] feature maps.
    """
    if self.final_endpoint not in VALID_ENDPOINTS:
      raise ValueError(f'Unknown final_endpoint {self.final_endpoint!r}; '
                       f'expected one of {VALID_ENDPOINTS}')
    m = self.width_multiplier
    endpoints = {}
    net = x
    for name, kind, spec in _LAYERS:
      if kind == 'unit':
        features, kernel, strides = spec
        net = Unit3D(scaled(features, m), kernel, strides,
                     conv_impl=self.conv_impl, dtype=self.dtype, name=name)(
                         net, train=train)
      elif kind == 'pool':
        net = conv3d_lib.max_pool_3d(net, *spec)
      else:
        widths = tuple(scaled(c, m) for c in _MIXED[name])
        net = InceptionModule(widths, self.conv_impl, self.dtype, name=name)(
            net, train=train)
      endpoints[name] = net
      if name == self.final_endpoint:
        return net, endpoints

    logits = _Logits(self.num_classes, self.dropout_rate, self.conv_impl,
                     self.dtype, name='Logits')(net, train=train)
    endpoints['Logits'] = logits
    if self.final_endpoint == 'Logits':
      return logits, endpoints
    predictions = jax.nn.softmax(logits, axis=-1)
    endpoints['Predictions'] = predictions
    return predictions, endpoints
