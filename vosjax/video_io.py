"""A user's video and first-frame annotation, read for `vosjax.segment`.

Frames from a folder of images (in natural order: frame2 before frame10),
any video file OpenCV decodes (all the frames its container announces, or an
error), or an array; the annotation from a palette PNG, a one-object
grayscale PNG (0/255 or 0/1) or an array of ids; and the one-line errors for
what does not fit. Nothing is guessed: a grayscale mask with in-between
values, a JPEG mask or a 16-bit mask with ids above 255 is refused with a
message saying how to convert it.

Errors name what the caller passed: the API's own argument names (`video`,
`first_mask`, `overrides['eval.scale']`), or inside `flag_names()` (as
`segment_video` runs) its command-line flags (`--frames`, `--config.*`).
Wrong types raise `TypeError`; bad values `SegmentError` (a `ValueError`).
"""

import collections.abc
import contextlib
import contextvars
import functools
import os
import pathlib
import re
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


class OverrideError(SegmentError):
  """A config override that cannot be applied or whose value cannot be
  meant (`eval.scale=0`, `eval.k=0`): a bad command line in the CLI."""


# ----------------------------------------------------------------------------
# How errors name the caller's arguments.

# The command-line flag of each API argument (segment_video's).
CLI_FLAGS = {"video": "--frames", "first_mask": "--first_mask",
             "allow_truncated": "--allow_truncated", "path": "--workdir",
             "experiment": "--experiment", "variant": "--variant",
             "name": "--name"}
# A context variable, not a parameter of every function: the names must reach
# errors raised deep inside `segment.load` and `Segmenter.segment`.
_FLAGS = contextvars.ContextVar("vosjax_segment_flags", default=None)


@contextlib.contextmanager
def flag_names(**flags):
  """Within: errors name `CLI_FLAGS` (updated with `flags`, e.g.
  `path="--checkpoint"`) instead of the API's argument names."""
  token = _FLAGS.set({**CLI_FLAGS, **flags})
  try:
    yield
  finally:
    _FLAGS.reset(token)


def arg_name(arg):
  """How errors name argument `arg`: itself, or its flag in `flag_names`."""
  flags = _FLAGS.get()
  return flags.get(arg, f"--{arg}") if flags else arg


def arg_value(arg, value):
  """`experiment='osvos_demo'`, or `--experiment osvos_demo` for the CLI."""
  if _FLAGS.get():
    return f"{arg_name(arg)} {value}"
  return f"{arg}={value!r}"


def field_name(field):
  """A config field as the caller set it: `overrides['eval.scale']` or
  `--config.eval.scale`."""
  return f"--config.{field}" if _FLAGS.get() else f"overrides[{field!r}]"


def in_callers_terms(message):
  """`message` with each `--config.a.b` (the config code's wording) as
  `field_name('a.b')`."""
  # ml_collections' parse errors read "flag --config.a.b=v: ...".
  return re.sub(r"(?:flag )?--config\.([\w.]+)",
                lambda m: field_name(m.group(1)), str(message))


def log_stderr(line):
  """The default `log`: one progress or warning line on stderr."""
  print(line, file=sys.stderr, flush=True)


def _is_path(source):
  return isinstance(source, (str, os.PathLike))


def _type_name(value):
  return type(value).__name__


# ----------------------------------------------------------------------------
# `segment.load`'s arguments, checked before any run is read.


def check_load_args(path, experiment, overrides, variant):
  """`TypeError` for `segment.load` arguments of the wrong type."""
  for arg, value in (("experiment", experiment), ("variant", variant)):
    if value is not None and not isinstance(value, str):
      raise TypeError(f"{arg_name(arg)} must be a str, got "
                      f"{_type_name(value)} {value!r}")
  if path is not None and not _is_path(path):
    raise TypeError(f"{arg_name('path')} must be a run folder (str or "
                    f"os.PathLike), got {_type_name(path)} {path!r}")
  # A str ("eval.scale=0.5") or list of them is the command line's form.
  if overrides is not None and not (
      isinstance(overrides, collections.abc.Mapping)
      and all(isinstance(k, str) for k in overrides)):
    raise TypeError(f"overrides must be a dict of dotted field names to "
                    f"values, e.g. {{'eval.scale': 0.5}}, got "
                    f"{_type_name(overrides)} {overrides!r:.60}")


