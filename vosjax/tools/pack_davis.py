"""Packs a few DAVIS sequences, rescaled, into a small DAVIS-layout folder.

  python -m vosjax.tools.pack_davis --out DIR --scale 0.5 \
      --sequences bear,blackswan,cows [--data_dir ../shared/data/DAVIS] \
      [--max_mib 40] [--quality 90] [--resolution 480p]

What travels to a lent accelerator (64 MiB in all, the code and wheels
included; benchmarks/accelerator_report.py) is a pack like this, not the
data set. DIR gets the official layout (`vosjax.davis_io`):

  JPEGImages/<res>/<seq>/<same names>.jpg   frames resized by --scale
                                            (cv2 INTER_AREA), JPEG --quality
  Annotations/<res>/<seq>/<same names>.png  masks resized with nearest
                                            neighbour (PIL), mode and palette
                                            kept, so ids and void stay exact
  ImageSets/**/<split>.txt                  every split list of the source,
                                            only the packed sequences' lines
  db_info.yml                               copied when the source has it

The folder name stays <res> (480p) although the frames are smaller: the
readers take any size, and the evaluator compares against these masks.
The pack is written next to DIR and renamed into place when complete; if it
would exceed --max_mib it is not written at all (one-line error naming the
size reached and what to change). DIR must not exist or be empty.
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

import cv2
import numpy as np
from PIL import Image

from vosjax import davis_io
from vosjax.errors import InputError

DEFAULT_MAX_MIB = 40.0


def _scaled_size(width, height, scale):
  return max(1, round(width * scale)), max(1, round(height * scale))


def _write_frame(src, dst, scale, quality):
  image = cv2.imread(str(src), cv2.IMREAD_COLOR)
  if image is None:
    raise InputError(f"cannot read image {src}")
  size = _scaled_size(image.shape[1], image.shape[0], scale)
  if size != (image.shape[1], image.shape[0]):
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
  if not cv2.imwrite(str(dst), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
    raise InputError(f"cannot write {dst}")


def _write_mask(src, dst, scale):
  try:
    with Image.open(src) as im:
      im.load()
      size = _scaled_size(im.width, im.height, scale)
      # NEAREST keeps every value an id (no blended ids); a 'P' image keeps
      # its palette through resize.
      out = im.resize(size, Image.NEAREST) if size != im.size else im.copy()
      out.save(dst, format="PNG")
  except (OSError, SyntaxError) as e:
    raise InputError(f"cannot read mask {src}: {e}") from e


def _split_lists(root, sequences):
  """({relative path: filtered text} of every ImageSets/**/*.txt, the
  chosen sequences found in them)."""
  out, found = {}, set()
  for path in sorted((root / "ImageSets").rglob("*.txt")):
    kept = []
    for line in path.read_text().splitlines():
      fields = line.split()
      if not fields:
        continue
      name = fields[0].split("/")[-2] if "/" in fields[0] else fields[0]
      if name in sequences:
        kept.append(line)
        found.add(name)
    out[path.relative_to(root)] = "".join(k + "\n" for k in kept)
  return out, found


def _mib(nbytes):
  return nbytes / 2 ** 20


def pack(data_dir, out, sequences, *, scale=0.5, max_mib=DEFAULT_MAX_MIB,
         quality=90, resolution="480p"):
  """Writes the pack (see the module docstring); returns its size in bytes.

  Raises:
    InputError: a sequence or file is missing, DIR is not empty, or the pack
      would be larger than max_mib (nothing is left behind then).
  """
  root, out = pathlib.Path(data_dir), pathlib.Path(out)
  if not sequences:
    raise InputError("--sequences: name at least one sequence")
  if not 0 < scale <= 1:
    raise InputError(f"--scale={scale}: expected 0 < scale <= 1")
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise InputError(f"--out={out} exists and is not an empty folder")
  problems = davis_io.check_sequences(root, sequences, resolution)
  if problems:
    raise InputError(f"{len(problems)} problems in {root}: {problems[0]}")
  lists, listed = _split_lists(root, set(sequences))
  if set(sequences) - listed:
    raise InputError(f"sequence {sorted(set(sequences) - listed)[0]} is in "
                     f"no ImageSets list of {root}")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
  limit = max_mib * 2 ** 20
  total = 0
  try:
    for rel, text in lists.items():
      (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
      (tmp / rel).write_text(text)
      total += len(text)
    if (root / "db_info.yml").is_file():
      shutil.copyfile(root / "db_info.yml", tmp / "db_info.yml")
      total += (tmp / "db_info.yml").stat().st_size
    for seq in sequences:
      for kind, paths, write in (
          ("JPEGImages", davis_io.frame_paths(root, seq, resolution),
           lambda s, d: _write_frame(s, d, scale, quality)),
          ("Annotations", davis_io.mask_paths(root, seq, resolution),
           lambda s, d: _write_mask(s, d, scale))):
        folder = tmp / kind / resolution / seq
        folder.mkdir(parents=True, exist_ok=True)
        for src in paths:
          write(src, folder / src.name)
          total += (folder / src.name).stat().st_size
          if total > limit:
            raise InputError(
                f"the pack would exceed --max_mib={max_mib:g} (reached "
                f"{_mib(total):.1f} MiB at {seq}/{src.name}); pack fewer "
                "sequences, a smaller --scale or a lower --quality")
    if out.exists():
      out.rmdir()  # Empty (checked above).
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return total


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--sequences", required=True, help="comma list")
  parser.add_argument("--scale", type=float, default=0.5)
  parser.add_argument("--data_dir", default="../shared/data/DAVIS")
  parser.add_argument("--max_mib", type=float, default=DEFAULT_MAX_MIB)
  parser.add_argument("--quality", type=int, default=90,
                      help="JPEG quality of the frames (1-100)")
  parser.add_argument("--resolution", default="480p")
  args = parser.parse_args(argv)
  if not 1 <= args.quality <= 100:
    parser.error("--quality must be in 1..100")
  sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
  try:
    size = pack(args.data_dir, args.out, sequences, scale=args.scale,
                max_mib=args.max_mib, quality=args.quality,
                resolution=args.resolution)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {args.out}: {len(sequences)} sequences at scale "
        f"{args.scale:g}, {_mib(size):.1f} MiB")
  return 0


if __name__ == "__main__":
  sys.exit(main())
