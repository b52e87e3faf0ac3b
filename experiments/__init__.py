"""Experiment configs: each `NAME.py` here is selectable by run.py --experiment=NAME."""