def check_override_values(config, overrides):
  """`SegmentError` for an override None where `config`'s field holds a
  value: assigned as is, it would fail only later, inside `segment`."""
  for field, value in (overrides or {}).items():
    current = functools.reduce(
        lambda c, k: c.get(k) if hasattr(c, "get") else None,
        field.split("."), config)
    if value is None and current is not None:
      raise OverrideError(f"{field_name(field)}=None: the field holds a "
                         f"{_type_name(current)} ({current!r})")


def find_run(path, experiment, config_file):
  """The run folder holding `config_file`: `path` or one of its parents.

  A workdir holding exactly one run folder is accepted too; with
  `experiment`, `<path>/<experiment>` (or `path` itself when it is inside
  that run). Several runs and no `experiment`: an error naming them.
  """
  what = f"{arg_name('path')} {path}"
  path = pathlib.Path(path).expanduser().resolve()
  if not path.exists():
    raise SegmentError(f"{what}: no such file or folder")
  if experiment and (path / experiment).is_dir():
    path = path / experiment
  for folder in [path, *path.parents]:
    if (folder / config_file).is_file():
      if experiment and folder.name != experiment:
        raise SegmentError(f"{what} is inside the run {folder.name}, not "
                           f"{experiment}")
      return folder
  runs = sorted(p for p in (path.iterdir() if path.is_dir() else [])
                if (p / config_file).is_file())
  names = " or ".join(arg_value("experiment", p.name) for p in runs)
  if experiment:
    raise SegmentError(f"{what} has no run {experiment}" +
                       (f"; pass {names}" if runs else ""))
  if len(runs) == 1:
    return runs[0]
  if runs:
    raise SegmentError(f"{what} holds {len(runs)} runs "
                       f"({', '.join(p.name for p in runs)}); pass {names}")
  raise SegmentError(f"{what}: no {config_file} there or above "
                     f"it; pass a run folder <workdir>/<experiment> of "
                     f"run.py")


# ----------------------------------------------------------------------------
# Frames.


def natural_key(name):
  """Sort key comparing digit runs as numbers: frame2 < frame10.

  Equal numbers padded differently (frame01, frame1) tie-break on the text,
  so the order is total and the same on every machine.
  """
  stem = pathlib.PurePath(name).stem
  # re.split with a group alternates text and digits: the types line up.
  parts = [int(p) if i % 2 else p
           for i, p in enumerate(re.split(r"(\d+)", stem))]
  return parts, name


def _numbering_warnings(files):
  """Warnings for frame names whose numbers have gaps or mixed padding.

  Checked when every stem is `<prefix><number><suffix>` with one prefix and
  suffix (e.g. frame00007): a gap is a step larger than the smallest one;
  mixed padding is a zero-padded number beside a shorter one (frame01 and
  frame2), where string order and number order disagree.
  """
  matches = [re.fullmatch(r"(.*?)(\d+)(\D*)", p.stem) for p in files]
  if len(files) < 2 or not all(matches):
    return []
  if len({(m.group(1), m.group(3)) for m in matches}) > 1:
    return []
  texts = [m.group(2) for m in matches]
  warnings = []
  padded = [t for t in texts if len(t) > 1 and t.startswith("0")]
  if padded:
    width = max(len(t) for t in padded)
    odd = [f for f, t in zip(files, texts)
           if len(t) < width or (t in padded and len(t) != width)]
    if odd:
      wide = files[texts.index(max(padded, key=len))]
      warnings.append(f"numbers padded differently ({wide.name} and "
                      f"{odd[0].name}); they are ordered by number")
  numbers = [int(t) for t in texts]
  steps = np.diff(numbers)
  positive = steps[steps > 0]
  # The smallest step is the numbering's own (1, or e.g. every 5th frame).
  gaps = np.flatnonzero(steps > positive.min()) if positive.size else []
  if len(gaps):
    i = gaps[0]
    warnings.append(f"{len(gaps)} gap(s) in the numbering ({files[i].name} "
                    f"is followed by {files[i + 1].name})")
  return warnings


