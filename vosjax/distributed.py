"""Several JAX processes (hosts) running one job: start-up and who writes.

JAX's multi-controller model: the same program runs in every process, each
process drives its local devices and reads its own share of the data, and
collectives span every process's devices (JAX multi-process guide,
docs.jax.dev/en/latest/multi_process.html). A run:

1. `initialize(...)` once, before any JAX computation: with explicit
   `coordinator_address` / `num_processes` / `process_id` (run.py's flags of
   the same names), or, with none given, whatever
   `jax.distributed.initialize()` detects on its own (Cloud TPU pod slices,
   Slurm, Open MPI); nothing detected means one process.
2. Trains over a mesh of every process's devices (`sharding.mesh_for_batch`),
   each process feeding its part of the global batch
   (`input_pipeline.make_dataset` slices by `jax.process_index()`,
   `sharding.shard_batch` assembles the global arrays). Orbax checkpoints
   are written collectively (every process calls save; Orbax has the primary
   process write the shared files).
3. Writes everything that needs one writer (synthetic data, prepared tfds
   data, `metrics.jsonl`, `config.json`, predictions, CSVs, overlays,
   `summary.json`) from process 0 only (`is_writer`); the work folder must be
   one folder every process sees (the same machine, or a shared filesystem).

On CPU, cross-process collectives use gloo over TCP, JAX's default
`jax_cpu_collectives_implementation` (jax/_src/config.py, JAX 0.10).
"""

import jax
from jax.experimental import multihost_utils

from vosjax.errors import InputError

# A process that finished its share waits this long at exit for the others
# (JAX's default, 300 s, is shorter than process 0's evaluation can take).
SHUTDOWN_TIMEOUT_SECONDS = 24 * 3600


class DistributedError(InputError):
  """Bad multi-process flags, or a cluster that could not be joined."""


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """Joins the job's processes; call before any other JAX call.

  Args:
    coordinator_address: `host:port` of process 0's coordination service
      (`--coordinator_address`), reachable from every process.
    num_processes: processes in the job (`--num_processes`).
    process_id: this process, in `[0, num_processes)` (`--process_id`).

  With all three None, JAX's own detection runs (Cloud TPU, Slurm, Open MPI
  fill them in); when it finds no cluster the run is one process and nothing
  is initialised. With any given, the others are detected or must be given.

  Returns:
    `(process_index, process_count)`.

  Raises:
    DistributedError: inconsistent flags, or the coordinator could not be
      reached; one line naming the flags.
  """
  given = (coordinator_address, num_processes, process_id)
  if num_processes is not None and num_processes < 1:
    raise DistributedError(f"--num_processes={num_processes}: must be >= 1")
  if process_id is not None and num_processes is not None and not (
      0 <= process_id < num_processes):
    raise DistributedError(f"--process_id={process_id}: must be in [0, "
                           f"--num_processes={num_processes})")
  if num_processes == 1 and coordinator_address is None:
    return 0, 1  # One process asked for explicitly: nothing to join.
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id,
        shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_SECONDS)
  except ValueError as e:
    if all(g is None for g in given):
      return 0, 1  # No cluster detected: a single-process run.
    raise DistributedError(
        f"--coordinator_address / --num_processes / --process_id: {e} (give "
        f"all three where the platform does not provide them)") from e
  except RuntimeError as e:  # The coordinator was not reached in time.
    raise DistributedError(
        f"cannot join the job at --coordinator_address="
        f"{coordinator_address}: {' '.join(str(e).split())[:300]}") from e
  return jax.process_index(), jax.process_count()


def is_writer():
  """Whether this process writes the run's single-writer files (process 0)."""
  return jax.process_index() == 0


def sync(name):
  """Waits until every process reaches the point called `name`.

  A no-op with one process. Every process must call it, in the same order.
  """
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def writer_first(fn, name):
  """Runs `fn()` on process 0, waits for it, then on the others.

  For steps that create files every process then reads (synthetic data,
  prepared tfds data): the others find them made and only read them.
  Returns `fn()`'s result on every process.
  """
  result = fn() if is_writer() else None
  sync(name)
  return result if is_writer() else fn()


def writer_ok(error):
  """Shares process 0's outcome of a single-writer step with every process.

  Args:
    error: on process 0, the exception its step raised, or None.

  Raises:
    `error` on process 0; on the others a `DistributedError` saying process
    0 stopped, so that no process trains alone.
  """
  if jax.process_count() > 1:
    failed = multihost_utils.broadcast_one_to_all(int(error is not None))
    if int(failed) and not is_writer():
      raise DistributedError("process 0 stopped before training (its log "
                             "names the cause)")
  if error is not None:
    raise error
