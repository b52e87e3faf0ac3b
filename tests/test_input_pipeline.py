"""Input pipeline: clip shapes and range, crop rule, clip-consistent
augmentation, determinism, restart from state, process and device sharding."""

import json

import jax
import numpy as np
import pytest

from vosjax.data import synthetic
from vosjax import input_pipeline as ip
from vosjax import sharding


def _synthetic_source(num=3, frames=8, objects=1):
  records = []
  for k in range(num):
    f, ids = synthetic.render_sequence(np.random.default_rng(k), frames, 48, 64,
                                       objects)
    records.append({"frames": f, "masks": ids, "name": f"s{k}",
                    "num_objects": objects})
  return ip.ArraySource(records)


def _take(ds, n, state=None):
  it = iter(ds)
  if state is not None:
    it.set_state(state)
  return [next(it) for _ in range(n)], it


def _assert_batches_equal(a, b):
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_shapes_dtypes_and_range():
  ds = ip.make_dataset(_synthetic_source(objects=2), global_batch_size=4,
                       clip_length=5, crop_size=(32, 40), seed=0)
  (batch,), _ = _take(ds, 1)
  assert batch["frames"].shape == (4, 5, 32, 40, 3)
  assert batch["frames"].dtype == np.float32
  assert batch["labels"].shape == batch["ids"].shape == (4, 5, 32, 40)
  assert batch["labels"].dtype == np.float32
  assert batch["ids"].dtype == np.uint8
  assert batch["sequence"].shape == batch["start"].shape == (4,)
  assert batch["frames"].min() >= -1.0 and batch["frames"].max() <= 1.0
  assert batch["frames"].min() < -0.5 and batch["frames"].max() > 0.5
  assert set(np.unique(batch["labels"]).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(batch["labels"], batch["ids"] > 0)
  assert np.all(batch["start"] + 5 <= 8)


def test_frames_scaled_to_minus_one_one():
  frame = np.arange(256, dtype=np.uint8)[None, :, None, None].repeat(
      2, 0).repeat(3, 3).repeat(16, 2)  # [2, 256, 16, 3]: rows 0..255.
  masks = np.ones(frame.shape[:3], np.uint8)
  src = ip.ArraySource([{"frames": frame, "masks": masks, "name": "ramp",
                         "num_objects": 1}])
  ds = ip.make_dataset(src, global_batch_size=1, clip_length=2,
                       crop_size=(256, 16), seed=0, scale_range=(1.0, 1.0),
                       flip=False)
  (batch,), _ = _take(ds, 1)
  np.testing.assert_allclose(batch["frames"][0, 0, :, 0, 0],
                             np.arange(256) / 127.5 - 1.0, atol=1e-6)


def test_determinism_from_seed():
  src = _synthetic_source()
  kw = dict(global_batch_size=2, clip_length=4, crop_size=32)
  a, _ = _take(ip.make_dataset(src, seed=3, **kw), 4)
  b, _ = _take(ip.make_dataset(src, seed=3, **kw), 4)
  c, _ = _take(ip.make_dataset(src, seed=4, **kw), 4)
  _assert_batches_equal(a, b)
  assert not all(np.array_equal(x["frames"], y["frames"]) for x, y in
                 zip(a, c))


def test_restart_from_saved_state_continues():
  src = _synthetic_source()
  ds = ip.make_dataset(src, global_batch_size=2, clip_length=3, crop_size=24,
                       seed=1)
  full, _ = _take(ds, 5)
  _, it = _take(ds, 2)
  state = json.loads(json.dumps(it.get_state()))  # Checkpointable as JSON.
  rest, _ = _take(ds, 3, state=state)
  _assert_batches_equal(full[2:], rest)


def test_epochs_visit_every_sequence():
  ds = ip.make_dataset(_synthetic_source(num=3), global_batch_size=1,
                       clip_length=2, crop_size=24, seed=0, num_epochs=2)
  seqs = [int(b["sequence"][0]) for b in ds]
  assert sorted(seqs[:3]) == sorted(seqs[3:]) == [0, 1, 2]


def test_crop_rule_holds_for_every_clip():
  # Foreground: a 12x12 square in the corner of a 64x128 frame. A 32x32 crop
  # holds > 10% (103 px) of it only when it overlaps the square enough.
  masks = np.zeros((4, 64, 128), np.uint8)
  masks[:, 2:14, 100:112] = 1
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 255, (4, 64, 128, 3), dtype=np.uint8)
  src = ip.ArraySource([{"frames": frames, "masks": masks, "name": "corner",
                         "num_objects": 1}])
  ds = ip.make_dataset(src, global_batch_size=8, clip_length=2, crop_size=32,
                       seed=0, scale_range=(0.9, 1.3))
  batches, _ = _take(ds, 4)
  fractions = np.concatenate([b["labels"][:, 0].mean(axis=(1, 2))
                              for b in batches])
  assert np.all(fractions > 0.1), fractions
  # Crops do vary (not always the same best crop).
  assert len(np.unique(fractions)) > 3


