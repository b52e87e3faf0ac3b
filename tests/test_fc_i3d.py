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
