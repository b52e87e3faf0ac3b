"""Tests of `python -m vosjax.evaluate` on tiny synthetic DAVIS folders.

Figures are checked against tests/davis_reference.py `ref_evaluate_folder`, a
plain transcription of the official davis2017-evaluation semi-supervised
pipeline (PIL reading, void as background, official object count and
padding), and on one hand-computed void case.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests import davis_reference
from vosjax import davis_io
from vosjax import evaluate

REPO = pathlib.Path(__file__).resolve().parent.parent
H, W = 36, 52


def _blob_seq(rng, t, n_obj):
  """`[T, H, W]` ids with n_obj moving rectangles (+ void in 2017 style)."""
  ids = np.zeros((t, H, W), np.uint8)
  for i in range(t):
    for k in range(n_obj):
      y, x = 4 + 9 * k + i % 3, 5 + 6 * k + 2 * i
      ids[i, y:y + 8 + k, x:x + 10] = k + 1
  return ids


def _perturb(rng, ids):
  pred = np.roll(ids, 1, axis=2).copy()
  pred[rng.random(pred.shape) < 0.01] = 0
  pred[2] = 0  # an empty prediction frame
  return pred


def _make_2016(root, seqs, rng):
  """DAVIS 2016 layout: ImageSets/480p path pairs, 0/255 grayscale masks."""
  lines, gts = [], {}
  for seq, t in seqs.items():
    gt = _blob_seq(rng, t, 1)
    gts[seq] = gt
    for i in range(t):
      path = root / "Annotations" / "480p" / seq / f"{i:05d}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(gt[i] * 255).save(path)
      lines.append(f"/JPEGImages/480p/{seq}/{i:05d}.jpg "
                   f"/Annotations/480p/{seq}/{i:05d}.png ")
  (root / "ImageSets" / "480p").mkdir(parents=True)
  (root / "ImageSets" / "480p" / "val.txt").write_text("\n".join(lines) + "\n")
  return gts


def _make_2017(root, seqs, rng):
  """DAVIS 2017 layout: ImageSets/2017 names, palette ids, 255 = void."""
  gts = {}
  for seq, (t, n_obj) in seqs.items():
    gt = _blob_seq(rng, t, n_obj)
    gt[:, :2, :] = 255  # a void band
    gts[seq] = gt
    for i in range(t):
      davis_io.write_mask(
          root / "Annotations" / "480p" / seq / f"{i:05d}.png", gt[i])
  (root / "ImageSets" / "2017").mkdir(parents=True)
  (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(seqs) + "\n")
  return gts


def _write_results(res_dir, preds, grayscale=False):
  for seq, pred in preds.items():
    for i in range(len(pred)):
      path = res_dir / seq / f"{i:05d}.png"
      path.parent.mkdir(parents=True, exist_ok=True)
      if grayscale:
        Image.fromarray((pred[i] > 0).astype(np.uint8) * 255).save(path)
      else:
        davis_io.write_mask(path, pred[i])


def _check_against_reference(data, root, res_dir, seqs, year):
  """results.json figures equal the official transcription's."""
  ref = davis_reference.ref_evaluate_folder(root, res_dir, seqs, year)
  assert list(data["sequences"]) == list(ref["sequences"])
  for name, r in ref["sequences"].items():
    for k in ("J-Mean", "F-Mean"):
      assert abs(data["sequences"][name][k] - r[k]) < 1e-12, (name, k)
  for k, v in ref["global"].items():
    assert abs(data["global"][k] - v) < 1e-12, k
  return ref


def _run(argv, capsys):
  rc = evaluate.main(argv)
  out = capsys.readouterr()
  return rc, out.out, out.err


