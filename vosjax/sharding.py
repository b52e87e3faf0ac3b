"""The one home of device meshes and shardings.

Every program trains over a 1-D `('data',)` mesh: parameters replicated, the
batch split along its leading axis (`vosjax.train`); one-shot fine-tuning
splits sequences over the same axis (`vosjax.finetune`).

Several processes (`vosjax.distributed`): the training mesh
(`mesh_for_batch`) takes the same number of devices from every process and
`shard_batch` assembles global arrays from each process's local batch;
`make_mesh()` without devices is this process's devices only, so the stages
after training (fine-tuning, inference) run on one process's devices without
cross-process collectives.
"""

import math

from absl import logging
import jax
import numpy as np


def make_mesh(devices=None):
  """A 1-D `('data',)` mesh over `devices`, Auto axis type.

  Default: this process's devices (every device with one process).
  """
  devices = np.asarray(jax.local_devices() if devices is None else devices)
  return jax.sharding.Mesh(devices.reshape(-1), ("data",),
                           axis_types=(jax.sharding.AxisType.Auto,))


def mesh_for_batch(batch_size):
  """A ('data',) mesh of every process over the most devices that split
  `batch_size` evenly.

  All devices for the usual power-of-two batches and device counts; fewer
  where they do not divide (e.g. a batch of 2 on 8 host test devices). Every
  process gives the same number of its devices, in process order, so each
  process's part of the batch (`batch_size / process_count` rows, see
  `input_pipeline.make_dataset`) lands on its own devices.

  Raises:
    ValueError: `batch_size` is not a multiple of the process count.
  """
  processes = jax.process_count()
  if batch_size % processes:
    raise ValueError(f"batch size {batch_size} is not a multiple of the "
                     f"{processes} processes")
  local = jax.local_device_count()
  per_process = math.gcd(batch_size // processes, local)
  if per_process < local:
    logging.warning("batch size %d does not divide the %d devices: using %d "
                    "of them", batch_size, jax.device_count(),
                    per_process * processes)
  by_process = {}
  for device in jax.devices():
    by_process.setdefault(device.process_index, []).append(device)
  return make_mesh([d for p in sorted(by_process)
                    for d in by_process[p][:per_process]])


def replicated_sharding(mesh):
  """Every device holds the whole array."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharding(mesh):
  """Leading axis split over 'data'; the other axes whole."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def replicate(tree, mesh):
  """Puts every leaf of `tree` on every device of `mesh`.

  A mesh spanning several processes takes each process's copy of the value
  (the same on every process: initial states, keys) for its own devices;
  `jax.device_put` only reaches this process's devices.
  """
  target = replicated_sharding(mesh)
  if target.is_fully_addressable:
    return jax.device_put(tree, target)
  return jax.tree.map(lambda x: _replicate_across_processes(x, target), tree)


def _replicate_across_processes(x, target):
  if isinstance(x, jax.Array):
    if x.sharding == target:
      return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = _replicate_across_processes(jax.random.key_data(x), target)
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  x = np.asarray(x)
  return jax.make_array_from_process_local_data(target, x, x.shape)


def shard_batch(batch, mesh, axis="data"):
  """Process-local numpy batch -> global `jax.Array`s split over `axis`.

  Args:
    batch: pytree of arrays with the per-process batch as leading dimension.
    mesh: `jax.sharding.Mesh` with an `axis` dimension.
    axis: mesh axis the batch dimension is split over.

  Returns:
    The same pytree of global arrays, leading dimension
    `per_process_batch * process_count`.

  Raises:
    ValueError: a leaf is a scalar, or its per-process batch is not a multiple
      of this process's devices on `axis`.
  """
  local = max(mesh.shape[axis] // jax.process_count(), 1)
  for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
    shape = np.shape(leaf)
    if not shape or shape[0] % local:
      raise ValueError(
          f"batch leaf {jax.tree_util.keystr(path)} has shape {shape}: its "
          f"leading (batch) axis must be a multiple of the {local} devices")
  sharding = jax.sharding.NamedSharding(mesh,
                                        jax.sharding.PartitionSpec(axis))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      batch)
