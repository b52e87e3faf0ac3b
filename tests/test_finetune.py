"""Tests for vosjax.finetune: batched fine-tuning equals sequential.

The reference is `_sequential`: the plain per-sequence Python loop of jitted
single-sequence steps, no vmap, scan or shard_map. Every strategy is held to
it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from vosjax import finetune as ft

S, POOL, H, W = 5, 4, 8, 8
STEPS, BATCH = 3, 2


class TinyNet(nn.Module):
  """Input jitter -> conv -> (BatchNorm) -> relu -> 1x1 conv: a logit map."""
  use_bn: bool = False

  @nn.compact
  def __call__(self, x, *, train):
    if train:
      # A random per-step input gain exercises the rng plumbing. (Not
      # nn.Dropout: random bits inside a conv net take XLA:CPU ~10 s to
      # compile, a scalar draw well under one.)
      x = x * (1.0 + 0.2 * jax.random.uniform(self.make_rng("dropout"), ()))
    # No bias before BatchNorm: its gradient is pure rounding noise, which
    # Adam would blow up into steps that differ between programs.
    x = nn.Conv(4, (3, 3), use_bias=not self.use_bn, name="conv1")(x)
    if self.use_bn:
      x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
    x = nn.relu(x)
    return nn.Conv(1, (1, 1), name="head")(x)[..., 0]


NET = TinyNet()
BN_NET = TinyNet(use_bn=True)


def loss_fn(params, batch, rng):
  logits = NET.apply({"params": params}, batch["image"], train=True,
                     rngs={"dropout": rng})
  return optax.sigmoid_binary_cross_entropy(logits, batch["mask"]).mean()


def bn_loss_fn(params, state, batch, rng):
  logits, updates = BN_NET.apply({"params": params, "batch_stats": state},
                                 batch["image"], train=True,
                                 rngs={"dropout": rng},
                                 mutable=["batch_stats"])
  loss = optax.sigmoid_binary_cross_entropy(logits, batch["mask"]).mean()
  return loss, updates["batch_stats"]


OPTIMIZER = optax.adam(optax.cosine_decay_schedule(1e-2, STEPS))


def _problem(net, seed=0):
  """Per-sequence params (perturbed parent), data pools and keys."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(S, POOL, H, W, 3)).astype(np.float32)
  masks = (images[..., 0] > 0.3).astype(np.float32)
  # Shapes from eval_shape, values from numpy: eager flax init would
  # compile every initialiser separately (slow on a shared CPU).
  shapes = jax.eval_shape(lambda k, x: net.init(k, x, train=False),
                          jax.random.key(0), jnp.zeros((1, H, W, 3)))
  variables = jax.tree.map(
      lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), jnp.float32),
      shapes)
  if "batch_stats" in variables:
    variables["batch_stats"] = {"bn": {
        "mean": jnp.zeros((4,)), "var": jnp.ones((4,))}}
  parent = ft.broadcast(variables["params"], S)
  # Distinct starting points too, so a mixed-up sequence order would show.
  params = jax.tree.map(
      lambda x: x + 0.01 * rng.normal(size=x.shape).astype(np.float32),
      parent)
  state = ft.broadcast(variables.get("batch_stats", {}), S)
  data = {"image": jnp.asarray(images), "mask": jnp.asarray(masks)}
  rngs = jax.random.split(jax.random.key(42), S)
  return params, state, data, rngs


def _sequential(loss, params, data, rngs, state=None):
  """The plain per-sequence loop, one sequence at a time, no vmap/scan."""

  @jax.jit  # One plain step; jitted only to keep the test fast.
  def step(p, opt_state, st, d, rng, step_index):
    k_sample, k_loss = ft.step_keys(rng, step_index)
    batch = ft.sample_batch(d, k_sample, BATCH)
    if st is None:
      value, grads = jax.value_and_grad(loss)(p, batch, k_loss)
    else:
      (value, st), grads = jax.value_and_grad(
          lambda p_: loss(p_, st, batch, k_loss), has_aux=True)(p)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, st, value

  out_params, out_states, out_losses = [], [], []
  for s in range(S):
    p = jax.tree.map(lambda x, s=s: x[s], params)
    d = jax.tree.map(lambda x, s=s: x[s], data)
    st = None if state is None else jax.tree.map(lambda x, s=s: x[s], state)
    opt_state = OPTIMIZER.init(p)
    losses = []
    for i in range(STEPS):
      p, opt_state, st, value = step(p, opt_state, st, d, rngs[s], i)
      losses.append(value)
    out_params.append(p)
    out_states.append(st)
    out_losses.append(jnp.stack(losses))
  stack = lambda trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)
  return (stack(out_params), None if state is None else stack(out_states),
          jnp.stack(out_losses))


