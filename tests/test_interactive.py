"""Interactive session on a synthetic video with colour embeddings."""

import numpy as np
import pytest

from vosjax import interactive

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
