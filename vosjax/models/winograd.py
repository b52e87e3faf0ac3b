"""Winograd F(2x2, 3x3): a 3x3 SAME convolution in 2.25x fewer products.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR
2016, Sec. 4: each 2x2 block of outputs is computed from the 4x4 input tile
under it as Y = A^T [(G g G^T) . (B^T d B)] A, with

    B^T = [[1,  0, -1,  0],     G = [[1,    0,   0],    A^T = [[1, 1,  1,  0],
           [0,  1,  1,  0],          [1/2,  1/2, 1/2],         [0, 1, -1, -1]]
           [0, -1,  1,  0],          [1/2, -1/2, 1/2],
           [0,  1,  0, -1]]          [0,    0,   1]]

(cross-correlation, as deep-learning convolutions are). Summed over input
channels, the elementwise product of each of the 16 tile positions becomes
one matrix product [tiles, Cin] x [Cin, Cout]: 16 products of K = Cin
instead of one of K = 9 Cin, 36 / 16 = 2.25x fewer multiplications, at the
price of transforms that read and write each activation a few times.

Why it is here (issue #30): XLA:CPU runs convolutions on Eigen's spatial
kernels, which reach 60-75% of what PyTorch's oneDNN does on VGG16's 3x3
layers. `python benchmarks/bench_vgg.py --cases 224x224x1 --layers
224x224x1` on 2 idle cores (2026-12-07), one layer's conv + bias + ReLU,
forward and all gradients, median of 5, in ms:

    layer                        before   Winograd   PyTorch
    conv2_2 112x112x128->128       68        57         58
    conv3_2  56x56x256->256        65        42         58
    conv4_2  28x28x512->512        69        43         55
    conv5_1  14x14x512->512        26        18         17

("before": Eigen's convolutions and the im2col kernel gradient of
`vosjax.models.vgg.kernel_grad`, commit d4d9c56). Timed alone (each jitted,
median of 7): forward only, 56x56x256->256 20.7 -> 11.8 ms; 224x224x64->64
21.4 -> 27.3 ms, where the transforms' memory traffic outweighs the saved
products; OSVOS's side preparations (Cin -> 16), forward and gradients,
112x112x128 20.6 -> 15.6 ms; 112x112x64->128 no faster (35.1 vs 35.5).
So `applies` keeps it to float32 convolutions with at least MIN_CHANNELS
input channels and no dilation; everything else stays XLA's. Its input
gradient (`conv3x3_transpose`) and kernel gradient (`kernel_grad`) use the
same tiles. Measured and not kept: conv1_2's kernel gradient as Winograd
(timed alone 62.9 against 127.8 ms for `vgg.kernel_grad`'s im2col product
once, 55.0 against 54.4 ms in a second timing; inside the trunk's gradient
step slower: 224x224 0.536 against 0.456-0.504 s, 240x427 1.169 against
0.913 s). Accuracy: relative to the largest output, 1e-6 in float32 (the
transforms only add, subtract and halve); bfloat16 is left to XLA.
The kernel gradient transforms x again rather than keeping the forward's
tiles (4x the layer's input) as a residual for every layer.

Measured and not kept (2026-12-08): F(4x4, 3x3) (the paper's 6x6 tiles,
points 0, +-1, +-2, infinity; 4x fewer products, 2.25x the input in
transformed tiles instead of 4x). Timed alone per layer, forward / input
gradient / kernel gradient in ms, it was faster from 56x56 up (224x224x64
->64: 25.8 / 20.0 / 44.0 against XLA's 24.8 / 24.3 / 49.6; 112x112x128:
13.3 / 18.6 / 30.8 against F(2x2)'s 17.0 / 22.1 / 33.2; 56x56x256: 12.2 /
11.3 / 19.4 against 14.2 / 14.9 / 23.1) and slower at 28x28 and below
(49 tiles make its 36 products too short). Used for stages 1-3 of the
trunk, the 224x224 gradient step measured 0.571 and 0.599 s against 0.588
and 0.512 s without it (bench_vgg, runs alternated with the unchanged
code, PyTorch 0.517-0.553 s), i.e. no gain within this VM's spread, while
it compiled in 27-32 s instead of 9-11 s and moved conv1_1's kernel
gradient from 1.8e-6 to 5.2e-4 (max relative) of PyTorch's.
"""

import jax
import jax.numpy as jnp
import numpy as np

# Fewer input channels than this and the transforms' memory traffic
# outweighs the saved products (64 -> 64 above).
MIN_CHANNELS = 128


def applies(x, kernel, rate):
  """Whether `conv3x3(x, kernel)` is the faster way for this convolution."""
  return (rate == 1 and x.dtype == jnp.float32
          and kernel.dtype == jnp.float32
          and kernel.shape[2] >= MIN_CHANNELS)


