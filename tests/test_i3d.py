"""Tests for vosjax.models.i3d: shapes, naming, and DeepMind's published output.

Oracle: DeepMind kinetics-i3d's `expected_out/tf_v1/no_imagenet_rgb.txt`,
the published top classes of these exact Kinetics-400 `rgb_scratch` weights on
the CricketShot sample (top-1 "playing cricket", logit 19.488598).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models import i3d
from vosjax.models import pretrained
from vosjax.tools import classify_video

# Known I3D endpoint shapes for a [1, 64, 224, 224, 3] clip (the paper's
# Fig. 3 strides: conv1 /2 in T, H, W; pools 2a, 3a /2 in H, W; 4a, 5a /2).
ENDPOINT_SHAPES = {
    'Conv3d_1a_7x7': (1, 32, 112, 112, 64),
    'MaxPool3d_2a_3x3': (1, 32, 56, 56, 64),
    'Conv3d_2b_1x1': (1, 32, 56, 56, 64),
    'Conv3d_2c_3x3': (1, 32, 56, 56, 192),
    'MaxPool3d_3a_3x3': (1, 32, 28, 28, 192),
    'Mixed_3b': (1, 32, 28, 28, 256),
    'Mixed_3c': (1, 32, 28, 28, 480),
    'MaxPool3d_4a_3x3': (1, 16, 14, 14, 480),
    'Mixed_4b': (1, 16, 14, 14, 512),
    'Mixed_4c': (1, 16, 14, 14, 512),
    'Mixed_4d': (1, 16, 14, 14, 512),
    'Mixed_4e': (1, 16, 14, 14, 528),
    'Mixed_4f': (1, 16, 14, 14, 832),
    'MaxPool3d_5a_2x2': (1, 8, 7, 7, 832),
    'Mixed_5b': (1, 8, 7, 7, 832),
    'Mixed_5c': (1, 8, 7, 7, 1024),
    'Logits': (1, 400),
    'Predictions': (1, 400),
}

# Published top-5 for the unquantised input (no_imagenet_rgb.txt).
PUBLISHED_TOP5 = ['playing cricket', 'robot dancing', 'pumping fist',
                  'breakdancing', 'hurling (sport)']
PUBLISHED_TOP1_LOGIT = 19.488598


def numpy_init(model, x, seed=0):
  """Random variables shaped like model.init (jax.random compiles slowly)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if 'var' in name:
      return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32)
    return jnp.asarray(rng.normal(0, 0.3, s.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_endpoint_shapes_full_network():
  x = jax.ShapeDtypeStruct((1, 64, 224, 224, 3), jnp.float32)
  model = i3d.InceptionI3d(final_endpoint='Predictions')
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  out, endpoints = jax.eval_shape(model.apply, variables, x)
  got = {k: tuple(v.shape) for k, v in endpoints.items()}
  assert got == ENDPOINT_SHAPES
  assert out.shape == (1, 400)


def test_parameter_names_follow_deepmind():
  x = jax.ShapeDtypeStruct((1, 16, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(i3d.InceptionI3d().init, jax.random.key(0), x)
  unit = variables['params']['Mixed_4b']['Branch_2']['Conv3d_0b_3x3']
  assert unit['conv_3d']['kernel'].shape == (3, 3, 3, 16, 48)
  assert set(unit['batch_norm']) == {'bias'}  # Sonnet: offset, no scale.
  stats = variables['batch_stats']['Mixed_4b']['Branch_2']['Conv3d_0b_3x3']
  assert set(stats['batch_norm']) == {'mean', 'var'}
  logits = variables['params']['Logits']['Conv3d_0c_1x1']['conv_3d']
  assert logits['kernel'].shape == (1, 1, 1, 1024, 400)
  assert logits['bias'].shape == (400,)
  assert 'Branch_3' in variables['params']['Mixed_5c']


def test_final_endpoint_and_width_multiplier():
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 9, 32, 32, 3)),
                  jnp.float32)
  model = i3d.InceptionI3d(final_endpoint='Mixed_3b', width_multiplier=0.125)
  variables = numpy_init(model, x)
  out, endpoints = jax.jit(model.apply)(variables, x)
  assert list(endpoints)[-1] == 'Mixed_3b'
  # 0.125 * (64 + 128 + 32 + 32) channels; 16 -> 2 in the 5x5 branch.
  assert out.shape == (1, 5, 4, 4, 8 + 16 + 4 + 4)
  assert np.all(np.isfinite(out))
  assert 'Mixed_3c' not in variables['params']
  with pytest.raises(ValueError, match='Mixed_9z'):
    i3d.InceptionI3d(final_endpoint='Mixed_9z').apply(variables, x)


def test_train_mode_updates_batch_stats():
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 9, 32, 32, 3)),
                  jnp.float32)
  model = i3d.InceptionI3d(num_classes=7, final_endpoint='Mixed_3c',
                           width_multiplier=1 / 32)
  variables = numpy_init(model, x)
  _, updates = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats']))(variables, x)
  before = variables['batch_stats']['Conv3d_1a_7x7']['batch_norm']['mean']
  after = updates['batch_stats']['Conv3d_1a_7x7']['batch_norm']['mean']
  assert not np.allclose(before, after)


def _cricket_clip(sample_dir):
  frames = classify_video.read_video(
      sample_dir / 'v_CricketShot_g04_c01_rgb.gif')
  assert frames.shape == (79, 224, 224, 3)
  # The GIF stores (x + 1) / 2; preprocess maps [0, 255] back to [-1, 1].
  return classify_video.preprocess(frames)


def _logits(x):
  model = i3d.InceptionI3d()
  variables = pretrained.load_i3d_kinetics400()
  return np.asarray(jax.jit(model.apply)(variables, x)[0][0])


def test_cricket_full_clip_matches_published(kinetics_sample_dir):
  """All 79 frames: ~20 s on 2 idle cores, minutes on a shared machine."""
  labels = classify_video.kinetics400_labels()
  published = (kinetics_sample_dir / 'expected_out' / 'tf_v1' /
               'no_imagenet_rgb.txt').read_text().splitlines()
  assert published[3].endswith(PUBLISHED_TOP5[0])
  logits = _logits(_cricket_clip(kinetics_sample_dir))
  top5 = [labels[i] for i in np.argsort(-logits)[:5]]
  assert top5 == PUBLISHED_TOP5
  # The GIF's 256-colour palette quantisation lowers the logits by about 2
  # (measured: 17.64 vs 19.49); allow [published - 3, published + 0.5].
  assert PUBLISHED_TOP1_LOGIT - 3.0 <= logits.max() <= (
      PUBLISHED_TOP1_LOGIT + 0.5)
