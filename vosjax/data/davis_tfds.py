"""Shared tfds builder logic for DAVIS 2016 and DAVIS 2017.

One example per sequence, written as array_record and read without
TensorFlow through `builder.as_data_source(split)`:

  name:        str, the sequence name
  frames:      [N, H, W, 3] uint8 RGB (the package's JPEG bytes, unchanged)
  masks:       [N, H, W, 1] uint8 object ids (2016: binarised to 0/1; 2017:
               palette indices, 255 = void), stored as grayscale PNGs because
               tfds `Image` decodes palette PNGs to colours
  num_frames:  int32
  num_objects: int32 (largest object id in the sequence, void excluded)

The data source returns `frames` and `masks` as lists of per-frame arrays
(tfds `Sequence`): `np.stack` them, or read through
`vosjax.input_pipeline.TfdsSource`, which also drops the mask channel.

Source: `download_and_prepare()` reads an extracted DAVIS folder from the
manual directory (`download_config=tfds.download.DownloadConfig(
manual_dir=...)`; the folder itself or a `DAVIS/` folder inside it). With no
manual folder it downloads the official archive (checksums in
`vosjax/data/checksums.tsv` when known) and extracts it.

Splits are the official split files. A listed sequence missing from the
folder is an error naming the missing sequences; to build from the ones
present, pass `sequences={'train': [...], ...}`: exactly those splits and
sequences are built, under a config of their own (`<config>_sel_<hash>`), so
a partial build never poses as the full dataset.

Bad input (missing folder or sequence, frame/mask count mismatch, unreadable
image, size mismatch within a sequence) raises `DavisFormatError` naming the
path; tfds writes into a temporary folder renamed only on success, so a
failed build leaves nothing that looks prepared.
"""

import dataclasses
import hashlib
import inspect
import io
import json
import os
import pathlib
import shutil
import tempfile
import zipfile

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vosjax import davis_io


@dataclasses.dataclass(eq=False)
class DavisConfig(tfds.core.BuilderConfig):
  """A DAVIS resolution, optionally restricted to chosen sequences.

  Attributes:
    folder: the resolution folder name in the package ('480p', '1080p',
      'Full-Resolution').
    sequences: `((split, (name, ...)), ...)` to build instead of the split
      files, or None.
  """
  folder: str = "480p"
  sequences: tuple = None


def _extract_zip(archive):
  """Extracts `archive` beside itself, atomically; reuses a finished one.

  tfds' own extractor reads through tf.io.gfile, i.e. needs TensorFlow.
  """
  dest = archive.with_name(archive.name + ".extracted")
  if dest.is_dir():
    return dest
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
  try:
    try:
      with zipfile.ZipFile(archive) as z:
        z.extractall(tmp)
    except zipfile.BadZipFile as e:
      raise davis_io.DavisFormatError(f"cannot extract {archive}: {e}") from e
    os.replace(tmp, dest)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dest


def _encode_png(ids):
  buf = io.BytesIO()
  Image.fromarray(ids, mode="L").save(buf, format="PNG")
  return buf.getvalue()


class DavisBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the DAVIS 2016/2017 builders; subclasses set the class fields."""

  YEAR = None
  SPLITS = ("train", "val")
  URLS = {}  # Config name -> official archive URL.
  HOMEPAGE = "https://davischallenge.org/"
  DESCRIPTION = ""
  CITATION = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """The builder's module file (checksums.tsv is looked up beside it).

    tfds' own lookup needs the `importlib_resources` backport, absent here.
    """
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, sequences=None, url=None, config=None, **kwargs):
    """Args as `tfds.core.GeneratorBasedBuilder`, plus:

    Args:
      sequences: `{split: [sequence names]}`: build exactly these splits and
        sequences (each must be listed in the split file) instead of the
        official splits.
      url: archive URL overriding the official one (mirrors, tests).
      config: config name or `DavisConfig`; defaults to '480p'.
      **kwargs: passed to `GeneratorBasedBuilder` (`data_dir`, `file_format`,
        ...); `file_format` defaults to 'array_record'.
    """
    kwargs.setdefault("file_format", "array_record")
    if sequences is not None:
      base = self.builder_configs[config if isinstance(config, str) else (
          config.name if config is not None else "480p")]
      if not sequences or any(not s for s in sequences.values()):
        raise ValueError(f"sequences must name at least one sequence per "
                         f"split, got {sequences!r}")
      unknown = set(sequences) - set(self.SPLITS)
      if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)} in sequences; "
                         f"expected some of {self.SPLITS}")
      chosen = tuple((split, tuple(names))
                     for split, names in sorted(sequences.items()))
      digest = hashlib.sha1(json.dumps(chosen).encode()).hexdigest()[:8]
      config = DavisConfig(
          name=f"{base.name}_sel_{digest}", folder=base.folder,
          sequences=chosen,
          description=f"{base.description} Only: " + "; ".join(
              f"{s}: {', '.join(n)}" for s, n in chosen))
    self._url = url
    super().__init__(config=config, **kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "name": tfds.features.Text(),
            "frames": tfds.features.Sequence(tfds.features.Image(
                shape=(None, None, 3), encoding_format="jpeg")),
            "masks": tfds.features.Sequence(tfds.features.Image(
                shape=(None, None, 1), encoding_format="png")),
            "num_frames": tfds.features.Scalar(np.int32),
            "num_objects": tfds.features.Scalar(np.int32),
        }),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
    )

  def _davis_root(self, dl_manager):
    """The extracted DAVIS folder: the manual one, else the download."""
    try:
      manual = pathlib.Path(dl_manager.manual_dir)
    except AssertionError:  # No manual folder, or an empty one: download.
      manual = None
    candidates = [manual, manual / "DAVIS"] if manual is not None else []
    for c in candidates:
      if (c / "JPEGImages").is_dir():
        return c
    if manual is not None and manual.exists():
      raise davis_io.DavisFormatError(
          f"manual dir {manual} holds no DAVIS folder (no JPEGImages/ in it "
          f"or in {manual / 'DAVIS'})")
    url = self._url or self.URLS.get(self.builder_config.name.split("_sel_")[0])
    if not url:
      raise davis_io.DavisFormatError(
          f"no DAVIS folder given and no download URL for config "
          f"{self.builder_config.name}; set the manual dir to an extracted "
          f"DAVIS folder")
    archive = pathlib.Path(dl_manager.download(url))
    extracted = _extract_zip(archive)
    for c in (extracted, extracted / "DAVIS"):
      if (c / "JPEGImages").is_dir():
        return c
    raise davis_io.DavisFormatError(
        f"archive {url} extracted to {extracted} holds no DAVIS folder")

  def _split_generators(self, dl_manager):
    root = self._davis_root(dl_manager)
    folder = self.builder_config.folder
    chosen = self.builder_config.sequences
    plan = {}
    for split in (dict(chosen) if chosen else self.SPLITS):
      listed = davis_io.read_split(root, split, self.YEAR)
      if chosen:
        names = list(dict(chosen)[split])
        unlisted = [n for n in names if n not in listed]
        if unlisted:
          raise davis_io.DavisFormatError(
              f"sequences {unlisted} are not in the {split} split of {root}")
      else:
        names = listed
      missing = [n for n in names
                 if not (root / "JPEGImages" / folder / n).is_dir()]
      if missing:
        present = [n for n in names if n not in missing]
        raise davis_io.DavisFormatError(
            f"{len(missing)} of {len(names)} {split} sequences are missing "
            f"from {root / 'JPEGImages' / folder}: {', '.join(missing)}. To "
            f"build from the {len(present)} present, pass sequences="
            f"{{'{split}': {present}}}")
      # Count mismatches are found before anything is written.
      for n in names:
        self._paths(root, n)
      plan[split] = names
    return {split: self._generate_examples(root, names)
            for split, names in plan.items()}

  def _paths(self, root, name):
    folder = self.builder_config.folder
    frames = davis_io.frame_paths(root, name, folder)
    masks = davis_io.mask_paths(root, name, folder)
    if [p.stem for p in frames] != [p.stem for p in masks]:
      raise davis_io.DavisFormatError(
          f"sequence {name}: {len(frames)} frames in {frames[0].parent} but "
          f"{len(masks)} masks in {masks[0].parent} (or their names differ)")
    return frames, masks

  def _generate_examples(self, root, names):
    for name in names:
      yield name, self._example(root, name)

  def _example(self, root, name):
    frame_paths, mask_paths = self._paths(root, name)
    frames, masks, num_objects, size = [], [], 0, None
    for fp, mp in zip(frame_paths, mask_paths):
      # Decoding checks the JPEG is readable; its bytes are stored unchanged.
      image = davis_io.read_frame(fp)
      ids = davis_io.to_object_ids(davis_io.read_mask(mp), self.YEAR)
      if size is None:
        size = image.shape[:2]
      for path, shape in ((fp, image.shape[:2]), (mp, ids.shape)):
        if shape != size:
          raise davis_io.DavisFormatError(
              f"{path} is {shape[1]}x{shape[0]} but sequence {name} starts "
              f"at {size[1]}x{size[0]} ({frame_paths[0]})")
      frames.append(fp.read_bytes())
      masks.append(_encode_png(ids))
      objects = ids[ids != davis_io.VOID_LABEL]
      num_objects = max(num_objects, int(objects.max()) if objects.size else 0)
    return {"name": name, "frames": frames, "masks": masks,
            "num_frames": len(frames), "num_objects": num_objects}


# ----------------------------------------------------------------------------
# DAVIS 2016 (single object, binarised masks).

# The official DAVIS 2016 package (480p and 1080p in one archive); its
# checksum is not recorded here, so tfds computes and logs it on download.
DAVIS2016_URL = "https://graphics.ethz.ch/Downloads/Data/Davis/DAVIS-data.zip"


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
      f"JPEGImages/, Annotations/, ImageSets/), e.g. from {DAVIS2016_URL}.")
  YEAR = 2016
  SPLITS = ("train", "val")
  URLS = {"480p": DAVIS2016_URL, "full_resolution": DAVIS2016_URL}
  DESCRIPTION = ("DAVIS 2016: densely annotated single-object video "
                 "segmentation; one example per sequence.")
  CITATION = """@inproceedings{Perazzi2016,
  author = {F. Perazzi and J. Pont-Tuset and B. McWilliams and L. Van Gool and
            M. Gross and A. Sorkine-Hornung},
  title = {A Benchmark Dataset and Evaluation Methodology for Video Object
           Segmentation},
  booktitle = {CVPR},
  year = {2016}}"""


# ----------------------------------------------------------------------------
# DAVIS 2017 (multiple objects, palette ids kept).

# Official archives; sizes and SHA-256 are in checksums.tsv beside this file
# (as published with tfds' own `davis` dataset).
DAVIS2017_URL = "https://data.vision.ee.ethz.ch/csergi/share/davis/"


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
      "(holding JPEGImages/, Annotations/, ImageSets/2017/), from "
      f"{DAVIS2017_URL}.")
  YEAR = 2017
  SPLITS = ("train", "val")
  URLS = {"480p": DAVIS2017_URL + "DAVIS-2017-trainval-480p.zip",
          "full_resolution": (DAVIS2017_URL +
                              "DAVIS-2017-trainval-Full-Resolution.zip")}
  DESCRIPTION = ("DAVIS 2017: densely annotated multi-object video "
                 "segmentation; one example per sequence.")
  CITATION = """@article{Pont-Tuset2017,
  author = {J. Pont-Tuset and F. Perazzi and S. Caelles and P. Arbel\\'aez and
            A. Sorkine-Hornung and L. Van Gool},
  title = {The 2017 DAVIS Challenge on Video Object Segmentation},
  journal = {arXiv:1704.00675},
  year = {2017}}"""
