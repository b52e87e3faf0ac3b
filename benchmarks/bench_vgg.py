r"""VGG16 trunk wall times, vosjax against PyTorch in the same process.

  python benchmarks/bench_vgg.py [--cases 224x224x1,224x224x4,240x427x1,
      dense:240x427x1] [--repeats 5] [--skip_osvos] [--layers 224x224x1]
      [--no_torch] [--torch_threads N]

Cases (`HxWxB`, `dense:` for the stride-8 trunk PML uses,
`vgg.VGG16(output_stride=8)`: pool4 3x3 stride 1, conv5 dilated by 2):

* `forward`: conv5_3 of `vosjax.models.vgg.VGG16` (normalisation included)
  on a [B, H, W, 3] image batch in [-1, 1].
* `grad step`: the gradient of sum(conv5_3 ** 2) with respect to every
  parameter (issue #30's training figure).
* `osvos step` (224x224x1, unless --skip_osvos): one OSVOS parent training
  step as the program runs it (`train.jit_train_step`, state donated;
  `vosjax.programs.osvos.segmentation_loss`,
  deep supervision, the per-group SGD) on the same image, against the
  trunk's grad step: 'osvos / trunk' is issue #30's "at most 1.15x".

When PyTorch is installed (it is not a vosjax dependency) and not
--no_torch, every forward and grad-step case also runs
`benchmarks/torch_vgg.py`, a PyTorch trunk holding the same parameters, on
the same (normalised) input, eagerly, with --torch_threads threads (default
every host core). The repeats ALTERNATE between vosjax and PyTorch, so the
two see the same background load, and 'vosjax / torch' is the ratio of
medians (< 1: vosjax is faster). The largest |conv5_3| difference and the
largest relative difference of the conv1_1 kernel gradients are printed as
the check that both compute the same thing.

--layers HxWxB times every conv layer alone (conv + bias + ReLU on its own
input shape): forward, and forward + backward (input, kernel and bias
gradients; the input gradient dropped for conv1_1 as in the network),
vosjax's `vgg.conv3x3` (Winograd where `vosjax.models.winograd.applies`)
against XLA's own convolution and gradient of the same expression ('fwd
xla', 'bwd xla') and against PyTorch: where the time goes.

Each vosjax case is jitted and compiled ahead of time (compile time
reported); one warm-up call per case is excluded; min / median / max are
over --repeats calls ended by `block_until_ready`. The load average
(os.getloadavg) is printed before and after: on a shared machine the
figures are only comparable within one run.
"""

import argparse
import os
import statistics
import sys
import time


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cases",
                      default="224x224x1,224x224x4,240x427x1,dense:240x427x1",
                      help="comma list of [dense:]HxWxB")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip_osvos", action="store_true")
  parser.add_argument("--layers", default="",
                      help="HxWxB: also time each conv layer alone")
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count())
  args = parser.parse_args(argv)
  if args.repeats < 1 or args.torch_threads < 1:
    parser.error("--repeats and --torch_threads must be >= 1")
  try:
    args.cases = [_parse_case(c) for c in args.cases.split(",") if c.strip()]
    args.layers = _parse_case(args.layers) if args.layers else None
  except ValueError as e:
    parser.error(str(e))
  return args


def _parse_case(text):
  """'[dense:]HxWxB' -> (output_stride, (B, H, W))."""
  text = text.strip()
  stride = 8 if text.startswith("dense:") else 16
  try:
    h, w, b = (int(v) for v in text.split(":")[-1].lower().split("x"))
    if min(h, w, b) < 1:
      raise ValueError
  except ValueError:
    raise ValueError(f"case {text!r}: expected [dense:]HxWxB, e.g. 224x224x1"
                     ) from None
  return stride, (b, h, w)


