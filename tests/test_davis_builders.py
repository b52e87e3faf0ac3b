"""DAVIS 2016/2017 tfds builders: synthetic data always, real data if present.

Built with array_record and read back with `as_data_source()`, no TensorFlow.
"""

import functools
import http.server
import pathlib
import re
import shutil
import threading

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds
import yaml

from vosjax.data import synthetic
from datasets.davis2016 import Davis2016
from datasets.davis2017 import Davis2017
from vosjax import davis_io
from vosjax import input_pipeline


def _prepare(builder, manual_dir):
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _by_name(source):
  return {ex["name"].decode(): ex for ex in (source[i]
                                             for i in range(len(source)))}


@pytest.fixture(name="synthetic_2016")
def fixture_synthetic_2016(tmp_path):
  names = synthetic.generate(tmp_path / "DAVIS", year=2016,
                             splits=(("train", 2), ("val", 1)), num_frames=4,
                             height=32, width=48, seed=0)
  return tmp_path / "DAVIS", names


def test_2016_synthetic_build_matches_folder(synthetic_2016, tmp_path):
  root, names = synthetic_2016
  builder = _prepare(Davis2016(data_dir=tmp_path / "tfds"), root)
  assert builder.info.splits["train"].num_examples == 2
  assert builder.info.splits["val"].num_examples == 1
  train = _by_name(builder.as_data_source("train"))
  assert sorted(train) == names["train"]
  for name, ex in train.items():
    frames, masks = np.stack(ex["frames"]), np.stack(ex["masks"])
    assert frames.shape == (4, 32, 48, 3) and frames.dtype == np.uint8
    assert masks.shape == (4, 32, 48, 1) and masks.dtype == np.uint8
    assert ex["num_frames"] == 4 and ex["num_objects"] == 1
    raw = np.stack([davis_io.read_mask(p)
                    for p in davis_io.mask_paths(root, name)])
    # 2016 masks {0, 255} are stored binarised.
    np.testing.assert_array_equal(masks[..., 0], (raw > 0).astype(np.uint8))
    # Frames are the package's JPEG bytes, decoded like the folder reader.
    np.testing.assert_array_equal(
        frames, np.stack([davis_io.read_frame(p)
                          for p in davis_io.frame_paths(root, name)]))


def test_2017_synthetic_keeps_ids_and_void(tmp_path):
  root = tmp_path / "DAVIS"
  names = synthetic.generate(root, year=2017, splits=(("train", 1),
                                                      ("val", 1)),
                             num_frames=3, height=32, width=40, num_objects=3,
                             seed=1)
  # A void band, as on DAVIS 2017 object boundaries.
  path = davis_io.mask_paths(root, "val-000")[1]
  ids = davis_io.read_mask(path).copy()
  ids[:2] = davis_io.VOID_LABEL
  davis_io.write_mask(path, ids)
  builder = _prepare(Davis2017(data_dir=tmp_path / "tfds"), root)
  (ex,) = _by_name(builder.as_data_source("val")).values()
  masks = np.stack(ex["masks"])[..., 0]
  expected = np.stack([davis_io.read_mask(p)
                       for p in davis_io.mask_paths(root, names["val"][0])])
  np.testing.assert_array_equal(masks, expected)
  assert set(np.unique(masks).tolist()) <= {0, 1, 2, 3, 255}
  assert ex["num_objects"] == expected[expected != 255].max()
  # The pipeline's tfds source yields the folder source's record.
  record = input_pipeline.TfdsSource(builder.as_data_source("val"))[0]
  folder = input_pipeline.DavisFolderSource(root, "val", year=2017)[0]
  assert record["name"] == folder["name"] == "val-000"
  np.testing.assert_array_equal(record["masks"], folder["masks"])
  np.testing.assert_array_equal(record["frames"], folder["frames"])
  assert record["num_objects"] == folder["num_objects"]
  cached_source = input_pipeline.TfdsSource(builder.as_data_source("val"),
                                            in_memory=True)
  cached = cached_source[0]
  np.testing.assert_array_equal(cached["frames"], record["frames"])
  # Clip access (PairBatches, make_dataset) equals the folder reader's.
  folder_source = input_pipeline.DavisFolderSource(root, "val", year=2017)
  assert cached_source.num_frames(0) == folder_source.num_frames(0) == 3
  for got, want in zip(cached_source.read_clip(0, [2, 0]),
                       folder_source.read_clip(0, [2, 0])):
    np.testing.assert_array_equal(got, want)


def test_missing_sequences_named_and_explicit_subset(synthetic_2016,
                                                     tmp_path):
  root, _ = synthetic_2016
  shutil.rmtree(root / "JPEGImages/480p/train-001")
  shutil.rmtree(root / "Annotations/480p/train-001")
  with pytest.raises(davis_io.DavisFormatError,
                     match=r"1 of 2 train sequences are missing.*train-001"):
    _prepare(Davis2016(data_dir=tmp_path / "a"), root)
  builder = _prepare(Davis2016(data_dir=tmp_path / "b",
                               sequences={"train": ["train-000"]}), root)
  assert builder.builder_config.name.startswith("480p_sel_")
  assert list(builder.info.splits) == ["train"]
  assert [ex["name"] for ex in builder.as_data_source("train")] == [
      b"train-000"]
  with pytest.raises(davis_io.DavisFormatError, match="not in the val split"):
    _prepare(Davis2016(data_dir=tmp_path / "c",
                       sequences={"val": ["train-000"]}), root)


def _corrupt_jpeg(root):
  path = root / "JPEGImages/480p/train-001/00002.jpg"
  path.write_bytes(path.read_bytes()[:40])
  return path


