"""Flax linen models: each returns (output, endpoints)."""
