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


# ---------------------------------------------------------------------------
# Mixed precision (config.model.compute_dtype).

# bfloat16's unit roundoff: 8 significant bits, so rounding to it changes a
# value by at most 2^-8 relative.
BF16_U = 2.0 ** -8


def _rms(a):
  return np.sqrt(np.mean(np.asarray(a, np.float64) ** 2))


def test_bfloat16_forward_equals_float32_within_bf16_rounding():
  """bf16 compute gives the float32 model's outputs within L * 2^-8 (RMS).

  Reference: the same network and parameters in float32 (recomputed by hand
  in the test above). Tolerance: every bfloat16 rounding (the normalised
  input's cast, each conv's output, the features' upsampling; ReLU and max
  pooling are exact) changes a value by at most u = 2^-8 relative; to first
  order, with gains near 1, L roundings in sequence add up to at most
  L * u relative (RMS over the map). L per tap (input, trunk convs up to
  the tap, side_prep, then score_dsn for a side logit or the upsampling for
  a side feature): conv2_2 7, conv3_3 10, conv4_3 13, conv5_3 16. The fuse
  runs in float32: its error is at most sum_c |w_c| * L_c * u * rms(feat_c)
  over the fused channels. Random errors typically add as sqrt(L) * u.
  """
  depth = {"conv2_2": 7, "conv3_3": 10, "conv4_3": 13, "conv5_3": 16}
  x = np.random.default_rng(0).uniform(-1, 1, (2, 20, 28, 3)).astype(
      np.float32)
  model32, params = _tiny_model_and_params(x)
  model16 = model32.clone(dtype=jnp.bfloat16)
  fused32, ep32 = jax.jit(model32.apply)({"params": params}, x)
  fused16, ep16 = jax.jit(model16.apply)({"params": params}, x)
  assert ep16["conv5_3"].dtype == jnp.bfloat16
  assert fused16.dtype == jnp.float32
  assert all(s.dtype == jnp.float32
             for s in ep16["side_logits"] + ep16["side_features"])
  weights = np.asarray(params["fuse"]["kernel"]).reshape(len(osvos.TAPS), -1)
  fuse_bound = 0.0
  for i, tap in enumerate(osvos.TAPS):
    bound = depth[tap] * BF16_U
    for name in ("side_logits", "side_features"):
      got, want = ep16[name][i], ep32[name][i]
      err = _rms(np.asarray(got) - np.asarray(want)) / _rms(want)
      assert 0 < err < bound, (tap, name, err)
    feat = np.asarray(ep32["side_features"][i])
    fuse_bound += sum(abs(w) * bound * _rms(feat[..., c])
                      for c, w in enumerate(weights[i]))
  assert 0 < _rms(np.asarray(fused16) - np.asarray(fused32)) < fuse_bound


def test_bfloat16_train_step_keeps_float32_parameters():
  """One OSVOS parent step (the program's loss and per-group SGD) with
  compute_dtype=bfloat16: the loss, parameters and optimiser state come out
  float32.

  Traced with jax.eval_shape (dtypes without a compile: the backward pass
  of even the tiny OSVOS compiles for ~10 s of CPU); FC-I3D's test runs a
  real bf16 step and checks the values.
  """
  # pylint: disable=g-import-not-at-top
  from vosjax import train
  from vosjax.programs import osvos as program
  # pylint: enable=g-import-not-at-top
  rng = np.random.default_rng(3)
  batch = {"frames": rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32),
           "labels": (rng.uniform(size=(2, 16, 16)) > 0.5).astype(
               np.float32)}
  _, params = _tiny_model_and_params(batch["frames"])
  config = _config(width_multiplier=1 / 16, side_features=3, init="random",
                   compute_dtype="bfloat16")
  model = osvos.build_model(config)
  assert model.dtype == jnp.bfloat16
  tx, _ = program.make_optimizer({"learning_rate": 0.1, "momentum": 0.9},
                                 params, "parent")
  state = train.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  loss_fn = lambda *a: program.segmentation_loss(model, lambda s: 1.0, *a)
  new_state, metrics = jax.eval_shape(
      train.make_train_step(loss_fn), state, batch,
      jax.random.key(0, impl="rbg"))
  assert metrics["loss"].dtype == jnp.float32
  for tree in ("params", "opt_state"):
    leaves = [l for l in jax.tree.leaves(getattr(new_state, tree))
              if jnp.issubdtype(l.dtype, jnp.floating)]  # Not step counts.
    assert leaves and all(l.dtype == jnp.float32 for l in leaves), tree
  assert (jax.tree.map(lambda l: l.shape, new_state.params)
          == jax.tree.map(np.shape, params))


def test_compute_dtype_reaches_masktrack_and_bad_dtype_is_one_line():
  """MaskTrack's network (OSVOS, 4 input channels) takes compute_dtype too;
  anything but float32 / bfloat16 is a one-line InputError naming the flag
  (in build_model and in run.py's validate_config)."""
  # pylint: disable=g-import-not-at-top
  from experiments import osvos_davis16
  from vosjax import experiments
  from vosjax.models import masktrack
  # pylint: enable=g-import-not-at-top
  config = _config(width_multiplier=1 / 16, compute_dtype="bfloat16")
  model = masktrack.build_model(config)
  assert model.dtype == jnp.bfloat16
  x = jax.ShapeDtypeStruct((1, 32, 32, masktrack.INPUT_CHANNELS), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(variables))
  fused, ep = jax.eval_shape(model.apply, variables, x)
  assert fused.dtype == jnp.float32 and ep["conv1_1"].dtype == jnp.bfloat16

  full = osvos_davis16.get_config()
  assert full.model.compute_dtype == "float32"
  full.model.compute_dtype = "float16"
  for check in (lambda: osvos.build_model(full.model),
                lambda: experiments.validate_config(full)):
    with pytest.raises(InputError) as e:
      check()
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--config.model.compute_dtype='float16'")
    assert "bfloat16" in message
