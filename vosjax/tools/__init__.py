"""Command-line tools: python -m vosjax.tools.<name>."""
