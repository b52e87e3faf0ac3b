"""PML's embeddings of videos: training pairs, per-frame context, retrieval.

Chen, Pont-Tuset, Montes, Van Gool, "Blazingly Fast Video Object Segmentation
with Pixel-Wise Metric Learning", CVPR 2018. The library side of the method
(`vosjax/programs/pml.py` is the recipe):

* `PairBatches`: anchor frame + reference frames per video, a checkpointable
  iterator for `train.fit` (modified triplet loss, `vosjax.losses`): anchors
  from one frame (`anchors_per_object` pixels of every label present,
  background included) and the reference pool from `num_ref_frames` other
  frames at most `max_frames_apart` away (`pool_per_object` pixels per label),
  at the embedding resolution (1/8).
* Training sees the frames as retrieval does: (1) every element is one random
  rescale + crop (+ flip) of its video, and the crop's window in the full
  frame goes to the model, so the (x, y) coordinate channels mean full-frame
  position in training and at test time alike; (2) with a temporal backbone
  (I3D) each sampled frame is embedded inside the very clip of
  `eval.clip_len` consecutive frames that retrieval embeds it in
  (`context_window`), never in a clip made of the sampled frames.
* `embed_samples`, `triplet_loss`: the batch's embeddings and loss.
* `make_embed_fn`, `embed_video`, `segment_embedded`, `segment_sequence`:
  whole-video segmentation by k-NN retrieval from the first-frame mask,
  optionally with online adaptation.
"""

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from vosjax import davis_io
from vosjax import image
from vosjax import input_pipeline
from vosjax import losses
from vosjax import retrieval
from vosjax.errors import InputError

STRIDE = 8  # Spatial stride of every PML backbone.


def video_times(indices, num_frames):
  """Frame indices -> t in [-1, 1] over the whole video (0 for one frame)."""
  indices = np.asarray(indices, np.float32)
  return (indices / max(num_frames - 1, 1) * 2 - 1 if num_frames > 1
          else np.zeros_like(indices))


def context_window(frame, num_frames, clip_len):
  """The clip retrieval embeds `frame` in, and the frame's place in it.

  `segment_sequence` embeds a video in consecutive clips `[s, s + clip_len)`
  with s a multiple of `clip_len`, the last one padded with the last frame.

  Returns:
    `(indices [clip_len] int, position)` with `indices[position] == frame`.
  """
  start = frame - frame % clip_len
  return np.minimum(np.arange(start, start + clip_len), num_frames - 1), (
      frame - start)


def augment_with_window(frames, ids, rng, *, crop_size, key=0,
                        scale_range=(0.8, 1.25), flip=True,
                        min_foreground=0.1):
  """`input_pipeline.augment_clip` that also says where the crop lies.

  The same steps and random draws, in the same order (one scale, the crop of
  `input_pipeline.choose_crop` on the foreground of frame `key`, a flip with
  probability 1/2), so with `key = 0` the pixels equal augment_clip's for the
  same generator state.

  Args:
    frames: `[T, H, W, 3]` uint8; ids: `[T, H, W]` uint8 object ids.
    rng: `np.random.Generator`.
    crop_size: `(h, w)`.
    key: the frame whose foreground chooses the crop.
    scale_range, flip, min_foreground: see `augment_clip`.

  Returns:
    `(frames [T, h, w, 3], ids [T, h, w], window [4] float32)`: the window is
    (y0, x0, y1, x1), the crop's fractions of the full frame, x0 > x1 when
    the crop is flipped (pixel column j of the output shows full-frame x
    fraction x0 + (j + 0.5) / w * (x1 - x0)).
  """
  _, height, width, _ = frames.shape
  ch, cw = crop_size
  scale = max(rng.uniform(*scale_range), ch / height, cw / width)
  new_h = max(ch, int(round(height * scale)))
  new_w = max(cw, int(round(width * scale)))
  if (new_h, new_w) != (height, width):
    frames = np.stack([cv2.resize(f, (new_w, new_h),
                                  interpolation=cv2.INTER_LINEAR)
                       for f in frames])
    # EXACT nearest samples pixel centres like INTER_LINEAR (as augment_clip).
    ids = np.stack([cv2.resize(m, (new_w, new_h),
                               interpolation=cv2.INTER_NEAREST_EXACT)
                    for m in ids])
  top, left = input_pipeline.choose_crop(
      input_pipeline.foreground(ids[key]), (ch, cw), rng, min_foreground)
  frames = frames[:, top:top + ch, left:left + cw]
  ids = ids[:, top:top + ch, left:left + cw]
  # cv2.resize maps the whole frame onto the whole frame (pixel-centre
  # aligned), so fractions of the resized frame are fractions of the frame.
  window = np.array([top / new_h, left / new_w, (top + ch) / new_h,
                     (left + cw) / new_w], np.float32)
  if flip and rng.uniform() < 0.5:
    frames, ids = frames[:, :, ::-1], ids[:, :, ::-1]
    window = window[[0, 3, 2, 1]]
  return np.ascontiguousarray(frames), np.ascontiguousarray(ids), window


