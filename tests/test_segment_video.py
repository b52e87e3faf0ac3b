"""Segment your own video: the API (`vosjax.segment`) and the CLI.

Reference for the masks: the program's own prediction of the same sequence
(`pipeline.run` -> `predictions/<variant>/<seq>/*.png`) on tiny trained
MaskTrack and PML runs; the streaming form against the whole-video form; the
CLI's PNGs read back by the official-protocol evaluator.
"""


import os
import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from experiments import masktrack_demo
from experiments import pml_demo
from tests import test_checkpoint
from tests.test_video_io import tree_hashes
from vosjax import davis_io
from vosjax import evaluation
from vosjax import segment
from vosjax import workdir
from vosjax.programs import masktrack as masktrack_program
from vosjax.programs import pml as pml_program
from vosjax.tools import segment_video

SEQ = "val-000"
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tiny_data(config):
  config.data.num_train = 2
  config.data.num_val = 1
  config.data.num_frames = 6
  config.data.height = 48
  config.data.width = 64
  config.train.crop_size = 32
  config.train.checkpoint_every = 2
  config.train.log_every = 1
  return config


@pytest.fixture(scope="module")
def masktrack_run(tmp_path_factory):
  """A tiny MaskTrack run (3 offline steps, 2 online) through the pipeline."""
  config = _tiny_data(masktrack_demo.get_config())
  config.model.width_multiplier = 1 / 16
  config.model.side_features = 4
  config.train.num_steps = 3
  config.train.batch_size = 2
  config.finetune.num_steps = 2
  config.finetune.batch_size = 2
  config.finetune.pool_size = 3
  config.finetune.crop_size = 32
  config.inference.scale = 0.5
  config.inference.length_bucket = 4
  run = tmp_path_factory.mktemp("ws") / "masktrack_demo"
  run.mkdir()
  workdir.check_config(config, run)  # As run.py stores it.
  masktrack_program.run(config, run)
  return run


@pytest.fixture(scope="module")
def pml_run(tmp_path_factory):
  """A tiny PML run (2 triplet steps, online adaptation) via the pipeline."""
  config = _tiny_data(pml_demo.get_config())
  config.train.num_steps = 2
  config.train.batch_size = 1
  config.train.anchors_per_object = 8
  config.train.pool_per_object = 16
  config.eval.clip_len = 6
  run = tmp_path_factory.mktemp("ws") / "pml_demo"
  run.mkdir()
  workdir.check_config(config, run)
  pml_program.run(config, run)
  return run


def _sequence(run):
  frames = run / "data" / "JPEGImages" / "480p" / SEQ
  mask = run / "data" / "Annotations" / "480p" / SEQ / "00000.png"
  return frames, mask


def _predicted(run, variant):
  folder = run / "predictions" / variant / SEQ
  return np.stack([davis_io.read_mask(p) for p in sorted(folder.glob("*.png"))])


def _quiet(line):
  del line


def _stream(seg, frames, first, **kwargs):
  proc = seg.processor(num_frames=len(frames), name=SEQ, **kwargs)
  return np.stack([proc.step(frames[0], first)] +
                  [proc.step(f) for f in frames[1:]])


def test_masktrack_api_gives_the_programs_masks_and_streams_them(
    masktrack_run):
  """Whole video (online, fine-tuned inside): the pipeline's PNGs;
  streaming (offline, no second fine-tuning): the pipeline's PNGs too."""
  frames_dir, mask_png = _sequence(masktrack_run)
  seg = segment.load(masktrack_run / "parent" / "checkpoints", log=_quiet)
  assert seg.chosen_variant() == "online"
  masks = seg.segment(frames_dir, mask_png, name=SEQ)
  expected = _predicted(masktrack_run, "online")
  assert masks.shape == expected.shape == (6, 48, 64) and masks.any()
  np.testing.assert_array_equal(masks, expected)
  frames, _ = segment.read_video(frames_dir)
  first, _ = segment.read_first_mask(mask_png)
  np.testing.assert_array_equal(_stream(seg, frames, first,
                                        variant="offline"),
                                _predicted(masktrack_run, "offline"))


