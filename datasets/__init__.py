"""Datasets: tfds builders for DAVIS 2016/2017 and the synthetic generator."""
