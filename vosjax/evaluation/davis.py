"""Evaluation of a DAVIS results folder, as the official tool.

Reproduces `evaluation_method.py` of davisvideochallenge/davis2017-evaluation
(semi-supervised task): for every sequence of the split, the ground-truth
masks `Annotations/480p/<seq>/*.png` and the predicted
`<results_path>/<seq>/<frame>.png` of the same frame names, first and last
frames excluded; per-object J and F statistics; globals as means over all
objects; J&F-Mean = (J-Mean + F-Mean) / 2. It writes
`global_results-<set>.csv`, `per-sequence_results-<set>.csv` (pandas
`float_format='%.3f'` text) and `results.json` (full precision) atomically,
after deleting the previous ones first: a failed run leaves no stale figures.

Year 2016: masks are single-object; ground truth and predictions are both
binarised (nonzero = object 1), so 0/255 grayscale and {0, 1} palette results
give the same numbers. (The official 2017 code cannot read the 2016 package
as is: its loader turns 255 into void, leaving no object. Binarising is the
usual reading of 2016 masks, e.g. by year-2016 ports of the 2017 code.)
Year 2017: palette ids; 255 (void) in the ground truth is background, as in
the official semi-supervised evaluation (davis2017/davis.py get_all_masks sets
it to 0 and evaluation.py passes no void mask to J and F), so predicting an
object on void pixels costs J and F. `exclude_void=True` (CLI
`--exclude_void`) drops void pixels instead; that is NOT the official
protocol.

Frames: as officially, the ground-truth mask names define the frames; a frame
with a JPEG (or a 2016 split-file entry, or a gap in the numbering) but no
ground-truth mask is an error naming the missing file. Results are read as
`<results_path>/<seq>/<frame>.png` for the evaluated frames only; files that
are not PNGs (overlay GIFs, `.DS_Store`, ...) are ignored, as the official
`Results.read_masks` ignores them. Stricter than the official code, every
PNG there must be named after a ground-truth frame: names shifted by one
(00001..00050 against 00000..00049) would otherwise be scored against the
wrong frames, so missing and extra names are reported together.

Bad input (a missing sequence folder, ground-truth mask or result frame, a
PNG not named after a frame, a file that is not a PNG where a PNG is read, a
prediction whose size differs from its ground truth, ids above the object
count, a 16-bit PNG holding ids above 255, an unknown split, a sequence not
in the split, a DAVIS folder without `ImageSets/`) raises
`davis_io.DavisFormatError` naming the sequence, file or flag; nothing is
written.

Extension of the official CLI: `sequences` evaluates the listed sequences
only (smoke runs on one or two sequences); each must belong to the split.
"""

import concurrent.futures
import json
import math
import multiprocessing
import os
import pathlib
import sys

import numpy as np

from vosjax import davis_io
from vosjax.evaluation import metrics
from vosjax.evaluation import png

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean",
                  "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
TASKS = ("semi-supervised",)


def _fork_context():
  """A 'fork' multiprocessing context when forking is safe here, else None.

  Per-frame metrics are many small NumPy calls that hold the GIL, so threads
  do not scale them; forked worker processes do (and start in milliseconds,
  unlike 'spawn', which re-imports everything). Not after JAX is imported
  (its runtime threads make fork unsafe: the programs evaluate after
  training), not inside a daemon process (it cannot have children), and not
  on platforms without fork: threads are used there.
  """
  if "jax" in sys.modules or multiprocessing.current_process().daemon:
    return None
  if "fork" not in multiprocessing.get_all_start_methods():
    return None
  return multiprocessing.get_context("fork")


def _evaluate_job(job):
  return _evaluate_one(*job)


def _evaluate_all(davis_path, results_path, names, year, exclude_void,
                  listed):
  """Per-object rows of all sequences, in `names` order.

  One sequence per task, on one worker per core: forked processes where
  that is safe, else threads (PNG inflating, cv2 and the larger NumPy passes
  release the GIL, so threads still overlap part of the work).
  """
  jobs = [(davis_path, results_path, s, year, exclude_void,
           listed.get(s, ())) for s in names]
  cpus = os.cpu_count() or 1
  workers = min(cpus, len(names))
  if workers <= 1:
    per_seq = [_evaluate_job(job) for job in jobs]
  else:
    # Longest sequences first, so no worker is left with a long one at the
    # end; results are collected in split order.
    def n_masks(s):
      folder = pathlib.Path(davis_path) / "Annotations" / "480p" / s
      return len(os.listdir(folder)) if folder.is_dir() else 0
    order = sorted(range(len(jobs)), key=lambda i: -n_masks(names[i]))
    ctx = _fork_context()
    if ctx is not None:
      ex = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx)
    else:
      ex = concurrent.futures.ThreadPoolExecutor(workers)
    with ex:
      futures = {i: ex.submit(_evaluate_job, jobs[i]) for i in order}
      try:
        per_seq = [futures[i].result() for i in range(len(jobs))]
      except BaseException:
        ex.shutdown(wait=True, cancel_futures=True)
        raise
  return [row for seq_rows in per_seq for row in seq_rows]


