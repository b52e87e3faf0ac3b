"""Evaluation of a DAVIS results folder, as the official tool.

Reproduces `evaluation_method.py` of davisvideochallenge/davis2017-evaluation
(semi-supervised task): for every sequence of the split, the ground-truth
masks `Annotations/480p/<seq>/*.png` and the predicted
`<results_path>/<seq>/<frame>.png` of the same frame names, first and last
frames excluded; per-object J and F statistics; globals as means over all
objects; J&F-Mean = (J-Mean + F-Mean) / 2. It writes
`global_results-<set>.csv`, `per-sequence_results-<set>.csv` (pandas
`float_format='%.3f'` text) and `results.json` (full precision) atomically.

Year 2016: masks are single-object; ground truth and predictions are both
binarised (nonzero = object 1), so 0/255 grayscale and {0, 1} palette results
give the same numbers. (The official 2017 code cannot read the 2016 package
as is: its loader turns 255 into void, leaving no object. Binarising is the
usual reading of 2016 masks, e.g. by year-2016 ports of the 2017 code.)
Year 2017: palette ids, 255 = void in the ground truth (ignored by J and F).

Bad input (a missing sequence folder or frame, a file that is not a PNG, a
prediction whose size differs from its ground truth, ids above the object
count, an unknown split) raises `davis_io.DavisFormatError` naming the
sequence or file, before anything is written.

Extension of the official CLI: `sequences` evaluates the listed sequences
only (smoke runs on one or two sequences).
"""

import concurrent.futures
import json
import math
import os
import pathlib

import numpy as np

from vosjax import davis_io
from vosjax.evaluation import metrics
from vosjax.evaluation import png

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean",
                  "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
TASKS = ("semi-supervised",)


def _num_workers():
  """(decoding threads, sequence threads).

  PNG inflating, cv2 and most NumPy passes release the GIL, so threads share
  the work of sequences across cores without copying masks between processes.
  """
  # One decoding thread per core: more only add GIL hand-offs (measured on
  # 2 cores, DAVIS 2016 val: 2.61 s with 2 decoders, 2.80 s with 4).
  cpus = os.cpu_count() or 1
  return min(cpus, 8), min(cpus, 4)


def _read_masks(paths, shape, pool, seq, what):
  """Decodes `paths` into one `[T, H, W]` uint8 array (threads)."""
  out = np.empty((len(paths),) + tuple(shape), np.uint8)

  def decode(i):
    try:
      png.decode_mask(paths[i], out=out[i])
    except davis_io.DavisFormatError as e:
      raise davis_io.DavisFormatError(f"sequence {seq}: {what} {e}") from e

  list(pool.map(decode, range(len(paths))))
  return out


def _evaluate_one(davis_path, results_path, seq, year, pool):
  """Per-object figures of one sequence: list of (name, stats dict)."""
  gt_paths = davis_io.mask_paths(davis_path, seq)
  # Official: frame names come from the ground truth; the semi-supervised
  # task never reads the first and last frames of the results.
  eval_names = [p.stem for p in gt_paths][1:-1]
  seq_dir = pathlib.Path(results_path) / seq
  if not seq_dir.is_dir():
    raise davis_io.DavisFormatError(
        f"sequence {seq}: missing results folder {seq_dir}")
  present = {p.name for p in seq_dir.iterdir() if not p.name.startswith(".")}
  for name in sorted(present):
    if not name.lower().endswith(".png"):
      raise davis_io.DavisFormatError(
          f"sequence {seq}: {seq_dir / name} is not a PNG file")
  pred_paths = []
  for name in eval_names:
    if f"{name}.png" not in present:
      raise davis_io.DavisFormatError(
          f"sequence {seq}: missing frame {seq_dir / (name + '.png')}")
    pred_paths.append(seq_dir / f"{name}.png")
  shape = png.decode_mask(gt_paths[0]).shape
  gt = _read_masks(gt_paths, shape, pool, seq, "ground truth")
  pred = _read_masks(pred_paths, shape, pool, seq, "prediction")
  if year == 2016:
    # Binary: any nonzero value is object 1 (0/255 or palette {0, 1}).
    np.not_equal(gt, 0, out=gt.view(bool))
    np.not_equal(pred, 0, out=pred.view(bool))
    n_objects = int(gt[0].max(initial=0))
    void = None
  else:
    n_objects = metrics.num_objects(gt[0])
    void = gt == davis_io.VOID_LABEL
    if not void.any():
      void = None
  if pred.size and int(pred.max()) > n_objects:
    bad = next(p for p, m in zip(pred_paths, pred) if int(m.max()) > n_objects)
    raise davis_io.DavisFormatError(
        f"sequence {seq}: {bad} has object id {int(pred.max())} but the "
        f"sequence has {n_objects} object(s)")
  # Only the evaluated (middle) frames of the results are read, as officially.
  res = metrics.evaluate_sequence(
      gt[1:-1], pred, void=None if void is None else void[1:-1],
      skip_first_last=False, n_objects=n_objects)
  out = []
  for k in range(n_objects):
    out.append((f"{seq}_{k + 1}",
                {c: float(res[c][k]) for c in
                 ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
                  "F-Decay")}))
  return out


