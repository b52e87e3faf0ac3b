"""PML embedding model (Chen et al., CVPR 2018, Sec. 3.1).

backbone features (stride 8) ++ (x, y, t) -> 1x1 conv -> ReLU -> 1x1 conv to
d = 128 -> L2 normalisation. Coordinates are in [-1, 1]: x and y at pixel
(cell) centres, (i + 0.5) / n * 2 - 1; t is given per frame by the caller
(frame index / (num_frames - 1) * 2 - 1 by default over the clip), so frames
embedded one at a time still get their place in the whole video.

Backbones: 'resnet' (DeepLab-v2 ResNet, per frame) or 'i3d' (the Kinetics
I3D of vosjax.models.i3d up to an endpoint; its temporal stride is undone by
nearest repetition in time so every input frame gets an embedding).
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vosjax.models import i3d
from vosjax.models import resnet


def coordinate_channels(batch, times, h, w):
  """`[B, T, h, w, 3]` (x, y, t) channels in [-1, 1].

  Args:
    batch: B.
    times: `[B, T]` float times in [-1, 1].
    h, w: feature grid.
  """
  ys = (jnp.arange(h) + 0.5) / h * 2 - 1
  xs = (jnp.arange(w) + 0.5) / w * 2 - 1
  t = times.shape[1]
  x = jnp.broadcast_to(xs[None, None, None, :], (batch, t, h, w))
  y = jnp.broadcast_to(ys[None, None, :, None], (batch, t, h, w))
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
  def __call__(self, features, times=None):
    """Embeds features.

    Args:
      features: `[B, T, h, w, C]`.
      times: `[B, T]` in [-1, 1]; default `default_times`.

    Returns:
      `[B, T, h, w, embed_dim]` float32 with unit L2 norm.
    """
    b, t, h, w, _ = features.shape
    x = features.astype(jnp.float32)
    if self.use_coords:
      if times is None:
        times = default_times(b, t)
      x = jnp.concatenate(
          [x, coordinate_channels(b, jnp.asarray(times, jnp.float32), h, w)],
          -1)
    x = nn.relu(nn.Conv(self.hidden_dim, (1, 1), name="conv1")(x))
    x = nn.Conv(self.embed_dim, (1, 1), name="conv2")(x)
    return x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)


class PML(nn.Module):
  """Backbone + embedding head.

  Attributes:
    backbone: 'resnet' or 'i3d'.
    depth: ResNet depth (50 / 101).
    width_multiplier: backbone channel scale.
    resnet_stage_blocks: optional ResNet blocks per stage (overrides depth).
    i3d_endpoint: I3D endpoint used as features ('Mixed_3c': stride 8).
    embed_dim, hidden_dim, use_coords: see EmbeddingHead.
    use_head: False leaves the embedding head out: the embeddings are the
      backbone features, L2-normalised (no parameters beyond the backbone's;
      the zero-training baseline on Kinetics I3D features).
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

  @nn.compact
  def __call__(self, video, *, times=None, train=False):
    """Embeds every pixel (at stride 8) of a clip.

    Args:
      video: `[B, T, H, W, 3]` float in [-1, 1].
      times: optional `[B, T]` frame times in [-1, 1].
      train: BatchNorm mode of the backbone.

    Returns:
      `(embeddings [B, T, ceil(H/8), ceil(W/8), embed_dim], endpoints)`
      (the last axis is the backbone's channel count without the head);
      endpoints hold the backbone's plus 'features' and 'embeddings'.
    """
    b, t = video.shape[:2]
    if self.backbone == "resnet":
      feats, endpoints = resnet.ResNet(
          self.depth, self.width_multiplier, self.resnet_stage_blocks,
          name="resnet")(
              video.reshape(b * t, *video.shape[2:]), train=train)
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
                       "(expected 'resnet' or 'i3d')")
    endpoints = dict(endpoints)
    endpoints["features"] = feats
    if not self.use_head:
      x = feats.astype(jnp.float32)
      emb = x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)
      endpoints["embeddings"] = emb
      return emb, endpoints
    emb = EmbeddingHead(self.embed_dim, self.hidden_dim, self.use_coords,
                        name="head")(feats, times)
    endpoints["embeddings"] = emb
    return emb, endpoints
