r"""I3D wall times per Conv3D implementation: full network and single layers.

  python benchmarks/bench_i3d.py [--batch 1] [--frames 16] [--size 224]
      [--backward_size 112] [--impls native,fold_time] [--repeats 3]
      [--skip_backward] [--skip_layers] [--force_native_input_grad]
      [--no_torch] [--torch_threads N]

Cases (one row per case and implementation):

* `I3D forward`: InceptionI3d up to Logits (Kinetics-400 widths, 400
  classes), inference mode, on [batch, frames, size, size, 3].
* `I3D grad step`: the gradient of the logits' sum with respect to every
  parameter, batch norm in inference mode, on the same clip: issue #19's
  side-by-side training figure.
* `I3D fwd+bwd`: gradient of a softmax cross-entropy w.r.t. the parameters
  only (not the clip), batch norm in training mode, as one training step
  computes it, on [batch, frames, backward_size, backward_size, 3].
* `Conv3d_1a_7x7 fwd`: 7x7x7 stride-2 3->64 conv on [1, 16, 224, 224, 3]
  (the issue's per-layer figure).
* `3x3x3 s1 96->128 fwd+bwd`: gradients w.r.t. input and kernel on
  [2, 8, 28, 28, 96] (the issue's per-layer figure).
* `Conv3d_1a_7x7 fwd+bwd`: gradients w.r.t. input and kernel on
  [1, 16, 224, 224, 3]. XLA:CPU's native strided 3-D conv input gradient is
  pathological (143 s for one call in issue #5; 80 s vs 0.23 s for
  'fold_time' re-measured on [1, 8, 112, 112, 3] on a loaded 2-core host),
  so this case is skipped for 'native' on CPU unless
  --force_native_input_grad. The parameter-only gradient of the full network
  never needs it: the only strided conv is the first layer, whose input is
  data.

When PyTorch is installed (it is not a vosjax dependency) and not
--no_torch, both full-network cases also run `benchmarks/torch_i3d.py`, a
PyTorch I3D holding the same parameters, on the same clip in the same process
(--torch_threads, default every host core, set before its first call), and a
'vosjax / torch' line per case gives the ratio of medians (< 1: vosjax is
faster). PyTorch runs eagerly: nothing is compiled.

Each case is jitted; lowering + compilation is timed separately ("compile"),
one warm-up call is excluded, and "min"/"median"/"max" are over --repeats calls
ended by `block_until_ready`. Parameters are random (identical across
implementations); the forward rows report the largest logit difference from
the first implementation as a numerics check.
"""

import argparse
import os
import statistics
import sys
import time


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=224,
                      help='spatial side of the full-network forward clip')
  parser.add_argument('--backward_size', type=int, default=112,
                      help='spatial side of the full-network fwd+bwd clip '
                      '(smaller by default to fit a few minutes on 2 cores)')
  parser.add_argument('--impls', default='native,fold_time',
                      help='comma list of Conv3D implementations')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--skip_backward', action='store_true',
                      help='forward cases only')
  parser.add_argument('--skip_layers', action='store_true',
                      help='full network only, no per-layer cases')
  parser.add_argument('--force_native_input_grad', action='store_true',
                      help="run the strided-conv input gradient with 'native' "
                      'on CPU even though it can take minutes')
  parser.add_argument('--no_torch', action='store_true',
                      help='skip the PyTorch rows even if torch is installed')
  parser.add_argument('--torch_threads', type=int, default=os.cpu_count(),
                      help='torch.set_num_threads for the PyTorch rows')
  args = parser.parse_args(argv)
  for flag in ('batch', 'frames', 'size', 'backward_size', 'repeats',
               'torch_threads'):
    if getattr(args, flag) < 1:
      parser.error(f'--{flag} must be >= 1')
  return args


