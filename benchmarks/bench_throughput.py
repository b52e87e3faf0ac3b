r"""Training and inference throughput of FC-I3D and OSVOS, float32 vs bfloat16.

  python benchmarks/bench_throughput.py [--models fc_i3d,osvos]
      [--dtypes float32,bfloat16] [--batch 2] [--frames 16] [--size 224]
      [--osvos_size 480x854] [--width_multiplier 1.0] [--repeats 5]
      [--skip_train] [--skip_inference] [--peak_tflops X]

Cases, one row per model, mode and compute dtype (`config.model.compute_dtype`:
bf16 convolutions, float32 parameters, optimiser state, batch-norm statistics,
logits and loss):

* FC-I3D `train`: one parent training step as the program runs it
  (`vosjax.programs.fc_i3d.segmentation_loss` with batch norm in training
  mode, deep supervision, SGD with momentum and weight decay) on clips
  [batch, frames, size, size, 3]; throughput in clips/s.
* FC-I3D `infer`: the fused logits of the same clips; frames/s
  (batch * frames per call).
* OSVOS `train`: one parent step (`vosjax.programs.osvos.segmentation_loss`,
  the per-group SGD of OSVOS-PyTorch) on images [batch, H, W, 3]; images/s
  (an OSVOS training sample is one frame).
* OSVOS `infer`: fused logits of the same images; frames/s.
* `masktrack` `train` / `infer`: the same network with MaskTrack's 4-channel
  input (RGB + the previous mask, `vosjax.models.masktrack`) and the same
  loss (MaskTrack's program weights the same BCE terms; the cost is the
  network's).

`measure(argv)` returns the rows as dicts (benchmarks/accelerator_report.py
records them); `main` prints them as a table.

Each case is jitted and compiled ahead of time (compile time reported), one
warm-up call is excluded, and the median of --repeats calls ended by
`block_until_ready` is reported. FLOPs per call come from the compiled
program's `cost_analysis()` (XLA's count for the whole step, forward and
backward included), so FLOP/s = FLOPs / median time. Utilisation = FLOP/s
over the chip's peak: --peak_tflops when given, else the table PEAK_TFLOPS
for known accelerators (dense, no sparsity), none on CPU. Parameters are
random (drawn in NumPy: no initialisation compile); throughput does not
depend on their values.
"""

import argparse
import os
import statistics
import sys
import time

# Dense (no 2:4 sparsity) peak TFLOP/s per chip: (bfloat16, float32 as JAX
# computes it by default). Sources: NVIDIA H100 Tensor Core GPU datasheet
# (SXM: BF16 1,979 and TF32 989 TFLOPS "with sparsity", halved for dense;
# PCIe: 1,513 and 756); NVIDIA H200 datasheet (same tensor-core figures as
# H100 SXM); Google Cloud TPU docs, "TPU v4" (275 TFLOPs bf16 per chip) and
# "TPU v5e" (197 TFLOPs bf16 per chip). float32 column: XLA:GPU runs float32
# convolutions and matmuls on TF32 tensor cores by default (JAX's default
# matmul precision), XLA:TPU with one bf16 pass, so their peaks apply.
PEAK_TFLOPS = (
    # (substring of jax's device_kind, name, bf16, float32)
    ("H100 PCIe", "H100 PCIe", 756.0, 378.0),
    ("H100", "H100 SXM", 989.0, 494.5),
    ("H200", "H200", 989.0, 494.5),
    ("TPU v4", "TPU v4", 275.0, 275.0),
    ("TPU v5 lite", "TPU v5e", 197.0, 197.0),
    ("TPU v5e", "TPU v5e", 197.0, 197.0),
)


