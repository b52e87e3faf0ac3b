"""Interactive PML segmentation: embed once, re-segment by retrieval alone.

PML's selling point (Chen et al., CVPR 2018, Sec. 4.4) is that user input only
changes the reference pool: the embeddings are computed once per video, and
each click / scribble / mask re-segments every frame by nearest-neighbour
retrieval (`vosjax.retrieval`), a jitted device computation.

With 1-NN (k = 1, no online adaptation: the paper's interactive setting) the
work per interaction is only what it changed. Which cells are references (the
pool's support) decides every query's nearest reference; labels only decide
what that reference says. So an interaction computes distances only to the
cells it adds to the support (none for a click on an already masked frame),
as matrix products on device (`nearest_update`), and keeps, per block of
cells, every query's nearest (distance, pool index); the session's answer is
the lexicographic minimum over the blocks. A removal drops the cells no other
interaction still covers: blocks left whole are only re-merged, a block
losing some cells is recomputed for the cells that remain. Labels come from
the merged label maps (a later interaction overwriting an earlier one's cells
changes their label, not their distance). Full-resolution labels are made on
request, for the frames asked for. The result equals brute-force retrieval
over the merged pool (`retrieval.segment_video`), ties included. k > 1 and
online adaptation re-run that brute force on every change.

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


# Tiles of the incremental path, measured on 2 shared CPU cores
# (benchmarks/bench_interactive.py, 321k queries x 1024 references): queries
# in tiles of 1024, references in blocks of 256 with the distance tile laid
# out [references, queries] (reductions across rows vectorise on XLA:CPU)
# ran at the speed of a plain matmul-and-min; blocks of 128 / 512 and
# [queries, references] tiles were 10-30 % slower.
QUERY_TILE = 1024
LARGE_BLOCK = 256  # References per block from LARGE_FROM on.
LARGE_FROM = 512
MID_BLOCK = 64  # Below: one block, rounded up to a multiple of this ...
SMALL_BLOCK = 8  # ... or to 8 (a click).


def plan_blocks(n):
  """`(block, num_blocks, capacity)` for n references of one update.

  Below LARGE_FROM, one block of n rounded up (a click: 8; a 264-cell
  scribble: 320), as one matmul per query tile: 8 compiled programs at most.
  From LARGE_FROM on, blocks of LARGE_BLOCK padded to `capacity` (a power of
  two times the block) and a loop over the `num_blocks` that hold them: one
  program serves every count up to `capacity`, at most 255 padded references
  are computed.
  """
  if n < LARGE_FROM:  # One block: n rounded up to 8 or a multiple of 64.
    block = SMALL_BLOCK if n <= SMALL_BLOCK else -(-n // MID_BLOCK) * MID_BLOCK
    return block, 1, block
  block = LARGE_BLOCK
  num_blocks = -(-n // block)
  return block, num_blocks, block * (1 << (num_blocks - 1).bit_length())


# ---------------------------------------------------------------------------
# Incremental 1-NN: references arrive in groups (interactive sessions).
#
# The nearest reference of every query over a union of groups is the
# lexicographic minimum over the groups of (distance, reference index): with
# references indexed in pool order that is exactly `retrieval.knn_search`
# with k = 1 over the whole pool (same distance expression, ties to the lower
# index), so each group's result can be computed once, kept, and merged, and
# removing a group only re-merges the others.

NO_REFERENCE = np.iinfo(np.int32).max  # Index of "no reference yet".


def tile_queries(query_emb, tile):
  """Queries laid out for `nearest_update`.

  Args:
    query_emb: `[Q, D]` float.
    tile: queries per tile.

  Returns:
    `(query_t [n, D, tile] float32, query_sq [n, tile])`: zero rows appended
    up to n * tile (their results are meaningless), each tile transposed, and
    the squared norms computed once here, not per group of references.
  """
  q = losses.pad_rows(jnp.asarray(query_emb, jnp.float32), tile, 0.0)
  return _tile(q, tile)


@functools.partial(jax.jit, static_argnames=("tile",))
def _tile(q, tile):
  # `retrieval._sq_dist` sums e * e over the last axis of the row layout.
  sq = jnp.sum(q * q, -1)
  n = q.shape[0] // tile
  return (jnp.transpose(q.reshape(n, tile, q.shape[1]), (0, 2, 1)),
          sq.reshape(n, tile))


@jax.jit
def gather_queries(query_t, index):
  """`[R, D]` rows `index` (pool order) of the tiled queries."""
  tile = query_t.shape[2]
  return query_t[index // tile, :, index % tile]


@functools.partial(jax.jit, static_argnames=("block",))
def nearest_update(query_t, query_sq, ref_emb, ref_index, num_blocks,
                   best_dist, best_index, *, block):
  """Folds references into every query's running nearest reference.

  Args:
    query_t, query_sq: `tile_queries`' `[n, D, tile]` and `[n, tile]`.
    ref_emb: `[C, D]` references, C a multiple of `block`.
    ref_index: `[C]` int32 their indices in pool order, ascending (< 0:
      padding).
    num_blocks: int32 scalar, blocks of `block` references to use (<= C /
      block; a traced value: one program for every count).
    best_dist, best_index: `[n * tile]` the running result (inf and
      `NO_REFERENCE` to start).
    block: references per distance tile.

  Returns:
    `(best_dist, best_index)` updated: the lexicographic minimum of
    (squared distance, index) over the old result and the new references.
  """
  n, _, tile = query_t.shape
  ref_emb = ref_emb.astype(jnp.float32)
  valid = ref_index >= 0
  # Padding gets ||r||^2 = inf, hence distance inf: no select per pair.
  rsq = jnp.where(valid, jnp.sum(ref_emb * ref_emb, -1), jnp.inf)
  gid = jnp.where(valid, ref_index, NO_REFERENCE)
  iota = jnp.arange(block, dtype=jnp.int32)[:, None]

  def per_tile(xs):
    e_t, esq, bd, bi = xs

    def body(b, carry):
      bd, bi = carry
      r = jax.lax.dynamic_slice_in_dim(ref_emb, b * block, block)
      rs = jax.lax.dynamic_slice_in_dim(rsq, b * block, block)
      g = jax.lax.dynamic_slice_in_dim(gid, b * block, block)
      # `retrieval._sq_dist`'s expression, transposed (a + b == b + a and
      # 2 (r.e) == (2 e).r exactly): distances match the pool's bit for bit.
      d = jnp.maximum(esq[None] + rs[:, None] - 2.0 * (r @ e_t), 0.0)
      # The first minimum (references in ascending index), as two plain
      # reductions: on XLA:CPU about twice as fast as argmin's paired one.
      m = jnp.min(d, 0)
      j = jnp.min(jnp.where(d == m[None], iota, block), 0)
      gj = jnp.where(jnp.isfinite(m), g[jnp.minimum(j, block - 1)],
                     NO_REFERENCE)
      up = (m < bd) | ((m == bd) & (gj < bi))
      return jnp.where(up, m, bd), jnp.where(up, gj, bi)

    return jax.lax.fori_loop(0, num_blocks, body, (bd, bi))

  d, i = jax.lax.map(per_tile, (query_t, query_sq, best_dist.reshape(n, tile),
                                best_index.reshape(n, tile)))
  return d.reshape(-1), i.reshape(-1)


def nearest_of(query_t, query_sq, cells):
  """Every query's nearest among references `cells` (ascending pool indices).

  Returns:
    `(dist [n * tile] float32, index [n * tile] int32)`.
  """
  rows = query_t.shape[0] * query_t.shape[2]
  block, num_blocks, capacity = plan_blocks(cells.size)
  part = np.full(capacity, -1, np.int32)
  part[:cells.size] = cells
  part = jnp.asarray(part)
  refs = gather_queries(query_t, jnp.maximum(part, 0))
  return nearest_update(
      query_t, query_sq, refs, part, jnp.int32(num_blocks),
      jnp.full((rows,), jnp.inf, jnp.float32),
      jnp.full((rows,), NO_REFERENCE, jnp.int32), block=block)


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


@functools.partial(jax.jit, static_argnames=("shape",))
def _lookup(best_index, pool_labels, shape):
  n = shape[0] * shape[1] * shape[2]
  return labels_of_nearest(best_index[:n], pool_labels).reshape(shape)


class InteractiveSession:
  """One video's embeddings plus the user's interactions.

  Interactions are applied in order; on the same frame a later one overwrites
  an earlier one where they overlap (e.g. a click correcting a mask). Object
  id 0 is background; a pool without any reference gives all background.
  Every add_* / remove call re-segments the whole video at the embedding
  resolution and returns nothing heavier than an interaction id; read the
  result with `segmentation()`.

  Attributes:
    embeddings: `[T, h, w, D]` device array (computed once).
    frame_size: `(H, W)` full resolution.
    labels: `[T, h, w]` int32 device array, the current low-res segmentation.
    distance_cells: references whose distances the incremental path has
      computed so far (a count, for tests and benchmarks).
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
      chunk_size, ref_chunk_size: retrieval tiles (the incremental path's
        query tile is min(chunk_size, QUERY_TILE)).
      incremental: with k = 1 and no online adaptation, keep per block of
        reference cells every query's nearest (module docstring); False
        re-runs brute-force retrieval on every change (same labels; the
        reference).
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
    self.distance_cells = 0
    self._incremental = incremental and k == 1 and not online
    if self._incremental:
      flat = self.embeddings.reshape(-1, self.embeddings.shape[-1])
      tile = max(1, min(chunk_size, QUERY_TILE, flat.shape[0]))
      self._query_t, self._query_sq = tile_queries(flat, tile)
      self._clear_blocks()
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

  # -- Support blocks (incremental path) ------------------------------------

  def _clear_blocks(self):
    cells = int(np.prod(self.embeddings.shape[:3]))
    self._cover = np.zeros(cells, np.int32)  # Interactions covering a cell.
    self._cell_block = np.full(cells, -1, np.int32)  # Its block, -1: none.
    self._blocks = {}  # Block id -> (cells, (dist, index)).
    self._next_block = 0
    rows = self._query_t.shape[0] * self._query_t.shape[2]
    self._merged = (jnp.full((rows,), jnp.inf, jnp.float32),
                    jnp.full((rows,), NO_REFERENCE, jnp.int32))
    self._empty = self._merged

  def _support(self, frame, label_map):
    h, w = self.feat_hw
    return frame * h * w + np.flatnonzero(
        np.asarray(label_map).reshape(-1) >= 0)

  def _new_block(self, cells):
    result = nearest_of(self._query_t, self._query_sq, cells)
    self.distance_cells += int(cells.size)
    b = self._next_block
    self._next_block += 1
    self._blocks[b] = (cells, result)
    self._cell_block[cells] = b
    return result

  def _cover_add(self, cells):
    new = cells[self._cover[cells] == 0]
    self._cover[cells] += 1
    if new.size:
      self._merged = merge_nearest(*self._merged, *self._new_block(new))

  def _cover_remove(self, cells):
    self._cover[cells] -= 1
    dropped = cells[self._cover[cells] == 0]
    if not dropped.size:
      return  # The support is unchanged: labels only.
    touched = np.unique(self._cell_block[dropped])
    self._cell_block[dropped] = -1
    for b in touched:
      kept, _ = self._blocks.pop(int(b))
      kept = kept[self._cell_block[kept] == b]
      if kept.size:  # Cells other interactions still cover.
        self._new_block(kept)
    self._merged = self._empty
    for _, result in self._blocks.values():
      self._merged = merge_nearest(*self._merged, *result)

  # -- Interactions ----------------------------------------------------------

  def _add(self, frame, label_map):
    self._check_frame(frame)
    i = self._next_id
    self._next_id += 1
    self._interactions[i] = (int(frame), label_map)
    if self._incremental:
      self._cover_add(self._support(int(frame), label_map))
    self._resegment()
    return i

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
    frame, label_map = self._interactions.pop(interaction_id)
    if self._incremental:
      self._cover_remove(self._support(frame, label_map))
    self._resegment()

  def clear(self):
    self._interactions.clear()
    if self._incremental:
      self._clear_blocks()
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
