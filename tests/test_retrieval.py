"""Retrieval against brute-force numpy references."""

import jax.numpy as jnp
import numpy as np
import pytest

from vosjax import retrieval


def _brute_knn(q, r, rl, k):
  """Brute force: stable argsort over all valid refs, vote with the tie rule."""
  out = []
  d_all = ((q[:, None, :].astype(np.float64) - r[None]) ** 2).sum(-1)
  for i in range(q.shape[0]):
    valid = np.flatnonzero(rl >= 0)
    if valid.size == 0:
      out.append(0)
      continue
    order = valid[np.argsort(d_all[i, valid], kind="stable")][:k]
    labs, dists = rl[order], d_all[i, order]
    best = None
    for lab in np.unique(labs):
      key = (-np.sum(labs == lab), np.sum(dists[labs == lab]), lab)
      best = key if best is None or key < best else best
    out.append(best[2])
  return np.array(out)


def _int_case(seed, q=57, r=41, d=3, num_labels=3, hi=3):
  # Small integer embeddings: distances are exact in float32 and ties abound.
  rng = np.random.default_rng(seed)
  query = rng.integers(-hi, hi + 1, size=(q, d)).astype(np.float32)
  ref = rng.integers(-hi, hi + 1, size=(r, d)).astype(np.float32)
  rl = rng.integers(-1, num_labels, size=r).astype(np.int32)
  return query, ref, rl


@pytest.mark.parametrize("k", [1, 2, 5])
def test_knn_labels_equals_brute_force_with_ties(k):
  query, ref, rl = _int_case(k)
  want = _brute_knn(query, ref, rl, k)
  for c, rc in [(8, 7), (5, 1)]:
    got = retrieval.knn_labels(query, ref, rl, k=k, chunk_size=c,
                               ref_chunk_size=rc)
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"{c},{rc}")


def test_knn_vote_tie_rule_by_hand():
  # Query at 0; refs: label 1 at distance 1 and 4, label 2 at 2 and 2.
  # k=4: 2 votes each; summed distance 5 (label 1) vs 4 (label 2) -> 2.
  ref = np.array([[1.], [2.], [np.sqrt(2)], [-np.sqrt(2)]], np.float32)
  rl = np.array([1, 1, 2, 2], np.int32)
  q = np.zeros((1, 1), np.float32)
  assert int(retrieval.knn_labels(q, ref, rl, k=4)[0]) == 2
  # k=1: the nearest (label 1 at distance 1).
  assert int(retrieval.knn_labels(q, ref, rl, k=1)[0]) == 1
  # Equal votes and equal sums -> the smaller label.
  ref2 = np.array([[1.], [-1.]], np.float32)
  assert int(retrieval.knn_labels(q, ref2, np.array([3, 2], np.int32),
                                  k=2)[0]) == 2


def test_knn_empty_pool_is_background_and_k_beyond_pool():
  query, ref, _ = _int_case(9)
  empty = -np.ones(ref.shape[0], np.int32)
  np.testing.assert_array_equal(
      retrieval.knn_labels(query, ref, empty, k=3), 0)
  rl = np.full(ref.shape[0], -1, np.int32)
  rl[4] = 2  # A single valid reference, k larger than the pool.
  np.testing.assert_array_equal(retrieval.knn_labels(query, ref, rl, k=5), 2)


def test_segment_video_upsamples_nearest():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  ref = emb.reshape(-1, 5)
  rl = np.arange(ref.shape[0], dtype=np.int32) % 4
  low = retrieval.segment_video(emb, ref, rl)
  np.testing.assert_array_equal(low, rl.reshape(2, 3, 4))
  full = retrieval.segment_video(emb, ref, rl, out_size=(24, 32))
  np.testing.assert_array_equal(full, np.repeat(np.repeat(
      rl.reshape(2, 3, 4), 8, 1), 8, 2))
  one = retrieval.segment_frame(emb[1], ref, rl, out_size=(6, 8))
  np.testing.assert_array_equal(one, np.repeat(np.repeat(
      rl.reshape(2, 3, 4)[1], 2, 0), 2, 1))


