"""DAVIS 2017 tfds builder (multiple objects, palette ids kept).

Configs: '480p' and 'full_resolution' (JPEGImages/Full-Resolution). Splits:
'train' (60 sequences) and 'val' (30) from ImageSets/2017/<split>.txt
(test-dev, whose masks exist only for first frames, is not built). Masks are
object ids 0..N with 255 = void. See `datasets.davis2016.davis_builder` for
the features, the manual dir and the `sequences=` option.

  builder = Davis2017(data_dir=..., config='480p')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir='/path/to/DAVIS'))
  train = builder.as_data_source('train')
"""

import tensorflow_datasets as tfds

from datasets.davis2016.davis_builder import DavisBuilder
from datasets.davis2016.davis_builder import DavisConfig

# Official archives; sizes and SHA-256 are in checksums.tsv beside this file
# (as published with tfds' own `davis` dataset).
_URL = "https://data.vision.ee.ethz.ch/csergi/share/davis/"


class Davis2017(DavisBuilder):
  """DAVIS 2017: 90 multi-object sequences, train/val."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      DavisConfig(name="480p", folder="480p",
                  description="DAVIS 2017 at 480p."),
      DavisConfig(name="full_resolution", folder="Full-Resolution",
                  description="DAVIS 2017 at full resolution."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: point manual_dir at an extracted DAVIS 2017 trainval folder "
      f"(holding JPEGImages/, Annotations/, ImageSets/2017/), from {_URL}.")
  YEAR = 2017
  SPLITS = ("train", "val")
  URLS = {"480p": _URL + "DAVIS-2017-trainval-480p.zip",
          "full_resolution": _URL + "DAVIS-2017-trainval-Full-Resolution.zip"}
  DESCRIPTION = ("DAVIS 2017: densely annotated multi-object video "
                 "segmentation; one example per sequence.")
  CITATION = """@article{Pont-Tuset2017,
  author = {J. Pont-Tuset and F. Perazzi and S. Caelles and P. Arbel\\'aez and
            A. Sorkine-Hornung and L. Van Gool},
  title = {The 2017 DAVIS Challenge on Video Object Segmentation},
  journal = {arXiv:1704.00675},
  year = {2017}}"""
