"""PML embedding model (Chen et al., CVPR 2018, Sec. 3.1).

backbone features (stride 8) ++ (x, y, t) -> 1x1 conv -> ReLU -> 1x1 conv to
d = 128 -> L2 normalisation. Coordinates are in [-1, 1] over the WHOLE FRAME:
x and y of a feature cell are the full-frame position of its centre (cell i
covers input pixels [8 i, 8 i + 8), centre 8 i + 4), so a training crop of a
rescaled frame gets the same (x, y) as the same place seen in the whole frame
at test time. The caller says which part of the full frame the input shows
(`window`, fractions (y0, x0, y1, x1); default the whole frame). t is given
per frame by the caller (frame index / (num_frames - 1) * 2 - 1 by default
over the clip), so frames embedded one at a time still get their place in the
whole video.

Backbones: 'resnet' (DeepLab-v2 ResNet, per frame), 'vgg' (ImageNet VGG16
made dense, DeepLab-LargeFOV style: conv5_3 at stride 8, per frame; see
vosjax.models.vgg) or 'i3d' (the Kinetics I3D of vosjax.models.i3d up to an
endpoint; its temporal stride is undone by nearest repetition in time so
every input frame gets an embedding).
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vosjax.models import i3d
from vosjax.models import resnet
from vosjax.models import vgg

STRIDE = 8  # Spatial stride of the ResNet's, dense VGG16's and Mixed_3c's.
BACKBONES = ("resnet", "vgg", "i3d")
FULL_FRAME = (0.0, 0.0, 1.0, 1.0)  # A window: (y0, x0, y1, x1) fractions.


def _window_per_frame(window, batch, t):
  """`[B, 4]` or `[B, T, 4]` (or None: the whole frame) -> `[B, T, 4]`."""
  if window is None:
    window = jnp.asarray(FULL_FRAME, jnp.float32)[None]
  window = jnp.asarray(window, jnp.float32)
  if window.ndim == 2:
    window = window[:, None]
  if window.ndim != 3 or window.shape[-1] != 4:
    raise ValueError(f"window must be [B, 4] or [B, T, 4] (y0, x0, y1, x1), "
                     f"got shape {window.shape}")
  return jnp.broadcast_to(window, (batch, t, 4))


def grid_window(window, input_hw, grid_hw, stride=STRIDE):
  """Full-frame span of a feature grid's cells, from the input's span.

  The input `[H, W]` shows `window` of the full frame; its `h x w` grid of
  `stride`-pixel cells covers input pixels `[0, stride * h) x [0, stride *
  w)`, which is past the input's edge when H or W is not a multiple of the
  stride (ceil division), so the grid spans `stride * h / H` of the window.

  Args:
    window: `[..., 4]` (y0, x0, y1, x1) fractions of the full frame, in
      [0, 1] (x0 > x1 is a horizontally flipped input).
    input_hw: `(H, W)` input pixels.
    grid_hw: `(h, w)` feature cells.
    stride: input pixels per cell.

  Returns:
    `[..., 4]` the same for the grid's cells.
  """
  window = jnp.asarray(window, jnp.float32)
  y0, x0, y1, x1 = (window[..., i] for i in range(4))
  fy = stride * grid_hw[0] / input_hw[0]
  fx = stride * grid_hw[1] / input_hw[1]
  return jnp.stack([y0, x0, y0 + (y1 - y0) * fy, x0 + (x1 - x0) * fx], -1)


def feature_stride(input_hw, grid_hw):
  """Input pixels per feature cell: the smallest power of two s with
  ceil(H / s) = h and ceil(W / s) = w (each stride-2 SAME layer takes a
  ceil); 8 for both backbones at their default endpoints."""
  s = 1
  while s <= max(input_hw) and (-(-input_hw[0] // s) != grid_hw[0] or
                                -(-input_hw[1] // s) != grid_hw[1]):
    s *= 2
  return s


def coordinate_channels(batch, times, h, w, window=None):
  """`[B, T, h, w, 3]` (x, y, t) channels in [-1, 1].

  Cell (i, j) gets the full-frame position of its centre:
  `y = (y0 + (i + 0.5) / h * (y1 - y0)) * 2 - 1`, x likewise.

  Args:
    batch: B.
    times: `[B, T]` float times in [-1, 1].
    h, w: feature grid.
    window: `[B, 4]` or `[B, T, 4]` (y0, x0, y1, x1): the fractions of the
      full frame the grid's cells span (`grid_window`); default the whole
      frame, (0, 0, 1, 1).
  """
  t = times.shape[1]
  win = _window_per_frame(window, batch, t)[:, :, None, None, :]
  fy = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
  fx = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
  y = win[..., 0] + fy[None, None, :, None] * (win[..., 2] - win[..., 0])
  x = win[..., 1] + fx[None, None, None, :] * (win[..., 3] - win[..., 1])
  x = jnp.broadcast_to(x * 2 - 1, (batch, t, h, w))
  y = jnp.broadcast_to(y * 2 - 1, (batch, t, h, w))
  tt = jnp.broadcast_to(times[:, :, None, None], (batch, t, h, w))
  return jnp.stack([x, y, tt], -1).astype(jnp.float32)


def default_times(batch, num_frames):
  """Frame index mapped linearly to [-1, 1] (0 for a single frame)."""
  t = jnp.linspace(-1.0, 1.0, num_frames) if num_frames > 1 else jnp.zeros(1)
  return jnp.broadcast_to(t[None], (batch, num_frames))


class EmbeddingHead(nn.Module):
  """(x, y, t) concat, 1x1 conv, ReLU, 1x1 conv to `embed_dim`, L2 norm.

  Attributes:
    embed_dim: d (128 in the paper).
    hidden_dim: width of the first 1x1 conv (the paper does not give it; our
      choice).
    use_coords: concatenate (x, y, t); False is the ablation without
      spatio-temporal input.
  """
  embed_dim: int = 128
  hidden_dim: int = 256
  use_coords: bool = True

  @nn.compact
  def __call__(self, features, times=None, window=None):
    """Embeds features.

    Args:
      features: `[B, T, h, w, C]`.
      times: `[B, T]` in [-1, 1]; default `default_times`.
      window: the full-frame span of the feature cells, see
        `coordinate_channels` (`PML` passes `grid_window` of its input's).

    Returns:
      `[B, T, h, w, embed_dim]` float32 with unit L2 norm.
    """
    b, t, h, w, _ = features.shape
    x = features.astype(jnp.float32)
    if self.use_coords:
      if times is None:
        times = default_times(b, t)
      x = jnp.concatenate(
          [x, coordinate_channels(b, jnp.asarray(times, jnp.float32), h, w,
                                  window)], -1)
    x = nn.relu(nn.Conv(self.hidden_dim, (1, 1), name="conv1")(x))
    x = nn.Conv(self.embed_dim, (1, 1), name="conv2")(x)
    return x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)


class PML(nn.Module):
  """Backbone + embedding head.

  Attributes:
    backbone: 'resnet', 'vgg' or 'i3d'.
    depth: ResNet depth (50 / 101).
    width_multiplier: backbone channel scale.
    resnet_stage_blocks: optional ResNet blocks per stage (overrides depth).
    i3d_endpoint: I3D endpoint used as features ('Mixed_3c': stride 8).
    embed_dim, hidden_dim, use_coords: see EmbeddingHead.
    use_head: False leaves the embedding head out: the embeddings are the
      backbone features, L2-normalised (no parameters beyond the backbone's;
      the zero-training baseline on Kinetics I3D features).
    train_backbone: False stops the gradient at the backbone's features, so
      training moves the embedding head only (and costs no backbone
      backward pass).
  """
  backbone: str = "resnet"
  depth: int = 101
  width_multiplier: float = 1.0
  resnet_stage_blocks: Optional[Tuple[int, int, int, int]] = None
  i3d_endpoint: str = "Mixed_3c"
  embed_dim: int = 128
  hidden_dim: int = 256
  use_coords: bool = True
  use_head: bool = True
  train_backbone: bool = True

  @nn.compact
  def __call__(self, video, *, times=None, window=None, train=False):
    """Embeds every pixel (at stride 8) of a clip.

    Args:
      video: `[B, T, H, W, 3]` float in [-1, 1].
      times: optional `[B, T]` frame times in [-1, 1].
      window: optional `[B, 4]` or `[B, T, 4]` (y0, x0, y1, x1): the
        fractions of the full frame that `video` shows (a training crop of a
        rescaled frame; x0 > x1 when flipped); default the whole frame.
      train: BatchNorm mode of the backbone.

    Returns:
      `(embeddings [B, T, ceil(H/8), ceil(W/8), embed_dim], endpoints)`
      (the last axis is the backbone's channel count without the head);
      endpoints hold the backbone's plus 'features', 'embeddings' and, with
      coordinates, 'coordinates' (the `[B, T, h, w, 3]` (x, y, t) input of
      the head).
    """
    b, t = video.shape[:2]
    if self.backbone in ("resnet", "vgg"):
      frames = video.reshape(b * t, *video.shape[2:])
      if self.backbone == "resnet":
        net = resnet.ResNet(self.depth, self.width_multiplier,
                            self.resnet_stage_blocks, name="resnet")
      else:
        net = vgg.VGG16(self.width_multiplier, output_stride=STRIDE,
                        name="vgg")
      feats, endpoints = net(frames, train=train)
      feats = feats.reshape(b, t, *feats.shape[1:])
    elif self.backbone == "i3d":
      feats, endpoints = i3d.InceptionI3d(
          final_endpoint=self.i3d_endpoint,
          width_multiplier=self.width_multiplier, name="i3d")(
              video, train=train)
      # Temporal stride s of the endpoint: repeat each feature frame s times.
      reps = -(-t // feats.shape[1])
      feats = jnp.repeat(feats, reps, axis=1)[:, :t]
    else:
      raise ValueError(f"unknown PML backbone {self.backbone!r} "
                       f"(expected one of {BACKBONES})")
    if not self.train_backbone:
      feats = jax.lax.stop_gradient(feats)
    endpoints = dict(endpoints)
    endpoints["features"] = feats
    if not self.use_head:
      x = feats.astype(jnp.float32)
      emb = x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)
      endpoints["embeddings"] = emb
      return emb, endpoints
    h, w = feats.shape[2:4]
    cells = grid_window(_window_per_frame(window, b, t), video.shape[2:4],
                        (h, w), feature_stride(video.shape[2:4], (h, w)))
    if self.use_coords:
      endpoints["coordinates"] = coordinate_channels(
          b, default_times(b, t) if times is None
          else jnp.asarray(times, jnp.float32), h, w, cells)
    emb = EmbeddingHead(self.embed_dim, self.hidden_dim, self.use_coords,
                        name="head")(feats, times, cells)
    endpoints["embeddings"] = emb
    return emb, endpoints
