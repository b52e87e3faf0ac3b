"""Training machinery shared by every method: state, steps, checkpoints, loop.

The pieces, from the inside out:

* `TrainState`: step, params, batch_stats (BatchNorm statistics, may be `{}`),
  opt_state; `apply_fn` and `tx` are static (not pytree leaves).
* `make_train_step(loss_fn)`: a pure `train_step(state, batch, rng)`.
* `make_mesh`, `jit_train_step`: one `jax.jit` over a 1-D `('data',)` mesh of
  all devices, params replicated, batch sharded along its leading axis, state
  donated. Because the global batch is one (sharded) array, BatchNorm means
  and the gradient are over the whole global batch whatever the device count:
  XLA inserts the cross-device reductions, so 1 and 8 devices train the same
  parameters up to float summation order.
* `Checkpointer` (from `vosjax.checkpoint`): Orbax `CheckpointManager`
  holding the train state and the input-pipeline state (a JSON-serialisable
  dict) of each saved step.
* `fit`: the loop. Resumes from the latest checkpoint, keeps host-device
  transfers to log and checkpoint steps, writes `<workdir>/metrics.jsonl`,
  and stops with `NonFiniteLossError` on NaN/Inf, never saving a bad state.
* `make_optimizer`, `make_learning_rate_fn`, `side_loss_weight`: the paper's
  optimisation settings as configurable factories.
"""

import json
import math
import pathlib
import time
from typing import Any, Callable, Mapping

from absl import logging
import flax
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vosjax import davis_io
from vosjax import distributed
from vosjax import interrupt
from vosjax import sharding
from vosjax.checkpoint import Checkpointer
from vosjax.errors import InputError
from vosjax.errors import RunError

PyTree = Any
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


# ----------------------------------------------------------------------------
# State and step.


@struct.dataclass
class TrainState:
  """Everything a training step reads and writes.

  Attributes:
    step: int32 scalar, number of optimiser updates applied so far.
    params: the model parameters (a pytree, e.g. `variables['params']`).
    batch_stats: BatchNorm running statistics (`variables['batch_stats']`),
      `{}` for models without BatchNorm.
    opt_state: the optax state of `tx`.
    apply_fn: the model's `apply` (static; e.g. `model.apply`).
    tx: the optax gradient transformation (static).
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, apply_fn, params, tx, batch_stats=None):
    """A step-0 state with freshly initialised optimiser state."""
    params = flax.core.unfreeze(params)
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=flax.core.unfreeze(batch_stats or {}),
               opt_state=tx.init(params), apply_fn=apply_fn, tx=tx)

  @property
  def variables(self):
    """`{'params': ..., 'batch_stats': ...}` for `apply_fn` at inference."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}

  def checkpoint_tree(self):
    """The saved part of the state: a dict of arrays (no static fields)."""
    return {"step": self.step, "params": self.params,
            "batch_stats": self.batch_stats, "opt_state": self.opt_state}

  def replace_from_checkpoint(self, tree):
    return self.replace(step=tree["step"], params=tree["params"],
                        batch_stats=tree["batch_stats"],
                        opt_state=tree["opt_state"])


def make_train_step(loss_fn, learning_rate_fn=None):
  """A pure `train_step(state, batch, rng) -> (state, metrics)`.

  Args:
    loss_fn: `loss_fn(params, batch_stats, batch, rng, step) ->
      (loss, (new_batch_stats, metrics))` with `loss` a float scalar (the
      quantity differentiated w.r.t. `params`), `new_batch_stats` the
      BatchNorm statistics after the forward pass in training mode (return
      the input `batch_stats` unchanged, e.g. `{}`, without BatchNorm), and
      `metrics` a dict of float scalars to log (e.g. one loss per head).
      `rng` is a per-step key (`fold_in(rng, step)`); `step` an int32 scalar
      (the update about to be made, 0-based), e.g. for the epoch-dependent
      `side_loss_weight`.
    learning_rate_fn: optional `step -> learning rate`, logged as
      `metrics['learning_rate']`.

  Returns:
    `train_step(state, batch, rng)`; its metrics hold `loss`, `grad_norm`,
    `learning_rate` (if given) and the loss_fn's metrics, all float32
    scalars. It is deterministic given (state, batch, rng).
  """

  def train_step(state, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (new_batch_stats, metrics)), grads = grad_fn(
        state.params, state.batch_stats, batch, step_rng, state.step)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    if learning_rate_fn is not None:
      metrics["learning_rate"] = learning_rate_fn(state.step)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=new_batch_stats, opt_state=opt_state)
    return new_state, metrics

  return train_step


# ----------------------------------------------------------------------------
# Mesh and shardings.


