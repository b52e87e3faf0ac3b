"""FC-I3D: head shapes, bilinear initialisation, full-size shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models import fc_i3d


@pytest.mark.parametrize("strides", [(1, 2, 2), (2, 4, 4), (4, 16, 16),
                                     (8, 32, 32)])
def test_bilinear_upsample_equals_linear_resize(strides):
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 16))
  module = fc_i3d.BilinearUpsample3D(strides, 1)
  params = module.init(jax.random.key(1), x)
  y = module.apply(params, x)
  t, h, w = (n * s for n, s in zip(x.shape[1:4], strides))
  assert y.shape == (2, t, h, w, 1)
  # Independent reference: JAX's own linear resize of the channel mean.
  ref = jax.image.resize(x.mean(-1, keepdims=True), y.shape, "linear")
  np.testing.assert_allclose(y, ref, atol=2e-6)
  # A constant upsamples to the same constant, borders included.
  const = module.apply(params, jnp.full_like(x, 3.0))
  np.testing.assert_allclose(const, 3.0, rtol=1e-6)


@pytest.mark.parametrize("impl", ["native", "fold_time"])
@pytest.mark.parametrize("strides", [(1, 2, 2), (2, 2, 2), (2, 4, 4),
                                     (4, 16, 16)])
def test_phase_transposed_conv_equals_lax_conv_transpose(strides, impl):
  # A learned (random) kernel: the phase split must equal the transposed
  # convolution itself, not only its bilinear initialisation.
  rng = np.random.RandomState(0)
  x = rng.randn(2, 3, 4, 5, 3).astype(np.float32)
  kernel = rng.randn(*(1 if s == 1 else 2 * s for s in strides), 3, 2)
  kernel = kernel.astype(np.float32)
  y = fc_i3d.transposed_conv3d(x, kernel, strides, impl)
  ref = jax.lax.conv_transpose(
      x, kernel, strides, [fc_i3d._upsample_padding(s) for s in strides],
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  assert y.shape == ref.shape == (2, 3 * strides[0], 4 * strides[1],
                                  5 * strides[2], 2)
  np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


def test_bilinear_kernel_taps_sum_to_one_per_phase():
  for s in (2, 4, 8):
    k = fc_i3d.bilinear_kernel_1d(s)
    assert len(k) == 2 * s and len(k) % s == 0  # no checkerboard
    for phase in range(s):
      np.testing.assert_allclose(k[phase::s].sum(), 1.0, rtol=1e-6)


def _tiny(taps=fc_i3d.PAPER_TAPS):
  return fc_i3d.FCI3D(taps=taps, width_multiplier=1 / 16, side_features=4)


def _init(model, x):
  # Jitted, with an rbg key: eager or threefry initialisation of the whole
  # network compiles for minutes on XLA:CPU.
  return jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)


def test_tiny_model_outputs_side_and_fused_logits_at_input_size():
  model = _tiny(taps=tuple(fc_i3d.TAP_STRIDES))  # all five taps
  x = jax.ShapeDtypeStruct((1, 8, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  fused, endpoints = jax.eval_shape(model.apply, variables, x)
  assert fused.shape == (1, 8, 64, 64, 1)
  assert len(endpoints["side_logits"]) == 5
  for side in endpoints["side_logits"]:
    assert side.shape == (1, 8, 64, 64, 1)


def test_sizes_not_multiple_of_stride_are_cropped_back():
  model = _tiny()
  x = jax.ShapeDtypeStruct((1, 5, 40, 56, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  fused, endpoints = jax.eval_shape(model.apply, variables, x)
  assert fused.shape == (1, 5, 40, 56, 1)
  assert all(s.shape == fused.shape for s in endpoints["side_logits"])


def test_training_mode_updates_batch_stats():
  model = _tiny()
  x = np.random.RandomState(0).uniform(-1, 1, (2, 4, 32, 32, 3))
  variables = _init(model, x)
  _, updates = jax.jit(functools.partial(
      model.apply, train=True, mutable=["batch_stats"]))(variables, x)
  before = jax.tree.leaves(variables["batch_stats"])
  after = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_full_size_shapes_and_backbone_scope_match_kinetics_i3d():
  model = fc_i3d.FCI3D()
  x = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  out, endpoints = jax.eval_shape(
      lambda v, x: model.apply(v, x), variables, x)
  assert out.shape == (1, 16, 224, 224, 1)
  assert len(endpoints["side_logits"]) == 4
  # The backbone's parameters live under DeepMind's scope names so the
  # Kinetics-400 weights port unchanged.
  assert "Mixed_4f" in variables["params"]["backbone"]
  assert "Mixed_5b" not in variables["params"]["backbone"]


def test_side_outputs_and_fuse_equal_hand_computation_from_endpoints():
  """Each side logit and the fuse, recomputed by hand from the backbone.

  Reference: the backbone applied on its own (its parameters from the model's
  `backbone` scope) gives the endpoints; each side head is then the 1x1x1 conv
  (an einsum with the head's kernel) of its own tap, upsampled by linear
  resizing (the upsampler's bilinear initialisation, tested equal to
  `jax.image.resize` above), and the fuse a weighted sum of the side logits
  in tap order. Random side, fuse and bias weights make a tap wired to the
  wrong endpoint, or a fuse over the wrong inputs or order, visible.
  """
  taps = ("Conv3d_1a_7x7", "Conv3d_2c_3x3", "Mixed_3c")
  model = _tiny(taps)
  x = np.random.RandomState(0).uniform(-1, 1, (1, 4, 32, 32, 3)).astype(
      np.float32)
  variables = jax.tree.map(np.asarray, _init(model, x))
  rng = np.random.RandomState(1)
  params = variables["params"]
  for tap in taps:
    side = params[f"side_{tap}"]
    side["kernel"] = rng.randn(*side["kernel"].shape).astype(np.float32)
    side["bias"] = rng.randn(*side["bias"].shape).astype(np.float32)
  params["fuse"]["kernel"] = rng.randn(len(taps), 1)[None, None, None].astype(
      np.float32)
  params["fuse"]["bias"] = np.float32([0.3])
  fused, endpoints = jax.jit(model.apply)(variables, x)

  backbone = fc_i3d.i3d.InceptionI3d(final_endpoint="Mixed_3c",
                                     width_multiplier=1 / 16)
  _, ref_endpoints = jax.jit(backbone.apply)(
      {"params": params["backbone"],
       "batch_stats": variables["batch_stats"]["backbone"]}, x)
  sides = []
  for tap in taps:
    k = params[f"side_{tap}"]
    feat = np.einsum("bthwc,cf->bthwf", np.asarray(ref_endpoints[tap]),
                     k["kernel"][0, 0, 0]) + k["bias"]
    sides.append(np.asarray(jax.image.resize(
        feat.mean(-1, keepdims=True), (1, 4, 32, 32, 1), "linear")))
  for i, tap in enumerate(taps):
    np.testing.assert_allclose(endpoints["side_logits"][i], sides[i],
                               atol=2e-4, rtol=2e-4, err_msg=tap)
  ref_fused = np.einsum("bthwn,n->bthw", np.concatenate(sides, -1),
                        params["fuse"]["kernel"][0, 0, 0, :, 0])[..., None]
  np.testing.assert_allclose(fused, ref_fused + 0.3, atol=5e-4, rtol=5e-4)


# ---------------------------------------------------------------------------
# Mixed precision (config.model.compute_dtype).

# bfloat16's unit roundoff: 8 significant bits, so rounding to it changes a
# value by at most 2^-8 relative.
BF16_U = 2.0 ** -8


def _random_variables(model, x, seed=0):
  """He-scaled random kernels, zero biases, unit batch-norm statistics.

  Drawn in NumPy from the eval_shape tree (flax's init costs a compile).
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def draw(path, spec):
    leaf = path[-1].key
    if leaf == "kernel":
      fan_in = np.prod(spec.shape[:-1])
      return rng.normal(size=spec.shape).astype(np.float32) * np.sqrt(
          2.0 / fan_in)
    if leaf == "var":
      return np.ones(spec.shape, np.float32)
    return rng.normal(size=spec.shape).astype(np.float32) * 0.1

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _relative_rms(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2))


def test_bfloat16_forward_equals_float32_within_bf16_rounding():
  """bf16 compute gives the float32 model's logits within L * 2^-8 (RMS).

  Reference: the same network and parameters computed in float32 (tested
  against hand computations above). Tolerance: every bfloat16 rounding (the
  input cast, each conv's and batch norm's output, the side conv and the
  upsampling; ReLU and max pooling are exact) changes a value by at most
  u = 2^-8 relative; to first order, with gains near 1, the relative errors
  of L roundings in sequence add up to at most L * u, so a side output
  differs by at most about L * u relative (RMS over the map). L per tap:
  Conv3d_1a_7x7 5 (input, conv, batch norm, side conv, upsampling);
  Conv3d_2c_3x3 9 (three conv + batch norm units, the max pool between
  exact). The Inception blocks are the same units (kept out for speed:
  each costs seconds of compile on CPU). The fuse runs
  in float32, so its error is the weighted sum of the sides' errors, at
  most sum_i |w_i| * L_i * u * rms(side_i). Random errors typically add as
  sqrt(L) * u; the bound leaves room for that, not for a wrong layer.
  """
  taps = ("Conv3d_1a_7x7", "Conv3d_2c_3x3")
  depth = {"Conv3d_1a_7x7": 5, "Conv3d_2c_3x3": 9}
  model32 = _tiny(taps)
  model16 = model32.clone(dtype=jnp.bfloat16)
  x = np.random.RandomState(0).uniform(-1, 1, (1, 4, 32, 32, 3)).astype(
      np.float32)
  variables = _random_variables(model32, x)
  fused32, ep32 = jax.jit(model32.apply)(variables, x)
  fused16, ep16 = jax.jit(model16.apply)(variables, x)
  # The bf16 model really computed in bf16, and hands float32 logits on.
  assert ep16["Conv3d_2c_3x3"].dtype == jnp.bfloat16
  assert fused16.dtype == jnp.float32
  assert all(s.dtype == jnp.float32 for s in ep16["side_logits"])
  rms = lambda a: np.sqrt(np.mean(np.asarray(a, np.float64) ** 2))
  fuse_bound = 0.0
  weights = variables["params"]["fuse"]["kernel"].reshape(-1)
  for tap, w, s16, s32 in zip(taps, weights, ep16["side_logits"],
                              ep32["side_logits"]):
    err = _relative_rms(s16, s32)
    assert 0 < err < depth[tap] * BF16_U, (tap, err)
    fuse_bound += abs(w) * depth[tap] * BF16_U * rms(s32)
  assert 0 < rms(fused16 - fused32) < fuse_bound


def test_bfloat16_train_step_keeps_float32_parameters_and_state():
  """One FC-I3D training step (the program's loss, SGD with momentum and
  weight decay) with compute_dtype=bfloat16: the loss, parameters,
  optimiser state and batch-norm statistics come out float32.

  Traced with jax.eval_shape: the dtypes without the ~10 s CPU compile of
  the backward pass (tracing still differentiates every layer, so a bf16
  op without a gradient fails here). Two taps, so that the gradient flows
  through a bf16 max pool.
  """
  # pylint: disable=g-import-not-at-top
  import ml_collections
  from vosjax import train
  from vosjax.programs import fc_i3d as program
  # pylint: enable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(
      taps="Conv3d_1a_7x7,Conv3d_2c_3x3", side_features=2,
      width_multiplier=1 / 16, conv_impl="auto", compute_dtype="bfloat16"))
  model = program.build_model(config)
  assert model.dtype == jnp.bfloat16
  rng = np.random.RandomState(0)
  batch = {"frames": rng.uniform(-1, 1, (2, 2, 16, 16, 3)).astype(np.float32),
           "labels": (rng.uniform(size=(2, 2, 16, 16)) > 0.5).astype(
               np.float32)}
  variables = _random_variables(model, batch["frames"])
  tx, _ = train.make_optimizer({"learning_rate": 0.1, "momentum": 0.9})
  state = train.TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=tx,
      batch_stats=variables["batch_stats"])
  loss_fn = functools.partial(program.segmentation_loss, model,
                              lambda step: 1.0, True)
  new_state, metrics = jax.eval_shape(
      train.make_train_step(loss_fn), state, batch,
      jax.random.key(0, impl="rbg"))
  assert metrics["loss"].dtype == jnp.float32
  for tree in ("params", "batch_stats", "opt_state"):
    leaves = [l for l in jax.tree.leaves(getattr(new_state, tree))
              if jnp.issubdtype(l.dtype, jnp.floating)]  # Not step counts.
    assert leaves and all(l.dtype == jnp.float32 for l in leaves), tree
  assert (jax.tree.map(lambda l: l.shape, new_state.params)
          == jax.tree.map(np.shape, variables["params"]))


def test_bad_compute_dtype_is_a_one_line_error_naming_the_flag():
  """validate_config (run.py's check before anything compiles) and
  build_model both refuse a dtype other than float32 / bfloat16."""
  # pylint: disable=g-import-not-at-top
  from experiments import fc_i3d_davis16
  from vosjax import experiments
  from vosjax.errors import InputError
  from vosjax.programs import fc_i3d as program
  # pylint: enable=g-import-not-at-top
  config = fc_i3d_davis16.get_config()
  assert config.model.compute_dtype == "float32"
  experiments.validate_config(config)  # The default passes.
  config.model.compute_dtype = "bfloat16"
  experiments.validate_config(config)
  config.model.compute_dtype = "float16"
  for check in (experiments.validate_config,
                lambda c: program.build_model(c.model)):
    with pytest.raises(InputError) as e:
      check(config)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--config.model.compute_dtype='float16'")
    assert "bfloat16" in message
