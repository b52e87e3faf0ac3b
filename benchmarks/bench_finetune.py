"""Seconds per sequence-step of one-shot fine-tuning, per strategy.

  python benchmarks/bench_finetune.py [--model fc_i3d] [--frames 8]
      [--size 224] [--sequences 5] [--steps 2] [--repeats 3]
      [--host_devices 1,8] [--strategies scan,vmap,sequential]

For each host device count (each in its own subprocess, with
XLA_FLAGS=--xla_force_host_platform_device_count=N) it fine-tunes S
sequences for N steps on per-sequence pools of 2 batches (FC-I3D: batch 1,
2 clips of `frames x size x size`, clips_per_sequence=2 as in the issue;
OSVOS: batch --osvos_batch of `size x size` images) and prints seconds per
sequence-step for:

  scan, vmap   `vosjax.finetune.finetune(strategy=...)` on all devices;
  sequential   the plain loop: one jitted single-sequence step per call,
               sequence after sequence (what fine-tuning each alone costs);
  parent       one parent-training step (`train.make_train_step`, batch
               norm in training mode) on one clip of the same shape.

Paired: the variants are interleaved in every repeat of one process (the
machine is shared); the table gives the median over --repeats (and the min).
Compilation is excluded (one warm-up run of each). Losses are the programs'
own (`vosjax.programs.{fc_i3d,osvos}.segmentation_loss`), models at the
`fc_i3d_davis16` / `osvos_davis16` settings with random init (weights do not
change the cost). Models are registered in MODELS: `name -> builder(args)`
returning a `Bench`.
"""

import argparse
import functools
import os
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple


class Bench(NamedTuple):
  """What the timing loop needs of a model.

  Attributes:
    finetune_loss: the program's one-shot loss, `train.make_train_step`'s
      signature `(params, batch_stats, batch, rng, step) -> (loss, (stats,
      metrics))`.
    parent_loss: the same signature, parent-training mode.
    variables: `{'params': ..., 'batch_stats': ...}`.
    example_shape: one pool example, e.g. `(T, H, W)` or `(H, W)`.
    batch_size: examples per step.
  """
  finetune_loss: Callable[..., Any]
  parent_loss: Callable[..., Any]
  variables: Any
  example_shape: tuple
  batch_size: int


def _constant_side_weight(step):
  del step
  return 1.0


def _fc_i3d(args):
  """Full FC-I3D at the fc_i3d_davis16 settings (random init)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from experiments import fc_i3d_davis16
  from vosjax.programs import fc_i3d as program
  # pylint: enable=g-import-not-at-top
  config = fc_i3d_davis16.get_config()
  model = program.build_model(config.model)
  clip = (args.frames, args.size, args.size)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"),
                                  jnp.zeros((1,) + clip + (3,)))
  loss = lambda train_mode: functools.partial(
      program.segmentation_loss, model, _constant_side_weight, train_mode)
  return Bench(loss(False), loss(True), dict(variables), clip, 1)


def _osvos(args):
  """OSVOS's VGG16 at the osvos_davis16 settings (random init), on images
  of size x size; batch `--osvos_batch` (5 in train_online.py)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from experiments import osvos_davis16
  from vosjax.models import osvos
  from vosjax.programs import osvos as program
  # pylint: enable=g-import-not-at-top
  config = osvos_davis16.get_config()
  model = osvos.build_model(config.model)
  image = (args.size, args.size)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"),
                                  jnp.zeros((1,) + image + (3,)))
  variables = dict(variables)
  variables.setdefault("batch_stats", {})
  loss = functools.partial(program.segmentation_loss, model,
                           _constant_side_weight)
  return Bench(loss, loss, variables, image, args.osvos_batch)


MODELS = {"fc_i3d": _fc_i3d, "osvos": _osvos}