def _decode(path, out, seq, what, allow_view=False):
  """`png.decode_mask(path, out, allow_view)`, errors naming the sequence."""
  try:
    return png.decode_mask(path, out=out, allow_view=allow_view)
  except davis_io.DavisFormatError as e:
    raise davis_io.DavisFormatError(f"sequence {seq}: {what} {e}") from e


def _split_mask_names(davis_path, split, year):
  """{sequence: mask names} listed by a DAVIS 2016 path-pair split file.

  `ImageSets/480p/<split>.txt` names every annotated frame
  (`/JPEGImages/480p/<seq>/00000.jpg /Annotations/480p/<seq>/00000.png`);
  2017 split files list sequence names only (empty dict).
  """
  if year != 2016:
    return {}
  path = pathlib.Path(davis_path) / "ImageSets" / "480p" / f"{split}.txt"
  out = {}
  if path.is_file():
    for line in path.read_text().splitlines():
      parts = line.split()
      if len(parts) >= 2 and "/" in parts[1]:
        segs = parts[1].split("/")
        out.setdefault(segs[-2], set()).add(segs[-1].rsplit(".", 1)[0])
  return out


def _check_ground_truth(davis_path, seq, gt_paths, listed):
  """Errors on a frame of the sequence without its ground-truth mask.

  Official: `DAVIS` pairs the sorted JPEG frames with the sorted masks and
  stops when a frame has none. Known frames here: the JPEGs of
  `JPEGImages/480p/<seq>` (when present), the masks a 2016 split file lists
  (`listed`), and every number between the first and last mask name (DAVIS
  frames are numbered consecutively), so a mask missing from the middle is
  reported even without JPEGs.
  """
  have = {p.stem for p in gt_paths}
  expected = set(listed)
  jpeg_dir = pathlib.Path(davis_path) / "JPEGImages" / "480p" / seq
  if jpeg_dir.is_dir():
    expected.update(n[:-4] for n in os.listdir(jpeg_dir)
                    if n.lower().endswith(".jpg") and not n.startswith("."))
  widths = {len(n) for n in have}
  if len(widths) == 1 and all(n.isdigit() for n in have):
    width = widths.pop()
    nums = sorted(int(n) for n in have)
    expected.update(f"{i:0{width}d}" for i in range(nums[0], nums[-1] + 1))
  missing = sorted(expected - have)
  if missing:
    ann = gt_paths[0].parent
    raise davis_io.DavisFormatError(
        f"sequence {seq}: missing ground-truth mask {ann / (missing[0] + '.png')}"
        f" ({len(missing)} frame(s) without one)")


def _listed(names, most=5):
  """'a, b, c' (the first `most`, then how many in all)."""
  shown = ", ".join(names[:most])
  return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


