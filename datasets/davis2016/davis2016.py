"""DAVIS 2016 tfds builder (single object, binarised masks).

Configs: '480p' (JPEGImages/480p) and 'full_resolution' (the 2016 package's
JPEGImages/1080p). Splits: 'train' (30 sequences), 'val' (20 sequences, 1,376
frames) from ImageSets/480p/<split>.txt. Masks are 0/1. See
`datasets.davis2016.davis_builder` for the features, the manual dir and the
`sequences=` option.

  builder = Davis2016(data_dir=..., config='480p',
                      sequences={'train': ['surf', 'dog-agility']})  # optional
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir='/path/to/DAVIS'))
  val = builder.as_data_source('val')   # val[i]['frames'] [N, H, W, 3] uint8
"""

import tensorflow_datasets as tfds

from datasets.davis2016.davis_builder import DavisBuilder
from datasets.davis2016.davis_builder import DavisConfig

# The official DAVIS 2016 package (480p and 1080p in one archive); its
# checksum is not recorded here, so tfds computes and logs it on download.
URL = "https://graphics.ethz.ch/Downloads/Data/Davis/DAVIS-data.zip"


class Davis2016(DavisBuilder):
  """DAVIS 2016: 50 single-object sequences, train/val."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      DavisConfig(name="480p", folder="480p",
                  description="DAVIS 2016 at 480p."),
      DavisConfig(name="full_resolution", folder="1080p",
                  description="DAVIS 2016 at full resolution (1080p)."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: point manual_dir at an extracted DAVIS 2016 folder (holding "
      f"JPEGImages/, Annotations/, ImageSets/), e.g. from {URL}.")
  YEAR = 2016
  SPLITS = ("train", "val")
  URLS = {"480p": URL, "full_resolution": URL}
  DESCRIPTION = ("DAVIS 2016: densely annotated single-object video "
                 "segmentation; one example per sequence.")
  CITATION = """@inproceedings{Perazzi2016,
  author = {F. Perazzi and J. Pont-Tuset and B. McWilliams and L. Van Gool and
            M. Gross and A. Sorkine-Hornung},
  title = {A Benchmark Dataset and Evaluation Methodology for Video Object
           Segmentation},
  booktitle = {CVPR},
  year = {2016}}"""