def test_per_label_min_distance_brute_force():
  query, ref, rl = _int_case(4)
  got = retrieval.per_label_min_distance(query, ref, rl, 3, chunk_size=6,
                                         ref_chunk_size=5)
  d = ((query[:, None] - ref[None]) ** 2).sum(-1)
  for lab in range(3):
    want = np.where(rl[None] == lab, d, np.inf).min(-1)
    np.testing.assert_allclose(got[:, lab], want)


def _naive_bilinear(img, height, width):
  """Pixel-centre bilinear resize, edge-clamped, one pixel at a time."""
  h, w = img.shape
  out = np.zeros((height, width))
  for y in range(height):
    for x in range(width):
      sy = min(max((y + 0.5) * h / height - 0.5, 0), h - 1)
      sx = min(max((x + 0.5) * w / width - 0.5, 0), w - 1)
      y0, x0 = int(np.floor(sy)), int(np.floor(sx))
      y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
      fy, fx = sy - y0, sx - x0
      out[y, x] = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1]) +
                   fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))
  return out


def test_labels_from_distances_naive_bilinear_argmin():
  rng = np.random.default_rng(7)
  dist = rng.uniform(0, 4, size=(2, 3, 5, 3)).astype(np.float32)
  got = retrieval.labels_from_distances(dist, (12, 20))
  for t in range(2):
    up = np.stack([_naive_bilinear(dist[t, ..., lab], 12, 20)
                   for lab in range(3)], -1)
    # Compare where the smallest two interpolated distances are not within
    # float32 rounding of each other.
    srt = np.sort(up, -1)
    clear = srt[..., 1] - srt[..., 0] > 1e-4
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(got[t][clear], np.argmin(up, -1)[clear])


def test_labels_from_distances_at_feature_size_is_nearest_neighbour():
  # No upsampling: the argmin of per-label distances is the 1-NN label.
  rng = np.random.default_rng(1)
  emb = rng.normal(size=(3, 4, 6, 5)).astype(np.float32)
  ref = rng.normal(size=(30, 5)).astype(np.float32)
  rl = rng.integers(0, 3, size=30).astype(np.int32)
  dist = retrieval.label_distances(emb, ref, rl, num_labels=3, chunk_size=7,
                                   ref_chunk_size=11)
  np.testing.assert_array_equal(
      retrieval.labels_from_distances(dist, (4, 6)),
      retrieval.segment_video(emb, ref, rl, k=1))


def test_labels_from_distances_label_without_reference_never_wins():
  dist = np.full((1, 2, 2, 3), np.inf, np.float32)
  dist[..., 1] = 5.0  # Label 0 and 2: no reference.
  np.testing.assert_array_equal(
      retrieval.labels_from_distances(dist, (4, 4)), 1)
  empty = np.full((1, 2, 2, 2), np.inf, np.float32)
  np.testing.assert_array_equal(
      retrieval.labels_from_distances(empty, (3, 3)), 0)


def test_online_returns_the_distances_its_labels_come_from():
  rng = np.random.default_rng(3)
  emb = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
  first = emb[0].reshape(-1, 2)
  labels0 = (np.arange(9) % 2).astype(np.int32)
  kwargs = dict(num_labels=2, capacity=16, max_add_per_frame=4)
  labels, _ = retrieval.segment_video_online(emb, first, labels0, **kwargs)
  again, _, dist = retrieval.segment_video_online(
      emb, first, labels0, return_distances=True, **kwargs)
  np.testing.assert_array_equal(again, labels)
  assert dist.shape == (4, 3, 3, 2)
  np.testing.assert_array_equal(np.argmin(dist, -1), labels)


