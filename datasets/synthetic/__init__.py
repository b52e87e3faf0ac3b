"""Synthetic DAVIS-format videos: see `generator`."""

from datasets.synthetic.generator import generate
from datasets.synthetic.generator import render_sequence