def test_pml_api_gives_the_programs_masks_and_streams_them(pml_run):
  """Online adaptation carried between `step` calls: the same masks."""
  frames_dir, mask_png = _sequence(pml_run)
  seg = segment.load(pml_run.parent, log=_quiet)
  masks = seg.segment(frames_dir, mask_png, name=SEQ)
  expected = _predicted(pml_run, "pml")
  assert masks.shape == expected.shape == (6, 48, 64) and masks.any()
  np.testing.assert_array_equal(masks, expected)
  frames, _ = segment.read_video(frames_dir)
  first, _ = segment.read_first_mask(mask_png)
  np.testing.assert_array_equal(_stream(seg, frames, first), masks)

  # Another size (37x53, not a multiple of the stride 8), objects 1 and 3:
  # static and coloured apart; a 2-step embedding at stride 8 is coarse, so
  # only each object's centre pixel and the set of ids are checked.
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 255, (3, 37, 53, 3), np.uint8)
  frames[:, 3:19, 3:23] = (250, 20, 20)
  frames[:, 18:35, 28:52] = (20, 20, 250)
  first = np.zeros((37, 53), np.uint8)
  first[3:19, 3:23], first[18:35, 28:52] = 1, 3
  masks = seg.segment(frames, first)
  assert masks.shape == (3, 37, 53)
  assert set(np.unique(masks[1:])) <= {0, 1, 3}
  assert np.all(masks[1:, 11, 13] == 1) and np.all(masks[1:, 26, 40] == 3)


def test_cli_writes_palette_pngs_the_evaluator_reads(masktrack_run, tmp_path):
  frames_dir, mask_png = _sequence(masktrack_run)
  # A palette first mask (id 1 coloured green): its palette is kept.
  ids = (davis_io.read_mask(mask_png) > 0).astype(np.uint8)
  palette = np.zeros((256, 3), np.uint8)
  palette[1] = (0, 200, 0)
  first = tmp_path / "first.png"
  davis_io.write_mask(first, ids, palette=palette)
  out = tmp_path / "out"
  segment_video.main(["--workdir", str(masktrack_run.parent), "--frames",
                      str(frames_dir), "--first_mask", str(first), "--out",
                      str(out), "--variant", "offline"])
  pngs = sorted((out / SEQ).glob("*.png"))
  assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(6)]
  with Image.open(pngs[3]) as im:
    assert im.mode == "P"
    assert tuple(im.getpalette()[3:6]) == (0, 200, 0)
  np.testing.assert_array_equal(
      np.stack([davis_io.read_mask(p) for p in pngs]),
      _predicted(masktrack_run, "offline"))
  for name in (f"{SEQ}.gif", f"{SEQ}_sheet.png", f"{SEQ}_overlay.mp4"):
    assert (out / name).stat().st_size > 0
  assert not list(out.glob(".*"))  # The build folder is gone.
  result = evaluation.evaluate_davis(masktrack_run / "data", out, split="val",
                                     year=2016, sequences=[SEQ])
  assert 0.0 <= result["global"]["J&F-Mean"] <= 1.0


def test_mp4_frames_are_read_in_order(tmp_path):
  path = tmp_path / "clip.mp4"
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                           (64, 48))
  for t in range(5):
    writer.write(np.full((48, 64, 3), 40 * t + 20, np.uint8))
  writer.release()
  frames, names = segment.read_video(path)
  assert frames.shape == (5, 48, 64, 3) and names[-1] == "00004"
  # Lossy codec: each frame within a few levels of its grey.
  np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)),
                             [20, 60, 100, 140, 180], atol=4)


def _cli_error(capsys, argv):
  with pytest.raises(SystemExit) as exit_info:
    segment_video.main(argv)
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("segment_video: "), err
  return exit_info.value.code, err


