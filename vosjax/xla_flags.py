"""XLA settings vosjax applies on import, before JAX compiles anything.

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default. On 2 CPU
cores a 3x3 192->192 convolution over [8, 56, 56] (I3D's Conv3d_2c_3x3,
folded) runs at 39-45 GFLOP/s there and at 138-167 GFLOP/s on XLA's own
Eigen kernels, and Eigen's kernel gradients beat YNNPACK's by more. Removing
convolutions from the YNNPACK fusion types took I3D's gradient step on
[1, 16, 224, 224, 3] from 2.1 s to 1.6-1.7 s, below PyTorch's 1.9 s on the
same machine (benchmarks/bench_i3d.py). Matrix products stay on YNNPACK,
which is faster for them (4096^3: 139 vs 84 GFLOP/s).

XLA reads XLA_FLAGS when its CPU client is created, so the flag is appended
to the environment here, on `import vosjax`; it has no effect on a process
that already ran a JAX computation. It is only added for the jaxlib versions
it was measured on (an unknown flag stops XLA), and never when XLA_FLAGS
already names the option: the user's setting wins, e.g.
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`
restores jaxlib's default. The option only concerns XLA:CPU; GPU and TPU
ignore it.

Host memory (`apply_malloc_defaults`, run when this module is imported, i.e.
first thing on `import vosjax`): XLA:CPU allocates each call's outputs and
temporary buffers afresh, and glibc's malloc serves every block over 32 MiB
(and, in the threads' own arenas, over 64 MiB) with a new mmap that is
unmapped again on free, so every call of a large program page-faults its
buffers in anew. On this project's 2-core VMs a fault costs ~2.6 us: 53k
faults (a 115 MB concatenate and its inputs) took 228 ms where the same
program on reused pages took 30 ms, and a VGG16 gradient step at 224x224
faulted 99k times per call (~0.26 s of CPU). One arena, no mmap and no
trimming (mallopt M_ARENA_MAX 1, M_MMAP_MAX 0, M_TRIM_THRESHOLD 2^31-1)
keep freed pages for the next call; the process keeps its peak heap
instead of returning it, and fragments: osvos_davis16's one-shot stage (5
crops of 400x400 a step) peaked at 9.3 GB with glibc's defaults and grew
past 24 GB with these, so run such configs with VOSJAX_MALLOC=system. glibc
only; set VOSJAX_MALLOC=system, or any of
glibc's own MALLOC_ARENA_MAX / MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ or
a GLIBC_TUNABLES naming malloc, to leave malloc as it is.

JAX's persistent compilation cache (`configure_compilation_cache`) is not
applied on import: run.py turns it on in its --compilation_cache folder,
the tests in a temporary one (tests/conftest.py).
"""

import ctypes
import ctypes.util
import importlib.metadata
import os
import pathlib

from absl import logging

CPU_CONV_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_CONV_FLAG = f"--{CPU_CONV_OPTION}=-individual_convolution"
MEASURED_JAXLIB = ("0.10.",)  # Version prefixes the flag was measured on.


def _jaxlib_version():
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""


def apply_defaults(environ=os.environ, jaxlib_version=None):
  """Appends CPU_CONV_FLAG to environ["XLA_FLAGS"] where it is measured and
  not overridden; returns whether it did."""
  flags = environ.get("XLA_FLAGS", "")
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if CPU_CONV_OPTION in flags or not version.startswith(MEASURED_JAXLIB):
    return False
  environ["XLA_FLAGS"] = f"{flags} {CPU_CONV_FLAG}".strip()
  return True


MALLOC_OPT_OUT = "VOSJAX_MALLOC"  # "system": leave glibc's malloc alone.
# glibc's own ways to configure malloc: any of them means the user chose.
_GLIBC_MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_",
                     "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                     "MALLOC_TOP_PAD_")
# mallopt parameters (glibc malloc.h): value set.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
MALLOC_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                   (_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def _glibc_mallopt():
  """glibc's mallopt, or None (not glibc: macOS, musl, Windows)."""
  try:
    if not os.confstr("CS_GNU_LIBC_VERSION"):
      return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
  except (AttributeError, OSError, ValueError):
    return None


def apply_malloc_defaults(environ=os.environ, mallopt=None):
  """Applies MALLOC_SETTINGS unless the user configured malloc (see the
  module docstring); returns whether it did.

  Args:
    environ: the environment to read the opt-outs from.
    mallopt: glibc's `mallopt(param, value) -> int` (default: found with
      ctypes; nothing happens without it).
  """
  if (environ.get(MALLOC_OPT_OUT, "") == "system"
      or any(k in environ for k in _GLIBC_MALLOC_ENV)
      or "malloc" in environ.get("GLIBC_TUNABLES", "")):
    return False
  mallopt = mallopt or _glibc_mallopt()
  if mallopt is None:
    return False
  return all([bool(mallopt(param, value)) for param, value in MALLOC_SETTINGS])


# Before JAX starts its threads: a thread keeps the arena it first used.
MALLOC_APPLIED = apply_malloc_defaults()


def configure_compilation_cache(path):
  """Turns on JAX's persistent compilation cache in `path` ('' = off).

  Every program is cached, whatever its compile time or size: on CPU most
  of a demo's compilations take well under JAX's default threshold of 1 s
  (`jax_persistent_cache_min_compile_time_secs`), and -1 for
  `jax_persistent_cache_min_entry_size_bytes` drops any size limit (option
  names as in jax/_src/config.py, JAX 0.10). A folder that cannot be created
  only costs the cache (a warning), never the run.

  Returns:
    The cache folder, or None when off.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if not path:
    return None
  path = pathlib.Path(path).expanduser().absolute()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    logging.warning("--compilation_cache=%s: %s; compiling without the "
                    "cache", path, e.strerror or e)
    return None
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path
