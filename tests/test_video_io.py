"""Reading a user's video and first mask (`vosjax.video_io`, issue 29), and
`vosjax.segment`'s argument errors in the API's own terms.

References: frame order by hand (frame2 before frame10, each frame's grey
level says which file it came from); the container's frame count written by
OpenCV itself; every official DAVIS 2016 first mask still read as before.
Every error test checks the message, its type (`TypeError` for a wrong type,
`ValueError` for a bad value) and that the input files did not change.
"""

import hashlib
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from vosjax import davis_io
from vosjax import segment
from vosjax import video_io


def tree_hashes(*roots):
  """`{path: sha256}` of every file under `roots` (hidden ones too); a root
  may be a file."""
  out = {}
  for root in roots:
    if os.path.isfile(root):
      with open(root, "rb") as fh:
        out[str(root)] = hashlib.sha256(fh.read()).hexdigest()
      continue
    for folder, _, files in os.walk(root):
      for f in files:
        path = os.path.join(folder, f)
        with open(path, "rb") as fh:
          out[path] = hashlib.sha256(fh.read()).hexdigest()
  return out


def write_frames(folder, names, size=(48, 64)):
  """JPEG frames named `names`, frame i a flat grey of 20 * i + 10."""
  folder.mkdir(parents=True, exist_ok=True)
  for i, name in enumerate(names):
    Image.fromarray(np.full(size + (3,), 20 * i + 10, np.uint8)).save(
        folder / name)
  return folder


def _collector():
  lines = []
  return lines, lines.append


def test_frames_are_read_in_natural_order_and_the_order_is_logged(tmp_path):
  # Written 8..15: as strings frame10 < frame8, the bug of the issue.
  names = [f"frame{i}.jpg" for i in range(8, 16)]
  folder = write_frames(tmp_path / "clip", names)
  before = tree_hashes(folder)
  lines, log = _collector()
  frames, stems = video_io.read_video(folder, log=log)
  assert stems == [f"frame{i}" for i in range(8, 16)]
  # Frame i of `names` has grey 20 * i + 10: the order is the files'.
  np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)),
                             [20 * i + 10 for i in range(8)], atol=2)
  assert lines == [f"video {folder}: 8 frames in natural order (numbers "
                   f"compared as numbers): frame8.jpg, frame9.jpg, "
                   f"frame10.jpg, ..., frame14.jpg, frame15.jpg"]
  assert tree_hashes(folder) == before


@pytest.mark.parametrize("names,warning", [
    (["f1.jpg", "f2.jpg", "f4.jpg", "f5.jpg"],
     "1 gap(s) in the numbering (f2.jpg is followed by f4.jpg)"),
    (["f01.jpg", "f02.jpg", "f3.jpg"],
     "numbers padded differently (f01.jpg and f3.jpg); they are ordered by "
     "number"),
])
def test_gaps_and_mixed_padding_are_warned_about(tmp_path, names, warning):
  lines, log = _collector()
  _, stems = video_io.read_video(write_frames(tmp_path / "c", names), log=log)
  assert stems == [n[:-4] for n in names]
  assert lines[1:] == [f"warning: video {tmp_path / 'c'}: {warning}"]


def test_regular_numbering_gives_no_warning(tmp_path):
  for names in (["00000.jpg", "00001.jpg", "00002.jpg"],
                ["img5.jpg", "img10.jpg", "img15.jpg"],  # Every 5th frame.
                ["a8.png", "a9.png", "a10.png", "a11.png"]):
    lines, log = _collector()
    video_io.read_video(write_frames(tmp_path / names[0], names), log=log)
    assert len(lines) == 1 and "warning" not in lines[0], lines


def test_ffmpeg_lines_lose_their_addresses():
  assert video_io.ffmpeg_line(
      "[mjpeg @ 0x55d2c1a0b2c0] unable to decode APP fields: Invalid data "
      "found when processing input\n") == (
          "mjpeg: unable to decode APP fields: Invalid data found when "
          "processing input")
  assert video_io.ffmpeg_line("  moov atom not found ") == "moov atom not found"


def test_mixed_frame_sizes_name_the_odd_file(tmp_path):
  folder = write_frames(tmp_path / "clip", ["00000.jpg", "00001.jpg"])
  write_frames(tmp_path / "odd", ["00002.jpg"], size=(40, 64))
  os.replace(tmp_path / "odd" / "00002.jpg", folder / "00002.jpg")
  before = tree_hashes(folder)
  with pytest.raises(ValueError) as e:
    video_io.read_video(folder, log=lambda _: None)
  assert str(e.value) == (
      f"video: {folder / '00002.jpg'} is 64x40 but the first frame "
      f"00000.jpg is 64x48 (width x height); all frames must have one size")
  assert tree_hashes(folder) == before


