"""Full-resolution inference of fully convolutional video models by tiling.

A sequence `[T, H, W, 3]` is cut into overlapping windows (clips of `clip_len`
frames x `tile` pixels), run through the model in fixed-size batches, and the
window logits are summed back into a `[T, H, W, C]` buffer on device and
divided by the TRUE number of windows that contributed to each pixel. (The
FC-I3D released code divided by a counter initialised to 1, which biases every
logit towards 0 by a factor count / (count + 1).)

Window placement, per axis (time, height, width): starts 0, stride, 2 stride,
... and a last window aligned to the end, so every pixel is covered. An axis
shorter than its window is padded at the end (bottom, right, or after the last
frame) to the window size with `pad_mode` ('edge' repeats the last row,
column or frame by default) and the padded part of the output is cropped.

Boundary effect. A network with SAME padding sees zeros beyond a tile's
border where the untiled network sees real neighbours, so a tile's logits
within the receptive-field radius r of an *interior* tile border (one that is
not the frame border) differ from the untiled logits; plain averaging mixes
those into the result. With `margin=(mt, my, mx)` each window contributes only
at least `margin` pixels (frames) away from its interior borders; with margin
>= r on each axis (and stride <= window - 2 margin, so everything is still
covered, checked) the tiled logits equal the untiled ones everywhere, up to
float summation order. The default margin 0 is the paper's plain averaging.
"""

import functools
import itertools
import pathlib

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from vosjax import davis_io


def window_starts(size, window, stride):
  """Start offsets of windows covering `[0, max(size, window))`.

  `0, stride, 2 stride, ...` while the window fits, plus a last window
  aligned to the end; `[0]` when `size <= window`.
  """
  if window <= 0 or stride <= 0:
    raise ValueError(f"window ({window}) and stride ({stride}) must be > 0")
  if size <= window:
    return [0]
  starts = list(range(0, size - window + 1, stride))
  if starts[-1] != size - window:
    starts.append(size - window)
  return starts


def _axis_plan(size, window, stride, margin, name):
  """Windows of one axis: `(padded_size, starts, lo, hi, count)`.

  Window `i` contributes at offsets `[lo[i], hi[i])` of itself: the margin is
  dropped at interior borders only. `count[p]` is the number of windows
  contributing to position p of the padded axis.
  """
  padded = max(size, window)
  starts = window_starts(padded, window, stride)
  lo = [0 if s == 0 else margin for s in starts]
  hi = [window if s + window == padded else window - margin for s in starts]
  count = np.zeros(padded, np.int64)
  for s, l, h in zip(starts, lo, hi):
    count[s + l:s + h] += 1
  if np.any(count == 0):
    raise ValueError(
        f"{name}: windows of {window} with stride {stride} and margin "
        f"{margin} leave positions uncovered; need stride <= window - 2 * "
        f"margin")
  return padded, starts, lo, hi, count


@functools.partial(jax.jit, static_argnames=("window",))
def _gather(frames, starts, *, window):
  """Clips `[B, *window, C]` cut from `frames` `[T, H, W, C]` at `starts`."""
  size = tuple(window) + (frames.shape[-1],)
  return jax.vmap(lambda s: lax.dynamic_slice(
      frames, (s[0], s[1], s[2], 0), size))(starts)


@functools.partial(jax.jit, donate_argnums=(0,))
def _accumulate(acc, logits, starts, lo, hi):
  """Adds `logits` `[B, t, h, w, C]` into `acc` `[T, H, W, C]`.

  Window i adds only inside `[lo[i], hi[i])` of each of its axes (all zero
  for the padding windows of the last batch). Windows are added one after
  the other because windows of a batch overlap.
  """
  window = logits.shape[1:4]
  grids = [lax.broadcasted_iota(jnp.int32, window, axis) for axis in range(3)]

  def body(i, acc):
    inside = jnp.ones(window, bool)
    for axis in range(3):
      inside &= (grids[axis] >= lo[i, axis]) & (grids[axis] < hi[i, axis])
    start = (starts[i, 0], starts[i, 1], starts[i, 2], 0)
    current = lax.dynamic_slice(acc, start, logits.shape[1:])
    added = current + jnp.where(inside[..., None], logits[i], 0.0)
    return lax.dynamic_update_slice(acc, added, start)

  return lax.fori_loop(0, logits.shape[0], body, acc)


@jax.jit
def _normalise(acc, count_t, count_h, count_w):
  count = (count_t[:, None, None, None] * count_h[None, :, None, None] *
           count_w[None, None, :, None])
  return acc / count


