"""PML embedding model: shapes, stride, unit norm, coordinates, weights hook."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models import pml
from vosjax.models import resnet


def test_resnet101_full_size_shapes_stride_8():
  model = resnet.ResNet(depth=101)
  x = jax.ShapeDtypeStruct((1, 480, 854, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  (out, ep) = jax.eval_shape(model.apply, variables, x)
  assert out.shape == (1, 60, 107, 2048)
  assert ep["stem"].shape == (1, 120, 214, 64)
  assert ep["block2"].shape == (1, 60, 107, 512)
  assert ep["block3"].shape == (1, 60, 107, 1024)
  # 23 blocks in stage 3 is what makes it ResNet-101.
  assert "block3_22" in variables["params"]
  assert "block3_23" not in variables["params"]
  n = sum(np.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
  # ResNet-101 trunk without the fc layer: 42.5M parameters.
  assert 42.0e6 < n < 43.0e6, n


def test_pml_full_size_embedding_shape():
  model = pml.PML(backbone="resnet", depth=101)
  x = jax.ShapeDtypeStruct((1, 2, 480, 854, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  emb, _ = jax.eval_shape(model.apply, variables, x)
  assert emb.shape == (1, 2, 60, 107, 128)


def test_tiny_pml_unit_norm_stride_8_and_uses_time():
  model = pml.PML(backbone="resnet", width_multiplier=1 / 16,
                  resnet_stage_blocks=(1, 1, 2, 1), embed_dim=8,
                  hidden_dim=16)
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 2, 32, 40, 3),
                         minval=-1, maxval=1)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  apply = jax.jit(lambda v, x, t: model.apply(v, x, times=t))
  t0 = jnp.array([[-1.0, 1.0]])
  t1 = jnp.array([[0.5, 0.5]])
  e0, ep = apply(variables, x, t0)
  e1, _ = apply(variables, x, t1)
  assert e0.shape == (1, 2, 4, 5, 8)
  np.testing.assert_allclose(jnp.linalg.norm(e0, axis=-1), 1.0, rtol=1e-5)
  assert ep["features"].shape[:4] == (1, 2, 4, 5)
  assert float(jnp.max(jnp.abs(e0 - e1))) > 1e-4


def test_head_without_coords_ignores_time():
  head = pml.EmbeddingHead(embed_dim=4, hidden_dim=6, use_coords=False)
  f = jax.random.normal(jax.random.PRNGKey(2), (1, 2, 2, 3, 5))
  v = head.init(jax.random.PRNGKey(3), f)
  np.testing.assert_allclose(head.apply(v, f, jnp.array([[-1.0, 1.0]])),
                             head.apply(v, f, jnp.array([[0.5, 0.5]])),
                             atol=0)


def test_coordinate_channels_by_hand():
  c = pml.coordinate_channels(1, jnp.array([[-1.0, 1.0]]), 2, 4)
  np.testing.assert_allclose(c[0, 0, 0, :, 0], [-0.75, -0.25, 0.25, 0.75])
  np.testing.assert_allclose(c[0, 0, :, 0, 1], [-0.5, 0.5])
  np.testing.assert_allclose(c[0, :, 0, 0, 2], [-1.0, 1.0])


def test_head_matches_manual_computation():
  head = pml.EmbeddingHead(embed_dim=4, hidden_dim=6)
  f = jax.random.normal(jax.random.PRNGKey(2), (1, 1, 2, 3, 5))
  v = head.init(jax.random.PRNGKey(3), f)
  got = head.apply(v, f, jnp.array([[0.25]]))
  p = v["params"]
  x = np.concatenate([np.asarray(f), np.asarray(
      pml.coordinate_channels(1, jnp.array([[0.25]]), 2, 3))], -1)
  hid = np.maximum(x @ p["conv1"]["kernel"][0, 0] + p["conv1"]["bias"], 0)
  out = hid @ p["conv2"]["kernel"][0, 0] + p["conv2"]["bias"]
  out /= np.linalg.norm(out, axis=-1, keepdims=True)
  np.testing.assert_allclose(got, out, rtol=1e-5, atol=1e-6)


def test_i3d_backbone_shapes():
  model = pml.PML(backbone="i3d", width_multiplier=1 / 16, embed_dim=8,
                  hidden_dim=16)
  x = jax.ShapeDtypeStruct((1, 4, 64, 72, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  emb, ep = jax.eval_shape(model.apply, variables, x)
  assert ep["Mixed_3c"].shape[1:4] == (2, 8, 9)
  assert emb.shape == (1, 4, 8, 9, 8)
  full = pml.PML(backbone="i3d")
  xf = jax.ShapeDtypeStruct((1, 8, 480, 854, 3), jnp.float32)
  vf = jax.eval_shape(full.init, jax.random.PRNGKey(0), xf)
  ef, _ = jax.eval_shape(full.apply, vf, xf)
  assert ef.shape == (1, 8, 60, 107, 128)


def test_bad_backbone_and_weights_hook(tmp_path):
  with pytest.raises(ValueError, match="backbone"):
    jax.eval_shape(pml.PML(backbone="alexnet").init, jax.random.PRNGKey(0),
                   jnp.zeros((1, 1, 8, 8, 3)))
  model = resnet.ResNet(width_multiplier=1 / 16, stage_blocks=(1, 1, 1, 1))
  # Only the tree matters here: an 'rbg' key compiles the initialisers ~5x
  # faster than threefry on CPU.
  v = jax.jit(model.init)(jax.random.key(0, impl="rbg"),
                          jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(FileNotFoundError, match="not available offline"):
    resnet.load_weights_npz(v, str(tmp_path / "deeplab.npz"))
  flat = {k: np.asarray(a) + 1
          for k, a in flax.traverse_util.flatten_dict(v, sep="/").items()}
  np.savez(tmp_path / "w.npz", **flat)
  loaded = resnet.load_weights_npz(v, str(tmp_path / "w.npz"))
  np.testing.assert_allclose(loaded["params"]["stem_conv"]["kernel"],
                             v["params"]["stem_conv"]["kernel"] + 1)
  flat.pop("params/stem_conv/kernel")
  np.savez(tmp_path / "bad.npz", **flat)
  with pytest.raises(ValueError, match="stem_conv/kernel"):
    resnet.load_weights_npz(v, str(tmp_path / "bad.npz"))


def _tiny_resnet_pml(**kwargs):
  return pml.PML(backbone="resnet", width_multiplier=1 / 16,
                 resnet_stage_blocks=(1, 1, 1, 1), embed_dim=8,
                 hidden_dim=16, **kwargs)


def test_crop_coordinates_equal_the_full_frames_window():
  """A crop (plain or flipped) told its window gets the full frame's (x, y).

  Reference: the full frame's own coordinate channels (cell j of a W-pixel
  frame at x = (8 j + 4) / W * 2 - 1, by hand), cut to the crop's cells; and
  the head's input is exactly the 'coordinates' endpoint (manual head).
  """
  model = _tiny_resnet_pml()
  height, width = 40, 60  # W not a multiple of 8: the last cell overhangs.
  full = jax.random.uniform(jax.random.PRNGKey(1), (1, 1, height, width, 3),
                            minval=-1, maxval=1)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), full)
  apply = jax.jit(lambda v, x, w: model.apply(v, x, window=w))
  _, ep_full = jax.jit(model.apply)(variables, full)
  c_full = np.asarray(ep_full["coordinates"])
  assert c_full.shape == (1, 1, 5, 8, 3)
  np.testing.assert_allclose(c_full[0, 0, 0, :, 0],
                             (8 * np.arange(8) + 4) / width * 2 - 1,
                             atol=1e-6)
  np.testing.assert_allclose(c_full[0, 0, :, 0, 1],
                             (8 * np.arange(5) + 4) / height * 2 - 1,
                             atol=1e-6)
  # Pixels [8, 32) x [16, 48): cells [1, 4) x [2, 6) of the full frame.
  crop = full[:, :, 8:32, 16:48]
  window = jnp.array([[8 / height, 16 / width, 32 / height, 48 / width]])
  emb, ep = apply(variables, crop, window)
  np.testing.assert_allclose(ep["coordinates"], c_full[:, :, 1:4, 2:6],
                             atol=1e-6)
  # Flipped crop: the window's x ends swap; cells come in reverse x order.
  flipped = window[:, jnp.array([0, 3, 2, 1])]
  _, ep_f = apply(variables, crop[:, :, :, ::-1], flipped)
  np.testing.assert_allclose(ep_f["coordinates"],
                             c_full[:, :, 1:4, 2:6][:, :, :, ::-1],
                             atol=1e-6)
  # Without a window the crop would claim the whole frame: what was wrong.
  _, ep_whole = jax.jit(model.apply)(variables, crop)
  assert np.max(np.abs(ep_whole["coordinates"] - ep["coordinates"])) > 0.3
  p = variables["params"]["head"]
  x = np.concatenate([np.asarray(ep["features"]), ep["coordinates"]], -1)
  hid = np.maximum(x @ p["conv1"]["kernel"][0, 0] + p["conv1"]["bias"], 0)
  out = hid @ p["conv2"]["kernel"][0, 0] + p["conv2"]["bias"]
  out /= np.linalg.norm(out, axis=-1, keepdims=True)
  np.testing.assert_allclose(emb, out, rtol=1e-5, atol=1e-5)


def test_rescaled_crop_coordinates_by_hand():
  """A 24x32 input showing window (0.2, 0.25, 0.8, 0.75), per-frame windows.

  Hand formula: cell j centre at input pixel 8 j + 4 is full-frame fraction
  x0 + (8 j + 4) / 32 * (x1 - x0).
  """
  times = jnp.array([[0.0, 0.5]])
  window = jnp.array([[[0.2, 0.25, 0.8, 0.75], [0.0, 0.0, 1.0, 1.0]]])
  cells = pml.grid_window(window, (24, 32), (3, 4))
  c = np.asarray(pml.coordinate_channels(1, times, 3, 4, cells))
  np.testing.assert_allclose(
      c[0, 0, 0, :, 0], (0.25 + np.array([4, 12, 20, 28]) / 32 * 0.5) * 2 - 1,
      atol=1e-6)
  np.testing.assert_allclose(
      c[0, 0, :, 0, 1], (0.2 + np.array([4, 12, 20]) / 24 * 0.6) * 2 - 1,
      atol=1e-6)
  np.testing.assert_allclose(c[0, 1, 0, :, 0],
                             np.array([4, 12, 20, 28]) / 32 * 2 - 1,
                             atol=1e-6)
  np.testing.assert_allclose(c[0, :, 0, 0, 2], [0.0, 0.5])
  assert pml.feature_stride((480, 854), (60, 107)) == 8
  assert pml.feature_stride((480, 854), (30, 54)) == 16
  with pytest.raises(ValueError, match="window"):
    pml.coordinate_channels(1, times, 3, 4, jnp.zeros((1, 3)))


def test_dense_vgg16_backbone_full_size_stride_8():
  """PML on ImageNet VGG16 made dense: 480x854 -> 60x107 cells (eval_shape)."""
  model = pml.PML(backbone="vgg")
  x = jax.ShapeDtypeStruct((1, 2, 480, 854, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  emb, ep = jax.eval_shape(model.apply, variables, x)
  assert emb.shape == (1, 2, 60, 107, 128)
  assert ep["features"].shape == (1, 2, 60, 107, 512)
  assert set(variables["params"]) == {"vgg", "head"}


def _numpy_params(model, x, seed):
  """He-scaled random params from the eval_shape tree: no init compile (a
  tiny VGG16's random initialisers take over a minute to compile on CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
  rng = np.random.default_rng(seed)
  return {"params": jax.tree.map(
      lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
                 if len(s.shape) > 1 else rng.normal(size=s.shape) * 0.1
                 ).astype(np.float32), shapes)}


