"""DAVIS folder I/O: palette, mask modes, split files, atomic writes."""

import numpy as np
from PIL import Image
import pytest

from vosjax import davis_io


def test_palette_matches_davis_colours():
  palette = davis_io.davis_palette()
  # The DAVIS/VOC colours of the first ids, as published with the dataset.
  assert palette[0].tolist() == [0, 0, 0]
  assert palette[1].tolist() == [128, 0, 0]
  assert palette[2].tolist() == [0, 128, 0]
  assert palette[3].tolist() == [128, 128, 0]
  assert palette[4].tolist() == [0, 0, 128]


def test_write_then_read_keeps_ids(tmp_path):
  ids = np.zeros((6, 8), np.uint8)
  ids[1:3, 2:5] = 2
  ids[4, :] = 255
  davis_io.write_mask(tmp_path / "a" / "00000.png", ids)
  with Image.open(tmp_path / "a" / "00000.png") as im:
    assert im.mode == "P"
  np.testing.assert_array_equal(
      davis_io.read_mask(tmp_path / "a" / "00000.png"), ids)
  assert [p.name for p in (tmp_path / "a").iterdir()] == ["00000.png"]


@pytest.mark.parametrize("mode", ["L", "LA", "1"])
def test_read_mask_modes_give_binary_2016_ids(tmp_path, mode):
  raw = np.zeros((4, 5), np.uint8)
  raw[1:3, 1:4] = 255
  image = Image.fromarray(raw, "L")
  if mode == "LA":
    image = Image.merge("LA", [image, Image.new("L", image.size, 255)])
  elif mode == "1":
    image = image.convert("1")
  image.save(tmp_path / "m.png")
  ids = davis_io.to_object_ids(davis_io.read_mask(tmp_path / "m.png"), 2016)
  np.testing.assert_array_equal(ids, (raw > 0).astype(np.uint8))


def test_rgb_mask_is_refused_naming_the_file(tmp_path):
  Image.new("RGB", (3, 3)).save(tmp_path / "rgb.png")
  with pytest.raises(davis_io.DavisFormatError, match="rgb.png"):
    davis_io.read_mask(tmp_path / "rgb.png")


def test_read_split_both_layouts(tmp_path):
  (tmp_path / "ImageSets" / "480p").mkdir(parents=True)
  (tmp_path / "ImageSets" / "480p" / "val.txt").write_text(
      "/JPEGImages/480p/cows/00000.jpg /Annotations/480p/cows/00000.png \n"
      "/JPEGImages/480p/cows/00001.jpg /Annotations/480p/cows/00001.png \n"
      "/JPEGImages/480p/dog/00000.jpg /Annotations/480p/dog/00000.png \n")
  assert davis_io.read_split(tmp_path, "val", 2016) == ["cows", "dog"]
  (tmp_path / "ImageSets" / "2017").mkdir()
  (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("a\nb\n")
  assert davis_io.read_split(tmp_path, "val", 2017) == ["a", "b"]
  with pytest.raises(davis_io.DavisFormatError, match="train"):
    davis_io.read_split(tmp_path, "train", 2017)


def test_real_davis_val_split(davis_root):
  names = davis_io.read_split(davis_root, "val", 2016)
  assert len(names) == 20 and names[0] == "blackswan"
  frames = davis_io.frame_paths(davis_root, "blackswan")
  masks = davis_io.mask_paths(davis_root, "blackswan")
  assert len(frames) == len(masks) == 50
  mask = davis_io.to_object_ids(davis_io.read_mask(masks[0]), 2016)
  assert mask.shape == (480, 854) and set(np.unique(mask)) == {0, 1}


def test_real_la_mode_mask_bear_00077(davis_root):
  """The official bear/00077.png is an LA-mode PNG: its L channel is the mask.

  Reference: PIL's own decoding of the file, channel 0, compared with the
  neighbouring grayscale frame (the bear hardly moves in one frame).
  """
  path = davis_io.mask_paths(davis_root, "bear")[77]
  with Image.open(path) as im:
    assert im.mode == "LA"
    luminance = np.asarray(im.getchannel("L"))
  raw = davis_io.read_mask(path)
  np.testing.assert_array_equal(raw, luminance)
  ids = davis_io.to_object_ids(raw, 2016)
  prev = davis_io.to_object_ids(
      davis_io.read_mask(davis_io.mask_paths(davis_root, "bear")[76]), 2016)
  assert ids.shape == (480, 854) and set(np.unique(ids)) == {0, 1}
  iou = (ids & prev).sum() / (ids | prev).sum()
  assert iou > 0.8, iou


def test_real_empty_masks_bmx_bumps(davis_root):
  """bmx-bumps 00060 and 00062-00074 are empty (object out of view)."""
  paths = davis_io.mask_paths(davis_root, "bmx-bumps")
  empty = [i for i, p in enumerate(paths)
           if not davis_io.to_object_ids(davis_io.read_mask(p), 2016).any()]
  assert empty == [60] + list(range(62, 75))


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600),
                                             (0o002, 0o664)])
def test_atomic_write_mode_follows_umask(tmp_path, umask, expected):
  """Files get 0666 & ~umask, as open() would give (mkstemp gives 0600)."""
  import os  # pylint: disable=g-import-not-at-top
  import stat  # pylint: disable=g-import-not-at-top
  old = os.umask(umask)
  try:
    davis_io.atomic_write(tmp_path / "a.txt", lambda f: f.write("x"),
                          mode="w")
  finally:
    os.umask(old)
  assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == expected
  assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