def _result_paths(results_path, seq, gt_names):
  """Result PNG of every evaluated frame: `<results>/<seq>/<frame>.png`.

  As the official `Results.read_masks`, only the evaluated frames are read
  (not the first and last, which the semi-supervised task never scores) and
  files that are not PNGs (an overlay GIF, `.DS_Store`) are ignored. Every
  PNG there must be named after a ground-truth frame, though: a PNG that is
  not one means the names are shifted or padded differently (predictions
  00001..00050 against frames 00000..00049 would otherwise be scored one
  frame off), so missing and extra names are reported together.
  """
  seq_dir = pathlib.Path(results_path) / seq
  if seq_dir.exists() and not seq_dir.is_dir():
    raise davis_io.DavisFormatError(
        f"sequence {seq}: results folder {seq_dir} is a file, not a folder")
  if not seq_dir.is_dir():
    raise davis_io.DavisFormatError(
        f"sequence {seq}: missing results folder {seq_dir}")
  present = {n[:-4] for n in os.listdir(seq_dir)
             if n.endswith(".png") and not n.startswith(".")}
  extra = sorted(present.difference(gt_names))
  if extra:
    missing = [n for n in gt_names if n not in present]
    raise davis_io.DavisFormatError(
        f"sequence {seq}: prediction names in {seq_dir} do not match the "
        f"ground-truth frames {gt_names[0]}..{gt_names[-1]}: missing "
        f"{_listed(missing) or 'none'}; extra {_listed(extra)}")
  missing = [n for n in gt_names[1:-1] if n not in present]
  if missing:
    raise davis_io.DavisFormatError(
        f"sequence {seq}: missing frame {seq_dir / (missing[0] + '.png')}"
        + (f" ({len(missing)} evaluated frames without a prediction: "
           f"{_listed(missing)})" if len(missing) > 1 else ""))
  return [seq_dir / f"{name}.png" for name in gt_names[1:-1]]


def _evaluate_one(davis_path, results_path, seq, year, exclude_void, listed):
  """Per-object figures of one sequence: list of (name, stats dict).

  Frame by frame: each ground-truth / prediction pair is decoded into the
  same two buffers and scored while it is in cache (no `[T, H, W]` arrays).
  """
  gt_paths = davis_io.mask_paths(davis_path, seq)
  _check_ground_truth(davis_path, seq, gt_paths, listed)
  # Official: frame names come from the ground truth; the semi-supervised
  # task never reads the first and last frames of the results.
  pred_paths = _result_paths(results_path, seq, [p.stem for p in gt_paths])
  first = _decode(gt_paths[0], None, seq, "ground truth")
  shape = first.shape
  g = np.empty(shape, np.uint8)
  p = np.empty(shape, np.uint8)
  # The last mask is not scored, but the official loader reads every mask.
  _decode(gt_paths[-1], g, seq, "ground truth")
  if year == 2016:
    first = first != 0
  # Official: N = the largest id of the first frame, void (255) excluded.
  n_objects = metrics.num_objects(first)
  rects = metrics.disk_rectangles(metrics.disk(metrics.bound_pix(*shape)))
  void_2017 = exclude_void and year == 2017
  j = np.ones((n_objects, len(pred_paths)))
  f = np.ones((n_objects, len(pred_paths)))
  for i, pred_path in enumerate(pred_paths):
    gt = _decode(gt_paths[i + 1], g, seq, "ground truth")
    # Only read: an unfiltered PNG's rows need not be copied into `p`.
    pred = _decode(pred_path, p, seq, "prediction", allow_view=True)
    if year == 2016:
      # Binary: any nonzero value is object 1 (0/255 or palette {0, 1}).
      gt = np.not_equal(gt, 0, out=g.view(bool)).view(np.uint8)
      pred = np.not_equal(pred, 0, out=p.view(bool)).view(np.uint8)
      top = 1 if n_objects else int(pred.max())  # Ids are now 0 or 1.
    else:
      top = int(pred.max())
    if top > n_objects:
      raise davis_io.DavisFormatError(
          f"sequence {seq}: {pred_path} has object id {top} but the "
          f"sequence has {n_objects} object(s)")
    void = None
    if void_2017:
      void = gt == davis_io.VOID_LABEL
      if not void.any():
        void = None
    metrics.score_frame(gt, pred, n_objects, rects, void,
                        binary=year == 2016 and n_objects == 1,
                        j_out=j[:, i], f_out=f[:, i])
  res = metrics.sequence_statistics(j, f)
  out = []
  for k in range(n_objects):
    out.append((f"{seq}_{k + 1}",
                {c: float(res[c][k]) for c in
                 ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
                  "F-Decay")}))
  return out


