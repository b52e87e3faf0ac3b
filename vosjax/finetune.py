"""One-shot fine-tuning of many sequences at once.

OSVOS-style methods (Caelles et al. 2017; FC-I3D, Hou et al. 2019) fine-tune
the parent network separately on each test sequence's annotated first frame
(here: on clips dreamed from it, `vosjax.augment.lucid`). That is the slowest
stage of these methods, and the sequences are independent, so here the
fine-tuning of S sequences is a single jitted program:

  * per-sequence parameters, optimiser states (and optional mutable model
    state, e.g. BatchNorm statistics) are stacked along a leading axis S and
    the per-sequence step is `vmap`ped over it;
  * the N optimisation steps run in a `lax.scan` inside the program; each
    step draws its batch on device from that sequence's pool of examples
    with `jax.random.fold_in(rng, step)`, so nothing crosses the host;
  * the stack is split over a 1-D ('data',) device mesh with `shard_map`:
    each device runs its own sequences with no communication at all;
  * S is cut into chunks of `max_batch_sequences`, each padded (by repeating
    its last sequence) to a multiple of the device count, so memory stays
    bounded; all chunks share one compiled program;
  * the program's parameter and optimiser-state inputs are donated (they are
    private copies made per chunk, never the caller's arrays).

The module is model-agnostic: the caller gives the loss and an optax
optimizer and works on plain (params, opt_state) pytrees.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any


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
  """All devices on one ('data',) axis."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def _sequence_step(loss_fn, optimizer, batch_size, has_state, params,
                   opt_state, state, data, rng, step):
  """One sequence's optimisation step: `(params, opt_state, state, loss)`.

  The one definition of a step: the compiled program scans it and
  `sequence_bytes` sizes it.
  """
  k_sample, k_loss = step_keys(rng, step)
  batch = sample_batch(data, k_sample, batch_size)
  if has_state:
    (loss, state), grads = jax.value_and_grad(
        lambda p: loss_fn(p, state, batch, k_loss), has_aux=True)(params)
  else:
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, k_loss)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, state, loss


@functools.lru_cache(maxsize=32)
def _program(loss_fn, optimizer, num_steps, batch_size, has_state,
             init_opt_state, mesh):
  """The jitted chunk program (cached: every chunk and call reuses it)."""

  def one_step(carry, data, rng, step):
    *carry, loss = _sequence_step(loss_fn, optimizer, batch_size, has_state,
                                  *carry, data, rng, step)
    return tuple(carry), loss

  def local(params, opt_state, state, data, rngs):
    # Runs on one device's slice of the stack: no cross-device traffic.
    if init_opt_state:
      opt_state = jax.vmap(optimizer.init)(params)

    def body(carry, step):
      return jax.vmap(one_step, in_axes=(0, 0, 0, None))(carry, data, rngs,
                                                         step)

    carry, losses = jax.lax.scan(body, (params, opt_state, state),
                                 jnp.arange(num_steps))
    return carry + (losses.T,)

  spec = P("data")
  sharded = jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec)
  return jax.jit(sharded, donate_argnums=(0, 1, 2))


@functools.lru_cache(maxsize=8)
def _gather(mesh):
  """Jitted `tree[idx]` onto the mesh: always a fresh, donatable buffer."""
  sharding = NamedSharding(mesh, P("data"))
  return jax.jit(
      lambda tree, idx: jax.tree.map(lambda x: jnp.take(x, idx, axis=0),
                                     tree),
      out_shardings=sharding)


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
             mesh: Optional[Mesh] = None) -> FinetuneResult:
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
      `apply(..., mutable=['batch_stats'])`). Hashable (a module-level
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
    max_batch_sequences: most sequences per compiled program (memory bound;
      see `estimate_max_batch_sequences`); None runs all S at once.
    mesh: 1-D mesh with axis 'data'; defaults to all devices.

  Returns:
    `FinetuneResult`, leaves `[S, ...]`, sequences in input order.
  """
  mesh = default_mesh() if mesh is None else mesh
  if mesh.axis_names != ("data",):
    raise ValueError(f"mesh must have the single axis ('data',), got "
                     f"{mesh.axis_names}")
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
  chunk = num_seq if max_batch_sequences is None else int(max_batch_sequences)
  if chunk < 1:
    raise ValueError(f"max_batch_sequences must be >= 1, got {chunk}")
  chunk = min(chunk, num_seq)
  num_dev = mesh.devices.size
  padded = -(-chunk // num_dev) * num_dev

  program = _program(loss_fn, optimizer, int(num_steps), int(batch_size),
                     model_state is not None, opt_state is None, mesh)
  gather = _gather(mesh)
  outputs = []
  for start in range(0, num_seq, chunk):
    stop = min(start + chunk, num_seq)
    # Pad by repeating the chunk's last sequence; its results are dropped.
    idx = np.minimum(np.arange(start, start + padded), stop - 1)
    args = gather((params, opt_state, model_state, data, rngs),
                  jnp.asarray(idx))
    out = program(*args)
    outputs.append(jax.tree.map(lambda x, n=stop - start: x[:n], out))
  if len(outputs) == 1:
    merged = outputs[0]
  else:
    merged = jax.tree.map(lambda *xs: jnp.concatenate(xs), *outputs)
  new_params, new_opt_state, new_state, losses = merged
  return FinetuneResult(new_params, new_opt_state, new_state, losses)


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
