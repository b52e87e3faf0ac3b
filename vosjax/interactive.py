"""Interactive PML segmentation: embed once, re-segment by retrieval alone.

PML's selling point (Chen et al., CVPR 2018, Sec. 4.4) is that user input only
changes the reference pool: the embeddings are computed once per video, and
each click / scribble / mask re-segments every frame by nearest-neighbour
retrieval (`vosjax.retrieval`), a jitted device computation.

With 1-NN (k = 1, no online adaptation: the paper's interactive setting) the
work per interaction is only what it changed: the nearest of the
interaction's own references is found once for every pixel (distances as
matrix products on device, `nearest_update`) and kept; the session's
answer is the (distance, pool index) minimum over the interactions kept, so
a removal only re-merges, and labels come from the merged label maps (a later
interaction overwriting an earlier one's cells changes their label, not
their distance). Full-resolution labels are made on request, for the frames
asked for. The result equals brute-force retrieval over the merged pool
(`retrieval.segment_video`), ties included. k > 1 and online adaptation
re-run that brute force on every change.

Example:
  session = InteractiveSession(emb, frame_size=(480, 854))
  i = session.add_click(0, x=400, y=200, obj_id=1)
  session.add_click(0, x=10, y=10, obj_id=0)      # background click
  masks = session.segmentation()                   # [T, 480, 854] int32
  session.remove(i)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vosjax import losses
from vosjax import retrieval


# Tiles of the incremental path, measured on 2 CPU cores (benchmarks/
# bench_interactive.py): [1024 queries x 512 references] ran fastest of
# 512-2048 x 512-2048.
QUERY_TILE = 1024
REF_CHUNK = 512  # References per device call (more: several calls).
REF_STEP = 64  # A call's references are padded to a multiple of this ...
MIN_REF_BUCKET = 8  # ... or, up to REF_STEP, to a power of two >= 8.


def _ref_bucket(n):
  """Padded reference count of one call: few compiled shapes, little waste
  (a 264-cell scribble computes 320 columns, not 512)."""
  if n <= REF_STEP:
    return max(MIN_REF_BUCKET, 1 << max(0, int(n - 1).bit_length()))
  return -(-n // REF_STEP) * REF_STEP


# ---------------------------------------------------------------------------
# Incremental 1-NN: references arrive in groups (interactive sessions).
#
# The nearest reference of every query over a union of groups is the
# lexicographic minimum over the groups of (distance, reference index): with
# references indexed in pool order that is exactly `retrieval.knn_search`
# with k = 1 over the whole pool (same distance expression, ties to the lower
# index), so each
# group's result can be computed once, kept, and merged, and removing a group
# only re-merges the others.

NO_REFERENCE = np.iinfo(np.int32).max  # Index of "no reference yet".


def pad_queries(query_emb, chunk_size):
  """`(queries [Qp, D] float32, squared norms [Qp])`, Qp a multiple of
  `chunk_size` (zero rows appended; their results are meaningless).

  The norms are computed once here, not per group of references.
  """
  q = losses.pad_rows(
      jnp.asarray(query_emb, jnp.float32), chunk_size, 0.0)
  return q, _row_sq(q)


@jax.jit
def _row_sq(q):
  return jnp.sum(q * q, -1)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def nearest_update(query_emb, query_sq, ref_emb, ref_index, best_dist,
                   best_index, *, chunk_size=4096):
  """Folds references into every query's running nearest reference.

  Args:
    query_emb: `[Q, D]` float32, Q a multiple of `chunk_size` (`pad_queries`).
    query_sq: `[Q]` its squared norms.
    ref_emb: `[R, D]` references.
    ref_index: `[R]` int32 their indices in pool order (< 0: padding).
    best_dist, best_index: `[Q]` the running result (`NO_REFERENCE`, inf to
      start).
    chunk_size: queries per tile.

  Returns:
    `(best_dist, best_index)` updated: the lexicographic minimum of
    (squared distance, index) over the old result and the new references.
  """
  ref_emb = ref_emb.astype(jnp.float32)
  valid = ref_index >= 0
  # Padding gets ||r||^2 = inf, hence distance inf: no select per pair.
  rsq = jnp.where(valid, jnp.sum(ref_emb * ref_emb, -1), jnp.inf)
  gid = jnp.where(valid, ref_index, NO_REFERENCE)
  iota = jnp.arange(ref_emb.shape[0], dtype=jnp.int32)
  dim = query_emb.shape[-1]

  def per_chunk(xs):
    e, esq, bd, bi = xs
    # `retrieval._sq_dist`'s expression: distances match the pool's exactly.
    d = jnp.maximum(esq[:, None] + rsq[None] - 2.0 * e @ ref_emb.T, 0.0)
    # The first minimum (references come in ascending index), as two plain
    # reductions: on XLA:CPU about twice as fast as argmin's paired one.
    m = jnp.min(d, -1)
    j = jnp.min(jnp.where(d == m[:, None], iota[None], iota.shape[0]), -1)
    g = jnp.where(jnp.isfinite(m), gid[jnp.minimum(j, iota.shape[0] - 1)],
                  NO_REFERENCE)
    up = (m < bd) | ((m == bd) & (g < bi))
    return jnp.where(up, m, bd), jnp.where(up, g, bi)

  n = query_emb.shape[0] // chunk_size
  d, i = jax.lax.map(per_chunk, (
      query_emb.reshape(n, chunk_size, dim), query_sq.reshape(n, chunk_size),
      best_dist.reshape(n, chunk_size), best_index.reshape(n, chunk_size)))
  return d.reshape(-1), i.reshape(-1)


@jax.jit
def merge_nearest(dist_a, index_a, dist_b, index_b):
  """Lexicographic minimum of two (distance, index) results, elementwise."""
  up = (dist_b < dist_a) | ((dist_b == dist_a) & (index_b < index_a))
  return jnp.where(up, dist_b, dist_a), jnp.where(up, index_b, index_a)


@jax.jit
def labels_of_nearest(best_index, pool_labels):
  """`[Q]` int32 labels: `pool_labels[best_index]`, 0 without a reference."""
  found = best_index != NO_REFERENCE
  return jnp.where(found, pool_labels[jnp.where(found, best_index, 0)],
                   0).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("size",))
def _upsample(labels, size):
  return retrieval.upsample_labels(labels, size)


@jax.jit
def _rows(x, index):
  return x[index]


@functools.partial(jax.jit, static_argnames=("shape",))
def _lookup(best_index, pool_labels, shape):
  n = shape[0] * shape[1] * shape[2]
  return labels_of_nearest(best_index[:n], pool_labels).reshape(
      shape)


class InteractiveSession:
  """One video's embeddings plus the user's interactions.

  Interactions are applied in order; on the same frame a later one overwrites
  an earlier one where they overlap (e.g. a click correcting a mask). Object
  id 0 is background; a pool without any reference gives all background.
  Every add_* / remove call re-segments the whole video and returns nothing
  heavier than an interaction id; read the result with `segmentation()`.

  Attributes:
    embeddings: `[T, h, w, D]` device array (computed once).
    frame_size: `(H, W)` full resolution.
    labels: `[T, h, w]` int32 device array, the current low-res segmentation.
  """

  def __init__(self, embeddings, frame_size, *, frames=None, k=1,
               online=False, online_kwargs=None, chunk_size=4096,
               ref_chunk_size=8192, incremental=True):
    """Creates the session.

    Args:
      embeddings: `[T, h, w, D]` array, or `embed_fn(frames) -> [T, h, w, D]`
        called exactly once here.
      frame_size: `(H, W)` of the video frames.
      frames: the video `[T, H, W, 3]`, required when `embeddings` is a
        callable.
      k: neighbours for the k-NN vote (ignored when `online`, which is 1-NN).
      online: use online adaptation (`retrieval.segment_video_online`).
      online_kwargs: extra arguments for it (capacity, confidence_ratio, ...).
      chunk_size, ref_chunk_size: retrieval tiles.
      incremental: with k = 1 and no online adaptation, keep each
        interaction's nearest references (module docstring); False re-runs
        brute-force retrieval on every change (same labels; the reference).
    """
    if callable(embeddings):
      if frames is None:
        raise ValueError("frames are required when an embed_fn is given")
      embeddings = embeddings(frames)
    self.embeddings = jnp.asarray(embeddings)
    if self.embeddings.ndim != 4:
      raise ValueError(f"embeddings must be [T, h, w, D], got shape "
                       f"{self.embeddings.shape}")
    self.frame_size = tuple(int(s) for s in frame_size)
    self.k = k
    self.online = online
    self.online_kwargs = dict(online_kwargs or {})
    self.chunk_size = chunk_size
    self.ref_chunk_size = ref_chunk_size
    self._interactions = {}  # id -> (frame, [h, w] label map); ordered.
    self._next_id = 0
    self.labels = None
    self._full = None  # Full-resolution labels, made on request.
    self._incremental = incremental and k == 1 and not online
    if self._incremental:
      flat = self.embeddings.reshape(-1, self.embeddings.shape[-1])
      self._chunk = max(1, min(chunk_size, QUERY_TILE, flat.shape[0]))
      self._queries, self._query_sq = pad_queries(flat, self._chunk)
      rows = self._queries.shape[0]
      self._empty = (jnp.full((rows,), jnp.inf, jnp.float32),
                     jnp.full((rows,), NO_REFERENCE, jnp.int32))
      self._nearest = {}  # id -> (dist, index) of its own references.
      self._merged = self._empty
    self._resegment()

  @property
  def num_frames(self):
    return self.embeddings.shape[0]

  @property
  def feat_hw(self):
    return tuple(self.embeddings.shape[1:3])

  def _check_frame(self, frame):
    if not 0 <= frame < self.num_frames:
      raise ValueError(f"frame {frame} outside [0, {self.num_frames})")

  def _add(self, frame, label_map):
    self._check_frame(frame)
    i = self._next_id
    self._next_id += 1
    self._interactions[i] = (int(frame), label_map)
    if self._incremental:
      self._nearest[i] = self._nearest_of(int(frame), label_map)
      self._merged = merge_nearest(*self._merged, *self._nearest[i])
    self._resegment()
    return i

  def _nearest_of(self, frame, label_map):
    """Every query's nearest among one interaction's references."""
    h, w = self.feat_hw
    index = (frame * h * w + np.flatnonzero(np.asarray(label_map).reshape(-1)
                                            >= 0)).astype(np.int32)
    result = self._empty
    for start in range(0, index.size, REF_CHUNK):
      chunk = index[start:start + REF_CHUNK]
      part = np.full(_ref_bucket(chunk.size), -1, np.int32)
      part[:chunk.size] = chunk
      refs = _rows(self._queries, jnp.asarray(np.maximum(part, 0)))
      result = nearest_update(
          self._queries, self._query_sq, refs, jnp.asarray(part), *result,
          chunk_size=self._chunk)
    return result

  def add_click(self, frame, x, y, obj_id, radius=0):
    """A click at full-res pixel (x, y) on `frame`; returns its id."""
    return self._add(frame, retrieval.labels_from_clicks(
        [(x, y, obj_id)], self.frame_size, self.feat_hw, radius))

  def add_scribble(self, frame, points, obj_id, thickness=1):
    """A polyline `[N, 2]` of full-res (x, y) points; returns its id."""
    return self._add(frame, retrieval.labels_from_scribbles(
        [(points, obj_id)], self.frame_size, self.feat_hw, thickness))

  def add_mask(self, frame, mask):
    """A full-res `[H, W]` object-id mask (255 = void); returns its id."""
    mask = np.asarray(mask)
    if mask.shape != self.frame_size:
      raise ValueError(f"mask shape {mask.shape} != frame size "
                       f"{self.frame_size}")
    return self._add(frame, retrieval.labels_from_mask(mask, self.feat_hw))

  def remove(self, interaction_id):
    """Removes one interaction and re-segments."""
    if interaction_id not in self._interactions:
      raise KeyError(f"no interaction with id {interaction_id}")
    del self._interactions[interaction_id]
    if self._incremental:
      del self._nearest[interaction_id]
      self._merged = self._empty
      for result in self._nearest.values():
        self._merged = merge_nearest(*self._merged, *result)
    self._resegment()

  def clear(self):
    self._interactions.clear()
    if self._incremental:
      self._nearest.clear()
      self._merged = self._empty
    self._resegment()

  def label_maps(self):
    """Merged `{frame: [h, w] labels}` (later interactions on top)."""
    maps = {}
    for frame, lab in self._interactions.values():
      cur = maps.get(frame)
      maps[frame] = lab.copy() if cur is None else np.where(lab >= 0, lab,
                                                            cur)
    return maps

  def _resegment(self):
    self._full = None
    maps = self.label_maps()
    if self._incremental:
      t, h, w = self.embeddings.shape[:3]
      pool_labels = np.full((t, h * w), retrieval.IGNORE, np.int32)
      for frame, lab in maps.items():
        pool_labels[frame] = lab.reshape(-1)
      self.labels = _lookup(self._merged[1], jnp.asarray(pool_labels.reshape(
          -1)), (t, h, w))
      return
    pool = retrieval.pool_from_label_maps(self.embeddings, maps)
    if self.online:
      # Static label count, rounded up so adding objects rarely recompiles.
      top = max([int(m.max()) for m in maps.values()], default=0)
      num_labels = max(2, 1 << top.bit_length())
      self.labels, _ = retrieval.segment_video_online(
          self.embeddings, pool.emb, pool.labels, num_labels=num_labels,
          chunk_size=self.chunk_size, ref_chunk_size=self.ref_chunk_size,
          **self.online_kwargs)
    else:
      self.labels = retrieval.segment_video(
          self.embeddings, pool.emb, pool.labels, k=self.k,
          chunk_size=self.chunk_size, ref_chunk_size=self.ref_chunk_size)

  def segmentation(self, full_res=True, frames=None):
    """Current labels, `[T, H, W]` (nearest upsampling) or `[T, h, w]`.

    Args:
      full_res: upsample to the frame size.
      frames: optional frame indices: only these frames, `[len, H, W]`
        (upsampled alone; the whole video's full-resolution labels are made
        once per change, on the first request).
    """
    if not full_res:
      return self.labels if frames is None else self.labels[
          jnp.asarray(frames)]
    if frames is not None:
      return _upsample(self.labels[jnp.asarray(frames)], self.frame_size)
    if self._full is None:
      self._full = _upsample(self.labels, self.frame_size)
    return self._full
