"""Segment your own video with a trained run (or the untrained PML baseline).

  python -m vosjax.tools.segment_video --workdir DIR (or --checkpoint PATH,
      or --experiment pml_i3d_zero_shot) --frames DIR|VIDEO \\
      --first_mask PNG --out DIR [--variant NAME] [--name NAME] \\
      [--fps 10] [--allow_truncated] [--config.eval.scale=0.5 ...]

Writes, under --out, DAVIS-format palette PNGs `<name>/<frame>.png` (the
first mask's palette kept; `python -m vosjax.evaluate --results_path OUT`
reads them) with the marker file `<name>/.segment_video` (the files this
tool wrote), `<name>.gif` and `<name>_sheet.png` (overlays,
`vosjax.overlays`) and `<name>_overlay.mp4`. `<name>` defaults to the frames
folder's or video file's name and must be a plain file name.

Outputs never replace what this tool did not write. Before any work it
refuses an output that exists without the marker (a frames folder, a user's
GIF), an earlier output folder holding files the marker does not list (a
user's notes), an output path that is, holds or lies inside an input (e.g.
`--frames ~/v/clip --out ~/v`), and an --out that cannot be written (a file,
under a file, read-only). Everything is built in a hidden folder
`<out>/.<name>.<random>.tmp/` and swapped in whole at the end (Ctrl-C waits
for the few renames), so an error or Ctrl-C leaves the earlier outputs as
they were and no build folder.

Frames of a folder are taken in natural order (frame2 before frame10; the
order is logged, with a warning for gaps or mixed zero padding). A video
file must decode every frame its container announces (`--allow_truncated`
segments those that do). The first mask is a palette PNG of object ids or a
grayscale PNG of one object (0/255 or 0/1); other grayscale values, JPEG
masks and 16-bit ids above 255 are refused with how to convert them.

`--workdir` is a run folder `<workdir>/<experiment>` of run.py (or the
workdir with `--experiment`, or a workdir holding one run); `--checkpoint`
any path inside a run (e.g. its `parent/checkpoints`): the run's
`config.json` says the method, its latest checkpoint is restored.
`--config.a.b=v` overrides fine-tuning, inference and evaluation fields
(checked by `experiments.validate_config`, as run.py does).

Errors the user can fix print one line `segment_video: ...`: exit 2 for a
bad command line (e.g. `--fps 0`, `--config.eval.k=0`, as run.py), 1 for bad input (the cases above, a mask
whose size differs from the frames, a mask with no object, an unreadable
video, no checkpoint), 130 for Ctrl-C (`interrupted; nothing was written`).
"""

import argparse
import contextlib
import json
import logging
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time

import cv2

from vosjax import davis_io
from vosjax import interrupt
from vosjax import overlays
from vosjax import video_io
from vosjax.errors import InputError
from vosjax.errors import RunError

PROG = "segment_video"
# Written into `<out>/<name>/` with the masks: lists what this tool wrote, so
# a later run replaces exactly that and refuses anything else.
MARKER = ".segment_video"


class _WarningLines(logging.Handler):
  """Library warnings (absl logging, e.g. a checkpoint fallback) as one
  `warning: ...` line each, like the tool's own, not `WARNING:absl:...`."""

  def emit(self, record):
    line = " ".join(record.getMessage().split())
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _warnings_as_lines():
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(h, _WarningLines) for h in absl_logger.handlers):
    absl_logger.addHandler(_WarningLines(logging.WARNING))
    absl_logger.propagate = False


