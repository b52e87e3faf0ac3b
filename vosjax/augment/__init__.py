"""Data augmentation for one-shot learning."""
