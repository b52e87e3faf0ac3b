"""Wall time per sequence: S fine-tunings batched vs one at a time.

  python benchmarks/bench_finetune.py [--steps 20] [--sizes 1,4,8]
      [--host_devices N]

A small 3-D conv net (conv3d 3x3x3 x8 -> relu -> conv3d 1x1x1 -> logits) is
fine-tuned with Adam on per-sequence pools of 4 clips of 4x32x32x3, batch 1.
"batched" runs `vosjax.finetune.finetune` once on S sequences; "sequential"
calls it S times with S=1 (the same compiled step count, one sequence per
program). Compilation is excluded (one warm-up call of each shape); the
figure is the median of --repeats timed runs, divided by S.
"""

import argparse
import os
import sys
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--sizes", default="1,4,8")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--host_devices", type=int, default=0,
                      help="force this many host CPU devices (0: as is)")
  args = parser.parse_args()
  if args.host_devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count="
                               f"{args.host_devices}")
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  # pylint: disable=g-import-not-at-top
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from vosjax import finetune as ft
  # pylint: enable=g-import-not-at-top

  class Net3D(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(8, (3, 3, 3), name="conv1")(x))
      return nn.Conv(1, (1, 1, 1), name="head")(x)[..., 0]

  net = Net3D()

  def loss_fn(params, batch, rng):
    del rng
    logits = net.apply({"params": params}, batch["clip"])
    return optax.sigmoid_binary_cross_entropy(logits, batch["mask"]).mean()

  optimizer = optax.adam(1e-3)
  clip_shape = (4, 32, 32, 3)
  parent = net.init(jax.random.key(0), jnp.zeros((1,) + clip_shape))["params"]
  rng = np.random.default_rng(0)

  def problem(s):
    clips = rng.normal(size=(s, 4) + clip_shape).astype(np.float32)
    data = {"clip": jnp.asarray(clips),
            "mask": jnp.asarray((clips[..., 0] > 0).astype(np.float32))}
    return ft.broadcast(parent, s), data, jax.random.split(
        jax.random.key(1), s)

  def timed(fn):
    jax.block_until_ready(fn())  # Warm-up: compile.
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - t)
    return float(np.median(times))

  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, "
        f"steps: {args.steps}, clip {clip_shape}, batch 1")
  print(f"{'S':>3} {'batched s/seq':>14} {'sequential s/seq':>17} "
        f"{'speed-up':>9}")
  for s in [int(v) for v in args.sizes.split(",")]:
    params, data, rngs = problem(s)
    batched = timed(lambda: ft.finetune(
        loss_fn, optimizer, params, data, rngs, num_steps=args.steps,
        batch_size=1).losses) / s
    singles = [jax.tree.map(lambda x, i=i: x[i:i + 1], (params, data, rngs))
               for i in range(s)]
    sequential = timed(lambda: [ft.finetune(
        loss_fn, optimizer, p, d, r, num_steps=args.steps,
        batch_size=1).losses for p, d, r in singles]) / s
    print(f"{s:>3} {batched:>14.4f} {sequential:>17.4f} "
          f"{sequential / batched:>8.2f}x")


if __name__ == "__main__":
  main()