def _fail(message, code):
  print(f"{PROG}: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    _fail(message, 2)


def _fps(text):
  """argparse type of --fps: a finite number > 0."""
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not (math.isfinite(value) and value > 0):
    raise argparse.ArgumentTypeError(
        f"{text!r}: must be a number > 0 (frames per second of the overlay "
        f"GIF and MP4)")
  return value


def parse_args(argv):
  parser = _Parser(prog=f"python -m vosjax.tools.{PROG}",
                   description=__doc__.split("\n\n")[0])
  source = parser.add_argument_group("model (one of)")
  source.add_argument("--workdir", help="run folder <workdir>/<experiment>")
  source.add_argument("--checkpoint", help="a path inside a run folder")
  source.add_argument("--experiment", help="with --workdir: the run's "
                      "experiment; alone: an untrained experiment "
                      "(pml_i3d_zero_shot)")
  parser.add_argument("--frames", required=True,
                      help="folder of frames or a video file (MP4, ...)")
  parser.add_argument("--first_mask", required=True,
                      help="first-frame annotation PNG (palette or 0/255)")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--name", help="sequence name (default: from --frames)")
  parser.add_argument("--variant", help="variant to apply (default: the "
                      "run's last, e.g. oneshot)")
  parser.add_argument("--fps", type=_fps, default=10.0,
                      help="frame rate of the overlay GIF and MP4 (> 0)")
  parser.add_argument("--allow_truncated", action="store_true",
                      help="segment the frames of a video that decodes fewer "
                      "than its container announces")
  args, rest = parser.parse_known_args(argv)
  overrides = {}
  for arg in rest:
    if not arg.startswith("--config.") or "=" not in arg:
      _fail(f"unrecognised argument {arg} (overrides are --config.a.b=v)", 2)
    key, value = arg[len("--config."):].split("=", 1)
    overrides[key] = value
  if bool(args.workdir) + bool(args.checkpoint) > 1:
    _fail("pass one of --workdir and --checkpoint", 2)
  if not (args.workdir or args.checkpoint or args.experiment):
    _fail("pass --workdir, --checkpoint or --experiment", 2)
  return args, overrides


# ----------------------------------------------------------------------------
# Where the outputs go, checked before any work.


def output_name(name, frames):
  """`--name`, or the frames folder's / video file's name; a plain file name.

  Refused: empty, `.`, `..`, a path (`a/b`), a hidden name (`.x`, the build
  folders' form) and one too long for `<name>_overlay.mp4`.
  """
  given = name is not None
  if not given:
    path = pathlib.Path(frames).expanduser().resolve()
    name = path.name if path.is_dir() else path.stem
  why = None
  if not name:
    why = "is empty"
  elif name in (".", ".."):
    why = "is not a file name"
  elif any(s and s in name for s in ("/", os.sep, os.altsep, "\0")):
    why = "is a path, not a plain file name"
  elif name.startswith("."):
    why = "starts with a dot (a hidden name)"
  elif len(os.fsencode(name)) > 200:
    why = "is too long for a file name"
  if why:
    where = (f"--name {name!r}" if given else
             f"--frames {frames} gives the name {name!r}, which")
    raise InputError(f"{where} {why}; pass --name with a plain file name, "
                     f"e.g. --name clip")
  return name


def _parts(name):
  return [name, f"{name}.gif", f"{name}_sheet.png", f"{name}_overlay.mp4"]


def _inside(path, folder):
  return folder in path.parents


def _read_marker(folder):
  """The files `<folder>/MARKER` lists (None when absent or unreadable)."""
  try:
    record = json.loads((folder / MARKER).read_text())
    return set(record["files"]), set(record["beside"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def check_output(out, name, inputs):
  """`InputError` unless writing `<out>/<name>...` loses nothing.

  Args:
    out: --out.
    name: the plain output name (`output_name`).
    inputs: `{flag: path}` of the inputs (--frames, --first_mask).
  """
  out = pathlib.Path(out).expanduser()
  existing = next(p for p in [out, *out.parents] if os.path.lexists(p))
  if existing == out and not out.is_dir():
    raise InputError(f"--out {out} exists and is not a folder")
  if not existing.is_dir():
    raise InputError(f"--out {out}: {existing} is a file, not a folder")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise InputError(f"--out {out}: {existing} is not writable")
  # Compared after resolving symbolic links and `..`: `--out ~/v/../v` or a
  # link to the frames folder is the same place.
  real_out = pathlib.Path(os.path.realpath(out))
  parts = [real_out / p for p in _parts(name)]
  for flag, given in inputs.items():
    real = pathlib.Path(os.path.realpath(pathlib.Path(given).expanduser()))
    if real.is_dir() and (real_out == real or _inside(real_out, real)):
      raise InputError(f"--out {out} is {'' if real_out == real else 'inside '}"
                       f"the input {flag} {given}; write the masks elsewhere")
    for part in parts:
      if part == real or _inside(real, part):
        raise InputError(f"{out / part.name} would replace the input {flag} "
                         f"{given}; pass another --out or --name")
  dest, how = out / name, "pass another --out or --name, or move it away"
  record = None
  if os.path.lexists(dest):
    if dest.is_symlink() or not dest.is_dir():
      raise InputError(f"{dest} exists and is not a folder segment_video "
                       f"wrote; {how}")
    record = _read_marker(dest)
    if record is None:
      raise InputError(f"{dest} exists and was not written by segment_video "
                       f"(no {MARKER} file in it); {how}")
    extra = sorted(set(os.listdir(dest)) - record[0] - {MARKER})
    if extra:
      more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
      raise InputError(f"{dest / extra[0]}{more} was not written by "
                       f"segment_video, and {dest} would be replaced; move "
                       f"it out of {dest}, or pass another --out or --name")
  for part in _parts(name)[1:]:
    if os.path.lexists(out / part) and (
        record is None or part not in record[1] or (out / part).is_symlink()
        or not (out / part).is_file()):
      raise InputError(f"{out / part} exists and was not written by "
                       f"segment_video; {how}")


def _swap_in(build, out, name):
  """Renames the built parts onto `<out>/...`, earlier ones moved into
  `build` first; on a failed rename the earlier outputs are put back."""
  old = build / ".replaced"
  old.mkdir()
  moved, placed = [], []
  with interrupt.deferred():
    try:
      for part in _parts(name):
        if os.path.lexists(out / part):
          os.replace(out / part, old / part)
          moved.append(part)
        os.replace(build / part, out / part)
        placed.append(part)
    except OSError:
      for part in placed:
        os.replace(out / part, build / part)
      for part in moved:
        os.replace(old / part, out / part)
      raise


def write_overlay_video(frames, masks, path, fps, palette=None):
  """Overlays as an MP4 (OpenCV's mp4v), even sizes for the codec."""
  height, width = (s - s % 2 for s in frames.shape[1:3])
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                           (width, height))
  if not writer.isOpened():
    raise RunError(f"cannot write {path} (OpenCV has no mp4v encoder)")
  try:
    for frame, mask in zip(frames, masks):
      rgb = overlays.overlay_frame(frame, mask, palette=palette)
      writer.write(cv2.cvtColor(rgb[:height, :width], cv2.COLOR_RGB2BGR))
  finally:
    writer.release()


def write_outputs(out, name, frames, frame_names, masks, palette, fps,
                  inputs=None):
  """PNGs (with the marker), GIF, contact sheet and MP4, built in a hidden
  folder and swapped in whole; `check_output` is repeated just before the
  swap (the user may have added files meanwhile)."""
  out = pathlib.Path(out).expanduser()
  check_output(out, name, inputs or {})
  missing = [p for p in [out, *out.parents] if not p.exists()]
  build = None
  try:
    out.mkdir(parents=True, exist_ok=True)
    build = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp",
                                          dir=out))
    for stem, mask in zip(frame_names, masks):
      davis_io.write_mask(build / name / f"{stem}.png", mask, palette=palette)
    record = {"written_by": f"vosjax.tools.{PROG}",
              "files": [f"{stem}.png" for stem in frame_names],
              "beside": _parts(name)[1:]}
    davis_io.atomic_write(build / name / MARKER,
                          lambda f: json.dump(record, f, indent=1), mode="w")
    # Overlays: the DAVIS palette unless the mask brought its own colours.
    overlays.write_sequence_overlays(frames, masks, build, name, fps=fps)
    write_overlay_video(frames, masks, build / f"{name}_overlay.mp4", fps,
                        palette=palette)
    check_output(out, name, inputs or {})
    _swap_in(build, out, name)
  except OSError as e:
    raise RunError(f"cannot write under --out {out}: {e}") from e
  finally:
    if build is not None:
      shutil.rmtree(build, ignore_errors=True)
    if not (out / name / MARKER).is_file():
      for folder in missing:  # Folders made for --out, when left empty.
        with contextlib.suppress(OSError):
          folder.rmdir()
  return [out / part for part in _parts(name)]


