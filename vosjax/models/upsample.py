"""Bilinear 2-D upsampling by transposed convolution, aligned to the input.

OSVOS (and HED before it) upsamples each side output of stride s with a
transposed convolution of kernel 2s and stride s initialised to bilinear
interpolation (OSVOS-PyTorch networks/vgg_osvos.py: `ConvTranspose2d(...,
kernel_size=2 ** (1 + i), stride=2 ** i, bias=False)` + `interp_surgery` in
layers/osvos_layers.py), then crops the centre of the (n + 1) * s output
(`center_crop`). The centre crop is off the pixel grid whenever the image
size is not a multiple of s; here the crop offset is derived instead:

  A feature at stride s (2x2 max pools, SAME 3x3 convs) covers input pixels
  [s*m, s*m + s - 1], centre s*m + (s - 1)/2. The transposed convolution puts
  input m's bilinear peak (tap (2s - 1)/2) at output s*m + s - 1/2. Output j
  therefore sits at input pixel j - s/2: crop s/2 from the start, whatever
  the image size, and keep the first H.

For s = 2, 4, 8, 16 and H a multiple of s this equals OSVOS's centre crop
(its offset floor(s/2)); otherwise OSVOS shifts by up to (s - 1)/2 pixels.

The transposed convolution is computed by fc_i3d.transposed_conv3d (phase
split into one stride-1 convolution plus depth-to-space), whose padding
1.5s - 1 is exactly this s/2 crop: the input gradient of a strided
convolution, which is what lax.conv_transpose lowers to, is slow on XLA:CPU.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vosjax.models import fc_i3d

EDGE_MODES = ("zeros", "edge")


def bilinear_kernel_2d(stride):
  """`[2s, 2s]` bilinear taps (OSVOS `upsample_filt(2s)`; 1x1 for s = 1)."""
  k = fc_i3d.bilinear_kernel_1d(stride)
  return np.outer(k, k).astype(np.float32)


def diagonal_bilinear_kernel(stride, channels):
  """`[2s, 2s, C, C]`: channel c upsampled into channel c, others zero.

  What `interp_surgery` writes into an OSVOS `ConvTranspose2d(C, C)`.
  """
  k = bilinear_kernel_2d(stride)
  full = np.zeros(k.shape + (channels, channels), np.float32)
  full[:, :, np.arange(channels), np.arange(channels)] = k[..., None]
  return full


def transposed_conv2d(x, kernel, stride):
  """Stride-s transposed convolution, cropped to the input's pixel grid.

  Semantics (PyTorch `ConvTranspose2d`, no padding, then crop s/2): with
  `full[s*i + a, s*k + b] += x[i, k] @ kernel[a, b]` of size (h + 1) * s, the
  result is `full[s/2 : s/2 + h*s, s/2 : s/2 + w*s]`.

  Args:
    x: `[B, h, w, C]`.
    kernel: `[2s, 2s, C, F]` (`[1, 1, C, F]` when s = 1), PyTorch tap order.
    stride: s, 1 or even.

  Returns:
    `[B, h*s, w*s, F]`.
  """
  if stride == 1:
    return jnp.einsum("bhwc,cf->bhwf", x, kernel[0, 0])
  # fc_i3d's routine is lax.conv_transpose (a correlation of the dilated
  # input): the PyTorch scatter taps are its spatially flipped kernel, and
  # its padding 1.5s - 1 is the s/2 crop above.
  flipped = kernel[::-1, ::-1][None]
  y = fc_i3d.transposed_conv3d(x[:, None], flipped, (1, stride, stride),
                               impl="fold_time")
  return y[:, 0]


class BilinearUpsample2D(nn.Module):
  """Upsampling by s with a bilinear-initialised transposed convolution.

  Input `[B, h, w, C]`; output `[B, h*s, w*s, C]`, channel c from channel c
  at initialisation, aligned as in the module docstring.

  Attributes:
    stride: s, 1 or even (OSVOS: 2, 4, 8, 16).
    learnable: False (OSVOS-PyTorch: `lr 0` on `upscale` and `upscale_` in
      train_parent.py and train_online.py) applies the fixed bilinear kernel
      channel by channel and has no parameters; True makes the full
      `[2s, 2s, C, C]` kernel a parameter (diagonal bilinear at init).
    edge_mode: "zeros" as the transposed convolution (the outer ~s/2 pixels
      fade towards 0, as in OSVOS); "edge" replicates the border sample so
      that the result is the clamped bilinear resize (jax.image.resize).
  """
  stride: int
  learnable: bool = False
  edge_mode: str = "zeros"

  @nn.compact
  def __call__(self, x):
    s = self.stride
    if s != 1 and (s < 1 or s % 2):
      raise ValueError(f"upsampling stride must be 1 or even, got {s}")
    if self.edge_mode not in EDGE_MODES:
      raise ValueError(f"edge_mode {self.edge_mode!r} not in {EDGE_MODES}")
    if s == 1:
      return x
    b, h, w, c = x.shape
    pad = int(self.edge_mode == "edge")
    if pad:
      x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    if self.learnable:
      kernel = self.param(
          "kernel", lambda *_: jnp.asarray(diagonal_bilinear_kernel(s, c)),
          (2 * s, 2 * s, c, c))
      y = transposed_conv2d(x, kernel.astype(x.dtype), s)
    else:
      # Diagonal fixed kernel: channels are independent, so fold them into
      # the batch and run a 1 -> 1 transposed convolution (C times less work
      # than the dense C -> C kernel, same sums).
      hp, wp = x.shape[1:3]
      flat = x.transpose(0, 3, 1, 2).reshape(b * c, hp, wp, 1)
      k = jnp.asarray(bilinear_kernel_2d(s), x.dtype)[:, :, None, None]
      y = transposed_conv2d(flat, k, s)
      y = y.reshape(b, c, hp * s, wp * s).transpose(0, 2, 3, 1)
    if pad:
      y = y[:, s:-s, s:-s]
    return y