def _assert_trees_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5), a, b)


@pytest.fixture(scope="module")
def plain():
  params, _, data, rngs = _problem(NET)
  return params, data, rngs, _sequential(loss_fn, params, data, rngs)


STRATEGIES = ["loop", "scan", "vmap"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("max_batch_sequences,num_devices", [
    (2, 2), (None, 1),
    # The 2-device case already covers sharding; this one adds seconds.
    pytest.param(None, 4, marks=pytest.mark.slow)])
def test_batched_equals_sequential(plain, strategy, max_batch_sequences,
                                   num_devices):
  """Every strategy vs `_sequential`: 4 devices (S=5: 2 a device, padded), 2
  devices at most 2 sequences per call (chunks of 3 + 2, each rounded up to
  the 2 devices), and one device."""
  params, data, rngs, (ref_params, _, ref_losses) = plain
  assert jax.device_count() == 4
  out = ft.finetune(loss_fn, OPTIMIZER, params, data, rngs,
                    num_steps=STEPS, batch_size=BATCH,
                    max_batch_sequences=max_batch_sequences,
                    mesh=Mesh(np.asarray(jax.devices()[:num_devices]),
                              ("data",)),
                    strategy=strategy)
  assert out.losses.shape == (S, STEPS)
  _assert_trees_close(out.params, ref_params)
  np.testing.assert_allclose(out.losses, ref_losses, rtol=2e-4, atol=1e-6)
  # Training did something, differently per sequence.
  assert float(jnp.abs(out.params["head"]["kernel"] -
                       params["head"]["kernel"]).max()) > 1e-3
  assert not np.allclose(out.losses[0], out.losses[1])
  # The caller's arrays were not donated away.
  assert np.isfinite(np.asarray(params["conv1"]["kernel"])).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batched_equals_sequential_with_model_state(strategy):
  """BatchNorm statistics per sequence, vs `_sequential`."""
  params, state, data, rngs = _problem(BN_NET, seed=1)
  ref_params, ref_state, ref_losses = _sequential(bn_loss_fn, params, data,
                                                  rngs, state)
  out = ft.finetune(bn_loss_fn, OPTIMIZER, params, data, rngs,
                    num_steps=STEPS, batch_size=BATCH, model_state=state,
                    max_batch_sequences=4, strategy=strategy,
                    mesh=Mesh(np.asarray(jax.devices()[:2]), ("data",)))
  _assert_trees_close(out.params, ref_params)
  _assert_trees_close(out.model_state, ref_state)
  np.testing.assert_allclose(out.losses, ref_losses, rtol=2e-4, atol=1e-6)
  assert not np.allclose(out.model_state["bn"]["mean"],
                         state["bn"]["mean"])


def test_uses_given_opt_state(plain):
  """A given opt_state is carried on, not re-initialised."""
  params, data, rngs, (ref_params, _, _) = plain
  opt_state = jax.vmap(OPTIMIZER.init)(params)
  out = ft.finetune(loss_fn, OPTIMIZER, params, data, rngs, num_steps=STEPS,
                    batch_size=BATCH, opt_state=opt_state)
  _assert_trees_close(out.params, ref_params)
  np.testing.assert_array_equal(out.opt_state[0].count, np.full(S, STEPS))


def test_sample_batch_draws_from_the_pool():
  pool = {"x": jnp.arange(10) * 10, "y": jnp.arange(10)}
  key = jax.random.key(3)
  batch = ft.sample_batch(pool, key, 6)
  idx = jax.random.randint(key, (6,), 0, 10)
  np.testing.assert_array_equal(batch["y"], idx)
  np.testing.assert_array_equal(batch["x"], idx * 10)
  a, _ = ft.step_keys(key, 0)
  b, _ = ft.step_keys(key, 1)
  assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(b))