def main(argv=None) -> int:
  args = _parse_args(argv)
  here = os.path.dirname(os.path.abspath(__file__))
  sys.path.insert(0, os.path.join(here, ".."))
  sys.path.insert(0, here)
  # pylint: disable=g-import-not-at-top
  import vosjax  # noqa: F401  (XLA flags and malloc settings, before jax)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vosjax.models import vgg
  # pylint: enable=g-import-not-at-top

  dev = jax.devices()[0]
  print(f"device: {dev.device_kind} (platform {dev.platform}, "
        f"{os.cpu_count()} host cores), jax {jax.__version__}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, malloc settings "
        f"{'applied' if getattr(vosjax.xla_flags, 'MALLOC_APPLIED', False) else 'not applied'}")
  print("load average before: %.2f %.2f %.2f" % os.getloadavg())
  torch = torch_vgg = None
  if not args.no_torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      import torch_vgg  # pylint: disable=g-import-not-at-top
      torch.set_num_threads(args.torch_threads)
      print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
      torch = None
      print("torch is not installed: no PyTorch rows")

  rng = np.random.default_rng(0)
  rows, medians = [], {}

  def add_row(case, shape, impl, compile_s, times, note=""):
    med = statistics.median(times)
    medians[case, impl] = med
    rows.append((case, shape, impl, "-" if compile_s is None
                 else f"{compile_s:.1f}", f"{min(times):.3f}", f"{med:.3f}",
                 f"{max(times):.3f}", note))
    print("  done: " + " | ".join(rows[-1]), flush=True)

  def compiled(fn, *fn_args):
    t0 = time.perf_counter()
    c = jax.jit(fn).lower(*fn_args).compile()
    return c, time.perf_counter() - t0

  def alternate(calls):
    """{name: [--repeats times]} of calls run in turn, one warm-up each."""
    for call in calls.values():
      call()
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
      for name, call in calls.items():
        t0 = time.perf_counter()
        call()
        times[name].append(time.perf_counter() - t0)
    return times

  def he_params(model, x):
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    return jax.tree.map(lambda s: jnp.asarray(
        rng.normal(size=s.shape) * (np.sqrt(2 / np.prod(s.shape[:-1]))
                                    if len(s.shape) > 1 else 0.01),
        jnp.float32), shapes)

  for stride, shape in args.cases:
    label = ("dense " if stride == 8 else "") + "x".join(map(str, shape))
    model = vgg.VGG16(output_stride=stride)
    x = jnp.asarray(rng.uniform(-1, 1, (*shape, 3)), jnp.float32)
    params = he_params(model, x)
    fwd, fwd_c = compiled(lambda p, x, m=model: m.apply({"params": p}, x)[0],
                          params, x)
    grad, grad_c = compiled(jax.grad(
        lambda p, x, m=model: jnp.sum(m.apply({"params": p}, x)[0] ** 2)),
                            params, x)
    calls = {"fwd": lambda: jax.block_until_ready(fwd(params, x)),
             "grad": lambda: jax.block_until_ready(grad(params, x))}
    note_f = note_g = ""
    if torch is not None:
      tmodel = torch_vgg.load_flax(
          torch_vgg.VGG16(output_stride=stride),
          jax.tree.map(np.array, params))
      xt = torch.from_numpy(np.ascontiguousarray(
          np.asarray(vgg.normalize(x)).transpose(0, 3, 1, 2)))

      def torch_fwd(tmodel=tmodel, xt=xt):
        with torch.no_grad():
          return tmodel(xt)

      def torch_grad(tmodel=tmodel, xt=xt):
        tmodel.zero_grad(set_to_none=True)
        (tmodel(xt) ** 2).sum().backward()

      calls.update(tfwd=torch_fwd, tgrad=torch_grad)
      out = np.asarray(fwd(params, x))
      tout = torch_fwd().numpy().transpose(0, 2, 3, 1)
      note_f = (f"max |conv5_3 - torch| {np.abs(out - tout).max():.1e} "
                f"(max |conv5_3| {np.abs(out).max():.1f})")
      torch_grad()
      gk = np.asarray(grad(params, x)["conv1_1"]["kernel"])
      tk = tmodel.convs["conv1_1"].weight.grad.numpy().transpose(2, 3, 1, 0)
      note_g = (f"conv1_1 kernel grad vs torch: max rel diff "
                f"{np.abs(gk - tk).max() / np.abs(tk).max():.1e}")
    times = alternate(calls)
    add_row("forward", label, "vosjax", fwd_c, times["fwd"], note_f)
    if torch is not None:
      add_row("forward", label, "torch", None, times["tfwd"], "eager")
    add_row("grad step", label, "vosjax", grad_c, times["grad"],
            note_g or "d sum(conv5_3^2) / d params")
    if torch is not None:
      add_row("grad step", label, "torch", None, times["tgrad"], "eager")
    for case in ("forward", "grad step"):
      if (case, "torch") in medians:
        print(f"vosjax / torch, {case}, {label}: "
              f"{medians[case, 'vosjax'] / medians[case, 'torch']:.2f}",
              flush=True)
    if not args.skip_osvos and (stride, shape) == (16, (1, 224, 224)):
      _osvos_vs_trunk(x, grad, params, compiled, alternate, add_row, label)

  if args.layers is not None:
    _layers(args.layers, torch, rng, compiled, alternate, add_row)

  header = ("case", "input", "impl", "compile", "min", "median", "max",
            "note")
  widths = [max(len(str(r[i])) for r in rows + [header])
            for i in range(len(header))]
  print()
  for r in [header, tuple("-" * w for w in widths)] + rows:
    print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
  print("load average after: %.2f %.2f %.2f" % os.getloadavg())
  return 0


