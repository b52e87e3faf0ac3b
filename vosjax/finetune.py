"""One-shot fine-tuning of many sequences at once.

OSVOS-style methods (Caelles et al. 2017; FC-I3D, Hou et al. 2019) fine-tune
the parent network separately on each test sequence's annotated first frame
(here: on clips dreamed from it, `vosjax.augment.lucid`). That is the slowest
stage of these methods, and the sequences are independent, so here the
fine-tuning of S sequences is one jitted program per chunk of sequences:

  * per-sequence parameters, optimiser states (and optional mutable model
    state, e.g. BatchNorm statistics) are stacked along a leading axis S;
  * the stack is split over a 1-D ('data',) device mesh with `shard_map`:
    each device trains its own sequences with no communication at all;
  * on each device a *strategy* runs its k sequences:
      - 'loop': one sequence per device at a time, the host calling a jitted
        plain step N times (exactly plain training's program, per device);
        rounds of D sequences follow each other;
      - 'scan': one sequence after another inside one program (a loop with
        a scan of the N steps), each with exactly the plain step: no grouped
        convolutions, and padding slots are skipped (the loop's trip count
        is the device's real sequence count);
      - 'vmap': the step `vmap`ped over the k sequences. Per-sequence weights
        under vmap make every convolution a grouped convolution
        (feature_group_count = k), and padding slots are computed;
    'auto' picks per backend from measurements (`_MEASURED`);
  * each step draws its batch on device from that sequence's pool with
    `jax.random.fold_in(rng, step)`, so no data crosses the host;
  * chunks ('scan', 'vmap'): as many sequences per call as fit the device
    memory (XLA's own `memory_analysis` of the compiled program against the
    device's memory), spread evenly over chunks and devices; the only
    padding is rounding a chunk (a 'loop' round) up to a multiple of the
    device count, and 'scan' does no work for it; the mesh shrinks to S
    devices when S is smaller;
  * the program's parameter and optimiser-state inputs are donated (they are
    private copies made per chunk, never the caller's arrays).

The module is model-agnostic: the caller gives the loss and an optax
optimizer and works on plain (params, opt_state) pytrees.
"""

import functools
import inspect
import os
from typing import Any, Callable, NamedTuple, Optional

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vosjax import sharding

PyTree = Any

STRATEGIES = ("auto", "loop", "scan", "vmap")

# 'auto' per backend, from benchmarks/bench_finetune.py (full FC-I3D,
# fc_i3d_davis16 settings, batch 1; paired: variants interleaved in one
# process; 2 CPU cores shared with other jobs, load ~8, so absolute figures
# are inflated, the ratios are what counts). Seconds per sequence-step:
#   1 CPU device, clip 8x112x112 (2 sequences x 2 steps, 2 repeats):
#     scan 13.8, vmap 16.1, plain sequential loop 1.24, parent step 1.27;
#   same, another run (3 steps): loop 3.47, plain sequential loop 3.55,
#     parent step 2.80 (load ~10);
#   1 CPU device, clip 8x224x224, 5 sequences x 2 steps, 2 repeats, idle
#     cores (load < 1): loop 2.371, plain sequential loop 2.166, parent step
#     2.106 (loop 1.13x the parent step); another run: scan 26.8, plain
#     sequential loop 2.38, parent step 2.61;
#   8 host devices, clip 4x64x64, 5 sequences: loop 0.33, scan 1.54,
#     vmap 1.37, plain sequential loop 0.27, parent step 0.19 (the mesh
#     shrinks to the 5 sequences; host devices share the 2 cores, so no
#     parallel gain there).
# XLA:CPU runs the network ~11x slower inside a while loop (scan) than as a
# top-level program, and grouped convolutions (vmap) are slower still, so on
# CPU the host-driven 'loop' wins (same program as the plain step). GPU/TPU
# are unmeasured: 'scan' (no grouped convs, no padded work) until measured.
_MEASURED = {"cpu": "loop"}


