"""OSVOS: aligned bilinear upsampling, side outputs and fuse, initialisation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vosjax import losses
from vosjax.errors import InputError
from vosjax.models import osvos
from vosjax.models import pretrained
from vosjax.models import upsample


def _osvos_filter(size):
  """OSVOS-PyTorch layers/osvos_layers.py `upsample_filt` (even size)."""
  factor = (size + 1) // 2
  center = factor - 0.5
  og = np.arange(size)
  f = 1 - np.abs(og - center) / factor
  return np.outer(f, f)


def _naive_upsample(x, kernel, s):
  """PyTorch ConvTranspose2d (no padding) by scatter, then crop s/2.

  `full[s*i + a, s*j + b] += x[i, j] @ kernel[a, b]`, size (n + 1) * s; the
  crop keeps `full[s/2 : s/2 + n*s]` (the input-grid alignment derived in
  vosjax.models.upsample).
  """
  bsz, h, w, _ = x.shape
  k = kernel.shape[0]
  full = np.zeros((bsz, (h - 1) * s + k, (w - 1) * s + k, kernel.shape[-1]))
  for i in range(h):
    for j in range(w):
      full[:, s * i:s * i + k, s * j:s * j + k] += np.einsum(
          "bc,ijcf->bijf", x[:, i, j].astype(np.float64), kernel)
  o = s // 2
  return full[:, o:o + h * s, o:o + w * s]


@pytest.mark.parametrize("s", [2, 4, 8, 16])
def test_transposed_conv2d_equals_scatter_definition(s):
  """Random (learned) kernel: the phase-split routine is the transposed conv."""
  rng = np.random.default_rng(s)
  x = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
  kernel = rng.normal(size=(2 * s, 2 * s, 3, 2)).astype(np.float32)
  got = upsample.transposed_conv2d(x, kernel, s)
  np.testing.assert_allclose(got, _naive_upsample(x, kernel, s), atol=1e-4,
                             rtol=1e-4)


@pytest.mark.parametrize("s", [2, 4, 8, 16])
def test_bilinear_kernel_is_osvos_upsample_filt(s):
  np.testing.assert_allclose(upsample.bilinear_kernel_2d(s),
                             _osvos_filter(2 * s), rtol=1e-6)


@pytest.mark.parametrize("s", [2, 4, 8, 16])
def test_upsampled_map_lies_on_the_input_pixel_grid(s):
  """A ramp pooled in s x s blocks upsamples back to the ramp (interior).

  Block m of a linear ramp f(i) = 3i + 1 averages to f(s*m + (s - 1)/2),
  and linear interpolation is exact on linear functions, so the aligned
  upsampling returns f(i) wherever both taps are inside the map. An offset
  error of d pixels shows up as 3d everywhere.
  """
  n = 5
  ramp = 3.0 * np.arange(n * s) + 1.0
  blocks = ramp.reshape(n, s).mean(1)
  x = np.broadcast_to(blocks[None, :, None, None], (1, n, n, 1))
  x = x * np.ones((1, 1, n, 1))
  module = upsample.BilinearUpsample2D(s)
  y = np.asarray(module.apply({}, jnp.asarray(x, jnp.float32)))[0, :, :, 0]
  inner = slice(s, (n - 1) * s)  # both taps inside: away from the borders
  np.testing.assert_allclose(y[inner, inner],
                             np.broadcast_to(ramp[inner, None], y[inner,
                                                                  inner].shape),
                             rtol=1e-5)


@pytest.mark.parametrize("s", [2, 4, 16])
def test_edge_mode_is_clamped_bilinear_resize(s):
  """edge_mode="edge" == jax.image.resize(linear), borders included."""
  x = jax.random.normal(jax.random.key(0, impl="rbg"), (2, 3, 5, 4))
  y = upsample.BilinearUpsample2D(s, edge_mode="edge").apply({}, x)
  ref = jax.image.resize(x, (2, 3 * s, 5 * s, 4), "linear")
  np.testing.assert_allclose(y, ref, atol=2e-6)


def test_learnable_upsampling_starts_as_the_fixed_one():
  """Dense diagonal kernel (interp_surgery) == channel-wise fixed path."""
  x = jax.random.normal(jax.random.key(1, impl="rbg"), (2, 3, 4, 5))
  fixed = upsample.BilinearUpsample2D(4).apply({}, x)
  module = upsample.BilinearUpsample2D(4, learnable=True)
  params = module.init(jax.random.key(0), x)
  assert params["params"]["kernel"].shape == (8, 8, 5, 5)
  np.testing.assert_allclose(module.apply(params, x), fixed, atol=1e-5)


def test_full_size_shapes_and_parameter_count():
  """480x854 via eval_shape; the count by hand from the layer list.

  Trunk 14,714,688; side_prep 3*3*(128+256+512+512)*16 + 4*16 = 202,816;
  score_dsn 4*(16+1) = 68; fuse 64+1 = 65: 14,917,637 (upsampling fixed).
  """
  model = osvos.OSVOS()
  x = jax.ShapeDtypeStruct((2, 480, 854, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  fused, ep = jax.eval_shape(model.apply, variables, x)
  assert fused.shape == (2, 480, 854, 1)
  assert [s.shape for s in ep["side_logits"]] == [(2, 480, 854, 1)] * 4
  assert [s.shape for s in ep["side_features"]] == [(2, 480, 854, 16)] * 4
  assert osvos.count_params(variables["params"]) == 14_917_637


def _tiny_model_and_params(x):
  """Tiny OSVOS with random O(1) side/fuse weights and He-scaled trunk.

  Drawn in NumPy from the eval_shape tree: flax's init would cost a compile,
  and its N(0, 1e-3) side weights would hide wiring errors in rounding.
  """
  model = osvos.OSVOS(width_multiplier=1 / 16, side_features=3)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  rng = np.random.default_rng(1)

  def draw(path, spec):
    scale = 1.0
    if path[0].key == "vgg":
      fan_in = np.prod(spec.shape[:-1]) if len(spec.shape) > 1 else 10.0
      scale = np.sqrt(2.0 / fan_in)
    return jnp.asarray(rng.normal(size=spec.shape) * scale, jnp.float32)

  return model, jax.tree_util.tree_map_with_path(draw, shapes)


def test_side_outputs_and_fuse_recomputed_from_trunk_endpoints():
  """Each side output and the fuse, by hand from the trunk's endpoints.

  Reference per tap (OSVOS-PyTorch vgg_osvos.py `forward`): explicit 3x3
  conv of the tapped endpoint, 1x1 score conv, upsampling by the scatter
  definition with OSVOS's bilinear filter, cropped to H x W; fuse = 1x1 conv
  of the concatenated upsampled side features. The size 20 x 28 is not a
  multiple of 16, so the ceil-mode pools and the end crop are exercised.
  """
  x = np.random.default_rng(0).uniform(-1, 1, (2, 20, 28, 3)).astype(
      np.float32)
  model, params = _tiny_model_and_params(x)
  fused, ep = jax.jit(model.apply)({"params": params}, x)
  feats = []
  for i, (tap, s) in enumerate(zip(osvos.TAPS, (2, 4, 8, 16))):
    e = np.asarray(ep[tap], np.float64)
    h, w = e.shape[1:3]
    assert (h, w) == (-(-20 // s), -(-28 // s))
    p = params[f"side_prep_{tap}"]
    ep_pad = np.pad(e, ((0, 0), (1, 1), (1, 1), (0, 0)))
    prep = sum(ep_pad[:, a:a + h, b:b + w] @ np.asarray(p["kernel"][a, b])
               for a in range(3) for b in range(3)) + np.asarray(p["bias"])
    q = params[f"score_dsn_{tap}"]
    score = prep @ np.asarray(q["kernel"][0, 0]) + np.asarray(q["bias"])
    filt = _osvos_filter(2 * s)[:, :, None, None]
    side = _naive_upsample(score, filt, s)[:, :20, :28]
    c = prep.shape[-1]
    feat = _naive_upsample(prep, filt * np.eye(c), s)[:, :20, :28]
    np.testing.assert_allclose(ep["side_logits"][i], side, rtol=1e-4,
                               atol=1e-4 * np.abs(side).max(), err_msg=tap)
    np.testing.assert_allclose(ep["side_features"][i], feat, rtol=1e-4,
                               atol=1e-4 * np.abs(feat).max(), err_msg=tap)
    feats.append(feat)
  f = params["fuse"]
  want = (np.concatenate(feats, -1) @ np.asarray(f["kernel"][0, 0])
          + np.asarray(f["bias"]))
  assert fused.shape == (2, 20, 28, 1)
  np.testing.assert_allclose(fused, want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())


def test_loss_reaches_every_parameter():
  """Parent loss (side weight 1): every parameter gets a gradient."""
  x = np.random.default_rng(2).uniform(-1, 1, (1, 16, 16, 3)).astype(
      np.float32)
  labels = np.zeros((1, 16, 16, 1), np.float32)
  labels[:, 4:11, 5:12] = 1
  model, params = _tiny_model_and_params(x)

  def loss_fn(p):
    fused, ep = model.apply({"params": p}, x)
    return losses.deeply_supervised_bce(fused, ep["side_logits"], labels,
                                        1.0)[0]

  grads = jax.jit(jax.grad(loss_fn))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)


def _config(**kw):
  return ml_collections.ConfigDict(dict(
      {"width_multiplier": 1.0, "side_features": 16, "init": "imagenet"},
      **kw))


def test_init_variables_loads_the_trunk_and_keeps_side_init():
  """ImageNet trunk placed under params/vgg; side layers N(0, 1e-3), bias 0."""
  config = _config(input_channels=4)
  model = osvos.build_model(config)
  variables = osvos.init_variables(model, config, (1, 32, 32, 4),
                                   jax.random.key(0, impl="rbg"))
  weights = pretrained.load_vgg16_imagenet()["params"]
  got = variables["params"]["vgg"]
  for name, leaves in weights.items():
    if name == "conv1_1":
      np.testing.assert_array_equal(got[name]["kernel"][:, :, :3],
                                    leaves["kernel"])
      assert not np.any(got[name]["kernel"][:, :, 3:])
      np.testing.assert_array_equal(got[name]["bias"], leaves["bias"])
    else:
      for leaf, value in leaves.items():
        np.testing.assert_array_equal(got[name][leaf], value)
  side = variables["params"]["side_prep_conv3_3"]
  assert 5e-4 < np.std(side["kernel"]) < 2e-3 and not np.any(side["bias"])


def test_init_variables_rejects_imagenet_at_other_widths():
  config = _config(width_multiplier=0.25)
  with pytest.raises(InputError, match="width_multiplier"):
    osvos.init_variables(osvos.build_model(config), config, (1, 32, 32, 3),
                         jax.random.key(0, impl="rbg"))
  config = _config(init="coco")
  with pytest.raises(InputError, match="init"):
    osvos.init_variables(osvos.build_model(config), config, (1, 32, 32, 3),
                         jax.random.key(0, impl="rbg"))


def test_learning_rate_multipliers_follow_the_released_sgd_groups():
  """train_parent.py / train_online.py groups, leaf by leaf."""
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  params = jax.eval_shape(osvos.OSVOS(learn_upsampling=True).init,
                          jax.random.key(0), x)["params"]
  parent = osvos.learning_rate_multipliers(params, "parent")
  online = osvos.learning_rate_multipliers(params, "online")
  expect = {("vgg", "conv4_2", "kernel"): (1, 1),
            ("vgg", "conv4_2", "bias"): (2, 2),
            ("side_prep_conv2_2", "kernel"): (1, 1),
            ("side_prep_conv2_2", "bias"): (2, 2),
            ("score_dsn_conv5_3", "kernel"): (0.1, 0),
            ("score_dsn_conv5_3", "bias"): (0.2, 0),
            ("fuse", "kernel"): (0.01, 0.01),
            ("fuse", "bias"): (0.02, 0.02),
            ("upscale_conv4_3", "kernel"): (0, 0),
            ("upscale_score_conv3_3", "kernel"): (0, 0)}
  for path, (want_parent, want_online) in expect.items():
    p, o = parent, online
    for k in path:
      p, o = p[k], o[k]
    assert p == pytest.approx(want_parent) and o == pytest.approx(
        want_online), path
