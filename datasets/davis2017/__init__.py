"""DAVIS 2017 tfds builder."""

from datasets.davis2017.davis2017 import Davis2017