class FinetuneResult(NamedTuple):
  """Output of `finetune`; every leaf has leading axis S.

  Attributes:
    params: fine-tuned parameters.
    opt_state: final optimiser states.
    model_state: final mutable model state (None when none was given).
    losses: `[S, num_steps]` float32, the loss of every step (before its
      update).
  """
  params: PyTree
  opt_state: PyTree
  model_state: Optional[PyTree]
  losses: jax.Array


def step_keys(rng, step):
  """(sample_key, loss_key) of one sequence's `step` (int or traced int)."""
  key = jax.random.fold_in(rng, step)
  return jax.random.split(key)


def sample_batch(data, key, batch_size):
  """`batch_size` examples drawn uniformly with replacement from a pool.

  Args:
    data: pytree, every leaf `[P, ...]` (one sequence's pool of P examples).
    key: PRNG key.
    batch_size: B.

  Returns:
    The pytree with leaves `[B, ...]`: `leaf[idx]` with
    `idx = jax.random.randint(key, (B,), 0, P)`.
  """
  pool = jax.tree.leaves(data)[0].shape[0]
  idx = jax.random.randint(key, (batch_size,), 0, pool)
  return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)


def _as_typed_keys(rngs):
  rngs = jnp.asarray(rngs) if not isinstance(rngs, jax.Array) else rngs
  if jnp.issubdtype(rngs.dtype, jax.dtypes.prng_key):
    return rngs
  return jax.random.wrap_key_data(rngs)


def default_mesh():
  """All devices on one ('data',) axis (`sharding.make_mesh`)."""
  return sharding.make_mesh()


def resolve_strategy(strategy=None, backend=None):
  """'loop', 'scan' or 'vmap': `strategy`, or for None/'auto' the measured
  best on `backend` (default: JAX's default backend)."""
  strategy = "auto" if strategy is None else strategy
  if strategy not in STRATEGIES:
    raise ValueError(f"finetune strategy {strategy!r}: expected one of "
                     f"{STRATEGIES}")
  if strategy != "auto":
    return strategy
  # Unmeasured backends get 'scan': it never runs grouped convolutions and
  # never computes padding, so it is the conservative choice.
  return _MEASURED.get(backend or jax.default_backend(), "scan")


def _takes_step(loss_fn):
  """Whether a model-state loss has `train.make_train_step`'s 5 arguments."""
  try:
    return len(inspect.signature(loss_fn).parameters) == 5
  except (TypeError, ValueError):
    return False


def _sequence_step(loss_fn, optimizer, batch_size, has_state, params,
                   opt_state, state, data, rng, step):
  """One sequence's optimisation step: `(params, opt_state, state, loss)`.

  The one definition of a step: every strategy runs it and `sequence_bytes`
  sizes it.
  """
  k_sample, k_loss = step_keys(rng, step)
  batch = sample_batch(data, k_sample, batch_size)
  if has_state:
    if _takes_step(loss_fn):  # The train.make_train_step signature.
      def loss(p):
        value, (new_state, _) = loss_fn(p, state, batch, k_loss, step)
        return value, new_state
    else:
      loss = lambda p: loss_fn(p, state, batch, k_loss)
    (loss, state), grads = jax.value_and_grad(loss, has_aux=True)(params)
  else:
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, k_loss)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, state, loss


def _train_one(loss_fn, optimizer, num_steps, batch_size, has_state, params,
               opt_state, state, data, rng):
  """One sequence's N steps: `((params, opt_state, state), losses [N])`."""

  def body(carry, step):
    *carry, loss = _sequence_step(loss_fn, optimizer, batch_size, has_state,
                                  *carry, data, rng, step)
    return tuple(carry), loss

  return lax.scan(body, (params, opt_state, state), jnp.arange(num_steps))