def balanced_batch_size(num_windows, batch_size, multiple=1):
  """Windows per model call: as few calls as `batch_size` allows, balanced.

  The last batch is padded with zero-weight windows that still cost a full
  model call, so 12 windows in batches of 8 would compute 16. The same
  number of calls, ceil(num_windows / batch_size), with the windows spread
  evenly (2 x 6 here) pads fewer than one window per call (fewer than
  `multiple` with the size rounded up to a multiple of the mesh's device
  count), and never puts more windows in a call than asked. Every window's
  logits are the model applied to that window alone, so the result does
  not depend on the batch size (up to the float summation order of the
  model's kernels).
  """
  num_batches = max(1, -(-num_windows // batch_size))
  size = -(-num_windows // num_batches)
  size = -(-size // multiple) * multiple
  return min(size, batch_size)


def _pair(value, name):
  if isinstance(value, int):
    return (value, value)
  value = tuple(int(v) for v in value)
  if len(value) != 2:
    raise ValueError(f"{name} must be an int or (height, width), got {value}")
  return value


def tiled_logits(apply_fn, frames, *, params=None, tile=224, stride=100,
                 clip_len=16, clip_stride=8, margin=(0, 0, 0), batch_size=8,
                 pad_mode="edge", mesh=None):
  """Per-frame logits of a whole sequence by overlapping windows.

  Args:
    apply_fn: the model, `apply_fn(clips) -> logits` (or
      `apply_fn(params, clips)` when `params` is given), clips
      `[N, clip_len, tile_h, tile_w, 3]` in the dtype of `frames`, logits
      `[N, clip_len, tile_h, tile_w, C]`. Fully convolutional. It is jitted
      here; pass the same function object across calls (and weights through
      `params` rather than closed over) so it compiles once.
    frames: `[T, H, W, 3]` (numpy or jax), any dtype `apply_fn` accepts.
    params: optional first argument of `apply_fn` (e.g. the variables).
    tile: int or `(tile_h, tile_w)`, spatial window (224 as in FC-I3D).
    stride: int or `(stride_h, stride_w)`, spatial step (100 in FC-I3D).
    clip_len: frames per window.
    clip_stride: temporal step between clips.
    margin: `(frames, rows, cols)` dropped at interior window borders (see
      the module docstring); 0 is plain averaging.
    batch_size: most windows per model call. The windows are spread evenly
      over the fewest calls this allows (`balanced_batch_size`); the last
      batch is padded with zero-weight windows, so the model compiles for
      one shape only.
    pad_mode: `np.pad` mode for axes shorter than their window.
    mesh: optional `('data',)` mesh (`vosjax.sharding.make_mesh`): each batch of
      windows is split over its devices (batch_size must be a multiple of
      the device count); frames and the accumulator are replicated.
      Default: the default device only.

  Returns:
    float32 `[T, H, W, C]` jax array: for each pixel, the mean of the logits
    of the windows covering it.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4:
    raise ValueError(f"frames must be [T, H, W, C], got shape {frames.shape}")
  num_frames, height, width = frames.shape[:3]
  tile_h, tile_w = _pair(tile, "tile")
  stride_h, stride_w = _pair(stride, "stride")
  margin = tuple(int(m) for m in margin)
  plans = [_axis_plan(num_frames, clip_len, clip_stride, margin[0], "time"),
           _axis_plan(height, tile_h, stride_h, margin[1], "height"),
           _axis_plan(width, tile_w, stride_w, margin[2], "width")]
  padded = tuple(p[0] for p in plans)
  frames = np.pad(frames, [(0, padded[0] - num_frames),
                           (0, padded[1] - height), (0, padded[2] - width),
                           (0, 0)], mode=pad_mode)
  window = (clip_len, tile_h, tile_w)

  # All windows: the product of the per-axis ones.
  rows = [tuple(zip(*parts)) for parts in itertools.product(
      *[list(zip(p[1], p[2], p[3])) for p in plans])]
  starts, lo, hi = (np.array([r[k] for r in rows], np.int32) for k in range(3))
  num_devices = 1 if mesh is None else mesh.devices.size
  if batch_size % num_devices:
    raise ValueError(f"batch_size {batch_size} must be a multiple of the "
                     f"{num_devices} devices of the mesh")
  batch_size = balanced_batch_size(len(rows), batch_size, num_devices)
  num_batches = -(-len(rows) // batch_size)
  extra = num_batches * batch_size - len(rows)
  # Padding windows: start 0, empty contribution range.
  starts = np.concatenate([starts, np.zeros((extra, 3), np.int32)])
  lo = np.concatenate([lo, np.zeros((extra, 3), np.int32)])
  hi = np.concatenate([hi, np.zeros((extra, 3), np.int32)])
  shape = (num_batches, batch_size, 3)
  # Host-to-device transfers happen here, before the loop.
  batches = [tuple(jax.device_put(a.reshape(shape)[b])
                   for a in (starts, lo, hi)) for b in range(num_batches)]
  if mesh is None:
    frames_dev, clip_sharding = jax.device_put(frames), None
  else:
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    clip_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec("data"))
    batches = jax.device_put(batches, replicated)
    frames_dev = jax.device_put(frames, replicated)
  model = jax.jit(apply_fn)

  acc = None
  for b_starts, b_lo, b_hi in batches:
    clips = _gather(frames_dev, b_starts, window=window)
    if clip_sharding is not None:
      clips = jax.device_put(clips, clip_sharding)  # Device to device.
    logits = model(clips) if params is None else model(params, clips)
    if logits.shape[:4] != clips.shape[:4] or logits.ndim != 5:
      raise ValueError(f"apply_fn must map clips {clips.shape} to logits "
                       f"[N, T, h, w, C] of the same N, T, h, w; got "
                       f"{logits.shape}")
    if acc is None:
      acc = jnp.zeros(padded + logits.shape[-1:], jnp.float32)
      if mesh is not None:
        acc = jax.device_put(acc, replicated)
    acc = _accumulate(acc, logits.astype(jnp.float32), b_starts, b_lo, b_hi)
  counts = [jnp.asarray(p[4], jnp.float32) for p in plans]
  return _normalise(acc, *counts)[:num_frames, :height, :width]


@functools.lru_cache(maxsize=32)
def _jit_apply(apply_fn):
  return jax.jit(apply_fn)


def batched_apply(apply_fn, params, images, *, batch_size=8):
  """`apply_fn(params, x)` over `[N, ...]` images in fixed-size batches.

  Per-frame models (OSVOS, MaskTrack's appearance pass) see whole frames in
  batches of `batch_size`; the last batch is padded by repeating its last
  image so every call has one shape (one compilation), and the padding is
  dropped.

  Returns:
    `[N, ...]` NumPy outputs, in input order.
  """
  fn = _jit_apply(apply_fn)
  images = np.asarray(images)
  num = len(images)
  outputs = []
  for start in range(0, num, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), num - 1)
    outputs.append(fn(params, images[idx]))
  # One transfer at the end, not one per batch.
  out = np.asarray(jax.device_get(jnp.concatenate(outputs)))
  return out[:num] if num else out


def predict_masks(logits):
  """Masks `[T, H, W]` uint8 from logits `[T, H, W, C]`.

  C == 1: sigmoid(logit) > 0.5, i.e. logit > 0, as {0, 1}. C > 1: argmax
  over the classes (object ids, 0 = background).
  """
  logits = jnp.asarray(logits)
  if logits.shape[-1] == 1:
    masks = logits[..., 0] > 0
  else:
    masks = jnp.argmax(logits, axis=-1)
  return np.asarray(masks).astype(np.uint8)


def write_sequence_masks(masks, out_dir, sequence, frame_names=None):
  """Writes DAVIS-format palette PNGs `<out_dir>/<sequence>/00000.png, ...`.

  Args:
    masks: `[T, H, W]` integer object ids (0 background, 1.. objects).
    out_dir: results folder (created).
    sequence: sequence name (sub-folder).
    frame_names: optional T file stems (default 00000, 00001, ...).

  Returns:
    The written paths, in frame order. Each file is written atomically.
  """
  masks = np.asarray(masks)
  if masks.ndim != 3:
    raise ValueError(f"masks of {sequence} must be [T, H, W], got "
                     f"{masks.shape}")
  if masks.size and (masks.min() < 0 or masks.max() > 255):
    raise ValueError(f"masks of {sequence} hold ids outside [0, 255]")
  if frame_names is None:
    frame_names = [f"{i:05d}" for i in range(len(masks))]
  if len(frame_names) != len(masks):
    raise ValueError(f"{sequence}: {len(frame_names)} frame names for "
                     f"{len(masks)} masks")
  folder = pathlib.Path(out_dir) / sequence
  paths = []
  for name, mask in zip(frame_names, masks):
    path = folder / f"{name}.png"
    davis_io.write_mask(path, mask.astype(np.uint8))
    paths.append(path)
  return paths