def _mask_count(root):
  (root / "Annotations/480p/val-000/00003.png").unlink()
  return root / "Annotations/480p/val-000"


def _wrong_size(root):
  path = root / "JPEGImages/480p/train-000/00001.jpg"
  Image.new("RGB", (40, 32)).save(path)
  return path


def _missing_root(root):
  shutil.rmtree(root / "JPEGImages")
  return root.parent


@pytest.mark.parametrize("damage", [_corrupt_jpeg, _mask_count, _wrong_size,
                                    _missing_root])
def test_bad_input_names_path_and_leaves_nothing(synthetic_2016, tmp_path,
                                                 damage):
  root, _ = synthetic_2016
  path = damage(root)
  data_dir = tmp_path / "tfds"
  with pytest.raises(davis_io.DavisFormatError, match=str(path)):
    _prepare(Davis2016(data_dir=data_dir), root)
  # Nothing that looks like a prepared dataset.
  assert not list(data_dir.glob("davis2016/*/*/dataset_info.json"))
  assert not Davis2016(data_dir=data_dir).is_prepared()


def test_download_path_from_local_server(synthetic_2016, tmp_path):
  root, _ = synthetic_2016
  archive = shutil.make_archive(str(tmp_path / "serve" / "DAVIS-data"), "zip",
                                root_dir=root.parent, base_dir="DAVIS")
  handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                              directory=str(tmp_path / "serve"))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    url = f"http://127.0.0.1:{server.server_port}/{pathlib.Path(archive).name}"
    builder = Davis2016(data_dir=tmp_path / "tfds", url=url)
    builder.download_and_prepare()  # No manual dir: downloads and extracts.
  finally:
    server.shutdown()
    server.server_close()
  assert builder.info.splits["train"].num_examples == 2
  assert len(builder.as_data_source("val")) == 1


def test_official_urls_and_checksums():
  assert Davis2016.URLS["480p"].endswith("/Davis/DAVIS-data.zip")
  infos = Davis2017.url_infos
  for config in ("480p", "full_resolution"):
    assert Davis2017.URLS[config] in infos
  assert infos[Davis2017.URLS["480p"]].size == 832766765


def _db_frames(root):
  info = yaml.safe_load((root / "Annotations/db_info.yml").read_text())
  return {s["name"]: s["num_frames"] for s in info["sequences"]}


def _check_real(builder, split, root, expected_names):
  counts = _db_frames(root)
  source = builder.as_data_source(split)
  assert len(source) == len(expected_names)
  total = 0
  for i in range(len(source)):
    ex = source[i]
    name = ex["name"].decode()
    assert name in expected_names
    masks = np.stack(ex["masks"])
    assert ex["num_frames"] == len(ex["frames"]) == counts[name], name
    assert masks.shape == (counts[name], 480, 854, 1)
    assert masks.dtype == np.uint8
    assert ex["frames"][0].shape == (480, 854, 3)
    assert set(np.unique(masks).tolist()) == {0, 1}
    assert ex["num_objects"] == 1
    total += counts[name]
  return total


def test_real_2016_few_sequences(davis_root, tmp_path):
  builder = _prepare(Davis2016(data_dir=tmp_path, sequences={
      "train": ["dog-agility"], "val": ["blackswan"]}), davis_root)
  assert _check_real(builder, "train", davis_root, ["dog-agility"]) == 25
  assert _check_real(builder, "val", davis_root, ["blackswan"]) == 50
  # Whatever part of the official split is absent here, the error names it
  # (derived from the folder, not assumed: the shared copy is a subset).
  missing = [s for split in ("train", "val")
             for s in davis_io.read_split(davis_root, split, 2016)
             if not (davis_root / "JPEGImages/480p" / s).is_dir()]
  if not missing:
    pytest.skip("every official DAVIS 2016 sequence is present")
  with pytest.raises(davis_io.DavisFormatError,
                     match=re.escape(missing[0]) + ".*sequences="):
    _prepare(Davis2016(data_dir=tmp_path / "full"), davis_root)


@pytest.mark.slow
def test_real_2016_val_and_present_train(davis_root, tmp_path):
  val = davis_io.read_split(davis_root, "val", 2016)
  assert len(val) == 20
  builder = _prepare(Davis2016(data_dir=tmp_path, sequences={
      "val": val, "train": ["surf", "dog-agility"]}), davis_root)
  assert _check_real(builder, "val", davis_root, val) == 1376
  assert _check_real(builder, "train", davis_root, ["surf", "dog-agility"]) \
      == sum(_db_frames(davis_root)[n] for n in ("surf", "dog-agility"))


def test_real_2016_quirks_la_mask_and_empty_masks(davis_root, tmp_path):
  """The builder keeps bear's LA-mode mask and bmx-bumps' empty masks.

  Reference: the folder reader (`davis_io`), frame by frame.
  """
  builder = _prepare(Davis2016(data_dir=tmp_path, sequences={
      "train": ["bear", "bmx-bumps"]}), davis_root)
  records = _by_name(builder.as_data_source("train"))
  bear = np.stack(records["bear"]["masks"])[..., 0]
  ref = davis_io.to_object_ids(davis_io.read_mask(
      davis_io.mask_paths(davis_root, "bear")[77]), 2016)
  np.testing.assert_array_equal(bear[77], ref)
  assert bear[77].any()
  bmx = np.stack(records["bmx-bumps"]["masks"])[..., 0]
  empty = [i for i in range(len(bmx)) if not bmx[i].any()]
  assert empty == [60] + list(range(62, 75))