def _osvos_vs_trunk(x, trunk_grad, trunk_params, compiled, alternate,
                    add_row, label):
  """OSVOS parent training step against the trunk's grad step, alternated."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from vosjax import sharding
  from vosjax import train
  from vosjax.models import osvos
  from vosjax.programs import osvos as osvos_program
  # pylint: enable=g-import-not-at-top
  model = osvos.build_model(ml_collections.ConfigDict(dict(
      width_multiplier=1.0, side_features=16, compute_dtype="float32")))
  variables = jax.tree.map(np.asarray,
                           jax.jit(model.init)(jax.random.key(0), x))
  # A copy of the trunk's weights: the step donates (deletes) its input's.
  params = dict(variables["params"],
                vgg=jax.tree.map(lambda a: jnp.array(a, copy=True),
                                 trunk_params))
  tx, _ = osvos_program.make_optimizer(
      {"learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 2e-4},
      params, "parent")
  state = train.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  step = train.make_train_step(
      lambda *a: osvos_program.segmentation_loss(model, lambda s: 1.0, *a))
  labels = jnp.asarray(np.random.default_rng(1).uniform(size=x.shape[:-1])
                       > 0.5, jnp.float32)
  batch = {"frames": x, "labels": labels}
  key = jax.random.key(0, impl="rbg")
  # As the programs run it (`train.jit_train_step`): the state donated, each
  # step's state the next one's input.
  t0 = time.perf_counter()
  step_c = train.jit_train_step(step, sharding.make_mesh(), state).lower(
      state, batch, key).compile()
  step_s = time.perf_counter() - t0
  current = [state]

  def osvos_step():
    current[0], metrics = step_c(current[0], batch, key)
    jax.block_until_ready(metrics)

  times = alternate({
      "osvos": osvos_step,
      "trunk": lambda: jax.block_until_ready(trunk_grad(trunk_params, x))})
  add_row("osvos step", label, "vosjax", step_s, times["osvos"],
          "parent step: loss, gradients, SGD update")
  add_row("grad step", label, "vosjax", None, times["trunk"],
          "the trunk alone, alternated with the osvos step")
  print(f"osvos / trunk, {label}: "
        f"{statistics.median(times['osvos']) / statistics.median(times['trunk']):.2f}",
        flush=True)


def _layers(case, torch, rng, compiled, alternate, add_row):
  """Each conv layer alone: vosjax conv3x3, XLA's autodiff, PyTorch."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vosjax.models import vgg
  # pylint: enable=g-import-not-at-top
  stride, (b, h, w) = case
  cin = 3
  for stage, chans in vgg.STAGES:
    dense = 2 ** (stage - 1) > stride
    if stage > 1 and not dense:
      h, w = -(-h // 2), -(-w // 2)
    rate = 2 if dense else 1
    for i, cout in enumerate(chans):
      name = f"conv{stage}_{i + 1}"
      x = jnp.asarray(rng.normal(size=(b, h, w, cin)), jnp.float32)
      k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.05, jnp.float32)
      bias = jnp.zeros((cout,), jnp.float32)
      argnums = (1, 2) if name == "conv1_1" else (0, 1, 2)
      plain = lambda x, k, b, r=rate: jax.nn.relu(vgg._conv(x, k, r) + b)  # pylint: disable=protected-access
      mine = lambda x, k, b, r=rate: vgg.conv3x3(x, k, b, r)
      fns = {"fwd": mine,
             "fwd xla": plain,
             "bwd vosjax": jax.grad(lambda *a: jnp.sum(mine(*a) ** 2),
                                    argnums),
             "bwd xla": jax.grad(lambda *a: jnp.sum(plain(*a) ** 2),
                                 argnums)}
      calls = {}
      for key, fn in fns.items():
        c, _ = compiled(fn, x, k, bias)
        calls[key] = lambda c=c: jax.block_until_ready(c(x, k, bias))
      if torch is not None:
        tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
        tk = torch.from_numpy(np.asarray(k).transpose(3, 2, 0, 1).copy())
        tx.requires_grad_(name != "conv1_1")
        tk.requires_grad_(True)
        tb = torch.zeros(cout, requires_grad=True)
        conv = torch.nn.functional.conv2d

        def tfwd(tx=tx, tk=tk, tb=tb, r=rate):
          with torch.no_grad():
            torch.relu(conv(tx, tk, tb, padding=r, dilation=r))

        def tbwd(tx=tx, tk=tk, tb=tb, r=rate):
          tx.grad = tk.grad = tb.grad = None
          (torch.relu(conv(tx, tk, tb, padding=r, dilation=r)) ** 2
           ).sum().backward()

        calls.update({"fwd torch": tfwd, "bwd torch": tbwd})
      times = alternate(calls)
      label = f"{name} {b}x{h}x{w}x{cin}->{cout}"
      for key, t in times.items():
        add_row(f"layer {key}", label, "torch" if "torch" in key else
                "vosjax", None, t, "fwd+bwd" if "bwd" in key else "")
      cin = cout


if __name__ == "__main__":
  sys.exit(main())