@pytest.mark.parametrize("grayscale", [True, False])
def test_cli_2016_layout(tmp_path, capsys, grayscale):
  rng = np.random.default_rng(0)
  root = tmp_path / "DAVIS"
  gts = _make_2016(root, {"aa": 7, "bb": 5}, rng)
  preds = {s: _perturb(rng, g) for s, g in gts.items()}
  res_dir = tmp_path / "res"
  _write_results(res_dir, preds, grayscale=grayscale)
  rc, out, _ = _run(["--davis_path", str(root), "--results_path",
                     str(res_dir), "--set", "val", "--year", "2016",
                     "--task", "semi-supervised"], capsys)
  assert rc == 0
  assert "Global results for val" in out and "aa_1" in out
  data = json.loads((res_dir / "results.json").read_text())
  assert list(data) == ["global", "sequences"]
  assert list(data["global"]) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay",
                                  "F-Mean", "F-Recall", "F-Decay"]
  ref = _check_against_reference(data, root, res_dir, ["aa", "bb"], 2016)
  assert list(data["sequences"]) == ["aa_1", "bb_1"]
  g_csv = (res_dir / "global_results-val.csv").read_text().splitlines()
  assert g_csv[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
  assert g_csv[1] == ",".join("%.3f" % data["global"][c]
                              for c in g_csv[0].split(","))
  s_csv = (res_dir / "per-sequence_results-val.csv").read_text().splitlines()
  assert s_csv[0] == "Sequence,J-Mean,F-Mean"
  r = ref["sequences"]["aa_1"]
  assert s_csv[1] == "aa_1,%.3f,%.3f" % (r["J-Mean"], r["F-Mean"])
  assert len(s_csv) == 3


def _hard_2017_predictions(rng, gts):
  """Predictions with the cases the official protocol scores differently."""
  preds = {s: np.where(g == 255, 0, _perturb(rng, g)) for s, g in gts.items()}
  # cc: object 1 predicted over the whole void band (false positives there),
  # object 3 over some void pixels next to it.
  preds["cc"][:, :2, :] = 1
  preds["cc"][:, 2, 20:30] = 3
  # dd: object 2 never predicted (official zero padding).
  preds["dd"][preds["dd"] == 2] = 0
  # ee: ids 1 and 2 swapped.
  ee = preds["ee"].copy()
  preds["ee"][ee == 1] = 2
  preds["ee"][ee == 2] = 1
  # ff: ground truth has ids {1, 3} (2 absent everywhere) and object 3 leaves
  # after frame 2; the prediction uses id 2 and keeps object 3.
  preds["ff"] = np.where(gts["ff"] == 255, 0, gts["ff"])
  preds["ff"][:, 30:34, 40:48] = 2
  preds["ff"][3:] = np.where(preds["ff"][3:] == 0, 0, preds["ff"][3:])
  preds["ff"][3:, 10:16, 10:16] = 3
  return preds


def test_cli_2017_layout_multi_object_void(tmp_path, capsys):
  """Official semantics on void, missing, swapped and absent ids."""
  rng = np.random.default_rng(1)
  root = tmp_path / "DAVIS"
  seqs = {"cc": (6, 3), "dd": (5, 2), "ee": (6, 3), "ff": (6, 3)}
  gts = _make_2017(root, seqs, rng)
  ff = gts["ff"]
  ff[ff == 2] = 0  # id 2 absent from the ground truth
  ff[3:][ff[3:] == 3] = 0  # object 3 gone after frame 2
  for i in range(len(ff)):
    davis_io.write_mask(root / "Annotations" / "480p" / "ff" / f"{i:05d}.png",
                        ff[i])
  preds = _hard_2017_predictions(rng, gts)
  res_dir = tmp_path / "res"
  _write_results(res_dir, preds)
  rc, _, _ = _run(["--davis_path", str(root), "--results_path", str(res_dir),
                   "--year", "2017"], capsys)
  assert rc == 0
  data = json.loads((res_dir / "results.json").read_text())
  _check_against_reference(data, root, res_dir, list(seqs), 2017)
  assert list(data["sequences"]) == [
      "cc_1", "cc_2", "cc_3", "dd_1", "dd_2", "ee_1", "ee_2", "ee_3", "ff_1",
      "ff_2", "ff_3"]
  assert data["sequences"]["dd_2"]["J-Mean"] == 0.0
  assert data["sequences"]["ee_1"]["J-Mean"] == 0.0
  assert data["sequences"]["ff_2"]["J-Mean"] == 0.0
  # The void band costs object 1 of cc (it is not excluded).
  assert data["sequences"]["cc_1"]["J-Mean"] < 0.5
  # --exclude_void (not official) drops the void pixels from J and F.
  rc, _, _ = _run(["--davis_path", str(root), "--results_path", str(res_dir),
                   "--year", "2017", "--exclude_void"], capsys)
  assert rc == 0
  excl = json.loads((res_dir / "results.json").read_text())
  gt, pred = gts["cc"][1:-1], preds["cc"][1:-1]
  void = gt == 255
  j = [davis_reference.ref_j(g == 1, p == 1, v)
       for g, p, v in zip(gt, pred, void)]
  f = [davis_reference.ref_f(p == 1, g == 1, v)
       for g, p, v in zip(gt, pred, void)]
  assert abs(excl["sequences"]["cc_1"]["J-Mean"] - np.mean(j)) < 1e-12
  assert abs(excl["sequences"]["cc_1"]["F-Mean"] - np.mean(f)) < 1e-12
  assert (excl["sequences"]["cc_1"]["J-Mean"]
          > data["sequences"]["cc_1"]["J-Mean"] + 0.2)
  # --sequences evaluates a subset (extension of the official tool).
  rc, out, _ = _run(["--davis_path", str(root), "--results_path", str(res_dir),
                     "--year", "2017", "--sequences", "dd"], capsys)
  assert rc == 0 and "cc_1" not in out
  data = json.loads((res_dir / "results.json").read_text())
  assert list(data["sequences"]) == ["dd_1", "dd_2"]


def test_cli_2017_void_band_hand_computed(tmp_path, capsys):
  """A 20x10 void band beside a 20x20 object, the prediction covering both.

  Hand-computed official figures (see test_evaluation's
  test_void_band_hand_computed): J = 400/600 = 0.667 and F = 63/90 = 0.700
  on every evaluated frame; excluding void (not official) would give 1, 1.
  Other files in the results folder (a GIF, .DS_Store) are ignored.
  """
  root = tmp_path / "DAVIS"
  gt = np.zeros((4, 60, 80), np.uint8)
  gt[:, 20:40, 20:40] = 1
  gt[:, 20:40, 40:50] = 255
  for i in range(len(gt)):
    davis_io.write_mask(root / "Annotations" / "480p" / "band" /
                        f"{i:05d}.png", gt[i])
  (root / "ImageSets" / "2017").mkdir(parents=True)
  (root / "ImageSets" / "2017" / "val.txt").write_text("band\n")
  res_dir = tmp_path / "res"
  _write_results(res_dir, {"band": np.where(gt == 255, 1, gt)})
  Image.fromarray(gt[0]).save(res_dir / "band" / "overlay.gif")
  (res_dir / "band" / ".DS_Store").write_bytes(b"\0\1junk")
  rc, _, err = _run(["--davis_path", str(root), "--results_path",
                     str(res_dir), "--year", "2017"], capsys)
  assert rc == 0, err
  data = json.loads((res_dir / "results.json").read_text())
  assert abs(data["sequences"]["band_1"]["J-Mean"] - 400 / 600) < 1e-12
  assert abs(data["sequences"]["band_1"]["F-Mean"] - 0.7) < 1e-12
  s_csv = (res_dir / "per-sequence_results-val.csv").read_text().splitlines()
  assert s_csv[1] == "band_1,0.667,0.700"


def test_cli_subprocess_entry_point(tmp_path):
  rng = np.random.default_rng(2)
  root = tmp_path / "DAVIS"
  gts = _make_2016(root, {"aa": 4}, rng)
  _write_results(tmp_path / "res", gts)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.run(
      [sys.executable, "-m", "vosjax.evaluate", "--davis_path", str(root),
       "--results_path", str(tmp_path / "res"), "--set", "val", "--year",
       "2016", "--task", "semi-supervised"],
      capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / "res" / "global_results-val.csv").read_text() == (
      "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
      "1.000,1.000,1.000,0.000,1.000,1.000,0.000\n")


def _bad_setup(tmp_path, rng):
  root = tmp_path / "DAVIS"
  gts = _make_2017(root, {"cc": (5, 2), "dd": (4, 1)}, rng)
  res_dir = tmp_path / "res"
  _write_results(res_dir, {s: np.where(g == 255, 0, g) for s, g in gts.items()})
  return root, res_dir


@pytest.mark.parametrize("case,needle", [
    ("missing_sequence", "dd"),
    ("size_mismatch", "00002.png"),
    ("missing_frame", "00001.png"),
    ("renamed_to_jpg", "res/cc/00003.png"),
    ("corrupt_png", "00002.png"),
    ("too_many_objects", "00001.png"),
    ("unknown_set", "--set"),
    ("missing_gt_last_with_jpegs", "Annotations/480p/cc/00004.png"),
    ("missing_gt_middle", "Annotations/480p/cc/00002.png"),
])
def test_cli_bad_input(tmp_path, capsys, case, needle):
  """One-line error naming the file; the previous outputs are gone."""
  rng = np.random.default_rng(3)
  root, res_dir = _bad_setup(tmp_path, rng)
  args = ["--davis_path", str(root), "--results_path", str(res_dir),
          "--year", "2017"]
  split = "test-challenge" if case == "unknown_set" else "val"
  for name in (f"global_results-{split}.csv",
               f"per-sequence_results-{split}.csv", "results.json"):
    (res_dir / name).write_text("stale figures of an earlier run\n")
  if case == "missing_sequence":
    for p in (res_dir / "dd").iterdir():
      p.unlink()
    (res_dir / "dd").rmdir()
  elif case == "size_mismatch":
    davis_io.write_mask(res_dir / "cc" / "00002.png",
                        np.zeros((H + 1, W), np.uint8))
  elif case == "missing_frame":
    (res_dir / "dd" / "00001.png").unlink()
  elif case == "renamed_to_jpg":
    (res_dir / "cc" / "00003.png").rename(res_dir / "cc" / "00003.jpg")
  elif case == "corrupt_png":
    (res_dir / "cc" / "00002.png").write_text("not an image")
  elif case == "too_many_objects":
    m = np.zeros((H, W), np.uint8)
    m[5, 5] = 2
    davis_io.write_mask(res_dir / "dd" / "00001.png", m)
  elif case == "unknown_set":
    args += ["--set", "test-challenge"]
  elif case == "missing_gt_last_with_jpegs":
    # The official DAVIS class pairs JPEGs with masks and stops on a frame
    # without one; today's silent drop would evaluate 00001-00002 only.
    jpegs = root / "JPEGImages" / "480p" / "cc"
    jpegs.mkdir(parents=True)
    for i in range(5):
      (jpegs / f"{i:05d}.jpg").write_bytes(b"")
    (root / "Annotations" / "480p" / "cc" / "00004.png").unlink()
  elif case == "missing_gt_middle":
    (root / "Annotations" / "480p" / "cc" / "00002.png").unlink()
  rc, _, err = _run(args, capsys)
  assert rc == 1
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), err
  assert needle in lines[0], lines[0]
  assert not list(res_dir.glob("*.csv"))
  assert not (res_dir / "results.json").exists()