def test_two_frames_with_one_name_are_refused(tmp_path):
  folder = write_frames(tmp_path / "clip", ["00000.jpg", "00001.jpg"])
  Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(folder / "00001.png")
  with pytest.raises(ValueError, match="00001.jpg and 00001.png would both "
                     "give mask 00001.png; keep one"):
    video_io.read_video(folder, log=lambda _: None)


def write_avi(path, num_frames=24, keep=None):
  """An MJPG AVI of `num_frames` noise frames; `keep` cuts the file to that
  fraction (the header still announces every frame)."""
  rng = np.random.default_rng(0)
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                           (64, 48))
  for _ in range(num_frames):
    writer.write(rng.integers(0, 255, (48, 64, 3), np.uint8))
  writer.release()
  if keep:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
  return path


def test_truncated_video_is_an_error_unless_allowed(tmp_path):
  path = write_avi(tmp_path / "cut.avi", keep=0.5)
  before = tree_hashes(tmp_path)
  with pytest.raises(ValueError) as e:
    video_io.read_video(path)
  message = str(e.value)
  assert message.startswith(f"video {path}: its container announces 24 "
                            f"frames but only ")
  assert message.endswith("pass allow_truncated=True to segment the first "
                          f"{message.split('only ')[1].split()[0]}")
  lines, log = _collector()
  frames, names = video_io.read_video(path, allow_truncated=True, log=log)
  assert 0 < len(frames) < 24 and len(names) == len(frames)
  assert lines[0].startswith(f"warning: video {path}: its container "
                             f"announces 24 frames but only {len(frames)}")
  assert tree_hashes(tmp_path) == before
  # An intact video reads every announced frame, without a warning.
  lines, log = _collector()
  frames, _ = video_io.read_video(write_avi(tmp_path / "whole.avi"), log=log)
  assert len(frames) == 24 and not lines


def _grey_png(path, values):
  mask = np.zeros((48, 64), np.uint8)
  for i, v in enumerate(values):
    mask[4 * i:4 * i + 4, 10:20] = v
  Image.fromarray(mask).save(path)
  return path


@pytest.mark.parametrize("values", [(255,), (1,)])
def test_binary_grayscale_masks_are_object_one(tmp_path, values):
  ids, palette = video_io.read_first_mask(_grey_png(tmp_path / "m.png",
                                                    values))
  assert palette is None and set(np.unique(ids)) == {0, 1}


def test_grayscale_with_other_values_is_refused_with_how_to_convert(tmp_path):
  # An anti-aliased edge: 0, 64, 128, 191, 255.
  path = _grey_png(tmp_path / "m.png", (64, 128, 191, 255))
  before = tree_hashes(tmp_path)
  with pytest.raises(ValueError) as e:
    video_io.read_first_mask(path)
  assert str(e.value) == (
      f"first_mask {path} is grayscale with 5 values (0, 64, 128, 191, ..., "
      f"255), not only 0 and 255 (one object), so in-between values "
      f"(anti-aliased or compressed edges) would each become an object: "
      f"threshold it to 0/255 (e.g. value >= 128 -> 255), or save object "
      f"ids as a palette PNG")
  assert tree_hashes(tmp_path) == before


def test_jpeg_and_16_bit_masks_are_refused(tmp_path):
  mask = np.zeros((48, 64), np.uint8)
  mask[10:20, 10:20] = 255
  Image.fromarray(mask).save(tmp_path / "m.jpg")
  Image.fromarray(mask.astype(np.uint16) * 256 // 255).save(
      tmp_path / "id256.png")  # 16-bit, ids 0 and 256.
  with Image.open(tmp_path / "id256.png") as im:
    assert im.mode.startswith("I;16")
  before = tree_hashes(tmp_path)
  with pytest.raises(ValueError) as e:
    video_io.read_first_mask(tmp_path / "m.jpg")
  assert str(e.value).startswith(
      f"first_mask {tmp_path / 'm.jpg'} is a JPEG: its compression blurs")
  assert "save the mask as a PNG" in str(e.value)
  with pytest.raises(ValueError) as e:
    video_io.read_first_mask(tmp_path / "id256.png")
  assert str(e.value) == (
      f"first_mask {tmp_path / 'id256.png'} is a 16-bit PNG with values up "
      f"to 256; ids must be 1-254 (0 background, 255 void): save them as an "
      f"8-bit palette PNG")
  assert tree_hashes(tmp_path) == before


