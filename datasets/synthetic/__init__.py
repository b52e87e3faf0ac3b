"""Synthetic DAVIS-format videos (the generator lives in `vosjax.data`)."""

from vosjax.data.synthetic import generate
from vosjax.data.synthetic import render_sequence
