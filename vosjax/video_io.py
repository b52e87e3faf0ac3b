"""A user's video and first-frame annotation, read for `vosjax.segment`.

Frames from a folder of images, any video file OpenCV decodes, or an array;
the annotation from a palette PNG, a {0, 255} PNG or an array of ids; and
the one-line errors for what does not fit.
"""

import contextlib
import os
import pathlib
import sys
import tempfile

import cv2
import numpy as np
from PIL import Image

from vosjax import davis_io
from vosjax.errors import InputError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class SegmentError(InputError):
  """Bad input to segment a video: frames, mask, run folder or override."""


def read_video(source):
  """Frames of a folder, a video file or an array.

  Args:
    source: a folder of images (sorted by name), a video file OpenCV can
      decode, or a `[T, H, W, 3]` uint8 array.

  Returns:
    `(frames [T, H, W, 3] uint8 RGB, names)`: `names` are the frame files'
    stems, or 00000, 00001, ... for a video or an array.
  """
  if not isinstance(source, (str, pathlib.Path)):
    frames = np.asarray(source)
    if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
      raise SegmentError(f"frames array has shape {frames.shape}; expected "
                         f"[T, H, W, 3] with T >= 1")
    if frames.dtype != np.uint8:
      raise SegmentError(f"frames array is {frames.dtype}; expected uint8")
    return frames, [f"{i:05d}" for i in range(len(frames))]
  path = pathlib.Path(source)
  if path.is_dir():
    files = sorted(p for p in path.iterdir()
                   if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
      raise SegmentError(f"--frames {path}: no image files "
                         f"({', '.join(FRAME_SUFFIXES)})")
    try:
      frames = [davis_io.read_frame(p) for p in files]
    except davis_io.DavisFormatError as e:
      raise SegmentError(f"--frames: {e}") from e
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
      raise SegmentError(f"--frames {path}: frames of different sizes "
                         f"{sorted(sizes)[:2]}")
    return np.stack(frames), [p.stem for p in files]
  if not path.is_file():
    raise SegmentError(f"--frames {path}: no such file or folder")
  frames, log = decode_video_file(path)
  if not frames:
    reason = f": {log[-1]}" if log else ""
    raise SegmentError(f"--frames {path}: unreadable video (OpenCV decoded "
                       f"no frame{reason})")
  return np.stack(frames), [f"{i:05d}" for i in range(len(frames))]


@contextlib.contextmanager
def _captured_stderr_fd():
  """Collects what C libraries write to file descriptor 2 meanwhile.

  FFmpeg (inside OpenCV) logs decoding failures such as "moov atom not found"
  straight to fd 2, which would break the one-line error contract; the lines
  are collected instead, and the caller decides whether to show them.
  """
  lines = []
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as log:
    os.dup2(log.fileno(), 2)
    try:
      yield lines
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      log.seek(0)
      lines.extend(log.read().decode("utf-8", "replace").splitlines())


def decode_video_file(path):
  """`(frames, log)`: the RGB uint8 frames OpenCV decodes from the video file
  `path` (none when it cannot), and the non-empty lines FFmpeg logged
  meanwhile. When frames were decoded despite such lines, they are passed on
  to stderr; otherwise the caller names the reason in its one-line error."""
  frames = []
  with _captured_stderr_fd() as log:
    capture = cv2.VideoCapture(str(path))
    try:
      while True:  # read() is False when the file did not open.
        ok, bgr = capture.read()
        if not ok:
          break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
      capture.release()
  log = [line.strip() for line in log if line.strip()]
  if frames and log:
    print("\n".join(log), file=sys.stderr)
  return frames, log


def read_first_mask(source):
  """The first-frame annotation as object ids, and its palette.

  A palette PNG gives its indices (255 = void, as DAVIS 2017); a grayscale
  PNG with only {0, 255} is one object (DAVIS 2016); other grayscale values
  are ids. An array is taken as ids.

  Returns:
    `(ids [H, W] uint8, palette [256, 3] uint8 or None)`.
  """
  if not isinstance(source, (str, pathlib.Path)):
    ids = np.asarray(source)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
      raise SegmentError(f"first mask array has shape {ids.shape} and dtype "
                         f"{ids.dtype}; expected [H, W] integer ids")
    if ids.size and (ids.min() < 0 or ids.max() > 255):
      raise SegmentError("first mask array holds ids outside [0, 255]")
    return ids.astype(np.uint8), None
  path = pathlib.Path(source)
  try:
    with Image.open(path) as im:
      mode, palette = im.mode, im.getpalette()
  except (OSError, SyntaxError) as e:
    raise SegmentError(f"--first_mask {path}: cannot read ({e})") from e
  try:
    raw = davis_io.read_mask(path)
  except davis_io.DavisFormatError as e:
    raise SegmentError(f"--first_mask: {e}") from e
  if mode != "P":
    palette = None
    if set(np.unique(raw).tolist()) <= {0, 255}:
      raw = davis_io.to_object_ids(raw, 2016)
  if palette is not None:
    palette = np.asarray(palette + [0] * (768 - len(palette)),
                         np.uint8)[:768].reshape(256, 3)
  return raw.astype(np.uint8), palette


def object_ids(mask):
  """Sorted object ids of a mask (0 and void 255 excluded)."""
  return [int(i) for i in np.unique(mask) if i not in (0, davis_io.VOID_LABEL)]


def check_inputs(frames, mask, mask_name="--first_mask"):
  """One-line `SegmentError` for a mask that does not fit the frames."""
  if mask.shape != frames.shape[1:3]:
    raise SegmentError(
        f"{mask_name} is {mask.shape[1]}x{mask.shape[0]} but the frames are "
        f"{frames.shape[2]}x{frames.shape[1]} (width x height)")
  if not object_ids(mask):
    raise SegmentError(f"{mask_name} holds no object (only background 0 "
                       f"and void 255)")
