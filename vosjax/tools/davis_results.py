"""Collects finished runs into docs/results: a per-sequence CSV and a picture.

  python -m vosjax.tools.davis_results --out docs/results \
      /tmp/vosjax-$USER/osvos_davis16_cpu [more run folders ...]

Each run folder is `<workdir>/<experiment>/` as `run.py` leaves it
(`summary.json`, `predictions/<variant>/per-sequence_results-val.csv`). Every
variant of every run becomes a row `<experiment>/<variant>`; the copy-first-
frame baseline is taken once (from the first run). `--append` keeps the
rows already in --out (`--earlier_suffix " (old)"` keeps a replaced row
beside the new one). Writes:

  davis16_val_per_sequence.csv   method, sequence, J-Mean, F-Mean
  davis16_val.png                per sequence, one bar of J&F per method
  davis16_val_global.csv         method and the global figures of summary.json
"""

import argparse
import csv
import json
import pathlib
import sys

import cv2
import numpy as np

from vosjax import curves, davis_io
from vosjax.errors import InputError

GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean",
               "F-Recall", "F-Decay", "seconds_per_frame")
BASELINE = "first_frame_baseline"


def read_run(folder):
  """`{method: (global figures, {sequence: (J, F)})}` of one run folder."""
  folder = pathlib.Path(folder)
  summary_path = folder / "summary.json"
  if not summary_path.is_file():
    raise InputError(f"{summary_path} not found: not a finished run folder")
  summary = json.loads(summary_path.read_text())
  rows = {}
  for variant, figures in summary.items():
    if variant == "stage_seconds":
      continue
    path = folder / "predictions" / variant / "per-sequence_results-val.csv"
    if not path.is_file():
      raise InputError(f"{path} not found")
    per_seq = {}
    with open(path, newline="") as f:
      for row in csv.DictReader(f):
        # Multi-object rows are "<sequence>_<id>"; DAVIS 2016 has id 1.
        per_seq[row["Sequence"]] = (float(row["J-Mean"]), float(row["F-Mean"]))
    name = BASELINE if variant == BASELINE else f"{folder.name}/{variant}"
    rows[name] = (figures, per_seq)
  return rows


def read_written(out_dir):
  """The rows an earlier `write` left in `out_dir` (its two CSVs)."""
  out_dir = pathlib.Path(out_dir)
  rows = {}
  paths = [out_dir / "davis16_val_global.csv",
           out_dir / "davis16_val_per_sequence.csv"]
  for path in paths:
    if not path.is_file():
      raise InputError(f"--append: {path} not found")
  with open(paths[0], newline="") as f:
    for row in csv.DictReader(f):
      rows[row["method"]] = ({k: float(row[k]) for k in GLOBAL_KEYS}, {})
  with open(paths[1], newline="") as f:
    for row in csv.DictReader(f):
      if row["method"] not in rows:
        raise InputError(f"{paths[1]}: method {row['method']} is not in "
                         f"{paths[0]}")
      rows[row["method"]][1][row["sequence"]] = (float(row["J-Mean"]),
                                                 float(row["F-Mean"]))
  return rows


def collect(folders, earlier=None, earlier_suffix=""):
  """Rows of every run, the baseline once and last.

  Args:
    folders: run folders.
    earlier: rows already written (`read_written`), kept first; a row of the
      runs with the same name replaces it, unless `earlier_suffix` is given:
      then the earlier row stays, renamed `<name><earlier_suffix>` (e.g. an
      old recipe's row beside the new one's).
  """
  runs = [read_run(folder) for folder in folders]
  new_names = {n for run in runs for n in run if n != BASELINE}
  rows = {}
  for name, value in (earlier or {}).items():
    if name in new_names and earlier_suffix:
      name += earlier_suffix
    rows[name] = value
  for run in runs:
    for name, value in run.items():
      if name != BASELINE or BASELINE not in rows:
        rows[name] = value
  rows[BASELINE] = rows.pop(BASELINE)
  return rows


