"""The one home of device meshes and shardings.

Every program trains over a 1-D `('data',)` mesh: parameters replicated, the
batch split along its leading axis (`vosjax.train`); one-shot fine-tuning
splits sequences over the same axis (`vosjax.finetune`). Multi-process aware:
`shard_batch` assembles global arrays from each process's local batch.
"""

import math

from absl import logging
import jax
import numpy as np


def make_mesh(devices=None):
  """A 1-D `('data',)` mesh over `devices` (default: all), Auto axis type."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return jax.sharding.Mesh(devices.reshape(-1), ("data",),
                           axis_types=(jax.sharding.AxisType.Auto,))


def mesh_for_batch(batch_size):
  """A ('data',) mesh over the most devices that split `batch_size` evenly.

  All devices for the usual power-of-two batches and device counts; fewer
  where they do not divide (e.g. a batch of 2 on 8 host test devices).
  """
  count = math.gcd(batch_size, jax.device_count())
  if count < jax.device_count():
    logging.warning("batch size %d does not divide the %d devices: using %d "
                    "of them", batch_size, jax.device_count(), count)
  return make_mesh(jax.devices()[:count])


def replicated_sharding(mesh):
  """Every device holds the whole array."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharding(mesh):
  """Leading axis split over 'data'; the other axes whole."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def replicate(tree, mesh):
  """Puts every leaf of `tree` on every device of `mesh`."""
  return jax.device_put(tree, replicated_sharding(mesh))


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