def test_vgg_backbone_embeds_each_frame_alone():
  """Per-frame backbone: a frame's features do not depend on its clip."""
  model = pml.PML(backbone="vgg", width_multiplier=1 / 16, embed_dim=8,
                  hidden_dim=16)
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 2, 32, 40, 3),
                         minval=-1, maxval=1)
  variables = _numpy_params(model, x, seed=0)
  apply = jax.jit(model.apply)
  _, ep = apply(variables, x)
  _, ep1 = apply(variables, x[:, 1:])
  assert ep["features"].shape == (1, 2, 4, 5, 32)
  # Float32 convolutions of a batch of 2 vs 1 sum in another order.
  np.testing.assert_allclose(ep["features"][:, 1:], ep1["features"],
                             rtol=1e-4, atol=1e-5)


def test_frozen_backbone_gets_zero_gradient_head_does_not():
  model = pml.PML(backbone="vgg", width_multiplier=1 / 16, embed_dim=8,
                  hidden_dim=16, train_backbone=False)
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 1, 16, 16, 3),
                         minval=-1, maxval=1)
  variables = _numpy_params(model, x, seed=0)
  grads = jax.jit(jax.grad(
      lambda p: jnp.sum(model.apply({"params": p}, x)[0][..., 0])))(
          variables["params"])
  assert all(float(jnp.max(jnp.abs(g))) == 0.0
             for g in jax.tree.leaves(grads["vgg"]))
  assert float(jnp.max(jnp.abs(grads["head"]["conv2"]["kernel"]))) > 0.0