def main(argv=None):
  interrupt.install()
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  _warnings_as_lines()
  t0 = time.time()
  inputs = {"--frames": args.frames, "--first_mask": args.first_mask}
  try:
    with video_io.flag_names(
        path="--checkpoint" if args.checkpoint else "--workdir"):
      # Cheap checks first: a bad output place, mask or video fails before
      # any model is loaded (or jax imported).
      name = output_name(args.name, args.frames)
      check_output(args.out, name, inputs)
      mask, palette = video_io.read_first_mask(args.first_mask)
      notes = []  # The frame order and warnings, shown once the inputs and
      frames, frame_names = video_io.read_video(  # the model are accepted,
          args.frames, allow_truncated=args.allow_truncated,  # so that an
          log=notes.append,  # error stays one line.
          exclude=[("--first_mask", args.first_mask)])
      video_io.check_inputs(frames, mask)
      from vosjax import segment  # pylint: disable=g-import-not-at-top
      seg = segment.load(args.workdir or args.checkpoint,
                         experiment=args.experiment, overrides=overrides,
                         variant=args.variant)
      for line in notes:
        print(line, file=sys.stderr, flush=True)
      masks = seg.segment(frames, mask, name=name)
      paths = write_outputs(args.out, name, frames, frame_names, masks,
                            palette, args.fps, inputs)
  except video_io.OverrideError as e:  # A bad --config value, as run.py.
    _fail(e, 2)
  except (InputError, RunError) as e:
    _fail(e, 1)
  except interrupt.InterruptedAfterBlock:
    interrupt.exit_interrupted(f"{PROG}: interrupted after the outputs were "
                               f"written whole to {args.out}")
  except KeyboardInterrupt:
    interrupt.exit_interrupted(
        f"{PROG}: interrupted; nothing was written to {args.out}")
  print(f"{len(frames)} masks of {name} ({seg.program} "
        f"{seg.chosen_variant()}) in {time.time() - t0:.1f} s: "
        f"{paths[0]}/, {', '.join(p.name for p in paths[1:])}")


if __name__ == "__main__":
  main()
