"""Inflation of 2-D convolution kernels into 3-D (I3D, Carreira & Zisserman).

I3D bootstraps 3-D filters from an ImageNet 2-D network by repeating each
(kh, kw, Cin, Cout) kernel kt times along time and dividing by kt ('mean'):
on a "boring" video (one frame repeated) every 3-D conv then gives the 2-D
conv's response (away from temporal padding), so the inflated network
reproduces the 2-D network's activations. 'center' puts the 2-D kernel in the
middle tap and zeros elsewhere, the same fixed point on boring videos and an
identity in time for any video.
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

METHODS = ('mean', 'center')


def inflate_kernel(kernel: jax.Array, time_size: int,
                   method: str = 'mean') -> jax.Array:
  """Inflates one 2-D kernel.

  Args:
    kernel: [kh, kw, Cin, Cout] (flax nn.Conv layout).
    time_size: kt, the temporal extent of the 3-D kernel.
    method: 'mean' (repeat and divide by kt) or 'center' (centre tap; for even
      kt the tap at index kt // 2).

  Returns:
    [kt, kh, kw, Cin, Cout] kernel whose temporal sum equals `kernel`.
  """
  if kernel.ndim != 4:
    raise ValueError(f'expected a 2-D kernel [kh, kw, Cin, Cout], got shape '
                     f'{kernel.shape}')
  if time_size < 1:
    raise ValueError(f'time_size must be >= 1, got {time_size}')
  if method == 'mean':
    return jnp.repeat(kernel[None], time_size, axis=0) / time_size
  if method == 'center':
    out = jnp.zeros((time_size, *kernel.shape), kernel.dtype)
    return out.at[time_size // 2].set(kernel)
  raise ValueError(f'Unknown inflation method {method!r}; expected {METHODS}')


def inflate_params(params_2d: Mapping[str, Any],
                   target_3d: Mapping[str, Any],
                   method: str = 'mean',
                   is_kernel: Callable[[tuple[str, ...]], bool] | None = None
                   ) -> dict[str, Any]:
  """Inflates a whole 2-D parameter tree onto a 3-D model's tree.

  Leaves present in both trees are matched by path. A 4-D leaf whose 3-D
  counterpart is 5-D with the same trailing (kh, kw, Cin, Cout) is inflated
  to the target's kt; every other leaf (biases, batch-norm parameters and
  statistics, dense layers) must have the same shape and is copied.

  Args:
    params_2d: nested dict of 2-D arrays (e.g. a 2-D network's variables).
    target_3d: nested dict of arrays or jax.ShapeDtypeStruct giving the 3-D
      model's structure (e.g. `jax.eval_shape(model3d.init, ...)`).
    method: 'mean' or 'center' (see `inflate_kernel`).
    is_kernel: optional predicate on a leaf path to restrict inflation.

  Returns:
    Nested dict with target_3d's structure.

  Raises:
    ValueError: a target leaf is missing in params_2d or shapes are
      incompatible (the message names the path).
  """
  def leaf(path, target):
    keys = tuple(str(getattr(k, 'key', k)) for k in path)
    node = params_2d
    for k in keys:
      if not isinstance(node, Mapping) or k not in node:
        raise ValueError(f"{'/'.join(keys)}: missing in the 2-D parameters")
      node = node[k]
    src = jnp.asarray(node)
    if tuple(src.shape) == tuple(target.shape):
      return src
    if (src.ndim == 4 and len(target.shape) == 5 and
        tuple(target.shape[1:]) == tuple(src.shape) and
        (is_kernel is None or is_kernel(keys))):
      return inflate_kernel(src, target.shape[0], method)
    raise ValueError(f"{'/'.join(keys)}: cannot inflate shape {src.shape} "
                     f'to {tuple(target.shape)}')

  return jax.tree_util.tree_map_with_path(leaf, dict(target_3d))