def test_every_davis_2016_first_mask_is_still_read(davis_root):
  """The official masks (grayscale 0/255, some LA) are object 1 as before."""
  folders = sorted((davis_root / "Annotations" / "480p").iterdir())
  assert folders
  for folder in folders:
    path = davis_io.mask_paths(davis_root, folder.name)[0]
    ids, _ = video_io.read_first_mask(path)
    np.testing.assert_array_equal(
        ids, davis_io.to_object_ids(davis_io.read_mask(path), 2016))


def test_api_type_errors_name_the_arguments():
  for call, message in [
      (lambda: segment.load(123),
       "path must be a run folder (str or os.PathLike), got int 123"),
      (lambda: segment.load(experiment="pml_i3d_zero_shot",
                            overrides="eval.scale=0.5"),
       "overrides must be a dict of dotted field names to values, e.g. "
       "{'eval.scale': 0.5}, got str 'eval.scale=0.5'"),
      (lambda: segment.load(experiment="pml_i3d_zero_shot",
                            overrides=["eval.scale=0.5"]),
       "overrides must be a dict of dotted field names to values, e.g. "
       "{'eval.scale': 0.5}, got list ['eval.scale=0.5']"),
      (lambda: segment.load(experiment=5), "experiment must be a str, got "
       "int 5"),
      (lambda: segment.read_video(5), "video must be a folder or video file "
       "path (str or os.PathLike) or a [T, H, W, 3] uint8 array, got int"),
      (lambda: segment.read_first_mask(None), "first_mask must be a PNG path "
       "(str or os.PathLike) or an [H, W] array of ids, got NoneType"),
  ]:
    with pytest.raises(TypeError) as e:
      call()
    assert str(e.value) == message


def test_api_value_errors_are_in_the_apis_terms(tmp_path):
  """ValueErrors at load (before any model), naming arguments, not flags."""
  for kwargs, message in [
      ({"overrides": {"eval.scale": None}},
       "overrides['eval.scale']=None: the field holds a float (1.0)"),
      ({"overrides": {"eval.scale": "half"}},
       "overrides['eval.scale']=half: could not convert string to float: "
       "'half'"),
      ({"overrides": {"eval.nosuch": 1}}, "overrides['eval.nosuch']: no such "
       "field"),
      ({"variant": "nosuch"},
       "variant='nosuch': pml with this config gives i3d_zero_shot"),
  ]:
    with pytest.raises(ValueError) as e:
      segment.load(experiment="pml_i3d_zero_shot", **kwargs)
    assert str(e.value) == message
  with pytest.raises(ValueError) as e:
    segment.load(tmp_path / "run" / "parent" / "checkpoints" / "5")
  assert str(e.value) == (f"path {tmp_path / 'run/parent/checkpoints/5'}: no "
                          f"such file or folder")
  frames = np.zeros((2, 48, 64, 3), np.uint8)
  with pytest.raises(ValueError) as e:
    video_io.check_inputs(frames, np.zeros((40, 64), np.uint8))
  assert str(e.value) == ("first_mask is 64x40 but the frames are 64x48 "
                          "(width x height)")


def test_load_checks_values_with_validate_config():
  """`experiments.validate_config` (run.py's checks) runs at load, before
  any model; its `--config.` wording becomes `overrides[...]`. Reference:
  run.py's messages for the same values (tests/test_run.py)."""
  for overrides, message in [
      ({"eval.scale": 0.0},
       "overrides['eval.scale']=0.0: must be a number in (0, 4]"),
      ({"eval.k": 0}, "overrides['eval.k']=0: must be a whole number >= 1"),
  ]:
    with pytest.raises(video_io.OverrideError) as e:
      segment.load(experiment="pml_i3d_zero_shot", overrides=overrides)
    assert str(e.value) == message
  with video_io.flag_names(), pytest.raises(ValueError) as e:
    segment.load(experiment="pml_i3d_zero_shot",
                 overrides={"eval.scale": "0"})
  assert str(e.value) == "--config.eval.scale=0.0: must be a number in (0, 4]"


def test_missing_inputs_are_named_in_the_apis_terms(tmp_path):
  with pytest.raises(ValueError) as e:
    segment.read_video(tmp_path / "clip")
  assert str(e.value) == f"video {tmp_path / 'clip'}: no such file or folder"
  with pytest.raises(ValueError) as e:
    segment.read_first_mask(tmp_path / "mask.png")
  assert str(e.value) == (f"first_mask {tmp_path / 'mask.png'}: no such "
                          f"file")
