r"""Wall time of the DAVIS evaluator on the whole DAVIS 2016 val set.

  python benchmarks/bench_evaluate.py [--davis_path ../shared/data/DAVIS]
      [--shift 3] [--repeats 5] [--skip_check] [--threads] [--baseline DIR]

Predictions are the ground truth shifted by `--shift` pixels (right and down)
with one frame in ten emptied, written once as palette PNGs (as inference
writes them) to a temp folder. Every timed run is the full folder evaluation
(`evaluate_davis`: PNG decoding and CSV/JSON writing included) in a fresh
process, `python -m vosjax.evaluate`'s situation (no JAX loaded: forked
workers); --repeats runs give min / median / max of wall time and of CPU
time (all threads and worker processes: less sensitive than wall time to
other jobs on a shared machine), with the load average over the runs.

Comparisons in the same run:
  * the plain transcription of the official code in tests/davis_reference.py
    (PIL decoding, whole-image seg2bmap and disk dilation, nothing from
    vosjax's metrics), once: its time, the speed-up, and the largest
    difference of any per-object J-Mean / F-Mean and global figure
    (skipped with --skip_check; it takes ~45 s of CPU);
  * `--threads`: the same evaluator with threads instead of processes (what
    the programs get after training, with JAX loaded);
  * `--baseline DIR` (another checkout, e.g. the last commit unpacked with
    `git archive HEAD | tar -x -C DIR`): that tree's evaluator on the same
    predictions. The variants alternate run by run, so all see the same
    load; their figures must be equal.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

# pylint: disable=g-import-not-at-top,wrong-import-position
from tests import davis_reference
from vosjax import davis_io
from vosjax.evaluation import png


def write_predictions(davis_path, out_dir, shift):
  for seq in davis_io.read_split(davis_path, "val", 2016):
    for i, p in enumerate(davis_io.mask_paths(davis_path, seq)):
      m = (davis_io.read_mask(p) > 0).astype(np.uint8)
      m = np.roll(m, (shift, shift), (0, 1))
      if i % 10 == 5:
        m[:] = 0
      davis_io.write_mask(out_dir / seq / p.name, m)


def official_like(davis_path, res_dir):
  """The official pipeline, transcribed (2016: binarised), on the folder."""
  names = davis_io.read_split(davis_path, "val", 2016)
  return davis_reference.ref_evaluate_folder(davis_path, res_dir, names, 2016)


_CHILD = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from vosjax.evaluation import davis
if sys.argv[4] == "threads":
  davis._fork_context = lambda: None  # What the programs get (JAX loaded).
def cpu():  # this process and its (reaped) worker processes, all threads
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system
t0, c0 = time.perf_counter(), cpu()
r = davis.evaluate_davis(sys.argv[2], sys.argv[3], split="val", year=2016)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": cpu() - c0,
                  "jf": r["global"]["J&F-Mean"], "results": r}))
"""


def timed_run(tree, davis_path, res_dir, mode="default"):
  """One evaluation by the code under `tree`, in a fresh process."""
  out = subprocess.run(
      [sys.executable, "-c", _CHILD, str(tree), str(davis_path), str(res_dir),
       mode],
      capture_output=True, text=True, check=True, cwd=str(tree))
  return json.loads(out.stdout.strip().splitlines()[-1])


def _largest_difference(a, b):
  diff = max(abs(a["global"][k] - b["global"][k]) for k in a["global"])
  for name, r in a["sequences"].items():
    for k in ("J-Mean", "F-Mean"):
      diff = max(diff, abs(b["sequences"][name][k] - r[k]))
  return diff


def _spread(values):
  return (f"min {min(values):.2f} / median {np.median(values):.2f} / max "
          f"{max(values):.2f} s")


def compare(variants, davis_path, res_dir, repeats):
  """Times `variants` [(name, tree, mode)] run by run, in fresh processes.

  Alternating the variants within every repeat gives them the same load on a
  shared machine. Prints wall and CPU (all threads and worker processes)
  min / median / max, and the largest difference from the first variant.
  """
  runs = {name: [] for name, _, _ in variants}
  loads = [os.getloadavg()[0]]
  for _ in range(repeats):
    for name, tree, mode in variants:
      runs[name].append(timed_run(tree, davis_path, res_dir, mode))
    loads.append(os.getloadavg()[0])
  first = runs[variants[0][0]][0]["results"]
  for name, rs in runs.items():
    diff = _largest_difference(first, rs[0]["results"])
    print(f"{name:18s}: wall {_spread([r['wall'] for r in rs])}; CPU "
          f"{_spread([r['cpu'] for r in rs])} over {len(rs)} fresh-process "
          f"runs; J&F-Mean {rs[0]['jf']:.6f}; largest difference from "
          f"{variants[0][0]}: {diff:.3g}")
  print(f"load avg (1 min) during these runs: {_spread(loads)[:-2]}")
  return runs


def main():
  parser = argparse.ArgumentParser()
  default_root = (pathlib.Path(__file__).resolve().parent.parent.parent
                  / "shared" / "data" / "DAVIS")
  parser.add_argument("--davis_path", default=str(default_root))
  parser.add_argument("--shift", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip_check", action="store_true",
                      help="skip the official-code transcription")
  parser.add_argument("--threads", action="store_true",
                      help="also time the thread pool the programs use "
                      "(JAX loaded: no fork)")
  parser.add_argument("--baseline", default=None,
                      help="another checkout to time against, run by run")
  args = parser.parse_args()
  davis_path = pathlib.Path(args.davis_path)
  names = davis_io.read_split(davis_path, "val", 2016)
  n_frames = sum(len(davis_io.mask_paths(davis_path, s)) for s in names)
  current = pathlib.Path(__file__).resolve().parent.parent
  variants = [("current", current, "default")]
  if args.threads:
    variants.append(("current (threads)", current, "threads"))
  if args.baseline:
    variants.append(("baseline", pathlib.Path(args.baseline).resolve(),
                     "default"))
  with tempfile.TemporaryDirectory() as tmp:
    res_dir = pathlib.Path(tmp)
    write_predictions(davis_path, res_dir, args.shift)
    print(f"DAVIS 2016 val: {len(names)} sequences, {n_frames} frames; "
          f"inflate: {png.inflate_backend()}; cpus: {os.cpu_count()}; "
          f"load avg: {os.getloadavg()[0]:.2f}")
    runs = compare(variants, davis_path, res_dir, args.repeats)
    if not args.skip_check:
      t0 = time.perf_counter()
      c0 = time.process_time()
      ref = official_like(davis_path, res_dir)
      t_ref = time.perf_counter() - t0
      c_ref = time.process_time() - c0
      cur = runs["current"]
      diff = _largest_difference(ref, cur[0]["results"])
      print(f"official-code transcription (one run, one thread): wall "
            f"{t_ref:.2f} s, CPU {c_ref:.2f} s; current is "
            f"{t_ref / np.median([r['wall'] for r in cur]):.1f}x faster "
            f"(median wall), {c_ref / np.median([r['cpu'] for r in cur]):.1f}x"
            f" less CPU; largest difference {diff:.3g}")


if __name__ == "__main__":
  main()