MODELS = ("fc_i3d", "osvos", "masktrack")
HEADER = ("model", "mode", "dtype", "input shape", "compile s", "median s",
          "throughput", "GFLOP/call", "TFLOP/s", "utilisation")


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="fc_i3d,osvos",
                      help="comma list of fc_i3d, osvos, masktrack")
  parser.add_argument("--dtypes", default="float32,bfloat16",
                      help="comma list of compute dtypes")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--frames", type=int, default=16,
                      help="FC-I3D clip length")
  parser.add_argument("--size", type=int, default=224,
                      help="FC-I3D crop side (the paper's 224)")
  parser.add_argument("--osvos_size", default="480x854",
                      help="OSVOS image HxW (DAVIS 480p frames)")
  parser.add_argument("--width_multiplier", type=float, default=1.0,
                      help="scales every channel count (1.0: the papers' "
                      "networks; smaller for a quick CPU check)")
  parser.add_argument("--taps",
                      default="Conv3d_1a_7x7,Conv3d_2c_3x3,Mixed_3c,Mixed_4f",
                      help="FC-I3D taps (the paper's four by default; fewer "
                      "compile faster)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip_train", action="store_true")
  parser.add_argument("--skip_inference", action="store_true")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the chip's peak TFLOP/s for the utilisation "
                      "column (default: PEAK_TFLOPS for known accelerators)")
  args = parser.parse_args(argv)
  for flag in ("batch", "frames", "size", "repeats"):
    if getattr(args, flag) < 1:
      parser.error(f"--{flag} must be >= 1")
  if not args.width_multiplier > 0:
    parser.error("--width_multiplier must be > 0")
  try:
    h, w = (int(v) for v in args.osvos_size.lower().split("x"))
    if h < 1 or w < 1:
      raise ValueError
  except ValueError:
    parser.error(f"--osvos_size={args.osvos_size!r}: expected HxW, e.g. "
                 "480x854")
  args.osvos_hw = (h, w)
  args.models = [m.strip() for m in args.models.split(",") if m.strip()]
  for m in args.models:
    if m not in MODELS:
      parser.error(f"--models: unknown model {m!r}; expected "
                   f"{', '.join(MODELS)}")
  args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
  if args.peak_tflops is not None and not args.peak_tflops > 0:
    parser.error("--peak_tflops must be > 0")
  return args


def peak_for(device_kind, dtype_name):
  """(chip name, peak TFLOP/s) from PEAK_TFLOPS, or (None, None)."""
  for key, name, bf16, fp32 in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return name, (bf16 if dtype_name == "bfloat16" else fp32)
  return None, None


