"""PML program: training batches, retrieval on a video, end-to-end runs."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import pml_demo
from experiments import pml_i3d_zero_shot
from vosjax import davis_io
from vosjax import input_pipeline
from vosjax.errors import InputError
from vosjax.models import pml as pml_model
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
  from datasets import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate(tmp_path, splits=(("train", 2),), num_frames=8,
                     height=48, width=64, seed=3)
  source = input_pipeline.DavisFolderSource(tmp_path, "train")
  tc = ml_collections.ConfigDict(dict(
      batch_size=3, crop_size=32, min_foreground=0.1, num_ref_frames=2,
      max_frames_apart=2, anchors_per_object=5, pool_per_object=7,
      max_objects=1))
  it = pml.PairBatches(source, tc, seed=0)
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
  again = pml.PairBatches(source, tc, seed=0)
  again.set_state({"step": 1})
  repeat = next(again)
  for k in b1:
    np.testing.assert_array_equal(repeat[k], b1[k])


def test_sample_per_label_takes_only_that_label():
  labels = np.array([0, 0, 1, -1, 1, 0, 1, 1])
  idx, lab = pml._sample_per_label(labels, 3, 2, np.random.default_rng(0))
  valid = lab >= 0
  np.testing.assert_array_equal(labels[idx[valid]], lab[valid])
  assert sorted(lab[valid].tolist()) == [0, 0, 0, 1, 1, 1]
  assert len(set(idx[valid].tolist())) == 6  # without replacement
  with pytest.raises(InputError, match="max_objects"):
    pml._sample_per_label(np.array([0, 2]), 1, 2, np.random.default_rng(0))


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


@pytest.mark.parametrize("online", [False, True])
def test_segment_sequence_tracks_object_by_colour(online):
  frames, truth = _colour_video()
  ec = ml_collections.ConfigDict(dict(
      k=1, online=online, online_capacity=64, online_max_add_per_frame=8,
      online_confidence_ratio=0.5, clip_len=2, scale=1.0, chunk_size=16,
      ref_chunk_size=16))
  first = truth[0].copy()
  first[:8, :8] = 255  # A void cell: not a reference, written as background.
  labels = pml.segment_sequence(_colour_embed, frames, first, ec)
  assert labels.shape == truth.shape
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
      lambda v, b: pml.triplet_loss(model, v, b, 0.3, train_mode=False))(
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
  assert set(written) == {name, "first_frame_baseline"}
  for variant in written.values():
    assert 0.0 <= variant["J&F-Mean"] <= 1.0
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
  assert summary["pml"]["train_seconds"] < 1.0


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


@pytest.mark.slow
def test_full_demo_beats_copy_first_frame(tmp_path):
  summary = pml.run(pml_demo.get_config(), tmp_path)
  assert (summary["pml"]["J&F-Mean"] >
          summary["first_frame_baseline"]["J&F-Mean"] + 0.1), summary
