"""vosjax: classic video object segmentation systems in JAX/Flax."""

__version__ = "0.1.0"
