"""Synthetic DAVIS-format generator: layout, mask encodings, difficulty."""

import numpy as np
from PIL import Image
import pytest

from vosjax.data import synthetic
from vosjax import davis_io


def _iou(a, b):
  union = np.logical_or(a, b).sum()
  return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_2016_layout_and_masks(tmp_path):
  names = synthetic.generate(tmp_path, year=2016, splits=(("train", 2),
                                                          ("val", 1)),
                             num_frames=5, height=48, width=64, seed=1)
  assert names == {"train": ["train-000", "train-001"], "val": ["val-000"]}
  assert davis_io.read_split(tmp_path, "train", 2016) == names["train"]
  lines = (tmp_path / "ImageSets/480p/val.txt").read_text().splitlines()
  assert lines[0] == "/JPEGImages/480p/val-000/00000.jpg " \
                     "/Annotations/480p/val-000/00000.png "
  assert len(lines) == 5
  frames = davis_io.frame_paths(tmp_path, "train-001")
  masks = davis_io.mask_paths(tmp_path, "train-001")
  assert [p.name for p in frames] == [f"{i:05d}.jpg" for i in range(5)]
  assert [p.name for p in masks] == [f"{i:05d}.png" for i in range(5)]
  assert davis_io.read_frame(frames[0]).shape == (48, 64, 3)
  with Image.open(masks[0]) as im:
    assert im.mode == "L"  # Official 2016 masks are grayscale {0, 255}.
  values = np.unique(np.stack([davis_io.read_mask(p) for p in masks]))
  assert set(values.tolist()) == {0, 255}
  assert (tmp_path / "Annotations/db_info.yml").is_file()


def test_2017_layout_palette_ids(tmp_path):
  names = synthetic.generate(tmp_path, year=2017, splits=(("val", 1),),
                             num_frames=4, height=64, width=96, num_objects=3,
                             seed=2)
  assert davis_io.read_split(tmp_path, "val", 2017) == ["val-000"]
  masks = davis_io.mask_paths(tmp_path, names["val"][0])
  with Image.open(masks[0]) as im:
    assert im.mode == "P"
  ids = np.stack([davis_io.read_mask(p) for p in masks])
  assert set(np.unique(ids).tolist()) <= {0, 1, 2, 3}
  assert set(np.unique(ids[0]).tolist()) - {0}  # Some object is visible.


def test_deterministic_from_seed(tmp_path):
  a = synthetic.render_sequence(np.random.default_rng(7), 4, 32, 48, 2)
  b = synthetic.render_sequence(np.random.default_rng(7), 4, 32, 48, 2)
  c = synthetic.render_sequence(np.random.default_rng(8), 4, 32, 48, 2)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])
  for d in ("x", "y"):
    synthetic.generate(tmp_path / d, splits=(("val", 1),), num_frames=3,
                       height=32, width=48, seed=5)
  for sub in ("JPEGImages/480p/val-000/00002.jpg",
              "Annotations/480p/val-000/00002.png"):
    assert (tmp_path / "x" / sub).read_bytes() == (tmp_path / "y" /
                                                   sub).read_bytes()


def test_first_frame_copy_scores_low():
  """Copying the first mask to all frames must be a weak baseline."""
  ious = []
  for seed in range(4):
    _, ids = synthetic.render_sequence(np.random.default_rng(seed), 12, 96,
                                       160, 1)
    first = ids[0] > 0
    assert 0.01 < first.mean() < 0.5  # Object visible, not the whole frame.
    ious += [_iou(first, ids[t] > 0) for t in range(1, 12)]
  assert np.mean(ious) < 0.5, np.mean(ious)


def test_frames_have_texture_and_motion():
  frames, ids = synthetic.render_sequence(np.random.default_rng(0), 3, 48, 64)
  assert frames.dtype == np.uint8 and ids.dtype == np.uint8
  background = frames[0][ids[0] == 0].astype(float)
  assert background.std(axis=0).min() > 5  # Not a flat colour.
  assert np.abs(frames[1].astype(int) - frames[0]).mean() > 2  # It moves.


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="year"):
    synthetic.generate(tmp_path, year=2018)
  with pytest.raises(ValueError, match="num_objects"):
    synthetic.render_sequence(np.random.default_rng(0), 2, 32, 32, 0)