def jit_train_step(train_step, mesh, state):
  """`jax.jit(train_step)` with shardings over `mesh`, state donated.

  State and rng replicated, batch split along its leading axis, metrics
  replicated. The input state's buffers are donated: do not use it after the
  call (the returned state replaces it).

  Args:
    train_step: from `make_train_step`.
    mesh: from `make_mesh`.
    state: a `TrainState` (only its structure is used).
  """
  state_sharding = jax.tree.map(
      lambda _: sharding.replicated_sharding(mesh), state)
  return jax.jit(
      train_step,
      in_shardings=(state_sharding, sharding.batch_sharding(mesh),
                    sharding.replicated_sharding(mesh)),
      out_shardings=(state_sharding, sharding.replicated_sharding(mesh)),
      donate_argnums=(0,))


# ----------------------------------------------------------------------------
# Optimisation settings.


def make_learning_rate_fn(config):
  """`step -> learning rate` from a config-like mapping.

  Keys (all optional): `learning_rate` (1e-3, the FC-I3D paper's),
  `schedule` ('constant' | 'cosine' | 'step'), `num_steps` (cosine length),
  `warmup_steps` (linear warm-up from 0, default 0), `boundaries` and
  `decay_factor` (step schedule: multiply by `decay_factor`, default 0.1, at
  each boundary step).
  """
  get = _getter(config)
  base = float(get("learning_rate", 1e-3))
  kind = get("schedule", "constant")
  warmup = int(get("warmup_steps", 0))
  if kind == "constant":
    main = optax.constant_schedule(base)
  elif kind == "cosine":
    num_steps = get("num_steps", None)
    if num_steps is None:
      raise ValueError("schedule='cosine' needs num_steps")
    main = optax.cosine_decay_schedule(base, max(int(num_steps) - warmup, 1))
  elif kind == "step":
    factor = float(get("decay_factor", 0.1))
    bounds = [int(b) - warmup for b in get("boundaries", ())]
    main = optax.piecewise_constant_schedule(
        base, {b: factor for b in bounds if b > 0})
  else:
    raise ValueError(f"unknown learning-rate schedule {kind!r}; expected "
                     "'constant', 'cosine' or 'step'")
  if warmup <= 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup), main], [warmup])


def make_optimizer(config):
  """`(tx, learning_rate_fn)` from a config-like mapping.

  Keys (all optional, paper settings by default): `optimizer` ('sgd' |
  'adam', default 'sgd'), `momentum` (0.9), `nesterov` (False),
  `weight_decay` (2e-4), `grad_clip_norm` (None), plus the schedule keys of
  `make_learning_rate_fn`.

  Weight decay is the classic L2 form (decay * param added to the gradient
  before momentum, as Caffe / TF-slim regularisers do, which the OSVOS code
  the FC-I3D code builds on uses, with weight_decay=0.0002) and applies to
  kernels only (leaves with ndim > 1): biases and BatchNorm scales are not
  decayed.
  """
  get = _getter(config)
  lr_fn = make_learning_rate_fn(config)
  chain = []
  clip = get("grad_clip_norm", None)
  if clip:
    chain.append(optax.clip_by_global_norm(float(clip)))
  decay = float(get("weight_decay", 2e-4))
  if decay:
    chain.append(optax.add_decayed_weights(
        decay, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))
  kind = get("optimizer", "sgd")
  if kind == "sgd":
    chain.append(optax.sgd(lr_fn, momentum=float(get("momentum", 0.9)) or None,
                           nesterov=bool(get("nesterov", False))))
  elif kind == "adam":
    chain.append(optax.adam(lr_fn))
  else:
    raise ValueError(f"unknown optimizer {kind!r}; expected 'sgd' or 'adam'")
  return optax.chain(*chain), lr_fn


def side_loss_weight(epoch, num_epochs):
  """Weight of the side-output losses: `1 - epoch / num_epochs`, in [0, 1].

  FC-I3D (following the released code) fades deep supervision linearly:
  total = side_loss_weight * sum(side losses) + fused loss. Works on Python
  numbers and traced arrays (e.g. `epoch = step // steps_per_epoch`).
  """
  w = 1.0 - jnp.asarray(epoch, jnp.float32) / jnp.asarray(num_epochs,
                                                           jnp.float32)
  return jnp.clip(w, 0.0, 1.0)