def test_cli_2016_missing_ground_truth_listed_in_split(tmp_path, capsys):
  """A mask the 2016 split file lists but the folder lacks is an error."""
  rng = np.random.default_rng(4)
  root = tmp_path / "DAVIS"
  gts = _make_2016(root, {"aa": 5}, rng)
  _write_results(tmp_path / "res", gts)
  (root / "Annotations" / "480p" / "aa" / "00004.png").unlink()
  rc, _, err = _run(["--davis_path", str(root), "--results_path",
                     str(tmp_path / "res")], capsys)
  assert rc == 1 and "Annotations/480p/aa/00004.png" in err, err


def test_cli_failed_run_leaves_no_stale_results(tmp_path):
  """A failed `python -m vosjax.evaluate` deletes the previous figures.

  First run succeeds and writes the CSVs and results.json; the second, on
  a results folder that lost a frame, exits 1 and must not leave the first
  run's files looking like its own.
  """
  rng = np.random.default_rng(5)
  root = tmp_path / "DAVIS"
  gts = _make_2016(root, {"aa": 5, "bb": 4}, rng)
  res_dir = tmp_path / "res"
  _write_results(res_dir, gts)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  cmd = [sys.executable, "-m", "vosjax.evaluate", "--davis_path", str(root),
         "--results_path", str(res_dir), "--year", "2016"]
  outputs = [res_dir / "global_results-val.csv",
             res_dir / "per-sequence_results-val.csv",
             res_dir / "results.json"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        cwd=tmp_path, check=False)
  assert proc.returncode == 0, proc.stderr
  assert all(p.is_file() for p in outputs)
  # Two sequences: the forked worker processes' figures (no JAX loaded in the
  # CLI) equal the official transcription's.
  _check_against_reference(json.loads(outputs[2].read_text()), root, res_dir,
                           ["aa", "bb"], 2016)
  (res_dir / "bb" / "00002.png").unlink()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        cwd=tmp_path, check=False)
  assert proc.returncode == 1
  assert "bb/00002.png" in proc.stderr, proc.stderr
  assert not any(p.exists() for p in outputs)
  assert not list(res_dir.glob(".*"))  # no temp files left either