@functools.lru_cache(maxsize=32)
def _program(loss_fn, optimizer, num_steps, batch_size, has_state,
             init_opt_state, mesh, strategy):
  """The jitted chunk program (cached: every chunk and call reuses it).

  Arguments `(params, opt_state, state, data, rngs, valid)`, leaves `[C,...]`
  sharded over 'data'; `valid` `[C]` bool marks real sequences, which come
  first in each device's slice.
  """
  train_one = functools.partial(_train_one, loss_fn, optimizer, num_steps,
                                batch_size, has_state)

  def local_vmap(params, opt_state, state, data, rngs, valid):
    del valid  # Padding slots are computed (and dropped by the caller).
    if init_opt_state:
      opt_state = jax.vmap(optimizer.init)(params)
    carry, losses = jax.vmap(train_one)(params, opt_state, state, data, rngs)
    return carry + (losses,)

  def local_scan(params, opt_state, state, data, rngs, valid):
    if init_opt_state:
      opt_state = jax.vmap(optimizer.init)(params)
    # Per-device (varying over 'data'), as the loop's outputs will be.
    losses = lax.pcast(jnp.zeros((rngs.shape[0], num_steps), jnp.float32),
                       ("data",), to="varying")

    def take(tree, i):
      return jax.tree.map(lambda x: lax.dynamic_index_in_dim(x, i, 0, False),
                          tree)

    def put(tree, value, i):
      return jax.tree.map(
          lambda x, v: lax.dynamic_update_index_in_dim(x, v, i, 0), tree,
          value)

    def one(i, outs):
      carry, loss = train_one(*take(outs[:3], i), take(data, i), rngs[i])
      return put(outs[:3], carry, i) + (put(outs[3], loss, i),)

    # A dynamic trip count: this device's padding slots cost nothing.
    count = jnp.sum(valid.astype(jnp.int32))
    return lax.fori_loop(0, count, one,
                         (params, opt_state, state, losses))

  local = {"vmap": local_vmap, "scan": local_scan}[strategy]
  spec = P("data")
  sharded = jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec)
  return jax.jit(sharded, donate_argnums=(0, 1, 2))


@functools.lru_cache(maxsize=32)
def _compiled(program, treedef, leaves):
  """Ahead-of-time compile of a chunk program for these argument shapes
  (flattened, to be hashable), so the chunk sizing reads XLA's memory
  analysis of exactly the program that then runs (cached: repeated calls and
  chunks reuse it)."""
  return program.lower(*jax.tree.unflatten(treedef, leaves)).compile()


@functools.lru_cache(maxsize=32)
def _loop_programs(loss_fn, optimizer, batch_size, has_state, mesh):
  """'loop': (init, step) programs over one sequence per device.

  `step(params, opt_state, state, data, rngs, step_index)` runs one plain
  step of every device's single sequence (shard_map over leaves `[D, ...]`);
  the host calls it N times, as plain training calls its step.
  """
  spec = P("data")
  unstack = lambda tree: jax.tree.map(lambda x: x[0], tree)
  stack = lambda tree: jax.tree.map(lambda x: x[None], tree)

  def local_step(params, opt_state, state, data, rngs, step):
    out = _sequence_step(loss_fn, optimizer, batch_size, has_state,
                         *unstack((params, opt_state, state, data, rngs)),
                         step)
    return stack(out)

  step = jax.jit(jax.shard_map(
      local_step, mesh=mesh, in_specs=(spec,) * 5 + (P(),), out_specs=spec),
                 donate_argnums=(0, 1, 2))
  init = jax.jit(jax.shard_map(
      lambda p: stack(optimizer.init(unstack(p))), mesh=mesh, in_specs=spec,
      out_specs=spec))
  return init, step


def _finetune_loop(loss_fn, optimizer, tree, num_steps, batch_size, has_state,
                   mesh):
  """'loop': rounds of one sequence per device, N host-driven plain steps.

  Returns the per-round outputs `(params, opt_state, state, losses)`; the
  last round is padded to the device count (its extra slots repeat its last
  sequence and are dropped).
  """
  num_seq = tree[-1].shape[0]
  num_dev = mesh.devices.size
  init, step = _loop_programs(loss_fn, optimizer, batch_size, has_state,
                              mesh)
  gather = _gather(mesh)
  outputs = []
  for start in range(0, num_seq, num_dev):
    stop = min(start + num_dev, num_seq)
    idx = np.minimum(np.arange(start, start + num_dev), stop - 1)
    params, opt_state, state, data, rngs = gather(tree, jnp.asarray(idx))
    if opt_state is None:
      opt_state = init(params)
    losses = []
    for i in range(num_steps):
      params, opt_state, state, loss = step(params, opt_state, state, data,
                                            rngs, jnp.int32(i))
      losses.append(loss)
    out = (params, opt_state, state, jnp.stack(losses, axis=1))
    outputs.append(jax.tree.map(lambda x, n=stop - start: x[:n], out))
  return outputs


