"""docs/results from run folders: rows as in the runs' own files."""

import csv
import json

import pytest

from vosjax.errors import InputError
from vosjax.tools import davis_results


def _run(folder, variants):
  """A finished run folder: summary.json and per-sequence CSVs."""
  summary = {"stage_seconds": {"data": 1.0}}
  for variant, per_seq in variants.items():
    j = sum(v[0] for v in per_seq.values()) / len(per_seq)
    summary[variant] = {"J&F-Mean": j, "J-Mean": j, "seconds_per_frame": 0.5}
    out = folder / "predictions" / variant
    out.mkdir(parents=True)
    with open(out / "per-sequence_results-val.csv", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["Sequence", "J-Mean", "F-Mean"])
      for seq, (jm, fm) in per_seq.items():
        writer.writerow([seq, jm, fm])
  (folder / "summary.json").write_text(json.dumps(summary))


def test_rows_come_from_each_runs_files_and_baseline_once(tmp_path):
  base = {"a_1": (0.1, 0.2), "b_1": (0.3, 0.4)}
  _run(tmp_path / "osvos_x", {"oneshot": {"a_1": (0.5, 0.6),
                                          "b_1": (0.7, 0.8)},
                              "first_frame_baseline": base})
  _run(tmp_path / "pml_x", {"pml": {"a_1": (0.2, 0.3), "b_1": (0.4, 0.5)},
                            "first_frame_baseline": base})
  out = tmp_path / "out"
  assert davis_results.main([str(tmp_path / "osvos_x"),
                             str(tmp_path / "pml_x"), "--out", str(out)]) == 0
  with open(out / "davis16_val_per_sequence.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [(r["method"], r["sequence"]) for r in rows] == [
      ("osvos_x/oneshot", "a_1"), ("osvos_x/oneshot", "b_1"),
      ("pml_x/pml", "a_1"), ("pml_x/pml", "b_1"),
      ("first_frame_baseline", "a_1"), ("first_frame_baseline", "b_1")]
  assert float(rows[1]["F-Mean"]) == pytest.approx(0.8)
  with open(out / "davis16_val_global.csv", newline="") as f:
    global_rows = {r["method"]: r for r in csv.DictReader(f)}
  assert float(global_rows["pml_x/pml"]["J&F-Mean"]) == pytest.approx(0.3)
  assert (out / "davis16_val.png").stat().st_size > 0


def test_unfinished_run_is_one_line_error(tmp_path):
  with pytest.raises(InputError, match="summary.json"):
    davis_results.read_run(tmp_path)


def test_append_keeps_earlier_rows_and_renames_replaced_ones(tmp_path):
  base = {"a_1": (0.1, 0.2), "b_1": (0.3, 0.4)}
  _run(tmp_path / "old" / "osvos_x", {"oneshot": {"a_1": (0.5, 0.6),
                                                  "b_1": (0.7, 0.8)},
                                      "first_frame_baseline": base})
  _run(tmp_path / "pml_x", {"pml": {"a_1": (0.2, 0.3), "b_1": (0.4, 0.5)},
                            "first_frame_baseline": base})
  _run(tmp_path / "osvos_x", {"oneshot": {"a_1": (0.9, 0.9),
                                          "b_1": (0.8, 0.8)},
                              "first_frame_baseline": base})
  out = str(tmp_path / "out")
  assert davis_results.main([str(tmp_path / "old" / "osvos_x"),
                             str(tmp_path / "pml_x"), "--out", out]) == 0
  assert davis_results.main([str(tmp_path / "osvos_x"), "--out", out,
                             "--append", "--earlier_suffix", " (old)"]) == 0
  with open(tmp_path / "out" / "davis16_val_global.csv", newline="") as f:
    got = {r["method"]: float(r["J&F-Mean"]) for r in csv.DictReader(f)}
  # The old row kept under its new name, the new one from the new run; the
  # baseline once, last.
  assert list(got) == ["osvos_x/oneshot (old)", "pml_x/pml",
                       "osvos_x/oneshot", "first_frame_baseline"]
  assert got["osvos_x/oneshot (old)"] == pytest.approx(0.6)
  assert got["osvos_x/oneshot"] == pytest.approx(0.85)
  with open(tmp_path / "out" / "davis16_val_per_sequence.csv",
            newline="") as f:
    per_seq = {(r["method"], r["sequence"]): float(r["J-Mean"])
               for r in csv.DictReader(f)}
  assert per_seq[("osvos_x/oneshot (old)", "b_1")] == pytest.approx(0.7)
  assert per_seq[("osvos_x/oneshot", "b_1")] == pytest.approx(0.8)