@pytest.mark.parametrize("case", ["size", "empty", "video"])
def test_bad_input_is_one_line(case, tmp_path, capsys):
  frames = tmp_path / "frames"
  frames.mkdir()
  for t in range(3):
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(
        frames / f"{t:05d}.jpg")
  mask = np.zeros((48, 64), np.uint8)
  mask[10:20, 10:20] = 1
  if case == "size":
    mask = mask[:40]
  elif case == "empty":
    mask[:] = 0
    mask[0, 0] = davis_io.VOID_LABEL
  elif case == "video":
    frames = tmp_path / "broken.mp4"
    frames.write_bytes(b"not a video at all")
  davis_io.write_mask(tmp_path / "m.png", mask)
  out = tmp_path / "out"
  code, err = _cli_error(capsys, [
      "--experiment", "pml_i3d_zero_shot", "--frames", str(frames),
      "--first_mask", str(tmp_path / "m.png"), "--out", str(out)])
  assert code == 1
  expected = {"size": "--first_mask is 64x40 but the frames are 64x48",
              "empty": "--first_mask holds no object",
              "video": f"--frames {frames}: unreadable video"}[case]
  assert expected in err
  assert not out.exists()


def test_trained_run_refuses_model_overrides_and_missing_checkpoints(
    masktrack_run, tmp_path, capsys):
  frames_dir, mask_png = _sequence(masktrack_run)
  args = ["--frames", str(frames_dir), "--first_mask", str(mask_png),
          "--out", str(tmp_path / "out")]
  code, err = _cli_error(capsys, ["--workdir", str(masktrack_run),
                                  "--config.model.side_features=8"] + args)
  assert code == 2 and "--config.model.side_features" in err
  empty = tmp_path / "ws" / "masktrack_demo"
  empty.mkdir(parents=True)
  (empty / "config.json").write_text(
      (masktrack_run / "config.json").read_text())
  code, err = _cli_error(capsys, ["--workdir", str(empty)] + args)
  assert code == 1 and "no checkpoint; train first" in err
  code, err = _cli_error(capsys, ["--frames", "x", "--first_mask", "y",
                                  "--out", "z"])
  assert code == 2 and "--workdir, --checkpoint or --experiment" in err


def test_cli_reading_a_truncated_checkpoint_warns_in_one_line_and_renames_nothing(
    masktrack_run, tmp_path):
  """The newest checkpoint of the run cut short (a copy cut off): the CLI
  segments from the step before with one clean warning naming both steps,
  and the run folder is byte for byte as it was (it used to be renamed
  `<step>.unreadable`, and the warning printed a TensorStore object)."""
  run = tmp_path / "ws" / "masktrack_demo"
  shutil.copytree(masktrack_run, run)
  ckpt_dir = next(p.parent for p in sorted(run.rglob("checkpoints/*"))
                  if p.name.isdigit())
  steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  assert len(steps) == 2, steps
  test_checkpoint.truncate(ckpt_dir / str(steps[1]))
  before = tree_hashes(run)
  frames_dir, mask_png = _sequence(run)
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "-m", "vosjax.tools.segment_video", "--workdir",
       str(run), "--frames", str(frames_dir), "--first_mask", str(mask_png),
       "--out", str(out), "--variant", "offline"],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
  assert proc.returncode == 0, proc.stderr
  warnings = [line for line in proc.stderr.splitlines() if "unreadable" in line]
  assert len(warnings) == 1, proc.stderr
  assert warnings[0].startswith(
      f"warning: checkpoint step {steps[1]} in {ckpt_dir} is unreadable "
      f"(ValueError: "), warnings[0]
  assert warnings[0].endswith(
      f"); using step {steps[0]} instead (nothing renamed)"), warnings[0]
  assert ("TensorStore" not in proc.stderr
          and "Traceback" not in proc.stderr), proc.stderr
  assert tree_hashes(run) == before
  assert len(list((out / SEQ).glob("*.png"))) == 6
