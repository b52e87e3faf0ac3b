"""Tests of vosjax.train: device-count invariance, resume, NaN, optimiser."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vosjax import losses
from vosjax import sharding
from vosjax import train


def _key(seed):
  # 'rbg' keys: XLA:CPU compiles threefry random numbers very slowly (~15 s
  # for a small normal draw on the shared test machine); rbg takes ~1 s.
  return jax.random.key(seed, impl="rbg")


class _ToyNet(nn.Module):
  """Two 3x3x3 convs with BatchNorm: `[B, T, H, W, 3] -> [B, T, H, W, 1]`."""

  @nn.compact
  def __call__(self, x, *, train):
    x = nn.Conv(4, (3, 3, 3), name="conv1")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     name="bn1")(x)
    x = nn.relu(x)
    return nn.Conv(1, (3, 3, 3), name="logits")(x)


_SHAPE = (2, 6, 6, 3)  # T, H, W, C of one clip.


def _loss_fn(params, batch_stats, batch, rng, step):
  del step
  # Dropout-like noise so the per-step rng matters for reproducibility.
  noise = 0.1 * jax.random.normal(rng, batch["clips"].shape)
  logits, new_vars = _ToyNet().apply(
      {"params": params, "batch_stats": batch_stats},
      batch["clips"] + noise, train=True, mutable=["batch_stats"])
  loss = losses.class_balanced_bce(logits, batch["masks"])
  loss = loss + jnp.mean(batch["poison"])
  return loss, (new_vars["batch_stats"], {"fused_loss": loss})


# One step function for the whole module, so jax.jit's cache is shared by the
# tests (each compilation costs seconds on CPU).
_TRAIN_STEP = train.make_train_step(_loss_fn)
# Static fields of the state are part of its tree structure: sharing them
# lets the compiled step be reused too.
_TX = optax.sgd(0.1, 0.9)
_APPLY = _ToyNet().apply


_INIT = jax.jit(functools.partial(_ToyNet().init, train=False))


def _init_state(tx=None):
  variables = _INIT(_key(0), jnp.zeros((1,) + _SHAPE))
  return train.TrainState.create(
      apply_fn=_APPLY, params=variables["params"],
      batch_stats=variables["batch_stats"], tx=tx or _TX)


def _batch(pos, batch_size=8, poison=False):
  rng = np.random.default_rng(pos)
  clips = rng.normal(size=(batch_size,) + _SHAPE).astype(np.float32)
  masks = (clips[..., :1] > 0.3).astype(np.float32)
  fill = np.nan if poison else 0.0
  return {"clips": clips, "masks": masks,
          "poison": np.full((batch_size,), fill, np.float32)}


class _Killed(Exception):
  pass


class _Batches:
  """Deterministic batches by position; may simulate a kill or a NaN."""

  def __init__(self, kill_at=None, poison_at=None):
    self.pos, self.kill_at, self.poison_at = 0, kill_at, poison_at

  def __iter__(self):
    return self

  def __next__(self):
    if self.pos == self.kill_at:
      raise _Killed(f"simulated kill before batch {self.pos}")
    batch = _batch(self.pos, poison=self.pos == self.poison_at)
    self.pos += 1
    return batch

  def get_state(self):
    return {"pos": self.pos}

  def set_state(self, state):
    self.pos = state["pos"]


def _assert_trees_close(a, b, **tol):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a),
                          jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                               err_msg=jax.tree_util.keystr(path), **tol)


def _run_steps(mesh, num_steps):
  state = sharding.replicate(_init_state(), mesh)
  step = train.jit_train_step(_TRAIN_STEP, mesh, state)
  rng = sharding.replicate(_key(1), mesh)
  for pos in range(num_steps):
    state, metrics = step(state, sharding.shard_batch(_batch(pos), mesh), rng)
  return jax.device_get(state), jax.device_get(metrics)


def test_one_device_and_every_device_train_the_same_parameters():
  devices = jax.device_count()
  assert devices == 4, "conftest should give 4 host devices"
  mesh_all = sharding.make_mesh()
  assert mesh_all.axis_names == ("data",) and mesh_all.devices.size == devices
  sharded = sharding.shard_batch(_batch(0), mesh_all)
  assert len(sharded["clips"].addressable_shards) == devices
  assert sharded["clips"].addressable_shards[0].data.shape[0] == 8 // devices

  s1, m1 = _run_steps(sharding.make_mesh(jax.devices()[:1]), 3)
  s4, m4 = _run_steps(mesh_all, 3)
  assert int(s1.step) == int(s4.step) == 3
  _assert_trees_close(s1.params, s4.params, rtol=1e-5, atol=1e-6)
  # Per-device BatchNorm statistics would differ from global ones here.
  _assert_trees_close(s1.batch_stats, s4.batch_stats, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  # Training moved the parameters (the comparison is not of two inits).
  init = _init_state()
  assert not np.allclose(s1.params["conv1"]["kernel"],
                         init.params["conv1"]["kernel"])


def test_shard_batch_rejects_indivisible_batch():
  with pytest.raises(ValueError, match=r"\['clips'\].*multiple of the 4"):
    sharding.shard_batch({"clips": np.zeros((6, 2))}, sharding.make_mesh())


def _fit(workdir, batches, num_steps=6):
  return train.fit(_init_state(), _TRAIN_STEP, batches,
                   num_steps=num_steps, workdir=workdir, rng=_key(1),
                   checkpoint_every=2, log_every=2, log_every_secs=0.0)


def _read_metrics(workdir):
  lines = (workdir / train.METRICS_FILE).read_text().splitlines()
  return [json.loads(line) for line in lines]


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
  full = jax.device_get(_fit(tmp_path / "full", _Batches()))

  with pytest.raises(_Killed):
    _fit(tmp_path / "killed", _Batches(kill_at=5))  # After step 5 of 6.
  ckpt = train.Checkpointer(tmp_path / "killed" / train.CHECKPOINT_DIR)
  assert ckpt.latest_step() == 4
  ckpt.close()
  # Same command again, fresh iterator: resumes at step 4, batch 4.
  resumed_batches = _Batches()
  resumed = jax.device_get(_fit(tmp_path / "killed", resumed_batches))
  assert resumed_batches.pos == 6

  assert int(resumed.step) == int(full.step) == 6
  _assert_trees_close(resumed.params, full.params, rtol=1e-6, atol=1e-7)
  _assert_trees_close(resumed.batch_stats, full.batch_stats, rtol=1e-6,
                      atol=1e-7)
  _assert_trees_close(resumed.opt_state, full.opt_state, rtol=1e-6, atol=1e-7)

  full_lines = _read_metrics(tmp_path / "full")
  resumed_lines = _read_metrics(tmp_path / "killed")
  assert [r["step"] for r in full_lines] == [2, 4, 6]
  assert [r["step"] for r in resumed_lines] == [2, 4, 6]
  for a, b in zip(full_lines, resumed_lines):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
  for key in ("loss", "fused_loss", "grad_norm", "clips_per_sec", "eta_sec"):
    assert key in full_lines[0] and np.isfinite(full_lines[0][key])
  assert full_lines[-1]["eta_sec"] == 0


def test_finished_run_is_not_retrained(tmp_path):
  _fit(tmp_path, _Batches(), num_steps=2)
  batches = _Batches()
  state = _fit(tmp_path, batches, num_steps=2)
  assert batches.pos == 2  # Restored position, no new batch drawn.
  assert int(state.step) == 2


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(train.NonFiniteLossError,
                     match=r"step 4.*Last good checkpoint: 4"):
    _fit(tmp_path, _Batches(poison_at=4))
  ckpt = train.Checkpointer(tmp_path / train.CHECKPOINT_DIR)
  assert ckpt.latest_step() == 4 and 6 not in ckpt.all_steps()
  state, data_state = ckpt.restore(_init_state())
  ckpt.close()
  assert data_state == {"pos": 4}
  assert int(state.step) == 4
  for leaf in jax.tree.leaves(state.checkpoint_tree()):
    assert np.all(np.isfinite(np.asarray(leaf)))
  assert [r["step"] for r in _read_metrics(tmp_path)] == [2, 4]


def test_checkpoint_round_trip_with_bytes_data_state(tmp_path):
  state = _init_state(tx=train.make_optimizer({})[0])
  ckpt = train.Checkpointer(tmp_path, async_save=False)
  ckpt.save(state, b"\x00grain-state\xff")
  restored, data_state = ckpt.restore(_init_state(tx=state.tx))
  ckpt.close()
  assert data_state == b"\x00grain-state\xff"
  _assert_trees_close(restored.checkpoint_tree(), state.checkpoint_tree())


def test_sgd_update_matches_hand_computation():
  # Paper defaults: SGD, momentum 0.9, lr 1e-3, L2 decay on kernels only.
  tx, lr_fn = train.make_optimizer({"weight_decay": 0.01})
  params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
  grads = {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full((2,), 0.5)}
  opt_state = tx.init(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  np.testing.assert_allclose(updates["kernel"], -1e-3 * (0.5 + 0.01 * 2.0),
                             rtol=1e-6)
  np.testing.assert_allclose(updates["bias"], -1e-3 * 0.5, rtol=1e-6)
  # Second step: momentum trace = 0.9 * g1 + g2 (same gradients here).
  updates, _ = tx.update(grads, opt_state, params)
  np.testing.assert_allclose(updates["bias"], -1e-3 * 1.9 * 0.5, rtol=1e-6)
  assert float(lr_fn(123)) == pytest.approx(1e-3)


def test_learning_rate_schedules():
  fn = train.make_learning_rate_fn(
      {"learning_rate": 0.1, "schedule": "step", "boundaries": [10, 20],
       "decay_factor": 0.5, "warmup_steps": 4})
  got = [float(fn(s)) for s in (0, 2, 4, 9, 10, 19, 20, 100)]
  np.testing.assert_allclose(got, [0, 0.05, 0.1, 0.1, 0.05, 0.05, 0.025,
                                   0.025], rtol=1e-6, atol=1e-9)
  cos = train.make_learning_rate_fn(
      {"learning_rate": 1.0, "schedule": "cosine", "num_steps": 10})
  np.testing.assert_allclose([float(cos(s)) for s in (0, 5, 10)],
                             [1.0, 0.5, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="schedule"):
    train.make_learning_rate_fn({"schedule": "linear-ish"})


def test_side_loss_weight_fades_linearly():
  got = [float(train.side_loss_weight(e, 4)) for e in (0, 1, 2, 4, 5)]
  assert got == [1.0, 0.75, 0.5, 0.0, 0.0]
  traced = jax.jit(lambda s: train.side_loss_weight(s // 10, 4))(
      jnp.int32(25))
  assert float(traced) == 0.5


def test_state_without_batch_stats_round_trips(tmp_path):
  state = train.TrainState.create(apply_fn=None, tx=_TX,
                                  params={"w": jnp.arange(4.0)})
  assert state.batch_stats == {} and state.variables == {"params":
                                                         state.params}
  ckpt = train.Checkpointer(tmp_path, async_save=False)
  ckpt.save(state.replace(step=jnp.int32(3)), {"pos": 3})
  restored, data_state = ckpt.restore(state)
  ckpt.close()
  assert int(restored.step) == 3 and data_state == {"pos": 3}
  assert restored.batch_stats == {}
  np.testing.assert_array_equal(restored.params["w"], [0, 1, 2, 3])
