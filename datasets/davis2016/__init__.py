"""DAVIS 2016 tfds builder."""

from datasets.davis2016.davis2016 import Davis2016
