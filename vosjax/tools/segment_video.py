"""Segment your own video with a trained run (or the untrained PML baseline).

  python -m vosjax.tools.segment_video --workdir DIR (or --checkpoint PATH,
      or --experiment pml_i3d_zero_shot) --frames DIR|VIDEO \\
      --first_mask PNG --out DIR [--variant NAME] [--name NAME] \\
      [--config.eval.scale=0.5 ...]

Writes, under --out, DAVIS-format palette PNGs `<name>/<frame>.png` (the
first mask's palette kept; `python -m vosjax.evaluate --results_path OUT`
reads them), `<name>.gif` and `<name>_sheet.png` (overlays,
`vosjax.overlays`) and `<name>_overlay.mp4`. Everything is built in a hidden
folder under --out and renamed into place at the end, so an interrupted run
leaves no half-written output. `<name>` defaults to the frames folder's or
video file's name.

`--workdir` is a run folder `<workdir>/<experiment>` of run.py (or the
workdir with `--experiment`, or a workdir holding one run); `--checkpoint`
any path inside a run (e.g. its `parent/checkpoints`): the run's
`config.json` says the method, its latest checkpoint is restored.
`--config.a.b=v` overrides fine-tuning, inference and evaluation fields.

Errors the user can fix print one line `segment_video: ...`: exit 2 for a
bad command line, 1 for bad input (a mask whose size differs from the
frames, a mask with no object, an unreadable video, no checkpoint).
"""

import argparse
import pathlib
import shutil
import sys
import time

import cv2

from vosjax import davis_io
from vosjax import overlays
from vosjax import segment
from vosjax.errors import InputError
from vosjax.errors import RunError

PROG = "segment_video"


def _fail(message, code):
  print(f"{PROG}: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    _fail(message, 2)


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
  parser.add_argument("--fps", type=float, default=10.0,
                      help="frame rate of the overlay GIF and MP4")
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


def write_outputs(out, name, frames, frame_names, masks, palette, fps):
  """PNGs, GIF, contact sheet and MP4, built hidden and renamed in."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  tmp = out / f".{name}.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  for stem, mask in zip(frame_names, masks):
    davis_io.write_mask(tmp / name / f"{stem}.png", mask, palette=palette)
  # Overlays: the DAVIS palette unless the mask brought its own colours.
  overlays.write_sequence_overlays(frames, masks, tmp, name, fps=fps)
  write_overlay_video(frames, masks, tmp / f"{name}_overlay.mp4", fps,
                      palette=palette)
  done = []
  for part in (name, f"{name}.gif", f"{name}_sheet.png",
               f"{name}_overlay.mp4"):
    final = out / part
    if final.is_dir():
      shutil.rmtree(final)
    (tmp / part).replace(final)
    done.append(final)
  shutil.rmtree(tmp, ignore_errors=True)
  return done


def main(argv=None):
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  t0 = time.time()
  try:
    # Inputs first: a bad mask or video fails before any model is loaded.
    frames, frame_names = segment.read_video(args.frames)
    mask, palette = segment.read_first_mask(args.first_mask)
    segment.check_inputs(frames, mask)
    name = args.name or pathlib.Path(args.frames).stem
    seg = segment.load(args.workdir or args.checkpoint,
                       experiment=args.experiment, overrides=overrides,
                       variant=args.variant)
    masks = seg.segment(frames, mask, name=name)
    paths = write_outputs(args.out, name, frames, frame_names, masks,
                          palette, args.fps)
  except (InputError, RunError) as e:
    _fail(e, 1)
  print(f"{len(frames)} masks of {name} ({seg.program} "
        f"{seg.chosen_variant()}) in {time.time() - t0:.1f} s: "
        f"{paths[0]}/, {', '.join(p.name for p in paths[1:])}")


if __name__ == "__main__":
  main()