def frame_files(folder, log=log_stderr, exclude=()):
  """The image files of `folder` in natural order, with that order logged.

  Hidden files (`.DS_Store`, `._00001.jpg`) are skipped, and so are the
  paths in `exclude` (the first mask, when it lies among the frames: it
  would otherwise be segmented as a frame), with a line saying so. Two files with one
  stem (00001.jpg and 00001.png) are refused: both would give mask
  00001.png. Gaps and mixed zero padding are warned about, not refused.
  """
  what = f"{arg_name('video')} {folder}"
  files = sorted((p for p in folder.iterdir()
                  if p.suffix.lower() in FRAME_SUFFIXES
                  and not p.name.startswith(".") and p.is_file()),
                 key=lambda p: natural_key(p.name))
  for flag, path in exclude:
    real = os.path.realpath(pathlib.Path(path).expanduser())
    kept = [p for p in files if os.path.realpath(p) != real]
    if len(kept) < len(files):
      log(f"{what}: {path} is the {flag}, not a frame: left out")
      files = kept
  if not files:
    raise SegmentError(f"{what}: no image files ({', '.join(FRAME_SUFFIXES)})")
  stems = {}
  for p in files:
    if p.stem in stems:
      raise SegmentError(f"{what}: {stems[p.stem].name} and {p.name} would "
                         f"both give mask {p.stem}.png; keep one")
    stems[p.stem] = p
  names = [p.name for p in files]
  shown = (", ".join(names) if len(names) <= 6 else
           f"{', '.join(names[:3])}, ..., {', '.join(names[-2:])}")
  log(f"{what}: {len(files)} frames in natural order (numbers compared as "
      f"numbers): {shown}")
  for warning in _numbering_warnings(files):
    log(f"warning: {what}: {warning}")
  return files


def _read_folder(folder, log, exclude):
  """Frames of a folder, the odd file named when the sizes differ."""
  files = frame_files(folder, log, exclude)
  frames = []
  for p in files:
    try:
      frame = davis_io.read_frame(p)
    except davis_io.DavisFormatError as e:
      raise SegmentError(f"{arg_name('video')}: {e}") from e
    except Image.DecompressionBombError as e:  # Not an OSError.
      raise SegmentError(f"{arg_name('video')}: {p} is too large to decode "
                         f"({e})") from e
    if frames and frame.shape != frames[0].shape:
      (h, w), (h0, w0) = frame.shape[:2], frames[0].shape[:2]
      raise SegmentError(f"{arg_name('video')}: {p} is {w}x{h} but the first "
                         f"frame {files[0].name} is {w0}x{h0} (width x "
                         f"height); all frames must have one size")
    frames.append(frame)
  return np.stack(frames), [p.stem for p in files]


