"""vosjax: classic video object segmentation systems in JAX/Flax."""

from vosjax import xla_flags as _xla_flags

__version__ = "0.1.0"

# Before any JAX computation: XLA reads its flags when the CPU client starts.
_xla_flags.apply_defaults()
