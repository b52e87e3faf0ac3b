"""Interactive session on a synthetic video with colour embeddings."""

import jax.numpy as jnp
import numpy as np
import pytest

from vosjax import interactive
from vosjax import retrieval

T, H, W, S = 6, 64, 96, 8  # Frames, full size, embedding stride.


def _video(seed=0):
  """A red 24x24 square moving right on a noisy grey-blue background.

  Returns the frames and their stand-in embeddings: per-pixel normalised RGB
  averaged over 8x8 cells plus small noise (retrieval is what is tested).
  """
  rng = np.random.default_rng(seed)
  frames = np.empty((T, H, W, 3), np.float32)
  gt = np.zeros((T, H, W), np.int32)
  for t in range(T):
    frames[t] = [0.3, 0.4, 0.6] + 0.05 * rng.normal(size=(H, W, 3))
    x0 = 8 + 8 * t
    frames[t, 16:40, x0:x0 + 24] = [0.9, 0.1, 0.1]
    gt[t, 16:40, x0:x0 + 24] = 1
  return frames, gt


def _embed(frames):
  cells = frames.reshape(T, H // S, S, W // S, S, 3).mean((2, 4))
  cells = cells + 0.01 * np.random.default_rng(1).normal(size=cells.shape)
  return (cells / np.linalg.norm(cells, axis=-1, keepdims=True)).astype(
      np.float32)


def test_click_in_frame_0_segments_later_frames_and_never_reembeds():
  frames, gt = _video()
  calls = []

  def embed_fn(x):
    calls.append(1)
    return _embed(x)

  session = interactive.InteractiveSession(embed_fn, (H, W), frames=frames)
  assert np.all(np.asarray(session.segmentation()) == 0)  # Empty pool.
  obj = session.add_click(0, x=20, y=28, obj_id=1)
  bg = session.add_click(0, x=80, y=56, obj_id=0)
  seg = np.asarray(session.segmentation())
  assert seg.shape == (T, H, W)
  for t in range(1, T):
    np.testing.assert_array_equal(seg[t], gt[t], err_msg=f"frame {t}")
  # Removing the object click: only background remains.
  session.remove(obj)
  assert np.all(np.asarray(session.segmentation()) == 0)
  # A scribble brings the object back; a mask on the last frame too.
  session.add_scribble(0, [[12, 20], [28, 36]], 1)
  np.testing.assert_array_equal(np.asarray(session.segmentation())[1:],
                                gt[1:])
  session.remove(bg)
  session.add_mask(T - 1, gt[T - 1])
  np.testing.assert_array_equal(np.asarray(session.segmentation()), gt)
  assert session.segmentation(full_res=False).shape == (T, H // S, W // S)
  assert len(calls) == 1


def test_later_interaction_overrides_and_online_mode():
  frames, gt = _video(2)
  emb = _embed(frames)
  session = interactive.InteractiveSession(emb, (H, W), online=True,
                                           online_kwargs={"capacity": 64})
  session.add_mask(0, gt[0])
  np.testing.assert_array_equal(np.asarray(session.segmentation()), gt)
  # A background click on top of the object relabels the clicked cell only.
  session.add_click(0, x=20, y=28, obj_id=0)
  assert session.label_maps()[0][3, 2] == 0
  assert session.label_maps()[0][3, 3] == 1
  with pytest.raises(ValueError, match="frame 9"):
    session.add_click(9, 0, 0, 1)
  with pytest.raises(ValueError, match="frames are required"):
    interactive.InteractiveSession(_embed, (H, W))


def _naive_1nn(emb, maps):
  """Brute force over the merged pool in float64: the nearest labelled cell
  (ties: lowest (frame, cell) index), background without references."""
  t, h, w, d = emb.shape
  flat = emb.reshape(-1, d).astype(np.float64)
  labels = np.full(t * h * w, -1)
  for f, lab in maps.items():
    labels[f * h * w:(f + 1) * h * w] = lab.reshape(-1)
  refs = np.flatnonzero(labels >= 0)
  if refs.size == 0:
    return np.zeros((t, h, w), np.int64)
  dist = ((flat[:, None] - flat[refs][None]) ** 2).sum(-1)
  return labels[refs[np.argmin(dist, -1)]].reshape(t, h, w)


def _tiny_blocks(monkeypatch):
  """Reference blocks of 1-4 cells; from 5 references an update loops over
  several blocks of 3, most with a partly padded last one."""
  monkeypatch.setattr(interactive, "SMALL_BLOCK", 1)
  monkeypatch.setattr(interactive, "MID_BLOCK", 2)
  monkeypatch.setattr(interactive, "LARGE_FROM", 5)
  monkeypatch.setattr(interactive, "LARGE_BLOCK", 3)


@pytest.mark.parametrize("tiny_blocks", [False, True])
def test_incremental_1nn_equals_brute_force_with_ties(monkeypatch,
                                                      tiny_blocks):
  """Support blocks kept and merged == brute force after every change.

  Reference: `_naive_1nn` (float64, ties to the lowest pool index) and
  `retrieval.segment_video` on the session's merged pool. Small-integer
  embeddings make distances exact and ties common; overlapping interactions
  relabel cells (the scribble and the radius click add no new cells where
  the mask lies); removals drop whole blocks or recompute the rest of one;
  the query count is not a multiple of the tile and (tiny_blocks) references
  span several blocks of a device loop.
  """
  if tiny_blocks:
    _tiny_blocks(monkeypatch)
  rng = np.random.default_rng(0)
  emb = rng.integers(-2, 3, (3, 4, 5, 3)).astype(np.float32)
  session = interactive.InteractiveSession(emb, (32, 40), chunk_size=7)
  mask = np.zeros((32, 40), np.uint8)
  mask[8:24, 8:32] = 2
  mask[:8, :8] = 255
  steps = [
      lambda: session.add_click(1, 12, 12, 1),
      lambda: session.add_mask(0, mask),
      lambda: session.add_scribble(0, [[4, 4], [36, 28]], 1, thickness=8),
      lambda: session.add_click(2, 30, 20, 0, radius=8),
  ]
  ids = []
  ties = 0
  for step in steps + [lambda: session.remove(ids[1]),
                       lambda: session.remove(ids[0])]:
    out = step()
    if out is not None:
      ids.append(out)
    maps = session.label_maps()
    got = np.asarray(session.segmentation(full_res=False))
    np.testing.assert_array_equal(got, _naive_1nn(emb, maps))
    pool = retrieval.pool_from_label_maps(jnp.asarray(emb), maps)
    np.testing.assert_array_equal(got, retrieval.segment_video(
        emb, pool.emb, pool.labels))
    flat = emb.reshape(-1, 3)
    d = ((flat[:, None] - pool.emb[None]) ** 2).sum(-1)
    d = np.where(np.asarray(pool.labels)[None] >= 0, d, np.inf)
    ties += int(np.sum(np.sum(d == d.min(-1, keepdims=True), -1) > 1))
  assert ties > 20  # The tie rule is exercised.
  full = np.asarray(session.segmentation())
  np.testing.assert_array_equal(full, retrieval.upsample_labels(got, (32, 40)))
  np.testing.assert_array_equal(
      np.asarray(session.segmentation(frames=[2])), full[2:3])
  session.clear()
  assert not np.asarray(session.segmentation(full_res=False)).any()


def test_plan_blocks_pads_little_and_reuses_programs():
  """Hand-computed plans: one block of 8 or a multiple of 64 below 512
  references, then blocks of 256 padded to a power of two times 256 (one
  compiled program per capacity)."""
  assert interactive.plan_blocks(1) == (8, 1, 8)
  assert interactive.plan_blocks(9) == (64, 1, 64)
  assert interactive.plan_blocks(264) == (320, 1, 320)
  assert interactive.plan_blocks(511) == (512, 1, 512)
  assert interactive.plan_blocks(512) == (256, 2, 512)
  assert interactive.plan_blocks(6420) == (256, 26, 8192)


def test_only_new_reference_cells_cost_distances(monkeypatch):
  """A click inside a masked frame adds no distance work; removing the mask
  recomputes only the cells the click still covers.

  Reference: `_naive_1nn` after every step; the counts are the cells the
  support gains (hand-counted: a 4x5 frame is 20 cells).
  """
  _tiny_blocks(monkeypatch)
  rng = np.random.default_rng(3)
  emb = rng.integers(-2, 3, (2, 4, 5, 3)).astype(np.float32)
  session = interactive.InteractiveSession(emb, (32, 40), chunk_size=7)
  mask = np.zeros((32, 40), np.uint8)
  mask[8:24, 8:32] = 1
  m = session.add_mask(0, mask)
  assert session.distance_cells == 20
  session.add_click(0, 12, 12, 0, radius=8)  # Relabels cells: no distances.
  assert session.distance_cells == 20
  np.testing.assert_array_equal(
      np.asarray(session.segmentation(full_res=False)),
      _naive_1nn(emb, session.label_maps()))
  session.remove(m)
  clicked = int(np.sum(session.label_maps()[0] >= 0))
  assert 1 < clicked < 20
  assert session.distance_cells == 20 + clicked
  np.testing.assert_array_equal(
      np.asarray(session.segmentation(full_res=False)),
      _naive_1nn(emb, session.label_maps()))


def test_incremental_equals_float32_brute_force_on_random_embeddings():
  """Random float embeddings: the labels are those of float32 brute force
  (`retrieval.segment_video`) and the nearest distances those of
  `retrieval.knn_search` up to float32 rounding.

  Distances are not bitwise equal: XLA:CPU's matmul rounds differently for
  different tile shapes (the previous session code differed in 30 of these
  126 distances, this one in about as many), so labels can only differ where
  two references lie within rounding of each other: float32 eps times
  ||a||^2 + ||b||^2 (~32 here), i.e. ~4e-6 absolute near a distance of 0.
  """
  rng = np.random.default_rng(4)
  emb = rng.normal(size=(3, 6, 7, 16)).astype(np.float32)
  session = interactive.InteractiveSession(emb, (48, 56), chunk_size=32)
  mask = np.zeros((48, 56), np.uint8)
  mask[8:40, 16:40] = 1
  session.add_mask(1, mask)
  session.add_scribble(2, [[4, 4], [50, 40]], 2, thickness=8)
  maps = session.label_maps()
  pool = retrieval.pool_from_label_maps(jnp.asarray(emb), maps)
  dist, _ = retrieval.knn_search(jnp.asarray(emb.reshape(-1, 16)), pool.emb,
                                 pool.labels)
  n = dist.shape[0]
  np.testing.assert_allclose(np.asarray(session._merged[0][:n]),  # pylint: disable=protected-access
                             np.asarray(dist[:, 0]), rtol=2e-6, atol=1e-5)
  np.testing.assert_array_equal(
      np.asarray(session.segmentation(full_res=False)),
      retrieval.segment_video(emb, pool.emb, pool.labels))
  np.testing.assert_array_equal(
      np.asarray(session.segmentation(full_res=False)), _naive_1nn(emb, maps))