def read_video(source, *, allow_truncated=False, log=log_stderr,
               exclude=()):
  """Frames of a folder, a video file or an array.

  Args:
    source: a folder of images (in natural order: numbers compared as
      numbers), a video file OpenCV can decode, or a `[T, H, W, 3]` uint8
      array.
    allow_truncated: accept a video file that decodes fewer frames than its
      container announces (the frames that decode are used, with a warning);
      by default that is an error, since the masks would silently stop early.
    log: where the frame order and warnings go (default stderr).
    exclude: `(what, path)` pairs of files a folder's frames leave out, e.g.
      `[("first mask", mask_path)]`.

  Returns:
    `(frames [T, H, W, 3] uint8 RGB, names)`: `names` are the frame files'
    stems, or 00000, 00001, ... for a video or an array.

  Raises:
    TypeError: `source` is neither a path nor an array.
    SegmentError: one line naming the file: no frames, frames of different
      sizes, an unreadable or truncated video.
  """
  what = arg_name("video")
  if not _is_path(source):
    if not (isinstance(source, (list, tuple)) or hasattr(source, "__array__")):
      raise TypeError(f"{what} must be a folder or video file path (str or "
                      f"os.PathLike) or a [T, H, W, 3] uint8 array, got "
                      f"{_type_name(source)}")
    frames = np.asarray(source)
    if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
      raise SegmentError(f"{what} array has shape {frames.shape}; expected "
                         f"[T, H, W, 3] with T >= 1")
    if frames.dtype != np.uint8:
      raise SegmentError(f"{what} array is {frames.dtype}; expected uint8")
    return frames, [f"{i:05d}" for i in range(len(frames))]
  path = pathlib.Path(source).expanduser()
  if path.is_dir():
    return _read_folder(path, log, exclude)
  if not path.is_file():
    raise SegmentError(f"{what} {path}: no such file or folder")
  frames, ffmpeg_log, announced = _decode(path)
  if not frames:
    reason = f": {ffmpeg_log[-1]}" if ffmpeg_log else ""
    raise SegmentError(f"{what} {path}: unreadable video (OpenCV decoded "
                       f"no frame{reason})")
  if announced > len(frames):
    reason = f": {ffmpeg_log[-1]}" if ffmpeg_log else ""
    shortfall = (f"{what} {path}: its container announces {announced} frames "
                 f"but only {len(frames)} decode (truncated or damaged"
                 f"{reason})")
    if not allow_truncated:
      allow = (arg_name("allow_truncated") if _FLAGS.get() else
               "allow_truncated=True")
      raise SegmentError(f"{shortfall}; pass {allow} to segment the first "
                         f"{len(frames)}")
    log(f"warning: {shortfall}; segmenting those {len(frames)}")
  elif ffmpeg_log:
    log("\n".join(ffmpeg_log))
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


def _decode(path):
  """`(frames, log, announced)`: RGB frames, FFmpeg's non-empty log lines and
  the frame count the container announces (0 when it gives none)."""
  frames = []
  with _captured_stderr_fd() as log:
    capture = cv2.VideoCapture(str(path))
    try:
      # AVI and MP4 headers store the count; a cut file keeps the header.
      announced = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
      while True:  # read() is False when the file did not open.
        ok, bgr = capture.read()
        if not ok:
          break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
      capture.release()
  lines = [ffmpeg_line(line) for line in log]
  return frames, [line for line in lines if line], announced


def ffmpeg_line(line):
  """`[mjpeg @ 0x55d2c1] unable to decode APP fields` as `mjpeg: unable to
  decode APP fields`: the address means nothing to a user and changes from
  run to run."""
  return re.sub(r"\[(\w+) @ 0x[0-9a-fA-F]+\]\s*", r"\1: ", line).strip()


def decode_video_file(path):
  """`(frames, log)`: the RGB uint8 frames OpenCV decodes from the video file
  `path` (none when it cannot), and the non-empty lines FFmpeg logged
  meanwhile. When frames were decoded despite such lines, they are passed on
  to stderr; otherwise the caller names the reason in its one-line error."""
  frames, log, _ = _decode(path)
  if frames and log:
    print("\n".join(log), file=sys.stderr)
  return frames, log


# ----------------------------------------------------------------------------
# The first mask.

_CONVERT = ("threshold it to 0/255 (e.g. value >= 128 -> 255), or save "
            "object ids as a palette PNG")


def _mask_array(source):
  """Ids of an array mask (integers 0..255, or booleans: object 1)."""
  what = arg_name("first_mask")
  ids = np.asarray(source)
  if ids.dtype == bool:
    ids = ids.astype(np.uint8)
  if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
    raise SegmentError(f"{what} array has shape {ids.shape} and dtype "
                       f"{ids.dtype}; expected [H, W] integer ids")
  if ids.size and (ids.min() < 0 or ids.max() > 255):
    raise SegmentError(f"{what} array holds ids outside [0, 255] (0 "
                       f"background, 255 void)")
  return ids.astype(np.uint8)


