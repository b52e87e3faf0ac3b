"""Interactive PML segmentation: embed once, re-segment by retrieval alone.

PML's selling point (Chen et al., CVPR 2018, Sec. 4.4) is that user input only
changes the reference pool: the embeddings are computed once per video, and
each click / scribble / mask re-segments every frame by nearest-neighbour
retrieval (`vosjax.retrieval`), a jitted device computation.

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

from vosjax import retrieval


@functools.partial(jax.jit, static_argnames=("size",))
def _upsample(labels, size):
  return retrieval.upsample_labels(labels, size)


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
               ref_chunk_size=8192):
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
    del self._interactions[interaction_id]
    self._resegment()

  def clear(self):
    self._interactions.clear()
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
    maps = self.label_maps()
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

  def segmentation(self, full_res=True):
    """Current labels: `[T, H, W]` (nearest upsampling) or `[T, h, w]`."""
    if not full_res:
      return self.labels
    return _upsample(self.labels, self.frame_size)