def test_bad_shapes_are_refused(plain):
  params, data, rngs, _ = plain
  with pytest.raises(ValueError, match="leading axis S=4"):
    ft.finetune(loss_fn, OPTIMIZER, params, data, rngs[:4], num_steps=1,
                batch_size=1)


def test_estimate_max_batch_sequences():
  assert ft.estimate_max_batch_sequences(
      100, device_memory_bytes=1000, num_devices=8, fraction=0.5) == 40
  assert ft.estimate_max_batch_sequences(
      10_000, device_memory_bytes=1000, num_devices=2) == 2
  params, _, data, rngs = _problem(NET)
  one = jax.tree.map(lambda x: x[0], (params, data))
  nbytes = ft.sequence_bytes(loss_fn, OPTIMIZER, *one, rngs[0],
                             batch_size=BATCH)
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(one[0]))
  if nbytes is not None:  # Params, grads and two Adam moments at least.
    assert nbytes >= 3 * param_bytes


def test_chunk_layout_pads_only_to_the_device_count():
  """Hand-worked layouts: 5 sequences, chunks of at most 4 sequences."""
  # One device, at most 4 per chunk: 3 + 2, not 4 + 4.
  chunks = ft.chunk_layout(5, 1, 4, uniform=False)
  assert [list(i) for i, _ in chunks] == [[0, 1, 2], [3, 4]]
  assert all(v.all() for _, v in chunks)
  # Uniform (one program): the second chunk has one padding slot.
  chunks = ft.chunk_layout(5, 1, 4, uniform=True)
  assert [list(v) for _, v in chunks] == [[True] * 3, [True, True, False]]
  # Two devices, at most 2 per device: chunks of 3 + 2 sequences; the first
  # puts [0, 2] on device 0 and [1, padding] on device 1.
  chunks = ft.chunk_layout(5, 2, 2, uniform=False)
  assert [list(i) for i, _ in chunks] == [[0, 2, 1, 2], [3, 4]]
  assert [list(v) for _, v in chunks] == [[True, True, True, False],
                                          [True, True]]
  # Every sequence exactly once, whatever the shape.
  for s, d, k in [(7, 3, 2), (1, 1, 1), (9, 4, 1), (16, 8, 4)]:
    for uniform in (True, False):
      chunks = ft.chunk_layout(s, d, k, uniform)
      real = np.concatenate([i[v] for i, v in chunks])
      np.testing.assert_array_equal(np.sort(real), np.arange(s))
      assert all(len(i) % d == 0 and len(i) <= d * k for i, _ in chunks)
      pad = sum(len(i) for i, _ in chunks) - s
      if not uniform:  # Only rounding each chunk up to the device count.
        assert pad < d * len(chunks)


@pytest.mark.parametrize("strategy,expected",
                         [("loop", 6), ("scan", 5), ("vmap", 6)])
def test_padding_work(strategy, expected):
  """Sequence-steps actually computed for S=5 on 2 devices, one step each:
  'scan' trains the 5 real sequences only, 'loop' and 'vmap' also the one
  slot that rounds 5 up to the 2 devices (counted by a host callback in the loss)."""
  calls = []

  def counting_loss(params, batch, rng):
    value = loss_fn(params, batch, rng)
    # Under vmap the callback sees the batched value: count its elements.
    jax.debug.callback(lambda v: calls.append(np.size(v)), value)
    return value

  params, _, data, rngs = _problem(NET)
  ft.finetune(counting_loss, OPTIMIZER, params, data, rngs, num_steps=1,
              batch_size=1, strategy=strategy,
              mesh=Mesh(np.asarray(jax.devices()[:2]), ("data",)))
  jax.effects_barrier()
  assert sum(calls) == expected


def test_strategy_choice():
  assert ft.resolve_strategy("vmap") == "vmap"
  assert ft.resolve_strategy(None, "cpu") == ft.resolve_strategy("auto",
                                                                 "cpu")
  assert ft.resolve_strategy("auto", "cpu") == "loop"  # Measured fastest.
  assert ft.resolve_strategy("auto", "unmeasured") == "scan"
  with pytest.raises(ValueError, match="strategy 'grouped'"):
    ft.resolve_strategy("grouped")