@jax.jit
def _take(tree, idx):
  return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), tree)


@functools.lru_cache(maxsize=8)
def _gather(mesh):
  """Jitted `tree[idx]` onto the mesh: always a fresh, donatable buffer."""
  sharding = NamedSharding(mesh, P("data"))
  return jax.jit(
      lambda tree, idx: jax.tree.map(lambda x: jnp.take(x, idx, axis=0),
                                     tree),
      out_shardings=sharding)


def device_memory_bytes(device=None):
  """Memory one device may plan for: its `bytes_limit`, or on CPU the host's
  physical memory shared by the process's CPU devices; None if unknown."""
  device = jax.devices()[0] if device is None else device
  stats = device.memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  if device.platform == "cpu":
    try:
      total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
      return None
    return int(total // max(len(jax.local_devices(backend="cpu")), 1))
  return None


def _program_bytes(compiled):
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  # Donated arguments alias their outputs; count them once.
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes -
             stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def chunk_layout(num_seq, num_dev, per_device, uniform=True):
  """Splits S sequences into chunks of at most `num_dev * per_device` slots.

  Chunks get equal shares (+-1) of the sequences and, inside a chunk,
  sequence j goes to device `j % D`, so real sequences come first in every
  device's slice and devices differ by at most one sequence.

  Args:
    num_seq: S.
    num_dev: D, devices in the mesh.
    per_device: most sequences per device in one chunk.
    uniform: every chunk gets the largest chunk's slot count (one program;
      'scan' skips the padding); False sizes each chunk to its own sequences
      rounded up to D (at most two programs; for 'vmap', which computes it).

  Returns:
    A list, one per chunk, of `(idx, valid)`: `idx` `[slots]` the sequence
    each slot holds (a padding slot repeats one of its chunk's sequences),
    `valid` `[slots]` bool, False for padding.
  """
  num_chunks = -(-num_seq // (num_dev * per_device))
  base, extra = divmod(num_seq, num_chunks)
  sizes = [base + (c < extra) for c in range(num_chunks)]
  chunks, start = [], 0
  for size in sizes:
    k = -(-(max(sizes) if uniform else size) // num_dev)
    idx = np.full(k * num_dev, start + size - 1, np.int64)
    valid = np.zeros(k * num_dev, bool)
    for j in range(size):
      pos = (j % num_dev) * k + j // num_dev
      idx[pos], valid[pos] = start + j, True
    chunks.append((idx, valid))
    start += size
  return chunks


def finetune(loss_fn: Callable[..., Any],
             optimizer: optax.GradientTransformation,
             params: PyTree,
             data: PyTree,
             rngs: jax.Array,
             *,
             num_steps: int,
             batch_size: int,
             opt_state: Optional[PyTree] = None,
             model_state: Optional[PyTree] = None,
             max_batch_sequences: Optional[int] = None,
             mesh: Optional[Mesh] = None,
             strategy: Optional[str] = None,
             memory_fraction: float = 0.7) -> FinetuneResult:
  """Fine-tunes S independent copies of a model, one per sequence.

  Sequence s follows exactly the plain loop (see tests/test_finetune.py):

    for step in range(num_steps):
      k_sample, k_loss = step_keys(rngs[s], step)
      batch = sample_batch(data[s], k_sample, batch_size)
      loss, grads = value_and_grad(loss_fn)(params[s], batch, k_loss)
      updates, opt_state[s] = optimizer.update(grads, opt_state[s], params[s])
      params[s] = optax.apply_updates(params[s], updates)

  Args:
    loss_fn: `loss_fn(params, batch, rng) -> scalar loss` for one sequence;
      with `model_state`, `loss_fn(params, model_state, batch, rng) ->
      (loss, new_model_state)` (e.g. Flax `batch_stats` from
      `apply(..., mutable=['batch_stats'])`), or `train.make_train_step`'s
      `loss_fn(params, model_state, batch, rng, step) -> (loss,
      (new_model_state, metrics))` (step: the 0-based step index; metrics
      are dropped). Hashable (a module-level
      function or a `functools.partial` kept alive), since the compiled
      program is cached on it.
    optimizer: optax transformation (schedules live inside it, counted per
      sequence from its own step count). Must be hashable, as optax's are.
    params: pytree, every leaf `[S, ...]` (e.g. the parent parameters
      broadcast S times).
    data: pytree, every leaf `[S, P, ...]`: sequence s's pool of P training
      examples (e.g. frames of its dreamed clips), batches drawn from it.
    rngs: `[S]` PRNG keys (typed, or raw `[S, 2]` uint32), one per sequence.
    num_steps: N optimisation steps per sequence.
    batch_size: examples per step.
    opt_state: stacked optimiser states; None initialises them on device
      with `optimizer.init`.
    model_state: stacked mutable model state, carried but not trained.
    max_batch_sequences: most sequences per compiled program call (an extra
      memory bound; at least one per device is always run); None: as many as
      the device memory holds.
    mesh: 1-D mesh with axis 'data'; defaults to all devices. Only its first
      S devices are used when S is smaller.
    strategy: 'loop', 'scan', 'vmap' or 'auto'/None (the measured best for
      the backend, `resolve_strategy`); see the module docstring. 'loop'
      holds one sequence per device at a time, whatever
      `max_batch_sequences`.
    memory_fraction: share of a device's memory a chunk may plan for.

  Returns:
    `FinetuneResult`, leaves `[S, ...]`, sequences in input order.
  """
  mesh = default_mesh() if mesh is None else mesh
  if mesh.axis_names != ("data",):
    raise ValueError(f"mesh must have the single axis ('data',), got "
                     f"{mesh.axis_names}")
  strategy = resolve_strategy(strategy, mesh.devices.flat[0].platform)
  rngs = _as_typed_keys(rngs)
  num_seq = rngs.shape[0]
  for name, tree in (("params", params), ("data", data),
                     ("opt_state", opt_state), ("model_state", model_state)):
    for leaf in jax.tree.leaves(tree):
      if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num_seq:
        raise ValueError(f"every {name} leaf needs leading axis S={num_seq} "
                         f"(one per rng), got shape {jnp.shape(leaf)}")
  if num_steps < 1 or batch_size < 1:
    raise ValueError(f"num_steps and batch_size must be >= 1, got "
                     f"{num_steps}, {batch_size}")
  if max_batch_sequences is not None and int(max_batch_sequences) < 1:
    raise ValueError(f"max_batch_sequences must be >= 1, got "
                     f"{max_batch_sequences}")
  if mesh.devices.size > num_seq:  # Idle devices instead of padded work.
    mesh = Mesh(mesh.devices.reshape(-1)[:num_seq], ("data",),
                axis_types=mesh.axis_types)
  num_dev = mesh.devices.size
  cap = -(-num_seq // num_dev)  # Sequences per device, all in one chunk.
  if max_batch_sequences is not None:
    cap = min(cap, max(1, int(max_batch_sequences) // num_dev))

  if strategy == "loop":
    outputs = _finetune_loop(loss_fn, optimizer,
                             (params, opt_state, model_state, data, rngs),
                             int(num_steps), int(batch_size),
                             model_state is not None, mesh)
    return _merge(outputs)

  program = _program(loss_fn, optimizer, int(num_steps), int(batch_size),
                     model_state is not None, opt_state is None, mesh,
                     strategy)
  gather = _gather(mesh)
  sharding = NamedSharding(mesh, P("data"))
  tree = (params, opt_state, model_state, data, rngs)

  def compile_for(slots):
    args = jax.eval_shape(gather, tree, jax.ShapeDtypeStruct((slots,),
                                                             jnp.int32))
    args = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        args)
    valid = jax.ShapeDtypeStruct((slots,), jnp.bool_, sharding=sharding)
    leaves, treedef = jax.tree.flatten(tuple(args) + (valid,))
    return _compiled(program, treedef, tuple(leaves))

  budget = device_memory_bytes(mesh.devices.flat[0])
  uniform = strategy == "scan"
  while True:
    chunks = chunk_layout(num_seq, num_dev, cap, uniform)
    if budget is None or cap == 1:
      break
    # Per-device bytes of the largest chunk's program; shrink until it fits
    # (when it fits, this is the compile the run needs anyway).
    nbytes = _program_bytes(compile_for(len(chunks[0][0])))
    if nbytes is None or nbytes <= memory_fraction * budget:
      break
    cap = max(1, min(cap - 1, int(cap * memory_fraction * budget / nbytes)))

  outputs = []
  for idx, valid in chunks:
    args = gather(tree, jnp.asarray(idx, jnp.int32))
    out = compile_for(len(idx))(*args, jax.device_put(valid, sharding))
    # Real slots, in sequence order (one jitted gather for the whole tree).
    order = np.argsort(np.where(valid, idx, num_seq),
                       kind="stable")[:int(valid.sum())]
    if not np.array_equal(order, np.arange(len(idx))):
      out = _take(out, jnp.asarray(order, jnp.int32))
    outputs.append(out)
  return _merge(outputs)


def _merge(outputs):
  """Concatenates per-chunk `(params, opt_state, state, losses)`."""
  if len(outputs) == 1:
    merged = outputs[0]
  else:
    merged = jax.tree.map(lambda *xs: jnp.concatenate(xs), *outputs)
  return FinetuneResult(*merged)


def sequence_keys(seed, seeds):
  """`[S, 2]` raw keys, `fold_in(key(seed), seeds[s])` per sequence.

  Callers pass per-sequence integers derived from the sequence's name
  (`pipeline.name_seed`), so a sequence's randomness does not depend on the
  other sequences fine-tuned with it.
  """
  base = jax.random.key(seed)
  return jnp.stack([jax.random.key_data(jax.random.fold_in(base, s))
                    for s in seeds])


def broadcast(tree, num_sequences):
  """Stacks `num_sequences` copies of `tree` (e.g. the parent parameters)."""
  return jax.tree.map(
      lambda x: jnp.broadcast_to(x, (num_sequences,) + jnp.shape(x)), tree)


def sequence_bytes(loss_fn, optimizer, params, data, rng, *, batch_size,
                   model_state=None):
  """Device bytes one sequence's training step needs (XLA's own estimate).

  Compiles one un-batched step for a single sequence (`params`, `data`
  without the S axis) and sums its argument, output and temporary buffer
  sizes from `compiled.memory_analysis()`. The scan keeps one step's
  activations alive at a time, so this bounds a sequence's share of a chunk.

  Returns:
    int bytes, or None where the backend gives no memory analysis.
  """
  step = functools.partial(_sequence_step, loss_fn, optimizer, batch_size,
                           model_state is not None, step=0)

  opt_state = jax.eval_shape(optimizer.init, params)
  compiled = jax.jit(step).lower(params, opt_state, model_state, data,
                                 rng).compile()
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes +
             stats.temp_size_in_bytes)


def estimate_max_batch_sequences(bytes_per_sequence, *,
                                 device_memory_bytes=None, num_devices=None,
                                 fraction=0.7):
  """Largest `max_batch_sequences` that fits, a multiple of the device count.

  Args:
    bytes_per_sequence: e.g. from `sequence_bytes`.
    device_memory_bytes: memory of one device; None reads the first device's
      `memory_stats()['bytes_limit']` (accelerators), which CPU lacks.
    num_devices: devices in the mesh; defaults to `jax.device_count()`.
    fraction: share of device memory to plan for (XLA needs headroom).

  Returns:
    int >= num_devices (one sequence per device is the minimum program).
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  if device_memory_bytes is None:
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
      raise ValueError("device memory unknown on this backend; pass "
                       "device_memory_bytes")
    device_memory_bytes = stats["bytes_limit"]
  per_device = int(fraction * device_memory_bytes // max(bytes_per_sequence,
                                                          1))
  return max(1, per_device) * num_devices