def read_first_mask(source):
  """The first-frame annotation as object ids, and its palette.

  A palette PNG gives its indices (255 = void, as DAVIS 2017); a grayscale
  PNG holding only 0 and 255 (DAVIS 2016) or only 0 and 1 is object 1. Any
  other grayscale value is refused: anti-aliased or JPEG-compressed edges
  would each become an object. JPEG masks and 16-bit ids above 255 are
  refused too. An array is taken as ids (booleans as object 1).

  Returns:
    `(ids [H, W] uint8, palette [256, 3] uint8 or None)`.

  Raises:
    TypeError: `source` is neither a path nor an array.
    SegmentError: one line naming the file and how to fix it.
  """
  what = arg_name("first_mask")
  if not _is_path(source):
    if not (isinstance(source, (list, tuple)) or hasattr(source, "__array__")):
      raise TypeError(f"{what} must be a PNG path (str or os.PathLike) or an "
                      f"[H, W] array of ids, got {_type_name(source)}")
    return _mask_array(source), None
  path = pathlib.Path(source).expanduser()
  if not path.is_file():
    raise SegmentError(f"{what} {path}: no such file")
  try:
    with Image.open(path) as im:
      kind, mode, palette = im.format, im.mode, im.getpalette()
      if kind == "JPEG" or path.suffix.lower() in (".jpg", ".jpeg"):
        raise SegmentError(
            f"{what} {path} is a JPEG: its compression blurs the object's "
            f"edges into in-between values; save the mask as a PNG "
            f"(grayscale 0/255, or a palette PNG of object ids)")
      if mode == "LA":
        raw = np.asarray(im)[..., 0]
      elif mode in ("P", "L", "1") or mode.startswith("I"):
        raw = np.asarray(im)
      else:
        raise SegmentError(
            f"{what} {path} is a {mode} image; a mask is a palette PNG of "
            f"object ids or a grayscale 0/255 PNG (colours cannot be mapped "
            f"back to ids)")
  except (OSError, SyntaxError, Image.DecompressionBombError) as e:
    raise SegmentError(f"{what} {path}: cannot read ({e})") from e
  if mode == "P":
    palette = np.asarray(palette + [0] * (768 - len(palette)),
                         np.uint8)[:768].reshape(256, 3)
    return raw.astype(np.uint8), palette
  values = np.unique(raw).astype(np.int64)
  if set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}:
    return (raw > 0).astype(np.uint8), None
  shown = ", ".join(str(v) for v in values[:4]) + (
      f", ..., {values[-1]}" if len(values) > 4 else "")
  if values[-1] > 255:
    raise SegmentError(
        f"{what} {path} is a 16-bit PNG with values up to {values[-1]}; ids "
        f"must be 1-254 (0 background, 255 void): save them as an 8-bit "
        f"palette PNG")
  raise SegmentError(
      f"{what} {path} is grayscale with {len(values)} values ({shown}), not "
      f"only 0 and 255 (one object), so in-between values (anti-aliased or "
      f"compressed edges) would each become an object: {_CONVERT}")


def object_ids(mask):
  """Sorted object ids of a mask (0 and void 255 excluded)."""
  return [int(i) for i in np.unique(mask) if i not in (0, davis_io.VOID_LABEL)]


def check_inputs(frames, mask, mask_name=None):
  """One-line `SegmentError` for a mask that does not fit the frames."""
  mask_name = mask_name or arg_name("first_mask")
  if mask.shape != frames.shape[1:3]:
    raise SegmentError(
        f"{mask_name} is {mask.shape[1]}x{mask.shape[0]} but the frames are "
        f"{frames.shape[2]}x{frames.shape[1]} (width x height)")
  if not object_ids(mask):
    raise SegmentError(f"{mask_name} holds no object (only background 0 "
                       f"and void 255)")