def evaluate_davis(davis_path, results_path, *, split="val", year=2016,
                   task="semi-supervised", sequences=None, write=True):
  """Evaluates a results folder against DAVIS ground truth.

  Args:
    davis_path: DAVIS root (`Annotations/480p`, `ImageSets`).
    results_path: folder with one sub-folder of PNG masks per sequence.
    split: 'val', 'train', ... (a split file must exist for `year`).
    year: 2016 (binary masks) or 2017 (palette ids, 255 = void).
    task: only 'semi-supervised'.
    sequences: optional list of sequence names to evaluate instead of the
      whole split (an extension of the official CLI; like the official
      `DAVIS(sequences=...)`, in the given order); None = the whole split, in
      split-file order.
    write: write the two CSVs and results.json into `results_path`.

  Returns:
    `{"global": {column: value}, "sequences": {"<seq>_<id>": {"J-Mean": ...,
    "F-Mean": ...}}}` with full-precision floats (NaN where a sequence has
    no evaluated frame).
  """
  year = int(year)
  if task not in TASKS:
    raise davis_io.DavisFormatError(
        f"--task {task!r} is not supported; expected one of {TASKS}")
  if year not in (2016, 2017):
    raise davis_io.DavisFormatError(
        f"--year {year!r} is not supported; expected 2016 or 2017")
  if not pathlib.Path(davis_path).is_dir():
    raise davis_io.DavisFormatError(f"--davis_path {davis_path} not found")
  if not pathlib.Path(results_path).is_dir():
    raise davis_io.DavisFormatError(f"--results_path {results_path} not found")
  try:
    names = davis_io.read_split(davis_path, split, year)
  except davis_io.DavisFormatError as e:
    raise davis_io.DavisFormatError(f"unknown --set {split!r}: {e}") from e
  if sequences is not None:
    # As the official DAVIS(sequences=[...]): the given names, in the given
    # order (the split file must still exist).
    names = list(dict.fromkeys(sequences))
    if not names:
      raise davis_io.DavisFormatError("--sequences names no sequence")

  n_decode, n_seq = _num_workers()
  with concurrent.futures.ThreadPoolExecutor(n_decode) as pool:
    with concurrent.futures.ThreadPoolExecutor(n_seq) as seq_pool:
      per_seq = list(seq_pool.map(
          lambda s: _evaluate_one(davis_path, results_path, s, year, pool),
          names))
  rows = [row for seq_rows in per_seq for row in seq_rows]
  results = summarize(rows)
  if write:
    write_results(results, results_path, split)
  return results


def summarize(rows):
  """Official globals from per-object rows `[(name, {stat: value})]`."""
  def mean(key):
    return float(np.mean([r[key] for _, r in rows])) if rows else math.nan
  j_mean, f_mean = mean("J-Mean"), mean("F-Mean")
  glob = {"J&F-Mean": (j_mean + f_mean) / 2.0, "J-Mean": j_mean,
          "J-Recall": mean("J-Recall"), "J-Decay": mean("J-Decay"),
          "F-Mean": f_mean, "F-Recall": mean("F-Recall"),
          "F-Decay": mean("F-Decay")}
  seqs = {name: {"J-Mean": r["J-Mean"], "F-Mean": r["F-Mean"]}
          for name, r in rows}
  return {"global": glob, "sequences": seqs}


def _fmt3(x):
  # pandas to_csv(float_format='%.3f'); NaN is written as an empty field.
  return "" if x is None or math.isnan(x) else "%.3f" % x


def _csv_field(s):
  if any(c in s for c in ',"\n'):
    return '"' + s.replace('"', '""') + '"'
  return s


def global_csv(results):
  g = results["global"]
  return (",".join(GLOBAL_COLUMNS) + "\n"
          + ",".join(_fmt3(g[c]) for c in GLOBAL_COLUMNS) + "\n")


def sequence_csv(results):
  lines = [",".join(SEQUENCE_COLUMNS)]
  for name, r in results["sequences"].items():
    lines.append(",".join([_csv_field(name), _fmt3(r["J-Mean"]),
                           _fmt3(r["F-Mean"])]))
  return "\n".join(lines) + "\n"


def _json_safe(x):
  if isinstance(x, dict):
    return {k: _json_safe(v) for k, v in x.items()}
  return None if isinstance(x, float) and math.isnan(x) else x


def write_results(results, results_path, split):
  """Writes the official CSVs and results.json atomically into results_path."""
  root = pathlib.Path(results_path)
  files = {
      root / f"global_results-{split}.csv": global_csv(results),
      root / f"per-sequence_results-{split}.csv": sequence_csv(results),
      root / "results.json": json.dumps(_json_safe(results), indent=2) + "\n",
  }
  for path, text in files.items():
    davis_io.atomic_write(path, lambda f, t=text: f.write(t), mode="w")
  return list(files)


def _pandas_float_column(values):
  # pandas to_string: '%.6f', trailing zeros trimmed alike over the column.
  strs = ["NaN" if math.isnan(v) else "%.6f" % v for v in values]
  while all(s.endswith("0") and not s.endswith(".0") for s in strs
            if s != "NaN") and any(s != "NaN" for s in strs):
    strs = [s if s == "NaN" else s[:-1] for s in strs]
  return strs


def format_table(columns, data):
  """A table like pandas' `DataFrame.to_string(index=False)`."""
  cols = []
  for c, values in zip(columns, data):
    if values and isinstance(values[0], str):
      strs = list(values)
    else:
      strs = _pandas_float_column(values)
    width = max([len(c)] + [len(s) for s in strs])
    cols.append([c.rjust(width)] + [s.rjust(width) for s in strs])
  return "\n".join(" ".join(row) for row in zip(*cols))


def print_results(results, split, out=print):
  """Prints the two tables like the official evaluation_method.py."""
  g = results["global"]
  out(f"--------------------------- Global results for {split} "
      f"---------------------------")
  out(format_table(GLOBAL_COLUMNS, [[g[c]] for c in GLOBAL_COLUMNS]))
  out(f"\n---------- Per sequence results for {split} ----------")
  names = list(results["sequences"])
  out(format_table(SEQUENCE_COLUMNS, [
      names,
      [results["sequences"][n]["J-Mean"] for n in names],
      [results["sequences"][n]["F-Mean"] for n in names]]))
