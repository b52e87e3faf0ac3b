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

Two sessions run side by side, step by step (paired, so a busy machine
slows both alike): 'incremental' (the default session: each interaction's
nearest references found once and merged) and 'brute' (`incremental=False`:
retrieval over the whole merged pool on every change, the previous
behaviour). After every step both sessions' labels must be identical.

  python benchmarks/bench_interactive.py [--frames 50] [--dim 128] [--k 1]
"""

import argparse
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
  args = parser.parse_args()
  size, feat = (480, 854), (60, 107)
  emb = jax.random.normal(jax.random.PRNGKey(0),
                          (args.frames, *feat, args.dim))
  emb = emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)
  sessions = {"incremental": interactive.InteractiveSession(emb, size,
                                                            k=args.k)}
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
    if len(sessions) > 1:
      a, b = (np.asarray(s.segmentation(full_res=False))
              for s in sessions.values())
      if not np.array_equal(a, b):
        raise AssertionError("incremental and brute-force labels differ")

  def report(name, n, dts, compile_s=None):
    view, full = np.median(np.array(dts), 0) * 1e3
    extra = "" if compile_s is None else (
        f" (median of {len(dts)}; first call incl. compile "
        f"{compile_s * 1e3:.0f} ms)")
    print(f"{name:30s} {n:12s} view {view:8.1f} ms  all {full:8.1f} ms"
          f"{extra}")

  last = {}
  for name, frame, fn in steps:
    times = {n: [] for n in sessions}
    compile_s = {}
    for r in range(args.repeats + 1):
      for n, session in sessions.items():
        i, dt = timed(session, fn, frame)
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
      report(name, n, times[n], compile_s[n])
  for n, session in sessions.items():
    _, dt = timed(session, lambda s, n=n: s.remove(last[n]), 0)
    report("remove (mask)", n, [dt])
  same()
  print("labels identical after every step" if len(sessions) > 1 else "")


if __name__ == "__main__":
  main()