def sample_per_label(labels, per_label, max_labels, rng):
  """Up to `per_label` positions of each label >= 0, padded with label -1.

  Args:
    labels: `[N]` int labels (-1: not usable).
    per_label: positions drawn per label (all of them if fewer).
    max_labels: label slots; labels >= max_labels are an error.
    rng: `np.random.Generator`.

  Returns:
    `(index [max_labels * per_label] int32, labels [same] int32)`.
  """
  size = max_labels * per_label
  idx = np.zeros(size, np.int32)
  lab = np.full(size, -1, np.int32)
  present = np.unique(labels[labels >= 0])
  if present.size and present.max() >= max_labels:
    raise InputError(f"object id {present.max()} needs "
                     f"--config.train.max_objects >= {present.max()}")
  for slot, value in enumerate(present):
    where = np.flatnonzero(labels == value)
    pick = rng.choice(where, min(per_label, where.size), replace=False)
    idx[slot * per_label:slot * per_label + pick.size] = pick
    lab[slot * per_label:slot * per_label + pick.size] = value
  return idx, lab


class PairBatches:
  """Anchor frame + reference frames per video, as a checkpointable iterator.

  Each batch is a pure function of (seed, step), so `get_state()` is just the
  step. Element b of a batch (S = 1 + K sampled frames, sample 0 anchors):

    frames:        [B, S, c, c, 3] float32 in [-1, 1] (context_len 1), or
                   [B, S, L, c, c, 3]: sample s inside its retrieval clip of
                   L = context_len consecutive frames (`context_window`)
    times:         [B, S] (or [B, S, L]) float32 frame times in [-1, 1] over
                   the video
    position:      [B, S] int32 the sampled frame's place in its clip (only
                   with context_len > 1)
    window:        [B, 4] float32 (y0, x0, y1, x1) full-frame fractions of
                   the crop (`augment_with_window`), shared by all frames
    anchor_index:  [B, A] int32 into the anchor frame's h * w grid
    anchor_labels: [B, A] int32 (-1: padding)
    ref_index:     [B, R] int32 into the K reference frames' K * h * w grid
    ref_labels:    [B, R] int32 (-1: padding)

  with c = crop_size, h = w = ceil(c / 8), A = (max_objects + 1) *
  anchors_per_object, R = (max_objects + 1) * pool_per_object.

  Args:
    source: `num_frames(i)`, `read_clip(i, indices)` and `len()`.
    train_config: the config's `train` section.
    seed: the stream's seed.
    context_len: frames per clip of a temporal backbone (the retrieval's
      `eval.clip_len`); 1 for a per-frame backbone.
  """

  def __init__(self, source, train_config, seed, context_len=1):
    self.source, self.tc, self.seed = source, train_config, seed
    self.context_len = int(context_len)
    self.step = 0
    self.feat = -(-train_config.crop_size // STRIDE)

  def __iter__(self):
    return self

  def get_state(self):
    return {"step": self.step}

  def set_state(self, state):
    self.step = int(state["step"])

  def _element(self, rng):
    tc = self.tc
    seq = int(rng.integers(len(self.source)))
    n = self.source.num_frames(seq)
    anchor = int(rng.integers(n))
    near = [j for j in range(max(0, anchor - tc.max_frames_apart),
                             min(n, anchor + tc.max_frames_apart + 1))
            if j != anchor] or [anchor]
    refs = rng.choice(near, tc.num_ref_frames,
                      replace=len(near) < tc.num_ref_frames)
    order = [anchor] + [int(j) for j in refs]
    if self.context_len > 1:
      clips = [context_window(f, n, self.context_len) for f in order]
      indices = np.stack([c[0] for c in clips])  # [S, L]
      position = np.array([c[1] for c in clips], np.int32)
    else:
      indices, position = np.array(order)[:, None], np.zeros(len(order),
                                                              np.int32)
    # Each distinct frame is read and augmented once; one crop for all.
    unique, inverse = np.unique(indices, return_inverse=True)
    frames, ids = self.source.read_clip(seq, unique)
    frames, ids, window = augment_with_window(
        frames, ids, rng, crop_size=(tc.crop_size, tc.crop_size),
        key=int(np.flatnonzero(unique == anchor)[0]),
        min_foreground=tc.min_foreground)
    inverse = inverse.reshape(indices.shape)
    sampled = inverse[np.arange(len(order)), position]
    maps = np.stack([retrieval.labels_from_mask(ids[i],
                                                (self.feat, self.feat))
                     for i in sampled])
    slots = tc.max_objects + 1
    a_idx, a_lab = sample_per_label(maps[0].reshape(-1),
                                     tc.anchors_per_object, slots, rng)
    r_idx, r_lab = sample_per_label(maps[1:].reshape(-1),
                                     tc.pool_per_object, slots, rng)
    frames = image.to_model_range(frames[inverse])
    times = video_times(indices, n)
    element = {"frames": frames, "times": times, "window": window,
               "anchor_index": a_idx, "anchor_labels": a_lab,
               "ref_index": r_idx, "ref_labels": r_lab}
    if self.context_len > 1:
      element["position"] = position
    else:
      element["frames"], element["times"] = frames[:, 0], times[:, 0]
    return element

  def __next__(self):
    elements = [self._element(np.random.default_rng([self.seed, self.step, b]))
                for b in range(self.tc.batch_size)]
    self.step += 1
    return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


def embed_samples(model, variables, batch, *, train=False):
  """Embeddings of a batch's sampled frames, each from its own clip.

  Args:
    model: a `pml.PML`.
    variables: its variables.
    batch: `frames` `[B, S, H, W, 3]` (one frame per sample) or
      `[B, S, L, H, W, 3]` with `position` `[B, S]` (the sample's place in
      its clip of L frames); `times` `[B, S]` or `[B, S, L]`; optional
      `window` `[B, 4]` (default the whole frame). See `PairBatches`.
    train: BatchNorm in training mode (batch statistics, updated).

  Returns:
    `(embeddings [B, S, h, w, D], new_batch_stats)`: the B * S clips are one
    batch of the model, so no clip sees another's frames.
  """
  frames, times = batch["frames"], batch["times"]
  if frames.ndim == 5:
    frames, times = frames[:, :, None], times[:, :, None]
    position = jnp.zeros(frames.shape[:2], jnp.int32)
  else:
    position = batch["position"]
  b, s, l = frames.shape[:3]
  window = batch.get("window")
  if window is not None:
    window = jnp.repeat(jnp.asarray(window), s, axis=0)  # [B * S, 4]
  args = (variables, frames.reshape(b * s, l, *frames.shape[3:]))
  kwargs = dict(times=times.reshape(b * s, l), window=window)
  if train:
    (emb, _), updates = model.apply(*args, **kwargs, train=True,
                                    mutable=["batch_stats"])
    new_stats = updates["batch_stats"]
  else:
    emb, _ = model.apply(*args, **kwargs)
    new_stats = variables.get("batch_stats", {})
  emb = jnp.take_along_axis(
      emb, jnp.reshape(position, (b * s, 1, 1, 1, 1)), 1)[:, 0]
  return emb.reshape(b, s, *emb.shape[1:]), new_stats


def triplet_loss(model, variables, batch, margin, train_mode):
  """Modified triplet loss averaged over the batch's videos.

  Returns:
    `(loss, new_batch_stats, metrics)`.
  """
  emb, new_stats = embed_samples(model, variables, batch, train=train_mode)
  b, t, h, w, d = emb.shape
  anchors = jnp.take_along_axis(emb[:, 0].reshape(b, h * w, d),
                                batch["anchor_index"][..., None], 1)
  refs = jnp.take_along_axis(emb[:, 1:].reshape(b, (t - 1) * h * w, d),
                             batch["ref_index"][..., None], 1)
  per_video = jax.vmap(
      lambda a, al, r, rl: losses.modified_triplet_loss(a, al, r, rl, margin))(
          anchors, batch["anchor_labels"], refs, batch["ref_labels"])
  loss = jnp.mean(per_video)
  return loss, new_stats, {"triplet": loss}


def make_embed_fn(model, variables):
  """`embed(frames [T, H, W, 3] uint8, times [T]) -> [T, h, w, D]` (jitted)."""
  @jax.jit
  def apply(v, x, t):
    x = image.to_model_range(x)
    return model.apply(v, x[None], times=t[None])[0][0]
  # Variables as an argument, not a closure: no weights baked into the HLO.
  variables = jax.device_put(variables)
  return lambda frames, times: apply(variables, jnp.asarray(frames),
                                     jnp.asarray(times))


def _clips(num_frames, clip_len):
  """(start, stop) of consecutive clips; the last one is padded."""
  return [(s, min(s + clip_len, num_frames))
          for s in range(0, num_frames, clip_len)]


def embed_video(embed, frames, eval_config):
  """Every frame's embedding, `[T, h, w, D]`, in `segment_sequence`'s clips.

  Frames are resized by `eval.scale` and embedded in consecutive clips of
  `eval.clip_len` (`context_window`; the last one padded with its last frame,
  so one compiled shape serves every clip).
  """
  num = frames.shape[0]
  small = image.resize(frames, eval_config.scale)
  times = video_times(np.arange(num), num)
  per_clip = []
  for start, stop in _clips(num, eval_config.clip_len):
    idx, _ = context_window(start, num, eval_config.clip_len)
    per_clip.append(embed(small[idx], times[idx])[:stop - start])
  return jnp.concatenate(per_clip)


def segment_embedded(emb, first_mask, eval_config, *, online=None):
  """Labels `[T, H, W]` by retrieval from frame 0's embedding and mask.

  Without online adaptation every frame takes its k-NN labels from frame 0
  (`retrieval.segment_video`, in clips of `clip_len`, the last one padded: one
  compiled shape); with it the frames are segmented in order, each adding
  its confident pixels to the references (1-NN,
  `retrieval.segment_video_online`). `eval.upsample` says how the 1/8
  resolution result reaches `[H, W]` (`retrieval.UPSAMPLE_MODES`; "labels"
  when absent). Frame 0 is the given mask (void written as background).

  Args:
    emb: `[T, h, w, D]` embeddings (`embed_video`).
    first_mask: `[H, W]` object ids of frame 0 (255 = void).
    eval_config: the config's `eval` section.
    online: overrides `eval.online` (two variants from one embedding).

  Returns:
    `[T, H, W]` int32 object ids.
  """
  ec = eval_config
  online = ec.online if online is None else online
  emb = jnp.asarray(emb)  # Once: a host array (kept embeddings) moves here.
  num = emb.shape[0]
  height, width = first_mask.shape
  pool = retrieval.pool_from_label_maps(
      emb[:1], {0: retrieval.labels_from_mask(first_mask, emb.shape[1:3])})
  num_labels = max(2, int(first_mask[first_mask != davis_io.VOID_LABEL]
                          .max(initial=0)) + 1)
  by_distance = ec.get("upsample", "labels") == "distances"
  tiles = dict(chunk_size=ec.chunk_size, ref_chunk_size=ec.ref_chunk_size)
  if online:
    out = retrieval.segment_video_online(
        emb, pool.emb, pool.labels,
        num_labels=num_labels, capacity=ec.online_capacity,
        max_add_per_frame=ec.online_max_add_per_frame,
        confidence_ratio=ec.online_confidence_ratio,
        return_distances=by_distance, **tiles)
    labels = (retrieval.labels_from_distances(out[2], (height, width))
              if by_distance else
              np.array(retrieval.upsample_labels(out[0], (height, width))))
  else:
    per_clip = []
    for start, stop in _clips(num, ec.clip_len):
      idx = np.minimum(np.arange(start, start + ec.clip_len), num - 1)
      if by_distance:
        dist = retrieval.label_distances(emb[idx], pool.emb, pool.labels,
                                         num_labels=num_labels, **tiles)
        clip = retrieval.labels_from_distances(
            np.asarray(dist)[:stop - start], (height, width))
      else:
        clip = np.asarray(retrieval.segment_video(
            emb[idx], pool.emb, pool.labels, out_size=(height, width),
            k=ec.k, **tiles))[:stop - start]
      per_clip.append(clip)
    labels = np.concatenate(per_clip)
  labels[0] = np.where(first_mask == davis_io.VOID_LABEL, 0, first_mask)
  return labels


def segment_sequence(embed, frames, first_mask, eval_config):
  """Labels `[T, H, W]` of one video by retrieval from the first-frame mask:
  `segment_embedded(embed_video(...))`.

  Args:
    embed: `embed(frames [clip_len, h', w', 3] uint8, times [clip_len]) ->
      [clip_len, h, w, D]`, e.g. from `make_embed_fn`.
    frames: `[T, H, W, 3]` uint8 video.
    first_mask: `[H, W]` object ids of frame 0 (255 = void).
    eval_config: the config's `eval` section.

  Returns:
    `[T, H, W]` int32 object ids.
  """
  return segment_embedded(embed_video(embed, frames, eval_config),
                          first_mask, eval_config)