def _input_rows(d):
  """B^T applied along the first index of the 4 tile rows (or columns) d."""
  return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _kernel_rows(g):
  """G applied along the first index of the 3 kernel rows (or columns) g."""
  return [g[0], 0.5 * (g[0] + g[1] + g[2]), 0.5 * (g[0] - g[1] + g[2]), g[2]]


def _output_rows(m):
  """A^T applied along the first index of the 4 product rows (or columns)."""
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def kernel_transform(kernel):
  """`[3, 3, Cin, Cout]` -> `[16, Cin, Cout]`: G g G^T, positions row-major."""
  rows = _kernel_rows([kernel[0], kernel[1], kernel[2]])  # 4 x [3, Cin, Cout]
  return jnp.stack([u for r in rows for u in _kernel_rows([r[0], r[1], r[2]])])


def conv3x3(x, kernel):
  """The 3x3 SAME (padding 1), stride-1 cross-correlation of x with kernel.

  The same function as `lax.conv_general_dilated(x, kernel, (1, 1),
  ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))`, computed
  with F(2x2, 3x3) tiles (module docstring).

  Args:
    x: `[B, H, W, Cin]`, any H, W >= 1 (odd sizes are padded to whole tiles
      and cropped back).
    kernel: `[3, 3, Cin, Cout]` (HWIO).

  Returns:
    `[B, H, W, Cout]` in x's dtype.
  """
  return _tiled(x, kernel_transform(kernel), "pti,pio->pto")


def conv3x3_transpose(dy, kernel):
  """The input gradient of `conv3x3(x, kernel)` for output gradient dy.

  That is the SAME cross-correlation of dy `[B, H, W, Cout]` with the kernel
  rotated by 180 degrees and its channel axes swapped, `[B, H, W, Cin]`.
  Both are read off `kernel_transform(kernel)` instead of transforming a
  rotated, transposed copy (which XLA:CPU fused into the product at 4-8x
  its cost): G times a reversed kernel row (g2, g1, g0) is G g with its
  first and last entries exchanged, so the rotated kernel's 16 positions
  are the kernel's permuted by `_ROTATED`, and the product contracts over
  Cout.
  """
  u = kernel_transform(kernel)[np.array(_ROTATED)]
  return _tiled(dy, u, "pto,pio->pti")


def kernel_grad(x, dy, kernel):
  """d(sum(conv3x3(x, k) * dy)) / dk at k = kernel, `[3, 3, Cin, Cout]`.

  The chain rule through `conv3x3`'s tiles: the products become [Cin, T] x
  [T, Cout] per position (K = H W / 4 tiles, against im2col's K = 9 H W
  rows for all positions at once, 2.25x fewer multiplications), then G^T
  . G back to 3x3. The convolution is linear in k, so kernel's values do
  not matter; its type does: under `shard_map` a per-device kernel varies
  over the mesh axes, and its gradient must too (a fresh zeros kernel
  does not, and a custom_vjp rule returning it is refused).
  """
  return jax.vjp(lambda k: conv3x3(x, k), kernel)[1](dy)[0]


# G (g2, g1, g0) = (G g)[3, 1, 2, 0] along each axis of a 4x4 position.
_FLIP = (3, 1, 2, 0)
_ROTATED = tuple(4 * _FLIP[p] + _FLIP[q] for p in range(4) for q in range(4))


def _tiled(x, u, product):
  """F(2x2, 3x3) of x `[B, H, W, C]` with the 16 transformed kernel
  positions u, `product` the einsum of the tiles [16, T, C] with u."""
  b, h, w, cin = x.shape
  th, tw = -(-h // 2), -(-w // 2)  # Output tiles.
  # SAME padding of 1, plus what completes the last tile: tile (i, j) reads
  # padded rows 2i .. 2i + 3 and columns 2j .. 2j + 3.
  xp = jnp.pad(x, ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w), (0, 0)))
  # d[a][c]: every tile's input at tile offset (a, c), [B, th, tw, C].
  d = [[xp[:, a:a + 2 * th:2, c:c + 2 * tw:2] for c in range(4)]
       for a in range(4)]
  by_column = [_input_rows([d[a][c] for a in range(4)]) for c in range(4)]
  v = jnp.stack([q for p in range(4)
                 for q in _input_rows([by_column[c][p] for c in range(4)])])
  v = v.reshape(16, b * th * tw, cin)
  m = jnp.einsum(product, v, u).reshape(4, 4, b, th, tw, -1)
  s = _output_rows(m)  # A^T along the tile rows: 2 x [4, B, th, tw, C'].
  y = jnp.stack([jnp.stack(_output_rows(si), axis=3) for si in s], axis=2)
  return y.reshape(b, 2 * th, 2 * tw, -1)[:, :h, :w]
