"""FC-I3D: I3D made fully convolutional with skip-upsampling heads.

Munukutla & Jain, "One Shot Learning for Video Object Segmentation using Fully
Convolutional I3D Network". The Kinetics-400 I3D backbone keeps everything up
to its last tapped endpoint; each tap gets a side head (1x1x1 conv to 16
channels, then a transposed 3-D conv back to the input's T x H x W) and a fuse
layer (1x1x1 conv) combines the side logits, as in OSVOS/HED.

Mixed precision (`dtype` bfloat16): the backbone, the side convs and the
upsampling run in `dtype`; the 1-channel side logits are cast to float32 and
the fuse (a 1x1x1 conv over them, negligible work) runs in float32, so every
logit a loss sees is float32. Parameters stay float32.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vosjax.models import conv3d
from vosjax.models import i3d

# Taps just before each pooling stage, and their strides (T, H, W) relative to
# the input, from I3D's layout: 1a is strided (2, 2, 2); pools 2a and 3a are
# (1, 2, 2); 4a and 5a are (2, 2, 2).
TAP_STRIDES = {
    "Conv3d_1a_7x7": (2, 2, 2),
    "Conv3d_2c_3x3": (2, 4, 4),
    "Mixed_3c": (2, 8, 8),
    "Mixed_4f": (4, 16, 16),
    "Mixed_5c": (8, 32, 32),
}
PAPER_TAPS = ("Conv3d_1a_7x7", "Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f")


def bilinear_kernel_1d(stride):
  """1-D linear-interpolation taps for upsampling by `stride`, length 2*stride.

  At stride s every output position receives exactly two taps summing to 1,
  so a constant input upsamples to the same constant. A kernel length that is
  a multiple of the stride avoids checkerboard artefacts.
  """
  if stride == 1:
    return np.ones((1,), np.float32)
  size = 2 * stride
  centre = (size - 1) / 2
  return (1 - np.abs(np.arange(size) - centre) / stride).astype(np.float32)


def bilinear_upsampling_kernel(strides, in_features, out_features=1):
  """Kernel `[kt, kh, kw, in, out]` that upsamples the mean of the inputs.

  The 2-D bilinear kernel is inflated along time with the 1-D linear kernel
  rather than by plain repetition: repetition over 2*s_t taps would scale a
  constant by 1/2 at temporal stride s_t.
  """
  kt, kh, kw = (bilinear_kernel_1d(s) for s in strides)
  kernel = kt[:, None, None] * kh[None, :, None] * kw[None, None, :]
  full = np.zeros(kernel.shape + (in_features, out_features), np.float32)
  full[...] = kernel[..., None, None] / in_features
  return full


def _upsample_padding(stride):
  """conv_transpose padding placing outputs at half-pixel centres.

  Output pixel j of a stride-s linear upsampling sits at input coordinate
  (j + 0.5)/s - 0.5 (as jax.image.resize); for the length-2s kernel above
  this needs 1.5*s - 1 on both sides of the zero-dilated input.
  """
  if stride == 1:
    return (0, 0)
  if stride % 2:
    raise ValueError(f"upsampling stride must be 1 or even, got {stride}")
  return (3 * stride // 2 - 1,) * 2


def _phase_taps(stride, size, pad):
  """Per-phase kernel taps of a 1-D transposed convolution.

  A stride-s transposed convolution (a convolution over the s-dilated input
  with kernel length `size` and padding `pad` on both sides) computes output
  s*m + r as sum_d x[m + d] * k[s*d - r + pad]. Returns (index [L, s], valid
  [L, s]) over the offsets d = -(L-1)/2 .. (L-1)/2 that any phase uses.
  """
  lo = -(pad // stride)  # ceil(-pad / stride)
  hi = (size - 1 + stride - 1 - pad) // stride
  if lo != -hi:
    raise ValueError(f"transposed conv stride {stride}, kernel {size}, "
                     f"padding {pad} is not centred")
  d = np.arange(lo, hi + 1)[:, None]
  index = stride * d - np.arange(stride)[None, :] + pad
  valid = (index >= 0) & (index < size)
  return np.clip(index, 0, size - 1), valid


def transposed_conv3d(x, kernel, strides, impl="auto"):
  """`lax.conv_transpose` with the bilinear heads' padding, as a plain conv.

  The input gradient of a strided 3-D convolution, which is what a transposed
  convolution computes, takes minutes on XLA:CPU at the heads' strides (42 s
  for one (2, 4, 4) head on an 8x4x16x16 input). Splitting the output into
  its s_t*s_h*s_w phases turns it into one stride-1 3x3x3 convolution with
  that many output channels followed by depth-to-space: the same sums, fast
  on every backend.

  Args:
    x: `[B, t, h, w, C]`.
    kernel: `[kt, kh, kw, C, F]` with k = 2*s (k = 1 where s = 1).
    strides: (s_t, s_h, s_w), each 1 or even.
    impl: 3-D convolution implementation (see conv3d.IMPLS).

  Returns:
    `[B, t*s_t, h*s_h, w*s_w, F]`, equal to `jax.lax.conv_transpose(x, kernel,
    strides, [_upsample_padding(s) ...], ("NDHWC", "DHWIO", "NDHWC"))`.
  """
  taps = [_phase_taps(s, k, _upsample_padding(s)[0])
          for s, k in zip(strides, kernel.shape[:3])]
  (it, vt), (ih, vh), (iw, vw) = taps
  # [Lt, Lh, Lw, st, sh, sw, C, F] phase kernels, zero where no tap falls.
  phase = kernel[it[:, None, None, :, None, None],
                 ih[None, :, None, None, :, None],
                 iw[None, None, :, None, None, :]]
  valid = (vt[:, None, None, :, None, None] & vh[None, :, None, None, :, None]
           & vw[None, None, :, None, None, :])
  phase = phase * valid[..., None, None].astype(phase.dtype)
  lt, lh, lw, st, sh, sw, c, f = phase.shape
  phase = phase.transpose(0, 1, 2, 6, 3, 4, 5, 7).reshape(
      lt, lh, lw, c, st * sh * sw * f)
  y = conv3d.conv3d(x, phase, (1, 1, 1), impl)
  b, t, h, w, _ = y.shape
  y = y.reshape(b, t, h, w, st, sh, sw, f).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return y.reshape(b, t * st, h * sh, w * sw, f)


class BilinearUpsample3D(nn.Module):
  """Learnable transposed 3-D convolution initialised as trilinear upsampling.

  Input `[B, t, h, w, C]`; output `[B, t*st, h*sh, w*sw, features]` in the
  input's dtype (the float32 kernel is cast to it).
  """
  strides: Sequence[int]
  features: int = 1
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    kernel_shape = tuple(1 if s == 1 else 2 * s for s in self.strides)
    kernel = self.param(
        "kernel",
        lambda _, shape: jnp.asarray(bilinear_upsampling_kernel(
            self.strides, x.shape[-1], self.features)),
        kernel_shape + (x.shape[-1], self.features))
    # Replicating one input sample at each border and cropping its outputs
    # afterwards gives border pixels the clamped interpolation of
    # jax.image.resize instead of a fade towards zero.
    upsampled = [s > 1 for s in self.strides]
    x = jnp.pad(x, [(0, 0)] + [(int(u), int(u)) for u in upsampled] + [(0, 0)],
                mode="edge")
    y = transposed_conv3d(x, kernel.astype(x.dtype), self.strides,
                          self.conv_impl)
    crop = tuple(slice(s, -s) if s > 1 else slice(None) for s in self.strides)
    return y[(slice(None),) + crop]


class FCI3D(nn.Module):
  """Fully convolutional I3D for binary video segmentation.

  Attributes:
    taps: backbone endpoints that get a side head (keys of TAP_STRIDES); the
      paper's four by default, add "Mixed_5c" for the fifth.
    side_features: channels of each side head's 1x1x1 conv (16 in the paper).
    width_multiplier: backbone width (1.0 for the Kinetics weights).
    conv_impl: 3-D convolution implementation of the backbone.
    dtype: computation dtype of the backbone and side heads (float32 or
      bfloat16); parameters, batch-norm statistics and logits stay float32.
  """
  taps: Sequence[str] = PAPER_TAPS
  side_features: int = 16
  width_multiplier: float = 1.0
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train=False):
    """Segments a clip.

    Args:
      x: `[B, T, H, W, 3]` RGB in [-1, 1]; T, H, W are padded internally up to
        multiples of the deepest tap's stride and the outputs cropped back.
      train: batch norm in training mode (batch statistics, updated averages).

    Returns:
      (fused_logits `[B, T, H, W, 1]` float32, endpoints) where endpoints
      holds "side_logits" (a list of `[B, T, H, W, 1]` float32, one per tap,
      in tap order), "fused_logits", and the backbone's endpoints (in
      `dtype`).
    """
    unknown = [t for t in self.taps if t not in TAP_STRIDES]
    if unknown or not self.taps:
      raise ValueError(f"unknown FC-I3D taps {unknown}; "
                       f"choose from {list(TAP_STRIDES)}")
    order = list(TAP_STRIDES)
    last = max(self.taps, key=order.index)
    _, t, h, w, _ = x.shape
    # I3D's SAME padding rounds sizes up at each stride; padding the input to a
    # multiple of the total stride keeps every upsampled map exactly aligned.
    total = TAP_STRIDES[last]
    pads = [(-n) % s for n, s in zip((t, h, w), total)]
    if any(pads):
      x = jnp.pad(x, [(0, 0)] + [(0, p) for p in pads] + [(0, 0)],
                  mode="edge")
    _, endpoints = i3d.InceptionI3d(
        final_endpoint=last, width_multiplier=self.width_multiplier,
        conv_impl=self.conv_impl, dtype=self.dtype, name="backbone")(
            x, train=train)
    sides = []
    for tap in self.taps:
      feat = nn.Conv(self.side_features, (1, 1, 1), dtype=self.dtype,
                     param_dtype=jnp.float32, name=f"side_{tap}")(
                         endpoints[tap])
      up = BilinearUpsample3D(TAP_STRIDES[tap], 1, self.conv_impl,
                              name=f"upsample_{tap}")(feat)
      sides.append(up[:, :t, :h, :w].astype(jnp.float32))
    fused = nn.Conv(
        1, (1, 1, 1), dtype=jnp.float32, name="fuse",
        kernel_init=nn.initializers.constant(1.0 / len(sides)))(
            jnp.concatenate(sides, axis=-1))
    endpoints = dict(endpoints, side_logits=sides, fused_logits=fused)
    return fused, endpoints