# ---------------------------------------------------------------------------
# Input the evaluator used to score silently or report vaguely: one line
# naming the flag, sequence or frames, exit 1, no file changed or written.

import hashlib  # pylint: disable=g-import-not-at-top,g-bad-import-order

import cv2  # pylint: disable=g-import-not-at-top,g-bad-import-order


def _digest(*folders):
  """Every path under `folders` with a hash of its bytes."""
  out = {}
  for folder in folders:
    for p in sorted(pathlib.Path(folder).rglob("*")):
      out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest()
                     if p.is_file() else None)
  return out


def _cli_error(root, results, *extra):
  """Runs the CLI in a subprocess; its one stderr line after `error: `."""
  before = _digest(root, results)
  proc = subprocess.run(
      [sys.executable, "-m", "vosjax.evaluate", "--davis_path", str(root),
       "--results_path", str(results), *extra],
      capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
  assert proc.returncode == 1, (proc.returncode, proc.stderr)
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert _digest(root, results) == before  # Nothing written or changed.
  return lines[0][len("error: "):]


def _davis_2016_with_train(tmp_path):
  """A 2016 folder with val (aa, 5 frames) and train (tt) splits, and
  results for both sequences."""
  rng = np.random.default_rng(6)
  root = tmp_path / "DAVIS"
  gts = _make_2016(root, {"aa": 5}, rng)
  tt = _blob_seq(rng, 5, 1)
  for i in range(5):
    path = root / "Annotations" / "480p" / "tt" / f"{i:05d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tt[i] * 255).save(path)
  (root / "ImageSets" / "480p" / "train.txt").write_text("".join(
      f"/JPEGImages/480p/tt/{i:05d}.jpg /Annotations/480p/tt/{i:05d}.png\n"
      for i in range(5)))
  res = tmp_path / "res"
  _write_results(res, {"aa": gts["aa"], "tt": tt})
  return root, res


def test_cli_sequence_of_another_set_is_refused(tmp_path):
  root, res = _davis_2016_with_train(tmp_path)
  message = _cli_error(root, res, "--set", "val", "--sequences",
                       "aa,tt")
  assert message == (f"--sequences: tt is not in --set val (--year 2016) of "
                     f"{root}")


def test_cli_shifted_frame_names_are_refused(tmp_path):
  """Predictions 00001..00005 against ground truth 00000..00004."""
  root, res = _davis_2016_with_train(tmp_path)
  frames = sorted((res / "aa").iterdir(), reverse=True)
  for path in frames:
    path.rename(path.with_name(f"{int(path.stem) + 1:05d}.png"))
  message = _cli_error(root, res, "--sequences", "aa")
  assert message == (
      f"sequence aa: prediction names in {res / 'aa'} do not match the "
      f"ground-truth frames 00000..00004: missing 00000; extra 00005")


def test_cli_16_bit_prediction_above_255_is_refused(tmp_path):
  root, res = _davis_2016_with_train(tmp_path)
  ids = davis_io.read_mask(res / "aa" / "00002.png")  # Palette {0, 1}.
  wide = ids.astype(np.uint16) * 256  # 16-bit, the object as id 256.
  path = res / "aa" / "00002.png"
  assert cv2.imwrite(str(path), wide) and wide.max() == 256
  message = _cli_error(root, res, "--sequences", "aa")
  assert message == (
      f"sequence aa: prediction {path} is a 16-bit PNG holding id 256; masks "
      f"hold ids 0-255 (255 = void): write 8-bit palette or grayscale PNGs")


def test_cli_16_bit_prediction_up_to_255_scores_as_8_bit(tmp_path, capsys):
  root, res = _davis_2016_with_train(tmp_path)
  rc, _, err = _run(["--davis_path", str(root), "--results_path", str(res),
                     "--sequences", "aa"], capsys)
  assert rc == 0, err
  eight = json.loads((res / "results.json").read_text())
  for path in (res / "aa").glob("*.png"):
    ids = davis_io.read_mask(path)
    assert cv2.imwrite(str(path), ids.astype(np.uint16))
  rc, _, err = _run(["--davis_path", str(root), "--results_path", str(res),
                     "--sequences", "aa"], capsys)
  assert rc == 0, err
  assert json.loads((res / "results.json").read_text()) == eight


def test_cli_results_path_that_is_a_file(tmp_path):
  root, _ = _davis_2016_with_train(tmp_path)
  file = tmp_path / "results.txt"
  file.write_text("not a folder\n")
  message = _cli_error(root, file)
  assert message == f"--results_path {file} is a file, not a folder"


def test_cli_davis_path_without_image_sets(tmp_path):
  root, res = _davis_2016_with_train(tmp_path)
  for path in (root / "ImageSets" / "480p").iterdir():
    path.unlink()
  (root / "ImageSets" / "480p").rmdir()
  (root / "ImageSets").rmdir()
  message = _cli_error(root, res)
  assert message == (
      f"--davis_path {root} has no ImageSets/ folder (the split files "
      f"listing each set's sequences); point it at the DAVIS root, the "
      f"folder holding Annotations/, ImageSets/ and JPEGImages/")


def test_cli_unknown_set_names_the_sets_there(tmp_path):
  root, res = _davis_2016_with_train(tmp_path)
  message = _cli_error(root, res, "--set", "test")
  assert message.startswith("unknown --set 'test' for --year 2016: no split "
                            "file"), message
  assert message.endswith("; sets there: train, val"), message
