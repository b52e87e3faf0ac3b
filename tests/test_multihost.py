"""Two JAX processes on localhost train what one process trains.

Reference: the same training in one process (the single-controller run every
other test exercises). Two CPU processes with 4 host devices each join
through `jax.distributed` (gloo collectives), each reads its half of every
global batch (`input_pipeline.make_dataset` slices by process), and together
they train the tiny FC-I3D parent of tests/test_fc_i3d_program.py for a few
steps over a 2 x 2-device mesh; one process trains the same global batches on
4 devices. The parameters must agree up to float summation order, as the 1-
vs 8-device test of tests/test_train.py. The worker is this file run as
`python -m tests.test_multihost WORKDIR OUT COORDINATOR NUM_PROCESSES ID`.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES_PER_PROCESS = 4
NUM_STEPS = 3
TIMEOUT_S = 240


def _tiny_config():
  """FC-I3D demo shrunk to seconds (as tests/test_fc_i3d_program.py)."""
  from experiments import fc_i3d_demo  # pylint: disable=g-import-not-at-top
  config = fc_i3d_demo.get_config()
  config.data.num_train = 3
  config.data.num_val = 1
  config.data.num_frames = 8
  config.data.height = 48
  config.data.width = 64
  # One shallow tap: the backbone's first conv and batch norm, with the
  # side head and fusion, compiles in seconds.
  config.model.taps = "Conv3d_1a_7x7"
  config.train.num_steps = NUM_STEPS
  # 4 clips: 2 per process, on 2 devices each.
  config.train.batch_size = 4
  config.train.clip_len = 4
  config.train.crop_size = 32
  config.train.checkpoint_every = 2  # A collective save mid-run and at end.
  config.train.log_every = 1
  return config


def _worker(workdir, out, coordinator, num_processes, process_id):
  """Trains the tiny parent; writes this process's parameters to `out`."""
  from vosjax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(coordinator if num_processes > 1 else None,
                         num_processes, process_id)
  import jax  # pylint: disable=g-import-not-at-top
  from vosjax import pipeline  # pylint: disable=g-import-not-at-top
  from vosjax.programs import fc_i3d  # pylint: disable=g-import-not-at-top
  assert jax.process_count() == num_processes
  assert jax.local_device_count() == DEVICES_PER_PROCESS
  config = _tiny_config()
  method = fc_i3d.FCI3DMethod(config, workdir)
  data = pipeline.prepare(config, workdir)
  method.train(data, os.path.join(workdir, "parent_run"))
  np.savez(out, **_flat(method.parent))
  if num_processes == 1:  # The initialisation, to check training moved it.
    tc = config.train
    init = fc_i3d.init_variables(
        method.model, config.model, (1, tc.clip_len, tc.crop_size,
                                     tc.crop_size, 3),
        jax.random.key(config.seed, impl="rbg"))
    np.savez(str(out).replace(".npz", "_init.npz"), **_flat(init))


def _flat(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(workdir, out, coordinator, num_processes, process_id):
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count="
                      f"{DEVICES_PER_PROCESS}")
  return subprocess.Popen(
      [sys.executable, "-m", "tests.test_multihost", str(workdir), str(out),
       coordinator, str(num_processes), str(process_id)],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def _finish(proc):
  try:
    output, _ = proc.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc.kill()
    output, _ = proc.communicate()
    pytest.fail(f"worker timed out:\n{output[-3000:]}")
  assert proc.returncode == 0, output[-3000:]
  return output


def _load(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def test_two_processes_train_the_same_parameters_as_one(tmp_path):
  coordinator = f"localhost:{_free_port()}"
  procs = [_start(tmp_path / "two", tmp_path / f"two_{i}.npz", coordinator,
                  2, i) for i in range(2)]
  procs.append(_start(tmp_path / "one", tmp_path / "one.npz", "-", 1, 0))
  try:
    for p in procs:
      _finish(p)
  finally:
    for p in procs:  # A failed or timed-out worker leaves none behind.
      if p.poll() is None:
        p.kill()
        p.wait()

  one = _load(tmp_path / "one.npz")
  two = [_load(tmp_path / f"two_{i}.npz") for i in range(2)]
  assert set(one) == set(two[0]) == set(two[1]) and one
  worst = 0.0
  for name in sorted(one):
    # Replicated parameters: both processes hold the very same values.
    np.testing.assert_array_equal(two[0][name], two[1][name], err_msg=name)
    np.testing.assert_allclose(two[0][name], one[name], rtol=1e-4, atol=1e-5,
                               err_msg=name)
    worst = max(worst, float(np.max(np.abs(two[0][name] - one[name]))))
  print(f"max |params(2 processes) - params(1 process)| = {worst:.3g}")

  # Training moved the parameters (not a comparison of two initialisations).
  init = _load(tmp_path / "one_init.npz")
  assert any(not np.allclose(init[k], one[k]) for k in init)
  # Process 0 alone wrote the metrics; both wrote one set of checkpoints.
  parent = tmp_path / "two" / "parent_run" / "parent"
  steps = [json.loads(line)["step"]
           for line in (parent / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(1, NUM_STEPS + 1)), steps
  saved = sorted(p.name for p in (parent / "checkpoints").iterdir())
  assert saved == ["2", "3"], saved


def test_resume_with_another_process_count_is_refused(tmp_path, monkeypatch):
  """The saved input position counts one process's clips (grain's
  `next_index` after slicing by process): another count would resume at
  another place in the data, so the restore names both counts."""
  import optax  # pylint: disable=g-import-not-at-top
  from vosjax import checkpoint  # pylint: disable=g-import-not-at-top
  from vosjax import train  # pylint: disable=g-import-not-at-top
  state = train.TrainState.create(apply_fn=None, params={"w": np.ones(2)},
                                  tx=optax.sgd(0.1))
  ckpt = checkpoint.Checkpointer(tmp_path, async_save=False)
  monkeypatch.setattr(checkpoint, "_process_count", lambda: 2)
  ckpt.save(state, {"next_index": 4})
  restored, data_state = ckpt.restore(state)  # The same count: resumes.
  assert data_state == {"next_index": 4} and int(restored.step) == 0
  monkeypatch.setattr(checkpoint, "_process_count", lambda: 1)
  with pytest.raises(checkpoint.CheckpointError,
                     match="written by 2 processes, this run has 1"):
    ckpt.restore(state)
  ckpt.close()


if __name__ == "__main__":
  _worker(*sys.argv[1:3], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