def epoch_side_weight(train_config):
  """`step -> side_loss_weight(step // steps_per_epoch, num_epochs)`.

  The parent-training schedule of FC-I3D, OSVOS and MaskTrack (their released
  train_parent.py: `(1 - epoch / nEpochs) * sum(side losses)`), with
  `num_epochs = ceil(num_steps / steps_per_epoch)`.
  """
  per_epoch = train_config.steps_per_epoch
  num_epochs = max(-(-train_config.num_steps // per_epoch), 1)
  return lambda step: side_loss_weight(step // per_epoch, num_epochs)


def _getter(config):
  def get(key, default):
    if isinstance(config, Mapping):
      return config.get(key, default)
    return getattr(config, key, default)
  return get


# ----------------------------------------------------------------------------
# The loop.


class NonFiniteLossError(RunError):
  """The loss (or gradient norm) became NaN or Inf; training was stopped."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C in `fit` after `step` updates; `checkpoint` is the last step
  saved (None: none yet), where the same command resumes."""

  def __init__(self, step, checkpoint):
    super().__init__(step, checkpoint)
    self.step, self.checkpoint = step, checkpoint


def _check_positive(name, value):
  """`InputError` naming the config field unless `value` is an int >= 1."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < 1):
    raise InputError(f"{name}={value!r} (--config.train.{name}): must be a "
                     f"whole number >= 1")


@jax.jit
def _accumulate(acc, metrics, step):
  """Adds one step's metrics to the running sums; records the first bad step.

  `step` is the 0-based index of the update that produced `metrics`.
  """
  bad = jnp.zeros((), bool)
  for key in ("loss", "grad_norm"):
    if key in metrics:
      bad |= ~jnp.isfinite(metrics[key])
  first_bad = jnp.where((acc["first_bad"] < 0) & bad, step, acc["first_bad"])
  sums = jax.tree.map(jnp.add, acc["sums"], metrics)
  return {"sums": sums, "count": acc["count"] + 1, "first_bad": first_bad}


def _empty_acc(metrics):
  return {"sums": jax.tree.map(jnp.zeros_like, metrics),
          "count": jnp.zeros((), jnp.int32),
          "first_bad": jnp.full((), -1, jnp.int32)}


def _batch_size(batch):
  leaves = jax.tree.leaves(batch)
  return int(np.shape(leaves[0])[0]) if leaves else 0


def _format_duration(seconds):
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _truncate_metrics(path, last_step):
  """Drops metric lines logged after `last_step` (a run killed after it)."""
  if not path.is_file():
    return
  kept = []
  for line in path.read_text().splitlines():
    try:
      if json.loads(line)["step"] <= last_step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      pass  # A line cut short by the kill.
  davis_io.atomic_write(
      path, lambda f: f.write("".join(line + "\n" for line in kept)), mode="w")


def fit(state, train_step, batches, *, num_steps, workdir, rng, mesh=None,
        checkpoint_every=1000, log_every=50, log_every_secs=10.0,
        max_to_keep=2, async_checkpoint=True):
  """Trains `state` to `num_steps` updates, resuming from `workdir` if possible.

  Running the same call again after a crash continues from the last
  checkpoint (train state and `batches` position) and ends with the same
  parameters as an uninterrupted run, because each step's randomness is
  `fold_in(rng, step)` and the data position is restored.

  Apart from each batch going in, host-device transfers happen only every
  `log_every` steps, at checkpoint steps and at the end: metrics are summed
  on device in between. So a NaN is
  detected at the next such step; the state is then never saved and
  `NonFiniteLossError` names the first bad step and the last good checkpoint.

  Writes:
    <workdir>/checkpoints/<step>/  Orbax checkpoints (every `checkpoint_every`
      steps and at `num_steps`; the last `max_to_keep` kept).
    <workdir>/metrics.jsonl  one JSON object per log step: `step`, the means
      over the interval of every metric of `train_step` (`loss`, per-head
      losses, `learning_rate`, `grad_norm`, ...), `steps_per_sec`,
      `clips_per_sec` (batch elements per second; the first interval
      includes compilation), `eta_sec`. Lines after the restored step
      (logged by a killed run) are dropped on resume.

  Args:
    state: the initial `TrainState` (step 0). Consumed: its buffers are
      donated to the first step.
    train_step: a pure `train_step(state, batch, rng)` (`make_train_step`).
    batches: a `checkpoint.CheckpointableIterator` of host batches, every leaf
      `[B, ...]` with B a multiple of the device count.
    num_steps: total number of updates.
    workdir: output folder.
    rng: a `jax.random.key`, the same on every (re)start.
    mesh: default: every device of every process. With several processes
      each feeds its own part of the global batch; process 0 alone writes
      metrics.jsonl, and all of them write the checkpoints together.
    checkpoint_every: steps between checkpoints.
    log_every: steps between metric lines.
    log_every_secs: at most one console line per this many seconds (every
      metric line still goes to metrics.jsonl).
    max_to_keep: checkpoints kept.
    async_checkpoint: write checkpoints in a background thread.

  Returns:
    The final `TrainState` (step `num_steps`), replicated on `mesh`.

  Raises:
    InputError: `num_steps`, `checkpoint_every` or `log_every` is not a
      whole number >= 1 (checked before anything is compiled or written).
    NonFiniteLossError: the loss or gradient norm was NaN/Inf.
    CheckpointError: a checkpoint could not be saved (raised within a step
      of the failure, naming the path and the cause; the partial folder is
      removed) or no saved one could be read. An unreadable newest
      checkpoint falls back to the newest readable one with a warning.
    ValueError: `batches` ran out before `num_steps`, or a bad batch shape.
  """
  for name, value in (("num_steps", num_steps),
                      ("checkpoint_every", checkpoint_every),
                      ("log_every", log_every)):
    _check_positive(name, value)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh(jax.devices()) if mesh is None else mesh
  writer = distributed.is_writer()  # One writer of metrics.jsonl.
  rng = sharding.replicate(rng, mesh)
  state = sharding.replicate(state, mesh)
  metrics_path = workdir / METRICS_FILE
  ckpt = Checkpointer(workdir / CHECKPOINT_DIR, max_to_keep=max_to_keep,
                      async_save=async_checkpoint)
  last_good = step = None
  try:
    if ckpt.latest_step() is not None:
      # The newest readable checkpoint; an unreadable newer one is moved
      # aside, since this run writes checkpoints here.
      state, data_state = ckpt.restore(state, set_aside=True)
      last_good = int(jax.device_get(state.step))
      batches.set_state(data_state)
      logging.info("Resumed from step %d in %s", last_good, ckpt.directory)
      if writer:
        _truncate_metrics(metrics_path, last_good)
    elif writer and metrics_path.exists():
      metrics_path.unlink()  # A fresh run: no stale lines from another run.
    step = int(jax.device_get(state.step))
    if step >= num_steps:
      return state

    jitted = jit_train_step(train_step, mesh, state)
    acc = None
    t_last, step_last, t_print = time.time(), step, -math.inf
    clips = 0
    while step < num_steps:
      try:
        batch = next(batches)
      except StopIteration:
        raise ValueError(f"the batch iterator ran out at step {step}; "
                         f"num_steps is {num_steps}") from None
      batch = sharding.shard_batch(batch, mesh)
      clips += _batch_size(batch)  # The global batch, over all processes.
      state, metrics = jitted(state, batch, rng)
      if acc is None:
        acc = _empty_acc(metrics)
      acc = _accumulate(acc, metrics, step)
      step += 1
      ckpt.poll()  # A failed background save stops the run here, at once.
      is_log = step % log_every == 0 or step == num_steps
      is_ckpt = step % checkpoint_every == 0 or step == num_steps
      if not (is_log or is_ckpt):
        continue
      # The one synchronisation point: fetching the flag waits for the steps.
      first_bad = int(jax.device_get(acc["first_bad"]))
      if first_bad >= 0:
        raise NonFiniteLossError(
            f"non-finite loss or gradient at step {first_bad}; training "
            f"stopped. Last good checkpoint: "
            f"{'none' if last_good is None else last_good} in "
            f"{ckpt.directory}")
      if is_log:
        summary = jax.device_get(acc)
        now = time.time()
        rate = (step - step_last) / max(now - t_last, 1e-9)
        record = {"step": step}
        record.update({k: float(v) / int(summary["count"])
                       for k, v in sorted(summary["sums"].items())})
        record.update(steps_per_sec=rate,
                      clips_per_sec=clips / max(now - t_last, 1e-9),
                      eta_sec=(num_steps - step) / rate)
        if writer:
          with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if now - t_print >= log_every_secs or step == num_steps:
          logging.info("%s", _log_line(record, num_steps))
          t_print = now
        acc, t_last, step_last, clips = None, now, step, 0
      if is_ckpt:
        # Orbax creates the step's temporary folder here and hands the
        # write to a thread; cut by Ctrl-C, it would leave that folder.
        with interrupt.deferred():
          last_good = ckpt.save(state, batches.get_state())
    return state
  except KeyboardInterrupt:
    # The `finally` first completes a save under way (Orbax writes a step
    # in a temporary folder and renames it: none is ever half-written).
    raise TrainingInterrupted(step, last_good) from None
  finally:
    ckpt.close()


def _log_line(record, num_steps):
  skip = ("step", "learning_rate", "steps_per_sec", "clips_per_sec",
          "eta_sec")
  losses = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in skip)
  lr = record.get("learning_rate")
  lr_text = f" | lr {lr:.2e}" if lr is not None else ""
  return (f"step {record['step']}/{num_steps} | {losses}{lr_text} | "
          f"{record['clips_per_sec']:.1f} clips/s | "
          f"ETA {_format_duration(record['eta_sec'])}")