def main(argv=None) -> int:
  args = _parse_args(argv)
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vosjax.models import conv3d as conv3d_lib
  from vosjax.models import i3d
  # pylint: enable=g-import-not-at-top

  impls = [s.strip() for s in args.impls.split(',') if s.strip()]
  for impl in impls:
    if impl not in conv3d_lib.IMPLS:
      print(f'error: --impls: unknown implementation {impl!r}; expected '
            f'{conv3d_lib.IMPLS}', file=sys.stderr)
      return 2
  backend = jax.default_backend()
  dev = jax.devices()[0]
  print(f'device: {dev.device_kind} (platform {dev.platform}, '
        f'{jax.device_count()} device(s), {os.cpu_count()} host cores), '
        f'jax {jax.__version__}')
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} (vosjax.xla_flags)")
  print(f"'auto' resolves to {conv3d_lib.resolve_impl('auto')!r} here; "
        f'repeats {args.repeats}, times in seconds')

  def timed(fn, *fn_args):
    """(compile s, [--repeats call times in s], output) of jit(fn)(*fn_args)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*fn_args).compile()
    compile_s = time.perf_counter() - t0
    times, out = repeated(lambda: jax.block_until_ready(compiled(*fn_args)))
    return compile_s, times, out

  def repeated(call):
    """([--repeats call times in s], output) of call() after one warm-up."""
    out = call()
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      out = call()
      times.append(time.perf_counter() - t0)
    return times, out

  rows = []

  def add_row(case, shape, impl, result=None, note=''):
    shape = 'x'.join(map(str, shape))
    if result is None:
      rows.append((case, shape, impl, '-', '-', '-', '-', note))
    else:
      c, times = result
      med = statistics.median(times)
      medians[case, impl] = med
      c = '-' if c is None else f'{c:.2f}'
      rows.append((case, shape, impl, c, f'{min(times):.3f}', f'{med:.3f}',
                   f'{max(times):.3f}', note))
    print('  done: ' + ' | '.join(map(str, rows[-1])), flush=True)

  torch_i3d = None
  if not args.no_torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      import torch_i3d  # pylint: disable=g-import-not-at-top
      torch.set_num_threads(args.torch_threads)
      print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    except ImportError:
      print('torch is not installed: no PyTorch rows')

  medians = {}  # (case, impl) -> median s, for the ratio lines.

  rng = np.random.default_rng(0)

  def uniform(shape):
    return jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32)

  # Full network. Parameters do not depend on the implementation or the
  # clip size, so one initialisation on a small clip serves every row.
  init_model = i3d.InceptionI3d(conv_impl='fold_time')
  variables = jax.jit(init_model.init)(
      jax.random.key(0), jnp.zeros((1, 9, 32, 32, 3)))
  fwd_shape = (args.batch, args.frames, args.size, args.size, 3)
  x = uniform(fwd_shape)
  reference = None
  for impl in impls:
    model = i3d.InceptionI3d(conv_impl=impl)
    c, times, logits = timed(lambda v, x, m=model: m.apply(v, x)[0],
                             variables, x)
    logits = np.asarray(logits)
    if reference is None:
      reference, note = (impl, logits), f'logits vs {impl}: reference'
    else:
      diff = np.abs(logits - reference[1]).max()
      note = f'max |logits - {reference[0]}| {diff:.1e}'
    add_row('I3D forward', fwd_shape, impl, (c, times), note)

  if torch_i3d is not None:
    tmodel = torch_i3d.load_flax(torch_i3d.InceptionI3d(), variables).eval()
    xt = torch.from_numpy(np.ascontiguousarray(
        np.asarray(x).transpose(0, 4, 1, 2, 3)))
    with torch.no_grad():
      times, tlogits = repeated(lambda: tmodel(xt))
    diff = np.abs(tlogits.numpy() - reference[1]).max()
    add_row('I3D forward', fwd_shape, 'torch', (None, times),
            f'max |logits - {reference[0]}| {diff:.1e}')

  if not args.skip_backward:
    for impl in impls:
      model = i3d.InceptionI3d(conv_impl=impl)

      def sum_logits(params, batch_stats, x, m=model):
        return m.apply({'params': params, 'batch_stats': batch_stats},
                       x)[0].sum()

      c, times, _ = timed(jax.grad(sum_logits), variables['params'],
                          variables['batch_stats'], x)
      add_row('I3D grad step', fwd_shape, impl, (c, times),
              'd sum(logits) / d params, inference batch norm')
    if torch_i3d is not None:

      def torch_step():
        tmodel.zero_grad(set_to_none=True)
        tmodel(xt).sum().backward()
        return tmodel.logits.conv.weight.grad

      times, _ = repeated(torch_step)
      add_row('I3D grad step', fwd_shape, 'torch', (None, times),
              'same, eager')

  if not args.skip_backward:
    bwd_shape = (args.batch, args.frames, args.backward_size,
                 args.backward_size, 3)
    xb = uniform(bwd_shape)
    labels = jnp.asarray(rng.integers(0, 400, args.batch))
    for impl in impls:
      model = i3d.InceptionI3d(conv_impl=impl)

      def loss_fn(params, batch_stats, x, labels, m=model):
        (logits, _), updates = m.apply(
            {'params': params, 'batch_stats': batch_stats}, x, train=True,
            mutable=['batch_stats'])
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)
        return nll.mean(), updates

      step = jax.grad(loss_fn, has_aux=True)
      c, times, _ = timed(step, variables['params'],
                          variables['batch_stats'], xb, labels)
      add_row('I3D fwd+bwd (params grad)', bwd_shape, impl, (c, times),
              'train-mode batch norm')

  if not args.skip_layers:
    x1a = uniform((1, 16, 224, 224, 3))
    k1a = uniform((7, 7, 7, 3, 64)) * 0.05
    for impl in impls:
      c, times, _ = timed(
          lambda x, k, i=impl: conv3d_lib.conv3d(x, k, (2, 2, 2), i), x1a, k1a)
      add_row('Conv3d_1a_7x7 fwd', x1a.shape, impl, (c, times))

    if not args.skip_backward:
      x3 = uniform((2, 8, 28, 28, 96))
      k3 = uniform((3, 3, 3, 96, 128)) * 0.05
      for impl in impls:
        grad = jax.grad(
            lambda x, k, i=impl: 0.5 * jnp.mean(
                conv3d_lib.conv3d(x, k, (1, 1, 1), i) ** 2), argnums=(0, 1))
        c, times, _ = timed(grad, x3, k3)
        add_row('3x3x3 s1 96->128 fwd+bwd', x3.shape, impl, (c, times),
                'grads w.r.t. input and kernel')

      for impl in impls:
        resolved = conv3d_lib.resolve_impl(impl)
        if (resolved == 'native' and backend == 'cpu' and
            not args.force_native_input_grad):
          add_row('Conv3d_1a_7x7 fwd+bwd', x1a.shape, impl, None,
                  'skipped: native strided input grad is pathological on '
                  'XLA:CPU (143 s/call); --force_native_input_grad runs it')
          continue
        grad = jax.grad(
            lambda x, k, i=impl: 0.5 * jnp.mean(
                conv3d_lib.conv3d(x, k, (2, 2, 2), i) ** 2), argnums=(0, 1))
        c, times, _ = timed(grad, x1a, k1a)
        add_row('Conv3d_1a_7x7 fwd+bwd', x1a.shape, impl, (c, times),
                'grads w.r.t. input and kernel')

  for case in ('I3D forward', 'I3D grad step'):
    for impl in impls:
      if (case, impl) in medians and (case, 'torch') in medians:
        print(f'vosjax / torch, {case}, {impl}: '
              f"{medians[case, impl] / medians[case, 'torch']:.2f}")

  header = ('case', 'input shape', 'impl', 'compile', 'min', 'median', 'max',
            'note')
  widths = [max(len(str(r[i])) for r in rows + [header])
            for i in range(len(header))]
  print()
  for r in [header, tuple('-' * w for w in widths)] + rows:
    print(' | '.join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
  return 0


if __name__ == '__main__':
  sys.exit(main())
