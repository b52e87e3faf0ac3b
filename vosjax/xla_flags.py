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
"""

import importlib.metadata
import os

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
