"""Latency per interaction of the PML interactive session.

A 50-frame 480p video (854x480) with random embeddings at 1/8 resolution
(60x107, d = 128, L2-normalised): the session is built once, then each
interaction (clicks, a scribble, a first-frame mask, a removal) re-segments
all 50 frames by 1-NN retrieval and upsamples to full resolution. Timing is
wall clock until the full-resolution labels are ready on device; the first
call of each pool-size bucket compiles and is reported apart.

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
  args = parser.parse_args()
  size, feat = (480, 854), (60, 107)
  emb = jax.random.normal(jax.random.PRNGKey(0),
                          (args.frames, *feat, args.dim))
  emb = emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)
  session = interactive.InteractiveSession(emb, size, k=args.k)
  mask = np.zeros(size, np.uint8)
  mask[100:300, 200:500] = 1

  def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    session.segmentation().block_until_ready()
    return out, time.perf_counter() - t0

  steps = [
      ("click (pool bucket 256)", lambda: session.add_click(0, 300, 200, 1)),
      ("background click", lambda: session.add_click(0, 20, 20, 0)),
      ("scribble", lambda: session.add_scribble(
          3, [[100, 100], [400, 300], [700, 200]], 1, thickness=16)),
      ("first-frame mask (6420 refs, bucket 8192)",
       lambda: session.add_mask(0, mask)),
  ]
  print(f"device: {jax.devices()[0].device_kind}; video {args.frames}x"
        f"{size[0]}x{size[1]}, embeddings {feat} d={args.dim}, k={args.k}")
  for name, fn in steps:
    ids, times, compile_s = [], [], None
    for r in range(args.repeats + 1):
      i, dt = timed(fn)
      ids.append(i)
      if r == 0:
        compile_s = dt
      else:
        times.append(dt)
      if r < args.repeats:
        session.remove(i)
    print(f"{name:42s} latency {np.median(times) * 1e3:8.1f} ms "
          f"(median of {args.repeats}; first call incl. compile "
          f"{compile_s * 1e3:.0f} ms)")
  _, dt = timed(lambda: session.remove(ids[-1]))
  print(f"{'remove':42s} latency {dt * 1e3:8.1f} ms")


if __name__ == "__main__":
  main()