def test_choose_crop_matches_brute_force_and_falls_back():
  rng = np.random.default_rng(0)
  mask = np.zeros((20, 30), bool)
  mask[5:9, 20:27] = True  # 28 px.
  accepted = set()
  for top in range(20 - 10 + 1):
    for left in range(30 - 10 + 1):
      if mask[top:top + 10, left:left + 10].sum() > 0.1 * 100:
        accepted.add((top, left))
  seen = {ip.choose_crop(mask, (10, 10), rng) for _ in range(400)}
  assert seen <= accepted and len(seen) > len(accepted) // 2
  # Nothing reaches 50%: the fallback is a crop holding the whole object.
  top, left = ip.choose_crop(mask, (10, 10), rng, min_foreground=0.5)
  assert mask[top:top + 10, left:left + 10].sum() == 28


def test_repeated_frame_clip_stays_identical_and_masks_follow():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
  mask = np.zeros((40, 56), np.uint8)
  mask[10:30, 5:25] = 1
  # Encode the mask in the red channel, so frames and masks can be compared
  # after augmentation.
  frame[..., 0] = np.where(mask > 0, 255, 0)
  src = ip.ArraySource([{"frames": np.stack([frame] * 6),
                         "masks": np.stack([mask] * 6), "name": "still",
                         "num_objects": 1}])
  for scale_range in ((1.0, 1.0), (0.9, 1.5)):
    ds = ip.make_dataset(src, global_batch_size=4, clip_length=6,
                         crop_size=(24, 32), seed=2, scale_range=scale_range)
    (batch,), _ = _take(ds, 1)
    for clip, labels in zip(batch["frames"], batch["labels"]):
      for t in range(1, 6):
        np.testing.assert_array_equal(clip[t], clip[0])
        np.testing.assert_array_equal(labels[t], labels[0])
      on = labels[0] > 0
      wrong = (clip[0, ..., 0] > 0.0) != on
      if scale_range == (1.0, 1.0):
        assert not wrong.any()
      else:  # Resampling may only disagree next to the mask boundary.
        padded = np.pad(on, 1, mode="edge")
        window = np.stack([padded[i:i + on.shape[0], j:j + on.shape[1]]
                           for i in range(3) for j in range(3)])
        boundary = window.any(0) & ~window.all(0)
        assert not (wrong & ~boundary).any()


def test_flips_happen_and_are_consistent():
  frame = np.zeros((1, 16, 16, 3), np.uint8)
  frame[:, :, :4] = 255  # Bright left edge.
  mask = np.zeros((1, 16, 16), np.uint8)
  mask[:, :, :4] = 1
  src = ip.ArraySource([{"frames": frame, "masks": mask, "name": "edge",
                         "num_objects": 1}])
  ds = ip.make_dataset(src, global_batch_size=16, clip_length=1,
                       crop_size=16, seed=0, scale_range=(1.0, 1.0))
  (batch,), _ = _take(ds, 1)
  left = batch["labels"][:, 0, 0, 0] == 1
  assert 0 < left.sum() < 16
  np.testing.assert_array_equal(batch["frames"][:, 0, 0, 0, 0] > 0, left)


