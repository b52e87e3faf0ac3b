"""Latency per interaction of the PML interactive session.

A 50-frame 480p video (854x480) with random embeddings at 1/8 resolution
(60x107, d = 128, L2-normalised): the session is built once, then each
interaction (clicks, a scribble, a first-frame mask, a removal) re-segments
all 50 frames by 1-NN retrieval. Two wall-clock latencies per step: 'view'
until the low-resolution labels of every frame and the full-resolution
labels of the frame interacted on are ready on device (what a UI shows),
'all' until the full-resolution labels of all 50 frames are (the previous
benchmark's figure). The first call of each step compiles and is reported
apart.

Sessions run side by side, step by step (paired, so a busy machine slows
all alike): 'incremental' (the default session: distances only to the cells
an interaction adds to the pool's support, kept per block and merged),
'brute' (`incremental=False`: retrieval over the whole merged pool on every
change) and, with --before PATH, 'before': the same session class from
another copy of vosjax/interactive.py (e.g. the previous commit's). After
every step all sessions' labels must be identical. Each figure is
min / median / max over --repeats timed calls (the interaction removed in
between). Printed with them: the load average before and after, the
distance FLOPs of each step and the rate of a plain matmul-and-min over the
same queries measured in the same run (the floor a step's time can reach on
this machine).

  nice -n 5 python benchmarks/bench_interactive.py [--frames 50] [--dim 128]
      [--k 1] [--repeats 3] [--before /tmp/interactive_old.py]
"""

import argparse
import importlib.util
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from vosjax import interactive  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, default=50)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--k", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--skip_brute", action="store_true",
                      help="time the incremental session alone")
  parser.add_argument("--steps", default="",
                      help="comma-separated step names to run (default all)")
  parser.add_argument("--before", default=None,
                      help="another interactive.py to time beside this one")
  args = parser.parse_args()
  load0 = os.getloadavg()
  size, feat = (480, 854), (60, 107)
  emb = jax.random.normal(jax.random.PRNGKey(0),
                          (args.frames, *feat, args.dim))
  emb = emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)
  sessions = {"incremental": interactive.InteractiveSession(emb, size,
                                                            k=args.k)}
  if args.before:
    spec = importlib.util.spec_from_file_location("before", args.before)
    before = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(before)
    sessions["before"] = before.InteractiveSession(emb, size, k=args.k)
  if not args.skip_brute:
    sessions["brute"] = interactive.InteractiveSession(
        emb, size, k=args.k, incremental=False)
  mask = np.zeros(size, np.uint8)
  mask[100:300, 200:500] = 1

  def timed(session, fn, frame):
    t0 = time.perf_counter()
    out = fn(session)
    session.segmentation(full_res=False).block_until_ready()
    session.segmentation(frames=[frame]).block_until_ready()
    t1 = time.perf_counter()
    session.segmentation().block_until_ready()
    return out, (t1 - t0, time.perf_counter() - t0)

  steps = [
      ("click", 0, lambda s: s.add_click(0, 300, 200, 1)),
      ("background click", 0, lambda s: s.add_click(0, 20, 20, 0)),
      ("scribble", 3, lambda s: s.add_scribble(
          3, [[100, 100], [400, 300], [700, 200]], 1, thickness=16)),
      ("first-frame mask (6420 refs)", 0, lambda s: s.add_mask(0, mask)),
  ]
  print(f"device: {jax.devices()[0].device_kind}; video {args.frames}x"
        f"{size[0]}x{size[1]}, embeddings {feat} d={args.dim}, k={args.k}; "
        f"sessions {', '.join(sessions)} (paired, step by step)")

  def same():
    labels = {n: np.asarray(s.segmentation(full_res=False))
              for n, s in sessions.items()}
    for n, lab in labels.items():
      if not np.array_equal(lab, labels["incremental"]):
        raise AssertionError(f"incremental and {n} labels differ")

  rate = _matmul_rate(sessions["incremental"])
  print(f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; plain "
        f"matmul-and-min over the same queries: {rate / 1e9:.1f} GFLOP/s")

  def report(name, n, dts, compile_s=None, flops=None):
    dts = np.array(dts) * 1e3
    view, full = (" / ".join(f"{v:.0f}" for v in (np.min(c), np.median(c),
                                                  np.max(c)))
                  for c in dts.T)
    extra = "" if compile_s is None else (
        f" ({len(dts)} calls; first incl. compile {compile_s * 1e3:.0f} ms)")
    if flops and n == "incremental":
      extra += (f"; {flops / 1e9:.1f} GFLOP of distances, floor at plain "
                f"matmul rate {flops / rate * 1e3:.0f} ms")
    print(f"{name:30s} {n:11s} view {view:>20s} ms  all {full:>20s} ms"
          f"{extra}")

  if args.steps:
    steps = [s for s in steps if s[0].split(" (")[0] in args.steps.split(",")]
  print("figures: min / median / max")
  last = {}
  for name, frame, fn in steps:
    times = {n: [] for n in sessions}
    compile_s = {}
    for r in range(args.repeats + 1):
      for n, session in sessions.items():
        cells = session.distance_cells if n == "incremental" else 0
        i, dt = timed(session, fn, frame)
        if n == "incremental":
          flops = _flops(session, session.distance_cells - cells)
        last[n] = i
        if r == 0:
          compile_s[n] = dt[1]
        else:
          times[n].append(dt)
      same()
      if r < args.repeats:
        for n, session in sessions.items():
          session.remove(last[n])
          # Dispatch is asynchronous: finish it before the next timing.
          session.segmentation().block_until_ready()
    for n in sessions:
      report(name, n, times[n], compile_s[n], flops)
  for n, session in sessions.items():
    _, dt = timed(session, lambda s, n=n: s.remove(last[n]), 0)
    report(f"remove ({steps[-1][0].split(' (')[0]})", n, [dt])
  same()
  print("labels identical after every step" if len(sessions) > 1 else "")
  load1 = os.getloadavg()
  print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


def _flops(session, cells):
  """Multiply-adds x 2 of an update over `cells` references (padded)."""
  if not cells:
    return 0
  n, dim, tile = session._query_t.shape  # pylint: disable=protected-access
  block, num_blocks, _ = interactive.plan_blocks(cells)
  return 2 * n * tile * block * num_blocks * dim


def _matmul_rate(session, refs=1024):
  """FLOP/s of `min(r @ e_t)` over the session's query tiles: the matmul
  without the nearest-index bookkeeping."""
  query_t = session._query_t  # pylint: disable=protected-access
  r = query_t[0, :, :refs].T

  @jax.jit
  def run(query_t, r):
    return jax.lax.map(lambda e_t: jnp.min(r @ e_t, 0), query_t)

  run(query_t, r).block_until_ready()
  best = np.inf
  for _ in range(3):
    t0 = time.perf_counter()
    run(query_t, r).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  n, dim, tile = query_t.shape
  return 2 * n * tile * r.shape[0] * dim / best


if __name__ == "__main__":
  main()
