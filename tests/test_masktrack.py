"""MaskTrack's network: 4-channel OSVOS, its input encoding, flow images."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vosjax.models import masktrack
from vosjax.models import osvos
from vosjax.models import vgg


def _tiny():
  config = ml_collections.ConfigDict({"init": "random",
                                      "width_multiplier": 1 / 16,
                                      "side_features": 4})
  model = masktrack.build_model(config)
  return model, config


def test_zero_mask_channel_equals_the_three_channel_network():
  """Reference: the same OSVOS with a 3-channel input and conv1_1's kernel
  cut to its RGB taps; a zero fourth channel contributes nothing."""
  model, config = _tiny()
  variables = masktrack.init_variables(model, config,
                                       jax.random.key(0, impl="rbg"))
  kernel = variables["params"]["vgg"]["conv1_1"]["kernel"]
  assert kernel.shape[2] == 4
  params3 = jax.tree.map(lambda x: x, variables["params"])
  params3["vgg"] = dict(params3["vgg"], conv1_1=dict(
      params3["vgg"]["conv1_1"], kernel=kernel[:, :, :3]))
  x = jax.random.uniform(jax.random.key(1), (2, 24, 40, 3), minval=-1.0,
                         maxval=1.0)
  apply = jax.jit(model.apply)
  four = apply(variables, jnp.concatenate(
      [x, jnp.zeros((2, 24, 40, 1))], -1))[0]
  three = apply({"params": params3}, x)[0]
  assert four.shape == (2, 24, 40, 1)  # Full-resolution logits.
  np.testing.assert_allclose(four, three, rtol=1e-5, atol=1e-6)


def test_widened_trunk_ignores_the_mask_until_trained():
  """`vgg.widen_first_conv` (as init "imagenet" does): any mask gives the
  3-channel network's output (reference: the unwidened 3-channel apply)."""
  model, _ = _tiny()
  params3 = jax.tree.map(np.asarray, jax.jit(model.init)(
      jax.random.key(2, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"])
  params4 = dict(params3, vgg=vgg.widen_first_conv(params3["vgg"], 1))
  x = jax.random.uniform(jax.random.key(3), (1, 20, 28, 3), minval=-1.0,
                         maxval=1.0)
  mask = (jax.random.uniform(jax.random.key(4), (1, 20, 28)) > 0.5)
  got = jax.jit(functools.partial(masktrack.apply_fused, model))(
      {"params": params4}, x, mask)
  want = jax.jit(model.apply)({"params": params3}, x)[0][..., 0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_model_input_encoding_hand_computed():
  frames = np.array([[[[0, 255, 127]]]], np.uint8)  # [1, 1, 1, 3]
  masks = np.array([[[1.0]]])
  got = np.asarray(masktrack.model_input(frames, masks))
  np.testing.assert_allclose(got[0, 0, 0], [-1.0, 1.0, 127 / 127.5 - 1.0,
                                            1.0], atol=1e-6)
  got = masktrack.model_input(np.zeros((1, 1, 1, 3), np.float32),
                              np.array([[[0.25]]]))
  np.testing.assert_allclose(got[0, 0, 0, 3], -0.5)


def test_flow_image_is_scaled_magnitude():
  """|(3, 4)| = 5 is the maximum (255); |(0, 0)| = 0; a still frame stays 0."""
  flow = np.zeros((2, 2, 2), np.float32)
  flow[0, 0] = (3.0, 4.0)
  flow[1, 1] = (0.0, 2.5)
  img = masktrack.flow_image(flow)
  assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
  np.testing.assert_array_equal(img[..., 0], [[255, 0], [0, 128]])
  np.testing.assert_array_equal(img[..., 0], img[..., 2])
  still = masktrack.flow_image(np.full((2, 2, 2), 0.1, np.float32))
  assert still.max() == round(255 * np.hypot(0.1, 0.1))
  assert isinstance(masktrack.build_model(_tiny()[1]), osvos.OSVOS)