def test_process_shards_partition_the_global_stream():
  src = _synthetic_source(num=5)
  kw = dict(global_batch_size=4, clip_length=2, crop_size=24, seed=0)
  (single,), _ = _take(ip.make_dataset(src, process_index=0,
                                       process_count=1, **kw), 1)
  parts = [_take(ip.make_dataset(src, process_index=p, process_count=2,
                                 **kw), 1)[0][0] for p in range(2)]
  assert parts[0]["frames"].shape[0] == 2
  np.testing.assert_array_equal(parts[0]["frames"], single["frames"][0::2])
  np.testing.assert_array_equal(parts[1]["frames"], single["frames"][1::2])
  with pytest.raises(ValueError, match="divisible"):
    ip.make_dataset(src, global_batch_size=3, clip_length=2, crop_size=24,
                    seed=0, process_count=2, process_index=0)


def test_shard_batch_over_four_devices():
  assert jax.device_count() == 4
  mesh = jax.make_mesh((4,), ("data",))
  ds = ip.make_dataset(_synthetic_source(), global_batch_size=8,
                       clip_length=2, crop_size=16, seed=0)
  (batch,), _ = _take(ds, 1)
  arrays = sharding.shard_batch(batch, mesh)
  x = arrays["frames"]
  assert isinstance(x, jax.Array) and x.shape == (8, 2, 16, 16, 3)
  assert len(x.addressable_shards) == 4
  for shard in x.addressable_shards:
    assert shard.data.shape == (2, 2, 16, 16, 3)
    np.testing.assert_array_equal(np.asarray(shard.data),
                                  batch["frames"][shard.index])
  np.testing.assert_array_equal(np.asarray(arrays["labels"]), batch["labels"])


def test_davis_folder_source_reads_synthetic(tmp_path):
  synthetic.generate(tmp_path, year=2017, splits=(("train", 2),),
                     num_frames=4, height=32, width=48, num_objects=2)
  src = ip.DavisFolderSource(tmp_path, "train", year=2017)
  assert len(src) == 2
  rec = src[1]
  assert rec["name"] == "train-001"
  assert rec["frames"].shape == (4, 32, 48, 3)
  assert rec["frames"].dtype == np.uint8
  assert rec["masks"].shape == (4, 32, 48)
  assert set(np.unique(rec["masks"]).tolist()) <= {0, 1, 2}
  assert rec["num_objects"] == 2
  src16 = ip.DavisFolderSource(tmp_path, year=2016, sequences=["train-000"],
                               in_memory=True)
  assert set(np.unique(src16[0]["masks"]).tolist()) <= {0, 1}


def test_davis_folder_source_errors_name_the_path(tmp_path):
  synthetic.generate(tmp_path, splits=(("train", 1),), num_frames=3,
                     height=32, width=32)
  (tmp_path / "Annotations/480p/train-000/00002.png").unlink()
  with pytest.raises(ValueError, match="train-000.*3 frames but 2 masks"):
    ip.DavisFolderSource(tmp_path, "train")[0]
  with pytest.raises(ValueError, match="missing sequence folder .*nope"):
    ip.DavisFolderSource(tmp_path, sequences=["nope"])[0]


def test_folder_source_clips_equal_in_memory_clips(tmp_path):
  synthetic.generate(tmp_path, splits=(("train", 2),), num_frames=6,
                     height=32, width=48)
  kw = dict(global_batch_size=2, clip_length=3, crop_size=24, seed=5)
  lazy = ip.DavisFolderSource(tmp_path, "train")
  cached = ip.DavisFolderSource(tmp_path, "train", in_memory=True)
  arrays = ip.ArraySource([lazy[i] for i in range(len(lazy))])
  a, _ = _take(ip.make_dataset(lazy, **kw), 3)
  b, _ = _take(ip.make_dataset(cached, **kw), 3)
  c, _ = _take(ip.make_dataset(arrays, **kw), 3)
  _assert_batches_equal(a, b)
  _assert_batches_equal(a, c)


def test_real_davis_clips(davis_root):
  src = ip.DavisFolderSource(davis_root, sequences=["blackswan", "surf"])
  ds = ip.make_dataset(src, global_batch_size=2, clip_length=3,
                       crop_size=(224, 224), seed=0)
  (batch,), _ = _take(ds, 1)
  assert batch["frames"].shape == (2, 3, 224, 224, 3)
  assert np.all(batch["labels"][:, 0].mean(axis=(1, 2)) > 0.1)