def evaluate_davis(davis_path, results_path, *, split="val", year=2016,
                   task="semi-supervised", sequences=None, write=True,
                   exclude_void=False):
  """Evaluates a results folder against DAVIS ground truth.

  Args:
    davis_path: DAVIS root (`Annotations/480p`, `ImageSets`).
    results_path: folder with one sub-folder of PNG masks per sequence.
    split: 'val', 'train', ... (a split file must exist for `year`).
    year: 2016 (binary masks) or 2017 (palette ids, 255 = void).
    task: only 'semi-supervised'.
    sequences: optional list of sequence names of the split to evaluate
      instead of all of it (an extension of the official CLI; like the
      official `DAVIS(sequences=...)`, in the given order; a name outside
      the split is an error); None = the whole split, in split-file order.
    write: write the two CSVs and results.json into `results_path`. Those
      three files are deleted first, so a failed evaluation leaves none of
      the previous run's behind.
    exclude_void: NOT the official protocol (which scores void pixels as
      background): drop ground-truth void pixels from both masks (2017 only).

  Returns:
    `{"global": {column: value}, "sequences": {"<seq>_<id>": {"J-Mean": ...,
    "F-Mean": ...}}}` with full-precision floats (NaN where a sequence has
    no evaluated frame).
  """
  if write:
    remove_results(results_path, split)
  year = int(year)
  if task not in TASKS:
    raise davis_io.DavisFormatError(
        f"--task {task!r} is not supported; expected one of {TASKS}")
  if year not in (2016, 2017):
    raise davis_io.DavisFormatError(
        f"--year {year!r} is not supported; expected 2016 or 2017")
  for flag, path in (("--davis_path", davis_path),
                     ("--results_path", results_path)):
    _check_folder(flag, path)
  names = _split_names(davis_path, split, year)
  if sequences is not None:
    # As the official DAVIS(sequences=[...]): the given names, in the given
    # order; they must belong to the split, or a train sequence would be
    # scored into the val figures.
    chosen = list(dict.fromkeys(sequences))
    if not chosen:
      raise davis_io.DavisFormatError("--sequences names no sequence")
    unknown = [s for s in chosen if s not in names]
    if unknown:
      raise davis_io.DavisFormatError(
          f"--sequences: {_listed(unknown)} "
          f"{'is' if len(unknown) == 1 else 'are'} not in --set {split} "
          f"(--year {year}) of {davis_path}")
    names = chosen
  listed = _split_mask_names(davis_path, split, year)

  rows = _evaluate_all(davis_path, results_path, names, year, exclude_void,
                      listed)
  results = summarize(rows)
  if write:
    write_results(results, results_path, split)
  return results


def _check_folder(flag, path):
  path = pathlib.Path(path)
  if path.is_dir():
    return
  what = "is a file, not a folder" if path.exists() else "not found"
  raise davis_io.DavisFormatError(f"{flag} {path} {what}")


def _split_names(davis_path, split, year):
  """The split's sequences; the error says whether the split file or the
  whole `ImageSets/` folder is missing, and which splits there are."""
  sets = pathlib.Path(davis_path) / "ImageSets"
  if not sets.is_dir():
    raise davis_io.DavisFormatError(
        f"--davis_path {davis_path} has no ImageSets/ folder (the split "
        f"files listing each set's sequences); point it at the DAVIS root, "
        f"the folder holding Annotations/, ImageSets/ and JPEGImages/")
  try:
    return davis_io.read_split(davis_path, split, year)
  except davis_io.DavisFormatError as e:
    folders = ("2017",) if year == 2017 else ("480p", "2016")
    known = sorted({p.stem for f in folders for p in (sets / f).glob("*.txt")})
    raise davis_io.DavisFormatError(
        f"unknown --set {split!r} for --year {year}: {e}; sets there: "
        f"{', '.join(known) or 'none'}") from e


def _result_files(results_path, split):
  root = pathlib.Path(results_path)
  return (root / f"global_results-{split}.csv",
          root / f"per-sequence_results-{split}.csv",
          root / "results.json")


def remove_results(results_path, split):
  """Deletes the evaluator's output files for `split` from results_path."""
  if "/" in str(split) or os.sep in str(split):
    raise davis_io.DavisFormatError(f"--set {split!r} is not a split name")
  for path in _result_files(results_path, split):
    try:
      os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
      pass
    except IsADirectoryError as e:
      raise davis_io.DavisFormatError(
          f"cannot replace {path}: it is a folder") from e


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
  """Writes the official CSVs and results.json atomically into results_path.

  Each file is replaced atomically (`davis_io.atomic_write`); if one of them
  cannot be written, the others are deleted too, so the folder never holds a
  mixed set.
  """
  paths = _result_files(results_path, split)
  texts = (global_csv(results), sequence_csv(results),
           json.dumps(_json_safe(results), indent=2) + "\n")
  try:
    for path, text in zip(paths, texts):
      davis_io.atomic_write(path, lambda f, t=text: f.write(t), mode="w")
  except BaseException:
    remove_results(results_path, split)
    raise
  return list(paths)


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
