"""What every VOS program shares: the data folder, sequence choice, baseline.

`add_davis2016_data` adds the config fields that the other helpers read;
`prepare_data` generates the synthetic DAVIS-format videos of the demos or
checks a real DAVIS folder; `select_sequences` resolves the comma-separated
subsets of the configs; `first_frame_baseline` writes the trivial "copy the
first-frame mask" predictions every method is compared with.
"""

import pathlib

import ml_collections
import numpy as np

from vosjax import davis_io
from vosjax import inference
from vosjax.errors import InputError

DAVIS_HELP = ("download DAVIS 2016 (480p) from "
              "https://davischallenge.org/davis2016/code.html, extract it, "
              "and pass --config.data_dir=/path/to/DAVIS")


def add_davis2016_data(config):
  """Adds `data_dir` and the `data` section of a DAVIS 2016 experiment.

  These are the fields `prepare_data` and `select_sequences` read; a demo
  then sets `data.synthetic = True` and the generator's sizes.
  """
  # An extracted official DAVIS 2016 folder (JPEGImages/, Annotations/,
  # ImageSets/). Download: https://davischallenge.org/davis2016/code.html
  config.data_dir = ""
  config.data = ml_collections.ConfigDict()
  config.data.year = 2016
  config.data.resolution = "480p"
  config.data.train_split = "train"
  config.data.val_split = "val"
  # Comma-separated subsets; empty means the whole split.
  config.data.train_sequences = ""
  config.data.val_sequences = ""
  config.data.synthetic = False
  return config


def names(text):
  """'a, b,c' -> ['a', 'b', 'c'] (empty entries dropped)."""
  return [s.strip() for s in str(text).split(",") if s.strip()]


def prepare_data(config, workdir):
  """The DAVIS folder to use: generated (`config.data.synthetic`) or checked.

  A real folder is `config.data_dir` (the `--config.data_dir` flag).
  """
  data_config = config.data
  if data_config.synthetic:
    from datasets import synthetic  # pylint: disable=g-import-not-at-top
    root = pathlib.Path(workdir) / "data"
    if not (root / "ImageSets").is_dir():
      synthetic.generate(
          root, year=data_config.year, seed=data_config.get("seed", 0),
          splits=(("train", data_config.num_train),
                  ("val", data_config.num_val)),
          num_frames=data_config.num_frames, height=data_config.height,
          width=data_config.width,
          num_objects=data_config.get("num_objects", 1))
    return root
  data_dir = config.get("data_dir", "")
  root = pathlib.Path(data_dir or ".").expanduser()
  if not data_dir or not (root / "JPEGImages").is_dir():
    raise InputError(f"--config.data_dir={data_dir!r} is not a DAVIS folder "
                     f"(no JPEGImages/): {DAVIS_HELP}")
  return root


def select_sequences(root, split, wanted, year, resolution):
  """The split's sequences, or the explicit subset `wanted` (comma list).

  A split listing sequences that are not on disk is an error naming them,
  unless the user chose the subset explicitly: nothing is dropped silently.
  """
  in_split = davis_io.read_split(root, split, year)
  chosen = names(wanted) or in_split
  unknown = [s for s in chosen if s not in in_split]
  if unknown:
    raise InputError(f"sequence {unknown[0]} is not in the {year} {split} "
                     f"split of {root}")
  folder = pathlib.Path(root) / "JPEGImages" / resolution
  missing = [s for s in chosen if not (folder / s).is_dir()]
  if missing:
    raise InputError(
        f"{len(missing)} {split} sequences listed in {root}/ImageSets are not "
        f"in {folder} ({', '.join(missing[:5])}"
        f"{', ...' if len(missing) > 5 else ''}); choose the present ones "
        f"with --config.data.{split}_sequences=a,b")
  return chosen


def first_frame_baseline(root, sequences, out_dir, year, resolution):
  """The trivial baseline: the first-frame mask copied to every frame."""
  for seq in sequences:
    paths = davis_io.mask_paths(root, seq, resolution)
    first = davis_io.to_object_ids(davis_io.read_mask(paths[0]), year)
    inference.write_sequence_masks(
        np.repeat(first[None], len(paths), axis=0), out_dir, seq,
        [p.stem for p in paths])