def run_one(args):
  """Times every variant on this process's devices; prints table rows."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from vosjax import finetune as ft
  from vosjax import sharding
  from vosjax import train
  # pylint: enable=g-import-not-at-top

  bench = MODELS[args.model](args)
  tx, _ = train.make_optimizer({"learning_rate": 1e-4, "momentum": 0.9,
                                "weight_decay": 2e-4})
  num_seq, steps = args.sequences, args.steps
  rng = np.random.default_rng(0)
  pool_shape = (num_seq, 2 * bench.batch_size) + bench.example_shape
  data = {"frames": rng.integers(0, 256, pool_shape + (3,), np.uint8),
          "labels": (rng.random(pool_shape) > 0.7).astype(np.float32)}
  params = ft.broadcast(bench.variables["params"], num_seq)
  state = ft.broadcast(bench.variables["batch_stats"], num_seq)
  rngs = jax.random.split(jax.random.key(1), num_seq)
  mesh = sharding.make_mesh()

  def strategy_run(strategy):
    return lambda: ft.finetune(
        bench.finetune_loss, tx, params, data, rngs, num_steps=steps,
        batch_size=bench.batch_size, model_state=state, mesh=mesh,
        strategy=strategy).losses

  step = jax.jit(functools.partial(ft._sequence_step, bench.finetune_loss,  # pylint: disable=protected-access
                                   tx, bench.batch_size, True), donate_argnums=(0, 1))

  def sequential():
    out = []
    for s in range(num_seq):
      take = lambda t, s=s: jax.tree.map(lambda x: jax.numpy.array(x[s]), t)
      p, st, d = take(params), take(state), take(data)
      o = tx.init(p)
      for i in range(steps):
        p, o, st, loss = step(p, o, st, d, rngs[s], i)
      out.append(loss)
    return out

  parent_step = jax.jit(train.make_train_step(bench.parent_loss),
                        donate_argnums=0)
  one_clip = jax.tree.map(lambda x: x[0, :bench.batch_size], data)
  pstate = [train.TrainState.create(
      apply_fn=None, params=bench.variables["params"], tx=tx,
      batch_stats=bench.variables["batch_stats"])]

  def parent():
    for _ in range(steps):
      pstate[0], metrics = parent_step(pstate[0], one_clip,
                                       jax.random.key(0))
    return metrics["loss"]

  variants = {f"finetune {s}": (strategy_run(s), num_seq * steps)
              for s in args.strategies.split(",") if s != "sequential"}
  if "sequential" in args.strategies.split(","):
    variants["sequential loop"] = (sequential, num_seq * steps)
  variants["parent step"] = (parent, steps)
  times = {name: [] for name in variants}
  for name, (fn, _) in variants.items():
    t = time.perf_counter()
    jax.block_until_ready(fn())  # Warm-up: compile.
    print(f"  [{jax.device_count()} dev] {name}: warm-up (compile) "
          f"{time.perf_counter() - t:.1f} s", flush=True)
  for _ in range(args.repeats):
    for name, (fn, count) in variants.items():
      t = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append((time.perf_counter() - t) / count)
  parent_med = float(np.median(times["parent step"]))
  for name, ts in times.items():
    med = float(np.median(ts))
    print(f"| {jax.device_count()} | {name} | {med:.3f} | {min(ts):.3f} | "
          f"{med / parent_med:.2f}x |", flush=True)


sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="fc_i3d", choices=sorted(MODELS))
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--size", type=int, default=224,
                      help="crop size; e.g. 112 for a run of minutes on CPU")
  parser.add_argument("--osvos_batch", type=int, default=5)
  parser.add_argument("--sequences", type=int, default=5)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--strategies", default="scan,vmap,sequential")
  parser.add_argument("--host_devices", default="1,8",
                      help="comma-separated host CPU device counts")
  parser.add_argument("--_child", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:  # pylint: disable=protected-access
    run_one(args)
    return
  print(f"model {args.model}, clip {args.frames}x{args.size}x{args.size}, "
        f"batch 1, {args.sequences} sequences x {args.steps} steps, "
        f"{args.repeats} paired repeats, {os.cpu_count()} CPUs")
  print("| devices | variant | s per sequence-step (median) | min | "
        "vs parent step |")
  print("|---|---|---|---|---|")
  for n in args.host_devices.split(","):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={n}")
    env.setdefault("JAX_PLATFORMS", "cpu")
    argv = [a for a in sys.argv[1:] if not a.startswith("--_child")]
    subprocess.run([sys.executable, __file__, *argv, f"--_child={n}"],
                   env=env, check=True)


if __name__ == "__main__":
  main()