def flops_of(compiled):
  """FLOPs of one call from XLA's cost analysis (None if not reported)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def main(argv=None) -> int:
  rows = measure(argv)
  if rows is None:
    return 2
  rows = [tuple(r.values())[:len(HEADER)] for r in rows]
  widths = [max(len(str(r[i])) for r in rows + [HEADER])
            for i in range(len(HEADER))]
  print()
  for r in [HEADER, tuple("-" * w for w in widths)] + rows:
    print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
  return 0


def measure(argv=None):
  """The measurements of `argv` (this script's flags) as a list of dicts
  keyed by HEADER (strings as printed) plus "median_s", "per_s" (units
  per second), "gflop", "tflops" and "unit" as numbers; None on a bad
  --dtypes."""
  args = _parse_args(argv)
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from vosjax import train
  from vosjax.errors import InputError
  from vosjax.models import conv3d
  from vosjax.models import osvos
  from vosjax.programs import fc_i3d as fc_i3d_program
  from vosjax.programs import osvos as osvos_program
  # pylint: enable=g-import-not-at-top

  for name in args.dtypes:
    try:
      conv3d.compute_dtype(name, flag="--dtypes")
    except InputError as e:
      print(f"error: {e}", file=sys.stderr)
      return None

  dev = jax.devices()[0]
  backend = jax.default_backend()
  print(f"device: {dev.device_kind} (platform {dev.platform}, "
        f"{jax.device_count()} device(s), {os.cpu_count()} host cores), "
        f"jax {jax.__version__}; repeats {args.repeats}, median times")
  rng = np.random.default_rng(0)

  def random_variables(model, x):
    """He-scaled kernels, small biases, unit batch-norm variances."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)

    def draw(path, spec):
      leaf = path[-1].key
      if leaf == "kernel":
        std = np.sqrt(2.0 / max(1, int(np.prod(spec.shape[:-1]))))
        return jnp.asarray(rng.normal(size=spec.shape) * std, jnp.float32)
      if leaf == "var":
        return jnp.ones(spec.shape, jnp.float32)
      return jnp.asarray(rng.normal(size=spec.shape) * 0.01, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)

  def timed(fn, *fn_args):
    """(compile s, median s, FLOPs) of jit(fn)(*fn_args)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*fn_args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*fn_args))  # Warm-up, not timed.
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*fn_args))
      times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times), flops_of(compiled)

  rows = []

  def add_row(model_name, mode, dtype_name, shape, result, per_call, unit):
    compile_s, median, flops = result
    if args.peak_tflops is not None:
      chip, peak = "given", args.peak_tflops
    elif backend != "cpu":
      chip, peak = peak_for(dev.device_kind, dtype_name)
    else:
      chip, peak = None, None
    tflops = flops / median / 1e12 if flops else None
    util = (f"{100 * tflops / peak:.1f}% of {peak:g} ({chip})"
            if tflops is not None and peak else "-")
    row = (model_name, mode, dtype_name, "x".join(map(str, shape)),
           f"{compile_s:.1f}", f"{median:.4f}",
           f"{per_call / median:.2f} {unit}",
           f"{flops / 1e9:.1f}" if flops else "-",
           f"{tflops:.3f}" if tflops is not None else "-", util)
    rows.append(dict(zip(HEADER, row), median_s=median,
                     per_s=per_call / median, unit=unit,
                     gflop=flops / 1e9 if flops else None, tflops=tflops,
                     peak_tflops=peak))
    print("  done: " + " | ".join(row), flush=True)

  sgd = {"learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 2e-4}
  for model_name in args.models:
    for dtype_name in args.dtypes:
      if model_name == "fc_i3d":
        config = ml_collections.ConfigDict(dict(
            taps=args.taps,
            side_features=16, width_multiplier=args.width_multiplier,
            conv_impl="auto", compute_dtype=dtype_name))
        model = fc_i3d_program.build_model(config)
        shape = (args.batch, args.frames, args.size, args.size, 3)
        label_shape = shape[:-1]
        per_frame = args.frames
        loss = lambda *a, m=model: fc_i3d_program.segmentation_loss(
            m, lambda step: 1.0, True, *a)
        train_unit = "clips/s"
      else:
        config = ml_collections.ConfigDict(dict(
            width_multiplier=args.width_multiplier, side_features=16,
            compute_dtype=dtype_name))
        model = osvos.build_model(config)
        channels = 4 if model_name == "masktrack" else 3
        shape = (args.batch, *args.osvos_hw, channels)
        label_shape = shape[:-1]
        per_frame = 1
        loss = lambda *a, m=model: osvos_program.segmentation_loss(
            m, lambda step: 1.0, *a)
        train_unit = "images/s"
      x = jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32)
      variables = random_variables(model, x)
      if not args.skip_train:
        labels = jnp.asarray(rng.uniform(size=label_shape) > 0.5,
                             jnp.float32)
        if model_name == "fc_i3d":
          tx, _ = train.make_optimizer(sgd)
        else:
          tx, _ = osvos_program.make_optimizer(sgd, variables["params"],
                                               "parent")
        state = train.TrainState.create(
            apply_fn=model.apply, params=variables["params"], tx=tx,
            batch_stats=variables.get("batch_stats"))
        step = train.make_train_step(loss)
        result = timed(step, state, {"frames": x, "labels": labels},
                       jax.random.key(0, impl="rbg"))
        add_row(model_name, "train", dtype_name, shape, result, args.batch,
                train_unit)
      if not args.skip_inference:
        result = timed(lambda v, x, m=model: m.apply(v, x)[0], variables, x)
        add_row(model_name, "infer", dtype_name, shape, result,
                args.batch * per_frame, "frames/s")

  return rows


if __name__ == "__main__":
  sys.exit(main())