def _bar_chart(rows, sequences):
  """Grouped bars (one group per sequence), `[H, W, 3]` uint8 RGB."""
  colours = curves.PALETTE  # 14 distinct rows.
  names = list(rows)
  group = 12 * len(names) + 10
  top, bottom, left = 20 + 14 * (1 + len(names) // 4), 140, 50
  # Legend columns wide enough for the longest name (~7 px a character).
  column = max(300, 30 + 7 * max(len(n) for n in names))
  width = max(60 + group * len(sequences), left + column * min(len(names), 4))
  height = top + 280 + bottom
  img = np.full((height, width, 3), 255, np.uint8)
  plot_h = height - top - bottom
  for tick in range(0, 11, 2):
    y = top + plot_h - int(plot_h * tick / 10)
    cv2.line(img, (left, y), (width - 5, y), (220, 220, 220), 1)
    cv2.putText(img, f"{tick / 10:.1f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX,
                0.4, (0, 0, 0), 1)
  for s, seq in enumerate(sequences):
    x0 = left + s * group
    for m, name in enumerate(names):
      j, f = rows[name][1].get(seq, (0.0, 0.0))
      h = int(plot_h * (j + f) / 2)
      x = x0 + 12 * m
      cv2.rectangle(img, (x, top + plot_h - h), (x + 10, top + plot_h),
                    colours[m % len(colours)], -1)
    label = np.full((14, 120, 3), 255, np.uint8)
    cv2.putText(label, seq, (0, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (0, 0, 0), 1)
    label = cv2.rotate(label, cv2.ROTATE_90_CLOCKWISE)
    y = top + plot_h + 4
    img[y:y + label.shape[0], x0:x0 + label.shape[1]] = np.minimum(
        img[y:y + label.shape[0], x0:x0 + label.shape[1]], label)
  for m, name in enumerate(names):
    x = left + column * (m % 4)
    y = 14 + 14 * (m // 4)
    cv2.rectangle(img, (x, y - 9), (x + 10, y), colours[m % len(colours)], -1)
    cv2.putText(img, name, (x + 14, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (0, 0, 0), 1)
  return img


def write(rows, out_dir):
  out_dir = pathlib.Path(out_dir)
  sequences = sorted({s for _, per_seq in rows.values() for s in per_seq})

  def per_sequence(f):
    writer = csv.writer(f)
    writer.writerow(["method", "sequence", "J-Mean", "F-Mean"])
    for name, (_, per_seq) in rows.items():
      for seq in sequences:
        if seq in per_seq:
          writer.writerow([name, seq, f"{per_seq[seq][0]:.6f}",
                           f"{per_seq[seq][1]:.6f}"])

  def global_rows(f):
    writer = csv.writer(f)
    writer.writerow(["method", *GLOBAL_KEYS])
    for name, (figures, _) in rows.items():
      writer.writerow([name] + [f"{figures.get(k, float('nan')):.6f}"
                                for k in GLOBAL_KEYS])

  davis_io.atomic_write(out_dir / "davis16_val_per_sequence.csv",
                        per_sequence, mode="w")
  davis_io.atomic_write(out_dir / "davis16_val_global.csv", global_rows,
                        mode="w")
  curves.write_png(out_dir / "davis16_val.png", _bar_chart(rows, sequences))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", help="run folders")
  parser.add_argument("--out", default="docs/results")
  parser.add_argument("--append", action="store_true",
                      help="keep the rows already in --out (their run "
                      "folders need not exist any more)")
  parser.add_argument("--earlier_suffix", default="",
                      help="with --append: keep an earlier row that a run "
                      "replaces, renamed with this suffix")
  args = parser.parse_args(argv)
  try:
    earlier = read_written(args.out) if args.append else None
    write(collect(args.runs, earlier, args.earlier_suffix), args.out)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {args.out}/davis16_val_per_sequence.csv, "
        f"davis16_val_global.csv, davis16_val.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
