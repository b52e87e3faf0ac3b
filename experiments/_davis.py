"""Config pieces the experiments share (imports only ml_collections).

Files starting with "_" are helpers, not experiments: `run.py` does not list
them.
"""

import ml_collections


def add_davis2016_data(config):
  """Adds `data_dir`, `tfds_data_dir` and the `data` section for DAVIS 2016.

  These are the fields `vosjax.pipeline.prepare` reads; a demo then sets
  `data.synthetic = True` and the generator's sizes.
  """
  # An extracted official DAVIS 2016 folder (JPEGImages/, Annotations/,
  # ImageSets/). Download: https://davischallenge.org/davis2016/code.html
  config.data_dir = ""
  # Where the tfds builder is prepared from data_dir (once); empty means
  # <workdir>/tfds.
  config.tfds_data_dir = ""
  # Skip training: predict and evaluate from the workdir's last checkpoint.
  config.evaluate_only = False
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



# The CPU protocol (docs/RESULTS.md): the DAVIS 2016 train sequences present
# in the shared copy of the dataset (9 of 30), all 20 val sequences.
CPU_PROTOCOL_TRAIN = ("bear,bmx-bumps,dog-agility,drift-turn,mallard-fly,"
                      "motorbike,rollerblade,surf,tennis")