def test_online_adaptation_bounded_and_tracks_drift():
  # Object (label 1) and background (label 0) features drift slowly in time;
  # the first frame alone eventually mislabels, adaptation follows the drift.
  t, h, w = 12, 4, 4
  obj = np.zeros((h, w), bool)
  obj[:, :2] = True
  emb = np.zeros((t, h, w, 2), np.float32)
  for f in range(t):
    angle = f * 0.12
    fg = np.array([np.cos(angle), np.sin(angle)])
    bg = np.array([np.cos(angle + 1.5), np.sin(angle + 1.5)])
    emb[f] = np.where(obj[..., None], fg, bg)
  # A third class far away keeps the static pool's nearest wrong late on:
  # by frame 11 (angle 1.32) fg is nearer the frame-0 bg (angle 1.5) than
  # the frame-0 fg (angle 0).
  first = emb[0].reshape(-1, 2)
  labels0 = obj.reshape(-1).astype(np.int32)
  static = retrieval.segment_video(emb, first, labels0)
  assert not np.array_equal(np.asarray(static[-1]), obj.astype(np.int32))
  labels, (pe, pl) = retrieval.segment_video_online(
      emb, first, labels0, num_labels=2, capacity=20, max_add_per_frame=8,
      confidence_ratio=0.9)
  np.testing.assert_array_equal(labels, np.broadcast_to(obj, (t, h, w)))
  assert pe.shape == (20, 2) and pl.shape == (20,)
  # 12 frames x 8 additions > 20: the ring is full and holds only recent
  # frames' features (FIFO eviction of the oldest).
  assert np.all(np.asarray(pl) >= 0)
  angles = np.arctan2(pe[:, 1], pe[:, 0])
  fg_angles = angles[np.asarray(pl) == 1]
  assert fg_angles.min() > 0.12 * 8 - 1e-5


def test_pool_builders():
  frame_size, feat = (80, 160), (10, 20)
  mask = np.zeros(frame_size, np.uint8)
  mask[8:24, 16:48] = 2
  mask[0, :] = 255
  lab = retrieval.labels_from_mask(mask, feat)
  assert lab.shape == feat
  want = np.zeros(feat, np.int32)
  want[1:3, 2:6] = 2
  np.testing.assert_array_equal(lab, want)  # Row 0 samples y=4: not void.
  lab_void = retrieval.labels_from_mask(np.full(frame_size, 255), feat)
  assert np.all(lab_void == -1)

  clicks = retrieval.labels_from_clicks([(20, 12, 1), (159, 79, 0)],
                                        frame_size, feat)
  assert clicks[1, 2] == 1 and clicks[9, 19] == 0
  assert np.sum(clicks >= 0) == 2
  disk = retrieval.labels_from_clicks([(84, 44, 3)], frame_size, feat,
                                      radius=16)
  assert disk[5, 10] == 3 and disk[5, 12] == 3 and disk[5, 13] == -1

  scrib = retrieval.labels_from_scribbles(
      [(np.array([[4, 4], [156, 4]]), 1), (np.array([[4, 76], [4, 4]]), 0)],
      frame_size, feat)
  np.testing.assert_array_equal(scrib[0, 1:], 1)
  np.testing.assert_array_equal(scrib[1:, 0], 0)
  assert np.sum(scrib >= 0) == 20 + 9
  with pytest.raises(ValueError, match="object id"):
    retrieval.labels_from_clicks([(0, 0, 300)], frame_size, feat)

  emb = jnp.arange(2 * 10 * 20 * 3, dtype=jnp.float32).reshape(2, 10, 20, 3)
  pool = retrieval.pool_from_label_maps(emb, {1: lab, 0: clicks})
  n = 2 + lab.size
  assert pool.emb.shape == (256, 3) and pool.labels.shape == (256,)
  assert int(np.sum(np.asarray(pool.labels) >= 0)) == n
  np.testing.assert_array_equal(pool.emb[0], emb[0, 1, 2])
  np.testing.assert_array_equal(pool.labels[2:n], lab.reshape(-1))
  np.testing.assert_array_equal(pool.emb[2:n], emb[1].reshape(-1, 3))
  with pytest.raises(ValueError, match="capacity"):
    retrieval.pool_from_label_maps(emb, {1: lab}, capacity=10)
