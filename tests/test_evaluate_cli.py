"""Tests of `python -m vosjax.evaluate` on tiny synthetic DAVIS folders."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vosjax import davis_io
from vosjax import evaluate
from vosjax.evaluation import metrics

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


def _expected(gts, preds):
  """Per-object J-Mean/F-Mean and globals from the in-memory API."""
  rows = {}
  stats = []
  for seq in gts:
    res = metrics.evaluate_sequence(gts[seq], preds[seq])
    for k in range(len(res["object_ids"])):
      rows[f"{seq}_{k + 1}"] = (res["J-Mean"][k], res["F-Mean"][k])
      stats.append([res[c][k] for c in ("J-Mean", "J-Recall", "J-Decay",
                                         "F-Mean", "F-Recall", "F-Decay")])
  stats = np.mean(stats, axis=0)
  glob = dict(zip(("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
                   "F-Decay"), stats))
  glob["J&F-Mean"] = (glob["J-Mean"] + glob["F-Mean"]) / 2
  return rows, glob


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
  rows, glob = _expected(gts, preds)
  data = json.loads((res_dir / "results.json").read_text())
  assert list(data) == ["global", "sequences"]
  assert list(data["global"]) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay",
                                  "F-Mean", "F-Recall", "F-Decay"]
  for k, v in glob.items():
    assert abs(data["global"][k] - v) < 1e-12, k
  assert list(data["sequences"]) == ["aa_1", "bb_1"]
  for name, (jm, fm) in rows.items():
    assert abs(data["sequences"][name]["J-Mean"] - jm) < 1e-12
    assert abs(data["sequences"][name]["F-Mean"] - fm) < 1e-12
  g_csv = (res_dir / "global_results-val.csv").read_text().splitlines()
  assert g_csv[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
  assert g_csv[1] == ",".join("%.3f" % data["global"][c]
                              for c in g_csv[0].split(","))
  s_csv = (res_dir / "per-sequence_results-val.csv").read_text().splitlines()
  assert s_csv[0] == "Sequence,J-Mean,F-Mean"
  assert s_csv[1] == "aa_1,%.3f,%.3f" % rows["aa_1"]
  assert len(s_csv) == 3


def test_cli_2017_layout_multi_object_void(tmp_path, capsys):
  rng = np.random.default_rng(1)
  root = tmp_path / "DAVIS"
  gts = _make_2017(root, {"cc": (6, 3), "dd": (5, 2)}, rng)
  preds = {s: np.where(g == 255, 0, _perturb(rng, g)) for s, g in gts.items()}
  preds["dd"][preds["dd"] == 2] = 0  # fewer objects than the ground truth
  res_dir = tmp_path / "res"
  _write_results(res_dir, preds)
  rc, _, _ = _run(["--davis_path", str(root), "--results_path", str(res_dir),
                   "--year", "2017"], capsys)
  assert rc == 0
  data = json.loads((res_dir / "results.json").read_text())
  rows, glob = _expected(gts, preds)
  assert list(data["sequences"]) == ["cc_1", "cc_2", "cc_3", "dd_1", "dd_2"]
  for name, (jm, fm) in rows.items():
    assert abs(data["sequences"][name]["J-Mean"] - jm) < 1e-12
    assert abs(data["sequences"][name]["F-Mean"] - fm) < 1e-12
  assert abs(data["global"]["J&F-Mean"] - glob["J&F-Mean"]) < 1e-12
  assert data["sequences"]["dd_2"]["J-Mean"] == 0.0
  # --sequences evaluates a subset (extension of the official tool).
  rc, out, _ = _run(["--davis_path", str(root), "--results_path", str(res_dir),
                     "--year", "2017", "--sequences", "dd"], capsys)
  assert rc == 0 and "cc_1" not in out
  data = json.loads((res_dir / "results.json").read_text())
  assert list(data["sequences"]) == ["dd_1", "dd_2"]


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
    ("non_png", "00003.jpg"),
    ("corrupt_png", "00002.png"),
    ("too_many_objects", "00001.png"),
    ("unknown_set", "--set"),
])
def test_cli_bad_input(tmp_path, capsys, case, needle):
  rng = np.random.default_rng(3)
  root, res_dir = _bad_setup(tmp_path, rng)
  args = ["--davis_path", str(root), "--results_path", str(res_dir),
          "--year", "2017"]
  if case == "missing_sequence":
    for p in (res_dir / "dd").iterdir():
      p.unlink()
    (res_dir / "dd").rmdir()
  elif case == "size_mismatch":
    davis_io.write_mask(res_dir / "cc" / "00002.png",
                        np.zeros((H + 1, W), np.uint8))
  elif case == "missing_frame":
    (res_dir / "dd" / "00001.png").unlink()
  elif case == "non_png":
    (res_dir / "cc" / "00003.png").rename(res_dir / "cc" / "00003.jpg")
  elif case == "corrupt_png":
    (res_dir / "cc" / "00002.png").write_text("not an image")
  elif case == "too_many_objects":
    m = np.zeros((H, W), np.uint8)
    m[5, 5] = 2
    davis_io.write_mask(res_dir / "dd" / "00001.png", m)
  elif case == "unknown_set":
    args += ["--set", "test-challenge"]
  rc, _, err = _run(args, capsys)
  assert rc == 1
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), err
  assert needle in lines[0], lines[0]
  assert not list(res_dir.glob("*.csv"))
  assert not (res_dir / "results.json").exists()
