r"""Wall time of the DAVIS evaluator on the whole DAVIS 2016 val set.

  python benchmarks/bench_evaluate.py [--davis_path ../shared/data/DAVIS]
      [--shift 3] [--repeats 3] [--check] [--baseline DIR]

Predictions are the ground truth shifted by `--shift` pixels (right and down)
with one frame in ten emptied, written once as palette PNGs (as inference
writes them) to a temp folder. The timed call is the full folder evaluation,
PNG decoding and CSV/JSON writing included. `--check` also runs the plain
transcription of the official code in tests/davis_reference.py (PIL decoding,
whole-image seg2bmap and disk dilation, nothing from vosjax's metrics) and
prints the largest difference of any per-object J-Mean / F-Mean and global
figure, and its time.

`--baseline DIR` (another checkout of the repository, e.g. the last commit
unpacked with `git archive HEAD | tar -x -C DIR`) times that tree's evaluator
on the same predictions, alternating baseline and current run by run, each
run in a fresh process (`python -m vosjax.evaluate`'s situation: no JAX
loaded), so both see the same load on a shared machine. The figures of the
two must be equal.
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
from vosjax.evaluation import davis as evdavis
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
def cpu():  # this process and its (reaped) worker processes, all threads
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system
t0, c0 = time.perf_counter(), cpu()
r = davis.evaluate_davis(sys.argv[2], sys.argv[3], split="val", year=2016)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": cpu() - c0,
                  "jf": r["global"]["J&F-Mean"], "results": r}))
"""


def timed_run(tree, davis_path, res_dir):
  """One evaluation by the code under `tree`, in a fresh process."""
  out = subprocess.run(
      [sys.executable, "-c", _CHILD, str(tree), str(davis_path), str(res_dir)],
      capture_output=True, text=True, check=True, cwd=str(tree))
  return json.loads(out.stdout.strip().splitlines()[-1])


def paired(baseline, davis_path, res_dir, repeats):
  current = pathlib.Path(__file__).resolve().parent.parent
  runs = {"baseline": [], "current": []}
  for _ in range(repeats):
    for name, tree in (("baseline", baseline), ("current", current)):
      runs[name].append(timed_run(tree, davis_path, res_dir))
  for name, rs in runs.items():
    walls = [r["wall"] for r in rs]
    print(f"{name:9s} ({'HEAD tree' if name == 'baseline' else 'working tree'}"
          f"): wall best {min(walls):.2f} s, median {np.median(walls):.2f} s "
          f"over {len(walls)} fresh-process runs; CPU (all threads and "
          f"processes) median {np.median([r['cpu'] for r in rs]):.2f} s; "
          f"J&F-Mean "
          f"{rs[0]['jf']:.6f}")
  a, b = runs["baseline"][0]["results"], runs["current"][0]["results"]
  diff = max(abs(a["global"][k] - b["global"][k]) for k in a["global"])
  for name, r in a["sequences"].items():
    for k in ("J-Mean", "F-Mean"):
      diff = max(diff, abs(b["sequences"][name][k] - r[k]))
  print(f"largest difference baseline vs current: {diff:.3g}")


def main():
  parser = argparse.ArgumentParser()
  default_root = (pathlib.Path(__file__).resolve().parent.parent.parent
                  / "shared" / "data" / "DAVIS")
  parser.add_argument("--davis_path", default=str(default_root))
  parser.add_argument("--shift", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--check", action="store_true")
  parser.add_argument("--baseline", default=None,
                      help="another checkout to time against, run by run")
  args = parser.parse_args()
  davis_path = pathlib.Path(args.davis_path)
  names = davis_io.read_split(davis_path, "val", 2016)
  n_frames = sum(len(davis_io.mask_paths(davis_path, s)) for s in names)
  with tempfile.TemporaryDirectory() as tmp:
    res_dir = pathlib.Path(tmp)
    write_predictions(davis_path, res_dir, args.shift)
    print(f"DAVIS 2016 val: {len(names)} sequences, {n_frames} frames; "
          f"inflate: {png.inflate_backend()}; cpus: {os.cpu_count()}; "
          f"load avg: {os.getloadavg()[0]:.2f}")
    times, cpu = [], []
    for _ in range(args.repeats):
      t0, c0 = time.perf_counter(), time.process_time()
      results = evdavis.evaluate_davis(davis_path, res_dir, split="val",
                                       year=2016, write=True)
      times.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
    # CPU time (all threads) is less sensitive than wall time to other jobs on
    # a shared machine: wall ~= CPU / cores when the machine is otherwise idle.
    print(f"vosjax.evaluation: wall best {min(times):.2f} s, median "
          f"{np.median(times):.2f} s over {len(times)} runs "
          f"({min(times) / n_frames * 1e3:.2f} ms/frame); main-process CPU best "
          f"{min(cpu):.2f} s; J&F-Mean {results['global']['J&F-Mean']:.6f}; "
          f"load avg after: {os.getloadavg()[0]:.2f}")
    if args.baseline:
      paired(pathlib.Path(args.baseline).resolve(), davis_path, res_dir,
             args.repeats)
    if args.check:
      t0, c0 = time.perf_counter(), time.process_time()
      ref = official_like(davis_path, res_dir)
      t_ref = time.perf_counter() - t0
      c_ref = time.process_time() - c0
      diff = max(abs(results["global"][k] - ref["global"][k])
                 for k in ref["global"])
      for name, r in ref["sequences"].items():
        for k in ("J-Mean", "F-Mean"):
          diff = max(diff, abs(results["sequences"][name][k] - r[k]))
      print(f"official-code transcription: wall {t_ref:.2f} s, CPU "
            f"{c_ref:.2f} s; largest difference {diff:.3g}")


if __name__ == "__main__":
  main()
