"""3-D convolution and pooling with TF 'SAME' semantics and selectable kernels.

XLA:CPU lowers 3-D `conv_general_dilated` poorly: measured on 2 cores,
Conv3d_1a_7x7 on [1, 16, 224, 224, 3] takes 0.59 s forward natively and 0.09 s
when the temporal taps are folded into channels and a single 2-D convolution
runs; a 3x3x3 96->128 conv on [2, 8, 28, 28, 96] forward+backward 0.37 s vs
0.17 s; and the input gradient of a strided native 3-D conv is pathological
(143 s for one call). Re-measured with jax 0.10.2 and `vosjax.xla_flags`:
the whole I3D forward on [1, 16, 224, 224, 3] takes 1.47 s natively and
0.55 s folded, a train-mode forward+backward on [1, 16, 112, 112, 3] 1.37 s
vs 0.43 s (benchmarks/bench_i3d.py). `Conv3D` therefore offers two
implementations with the same parameters and numerics:

* 'native': `lax.conv_general_dilated` on NDHWC / DHWIO.
* 'fold_time': pad time as TF 'SAME' would, gather the kt temporal taps for
  every output frame into the channel axis ([B, T', H, W, kt * Cin]), fold
  time into the batch and run one 2-D 'SAME' convolution with the kernel
  reshaped to (kh, kw, kt * Cin, Cout). Spatial 'SAME' padding of the 2-D conv
  equals the spatial part of the 3-D 'SAME' padding, so results agree to float
  rounding. Costs kt copies of the input in memory.

The 2-D convolutions run fastest on XLA:CPU's own (Eigen) kernels, not
YNNPACK's, which `vosjax.xla_flags` selects on import of vosjax. Max
pooling is separable with a tap-wise gradient (`max_pool_3d`), the same
values and gradient routing as XLA's select-and-scatter. Together they took
I3D's gradient step on [1, 16, 224, 224, 3] from 5.24 s to 1.72 s on 2
CPU cores, against PyTorch's 2.01 s (benchmarks/bench_i3d.py prints both).

'auto' picks 'fold_time' on CPU (measured above) and 'native' elsewhere
(GPU/TPU are unmeasured in this repository so far: cuDNN has native 3-D
kernels, so 'native' is the conservative default there).

Mixed precision: every model takes a computation `dtype` (float32 or
bfloat16, `COMPUTE_DTYPES`, from `config.model.compute_dtype` through
`compute_dtype`) while its parameters stay float32; `Conv3D` casts its input
and kernel to `dtype` and accumulates in it, as flax's `nn.Conv` does.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from vosjax.errors import InputError

IMPLS = ('auto', 'native', 'fold_time')

_DN_3D = ('NDHWC', 'DHWIO', 'NDHWC')
_DN_2D = ('NHWC', 'HWIO', 'NHWC')


# Computation dtypes a model may run in; parameters, optimiser state, batch
# norm statistics, logits and losses stay float32 (mixed precision as in
# Micikevicius et al., ICLR 2018; bfloat16 keeps float32's exponent range,
# so no loss scaling is needed, unlike float16).
COMPUTE_DTYPES = ('float32', 'bfloat16')
DEFAULT_COMPUTE_DTYPE = 'float32'  # Also for model configs without the field.


def compute_dtype(name: str | None,
                  flag: str = '--config.model.compute_dtype') -> Any:
  """The jnp dtype of a `COMPUTE_DTYPES` name (None: the default, float32);
  one-line InputError otherwise."""
  name = DEFAULT_COMPUTE_DTYPE if name is None else name
  if name not in COMPUTE_DTYPES:
    raise InputError(f'{flag}={name!r}: expected one of '
                     f"{', '.join(map(repr, COMPUTE_DTYPES))}")
  return jnp.dtype(name)


def resolve_impl(impl: str) -> str:
  """Maps 'auto' to the fastest implementation for the default backend."""
  if impl not in IMPLS:
    raise ValueError(f'Unknown conv impl {impl!r}; expected one of {IMPLS}')
  if impl != 'auto':
    return impl
  return 'fold_time' if jax.default_backend() == 'cpu' else 'native'


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF 'SAME' padding (low, high) for one axis: the extra pixel goes high."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv3d_native(x: jax.Array, kernel: jax.Array,
                  strides: Sequence[int]) -> jax.Array:
  """3-D 'SAME' convolution via XLA's native 3-D conv.

  Args:
    x: [B, T, H, W, Cin].
    kernel: [kt, kh, kw, Cin, Cout].
    strides: (st, sh, sw).

  Returns:
    [B, ceil(T/st), ceil(H/sh), ceil(W/sw), Cout].
  """
  return lax.conv_general_dilated(
      x, kernel, window_strides=tuple(strides), padding='SAME',
      dimension_numbers=_DN_3D)


def conv3d_fold_time(x: jax.Array, kernel: jax.Array,
                     strides: Sequence[int]) -> jax.Array:
  """Same as `conv3d_native`, computed as one 2-D conv (see module doc)."""
  b, t, h, w, cin = x.shape
  kt, kh, kw, kcin, cout = kernel.shape
  if kcin != cin:
    raise ValueError(f'kernel expects {kcin} input channels, got {cin}')
  st, sh, sw = strides
  t_out = -(-t // st)
  lo, hi = same_padding(t, kt, st)
  if lo or hi:
    x = jnp.pad(x, ((0, 0), (lo, hi), (0, 0), (0, 0), (0, 0)))
  # Tap i of output frame o reads padded frame o * st + i.
  last = (t_out - 1) * st + 1
  taps = [x[:, i:i + last:st] for i in range(kt)]
  folded = taps[0] if kt == 1 else jnp.concatenate(taps, axis=-1)
  folded = folded.reshape(b * t_out, h, w, kt * cin)
  # (kt, kh, kw, Cin, Cout) -> (kh, kw, kt * Cin, Cout), tap-major like
  # the channel concatenation above.
  k2 = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, cout)
  y = lax.conv_general_dilated(
      folded, k2, window_strides=(sh, sw), padding='SAME',
      dimension_numbers=_DN_2D)
  return y.reshape(b, t_out, *y.shape[1:])


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1, 1),
           impl: str = 'auto') -> jax.Array:
  """Functional 3-D 'SAME' convolution; `impl` in IMPLS."""
  impl = resolve_impl(impl)
  fn = conv3d_native if impl == 'native' else conv3d_fold_time
  return fn(x, kernel, tuple(strides))


class Conv3D(nn.Module):
  """3-D convolution, TF 'SAME' padding, parameters laid out like nn.Conv.

  Attributes:
    features: output channels.
    kernel_size: (kt, kh, kw).
    strides: (st, sh, sw).
    use_bias: add a learned bias.
    impl: 'auto' | 'native' | 'fold_time'.
    kernel_init / bias_init: initialisers (nn.Conv's defaults).
    dtype: computation (and output) dtype; None keeps the input's.
      Parameters are float32 whatever it is.
  """
  features: int
  kernel_size: Sequence[int] = (1, 1, 1)
  strides: Sequence[int] = (1, 1, 1)
  use_bias: bool = False
  impl: str = 'auto'
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Any] = nn.initializers.zeros_init()
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, T, H, W, Cin] -> [B, T', H', W', features]."""
    if self.dtype is not None:
      x = x.astype(self.dtype)
    kshape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param('kernel', self.kernel_init, kshape, jnp.float32)
    y = conv3d(x, kernel.astype(x.dtype), self.strides, self.impl)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
      y = y + bias.astype(y.dtype)
    return y


def max_pool_3d(x: jax.Array, window: Sequence[int],
                strides: Sequence[int]) -> jax.Array:
  """TF 'SAME' max pooling over (T, H, W): padding never wins (-inf).

  Computed as three 1-D poolings, over W, then H, then T (`max_pool_axis`):
  the same maxima as one 3-D window, and the gradient goes to the same
  element, the first maximum of each window in row-major (t, h, w) order, as
  XLA's select-and-scatter (the autodiff of a 3-D `lax.reduce_window`, the
  reference in tests/test_conv3d.py) routes it, ties included. XLA:CPU's
  select-and-scatter measured 10-20x the forward on I3D's pools (0.19 s for
  MaxPool3d_2a's gradient, forward 0.011 s).

  Args:
    x: [B, T, H, W, C].
    window: (wt, wh, ww).
    strides: (st, sh, sw).

  Returns:
    [B, ceil(T/st), ceil(H/sh), ceil(W/sw), C].
  """
  for axis in (3, 2, 1):  # W first, T last: T is the outermost choice.
    if window[axis - 1] > 1 or strides[axis - 1] > 1:
      x = max_pool_axis(x, axis, window[axis - 1], strides[axis - 1])
  return x


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_axis(x: jax.Array, axis: int, window: int,
                  stride: int) -> jax.Array:
  """TF 'SAME' max pooling of `x` along one axis.

  Its gradient goes to the first maximum of each window, as
  select-and-scatter's, computed as one masked, shifted add per tap (fused
  elementwise passes).
  """
  return _max_pool_axis_fwd(x, axis, window, stride)[0]


def _axis_pads(x, axis, window, stride):
  pads = [(0, 0)] * x.ndim
  pads[axis] = same_padding(x.shape[axis], window, stride)
  return pads


def _max_pool_axis_fwd(x, axis, window, stride):
  dims, steps = [1] * x.ndim, [1] * x.ndim
  dims[axis], steps[axis] = window, stride
  y = lax.reduce_window(x, -jnp.inf, lax.max, dims, steps,
                        _axis_pads(x, axis, window, stride))
  return y, (x, y)


def _max_pool_axis_bwd(axis, window, stride, residuals, dy):
  x, y = residuals
  (lo, hi) = _axis_pads(x, axis, window, stride)[axis]
  xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype),
               [(0, 0, 0)] * axis + [(lo, hi, 0)] +
               [(0, 0, 0)] * (x.ndim - axis - 1))
  size, n = xp.shape[axis], y.shape[axis]
  zero = jnp.zeros((), dy.dtype)
  taken = jnp.zeros(y.shape, bool)
  dxp = None
  for offset in range(window):  # In order: the first maximum wins.
    last = offset + (n - 1) * stride + 1
    tap = lax.slice_in_dim(xp, offset, last, stride, axis)
    hit = (tap == y) & ~taken
    taken = taken | hit
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (offset, size - last, stride - 1)
    part = lax.pad(jnp.where(hit, dy, zero), zero, config)
    dxp = part if dxp is None else dxp + part
  return (lax.slice_in_dim(dxp, lo, lo + x.shape[axis], axis=axis),)


max_pool_axis.defvjp(_max_pool_axis_fwd, _max_pool_axis_bwd)
