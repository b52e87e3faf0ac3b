r"""Frames per second of FC-I3D tiled inference, per tile batch size.

  python benchmarks/bench_inference.py [--batch_sizes 1,2,4,8] [--repeats 2]
      [--frames 16] [--height 480] [--width 854] [--tile 224] [--stride 224]
      [--clip_len 16] [--clip_stride 16] [--baseline DIR]

The model is FC-I3D at the `fc_i3d_davis16` settings (Kinetics-400 I3D
widths, the paper's four taps, 16 side features), random init: weights do
not change the cost. The clip is `frames x height x width` random RGB
(DAVIS 480p by default), cut by `vosjax.inference.tiled_logits` into
windows exactly as `vosjax.programs.fc_i3d` calls it, with the tiling of
`experiments/fc_i3d_davis16_cpu.py` by default (tile 224, stride 224, clip
length and stride 16: 3 x 4 = 12 windows per 16 frames of 480x854).

For each batch size (windows per model call) it prints the first call's
time (compilation and one run) and the steady-state frames per second over
--repeats further calls (min / median / max), so one sees whether larger
tile batches lose throughput, and the largest logit difference from the
first batch size (the batch size must not change the result).

Each tree runs in a fresh process. `--baseline DIR` (another checkout, e.g.
`git archive HEAD | tar -x -C DIR`) first runs the same measurements with
that tree's `vosjax`; rows are printed side by side per batch size. CPU
s/frame (all threads of the process) is less sensitive than wall time to
other jobs on a shared machine.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
args = json.loads(sys.argv[2])
import jax
import jax.numpy as jnp
import numpy as np
from experiments import fc_i3d_davis16
from vosjax import image, inference
from vosjax.programs import fc_i3d

config = fc_i3d_davis16.get_config()
config.model.init = "random"
model = fc_i3d.build_model(config.model)
# rbg: threefry initialisation compiles for minutes on XLA:CPU.
variables = fc_i3d.init_variables(
    model, config.model, (1, 8, 32, 32, 3), jax.random.key(0, impl="rbg"))
apply_fn = fc_i3d._apply_fused(model)  # The function the program tiles with.
rgb = np.random.default_rng(0).integers(
    0, 256, (args["frames"], args["height"], args["width"], 3), np.uint8)
frames = np.asarray(image.to_model_range(rgb))
def cpu():  # This process, all threads (XLA's included).
  t = os.times()
  return t.user + t.system
for bs in args["batch_sizes"]:
  def call():
    out = inference.tiled_logits(
        apply_fn, frames, params=variables, tile=args["tile"],
        stride=args["stride"], clip_len=args["clip_len"],
        clip_stride=args["clip_stride"], batch_size=bs)
    return np.asarray(jax.block_until_ready(out))
  t0 = time.perf_counter()
  logits = call()
  first = time.perf_counter() - t0
  times, cpus = [], []
  for _ in range(args["repeats"]):
    t0, c0 = time.perf_counter(), cpu()
    call()
    times.append(time.perf_counter() - t0)
    cpus.append(cpu() - c0)
  np.save(args["out"] + f"/logits_{bs}.npy", logits)
  print(json.dumps({"batch_size": bs, "first": first, "times": times,
                    "cpu": cpus, "load": os.getloadavg()[0]}), flush=True)
"""


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_sizes", default="1,2,4,8")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--height", type=int, default=480)
  parser.add_argument("--width", type=int, default=854)
  # experiments/fc_i3d_davis16_cpu.py: tile 224, stride 224, clip 16 / 16.
  parser.add_argument("--tile", type=int, default=224)
  parser.add_argument("--stride", type=int, default=224)
  parser.add_argument("--clip_len", type=int, default=16)
  parser.add_argument("--clip_stride", type=int, default=16)
  parser.add_argument("--baseline", default=None,
                      help="another checkout to time against")
  args = parser.parse_args(argv)
  try:
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
  except ValueError:
    parser.error(f"--batch_sizes {args.batch_sizes!r}: expected e.g. 1,2,4,8")
  if not args.batch_sizes or min(args.batch_sizes) < 1:
    parser.error("--batch_sizes must name batch sizes >= 1")
  for flag in ("repeats", "frames", "height", "width", "tile", "stride",
               "clip_len", "clip_stride"):
    if getattr(args, flag) < 1:
      parser.error(f"--{flag} must be >= 1")
  return args


def _windows(size, window, stride):
  # Same placement as vosjax.inference.window_starts (kept independent so a
  # baseline tree without it can be compared).
  if size <= window:
    return 1
  starts = list(range(0, size - window + 1, stride))
  return len(starts) + (starts[-1] != size - window)


def _run_tree(tree, args, batch_sizes, out_dir):
  """Measurements of `batch_sizes` with `tree`'s vosjax, in a fresh process."""
  child_args = dict(vars(args), batch_sizes=batch_sizes, out=str(out_dir))
  child_args.pop("baseline")
  proc = subprocess.run(
      [sys.executable, "-c", _CHILD, str(tree), json.dumps(child_args)],
      capture_output=True, text=True, cwd=str(tree), check=False)
  if proc.returncode:
    sys.exit(f"benchmark child for {tree} failed:\n{proc.stderr[-3000:]}")
  return [json.loads(line) for line in proc.stdout.splitlines()
          if line.startswith("{")]


def main(argv=None):
  args = _parse_args(argv)
  # Imported here so --help works without JAX.
  import numpy as np  # pylint: disable=g-import-not-at-top
  current = pathlib.Path(__file__).resolve().parent.parent
  trees = [("current", current)]
  if args.baseline:
    trees.insert(0, ("baseline", pathlib.Path(args.baseline).resolve()))
  n_win = (_windows(args.frames, args.clip_len, args.clip_stride)
           * _windows(args.height, args.tile, args.stride)
           * _windows(args.width, args.tile, args.stride))
  print(f"FC-I3D tiled inference: {args.frames}x{args.height}x{args.width} "
        f"clip, tile {args.tile} stride {args.stride}, clip_len "
        f"{args.clip_len} clip_stride {args.clip_stride}: {n_win} windows; "
        f"cpus {os.cpu_count()}; load avg {os.getloadavg()[0]:.2f}",
        flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    rows = {}
    for name, tree in trees:
      out_dir = pathlib.Path(tmp) / name
      out_dir.mkdir()
      rows[name] = _run_tree(tree, args, args.batch_sizes, out_dir)
      for row in rows[name]:
        row["logits"] = np.load(out_dir / f"logits_{row['batch_size']}.npy")
    reference = rows["current"][0]["logits"]
    for i, bs in enumerate(args.batch_sizes):
      for name, _ in trees:
        row = rows[name][i]
        diff = float(np.max(np.abs(row["logits"] - reference)))
        fps = sorted(args.frames / t for t in row["times"])
        cpu = statistics.median(row["cpu"]) / args.frames
        print(f"{name:8s} batch {bs:2d}: {-(-n_win // bs):2d} model calls; "
              f"first call (compile + run) {row['first']:6.1f} s; frames/s "
              f"min {fps[0]:.3f} median {statistics.median(fps):.3f} max "
              f"{fps[-1]:.3f} over {len(fps)} runs; CPU {cpu:.2f} s/frame; "
              f"max |logit - current batch {args.batch_sizes[0]}| "
              f"{diff:.2g}; load avg {row['load']:.2f}")

if __name__ == "__main__":
  main()
