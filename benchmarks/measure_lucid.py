"""Figures behind vosjax.augment.lucid: real vs dreamed motion, inpainting.

  python benchmarks/measure_lucid.py motion [--split train]
  python benchmarks/measure_lucid.py inpaint [--sequences a,b] [--methods ..]
  python benchmarks/measure_lucid.py dream [--sequences a,b] [--clips 4]

`motion`: per-frame centroid step (pixels, 480p) of the ground-truth masks of
  every sequence of a DAVIS 2016 split that is present, and the per-frame
  change of log sqrt(area) (the object's scale step); frames with an empty
  mask are skipped (no centroid). Median and 90th percentile per sequence and
  pooled over all steps.
`inpaint`: for each first frame, the texture ratio (mean Sobel gradient
  magnitude inside the hole / in a ring 10..30 px around it; 1 means the
  hole is as textured as its surroundings) and the time of each candidate
  background fill: OpenCV Telea (the previous default, with its 4x
  downscaling), OpenCV contrib xphoto SHIFTMAP and FSR_FAST (at reduced
  resolution: full-resolution SHIFTMAP takes 30-50 s per 480p frame), and
  `lucid.inpaint_background` as configured (SHIFTMAP at 1/2 resolution on
  the hole's box grown by half its size). "shiftmap/2" (whole frame) runs
  on request only.
`dream`: per first frame, the real per-frame centroid step of the sequence
  against that of `--clips` dreamed 16-frame clips (seeds 0..clips-1), and
  the wall time of `dream_frames` per clip (the background inpainting is
  cached per frame and timed separately as "inpaint").

Data: `$VOSJAX_SHARED_DATA/DAVIS` or ../shared/data/DAVIS. Single-threaded
OpenCV (as in lucid.py); timings depend on the machine's load.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
# pylint: disable=g-import-not-at-top,wrong-import-position
import cv2
from vosjax import davis_io
from vosjax.augment import lucid
# pylint: enable=g-import-not-at-top,wrong-import-position

VAL_DEFAULT = "blackswan,camel,cows,parkour,car-shadow,dog,libby"


def _root():
  base = os.environ.get("VOSJAX_SHARED_DATA", os.path.join(
      os.path.dirname(__file__), "..", "..", "shared", "data"))
  return os.path.join(base, "DAVIS")


def _first(root, seq):
  frame = davis_io.read_frame(davis_io.frame_paths(root, seq)[0])
  raw = davis_io.read_mask(davis_io.mask_paths(root, seq)[0])
  return frame, davis_io.to_object_ids(raw, 2016)


def mask_motion(masks):
  """Per-step centroid displacement and log-scale change of binary masks.

  Args:
    masks: sequence of `[H, W]` masks (non-zero is the object).

  Returns:
    (steps, scale_steps): float arrays over consecutive pairs whose masks
    are both non-empty; pixels and |log sqrt(area) change|.
  """
  cents, areas = [], []
  for m in masks:
    ys, xs = np.nonzero(np.asarray(m) > 0)
    if xs.size:
      cents.append((xs.mean(), ys.mean()))
      areas.append(xs.size)
    else:
      cents.append(None)
      areas.append(0)
  steps, scales = [], []
  for a, b, sa, sb in zip(cents[:-1], cents[1:], areas[:-1], areas[1:]):
    if a is not None and b is not None:
      steps.append(np.hypot(b[0] - a[0], b[1] - a[1]))
      scales.append(abs(0.5 * np.log(sb / sa)))
  return np.array(steps), np.array(scales)


def _stats(x):
  return (f"median {np.median(x):6.2f}  p90 {np.percentile(x, 90):6.2f}  "
          f"mean {x.mean():6.2f}  max {x.max():6.2f}  n {x.size}")


def cmd_motion(args):
  root = _root()
  seqs = [s for s in davis_io.read_split(root, args.split)
          if os.path.isdir(os.path.join(root, "Annotations", "480p", s))]
  all_steps, all_scales = [], []
  for seq in seqs:
    masks = [davis_io.read_mask(p) for p in davis_io.mask_paths(root, seq)]
    steps, scales = mask_motion(masks)
    all_steps.append(steps)
    all_scales.append(scales)
    print(f"{seq:16s} centroid step {_stats(steps)}  "
          f"scale step median {np.median(scales):.4f} "
          f"p90 {np.percentile(scales, 90):.4f}")
  steps, scales = np.concatenate(all_steps), np.concatenate(all_scales)
  print(f"{'POOLED':16s} centroid step {_stats(steps)}  scale step median "
        f"{np.median(scales):.4f} p90 {np.percentile(scales, 90):.4f}")
  med = np.array([np.median(s) for s in all_steps])
  print(f"per-sequence median step: median {np.median(med):.2f}, "
        f"min {med.min():.2f}, max {med.max():.2f}")


def texture_ratio(image, hole):
  """Mean Sobel gradient magnitude in `hole` (eroded 3 px) / in its ring.

  The ring is the pixels 10..30 px outside the hole, so neither side sees
  the hole's boundary. Gradients of the grey image, in [0, 255] units.
  """
  hole = (hole > 0).astype(np.uint8)
  grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
  mag = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0),
                 cv2.Sobel(grey, cv2.CV_32F, 0, 1))
  inner = cv2.erode(hole, np.ones((7, 7), np.uint8)) > 0
  ring = ((cv2.dilate(hole, np.ones((61, 61), np.uint8)) > 0) &
          ~(cv2.dilate(hole, np.ones((21, 21), np.uint8)) > 0))
  return float(mag[inner].mean() / mag[ring].mean())


def _telea_old(frame, mask):
  """The previous lucid.inpaint_background: Telea, up to 4x downscaled."""
  hole = cv2.dilate((mask > 0).astype(np.uint8), np.ones((15, 15), np.uint8))
  h, w = hole.shape
  factor = min(4, max(1, int(np.sqrt(hole.sum() / 4000.0))))
  if factor == 1:
    return cv2.inpaint(frame, hole, 5, cv2.INPAINT_TELEA), hole
  size = (w // factor, h // factor)
  small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
  small_hole = (cv2.resize(hole.astype(np.float32), size,
                           interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
  small = cv2.inpaint(small, small_hole, 5, cv2.INPAINT_TELEA)
  fill = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
  return np.where(hole[..., None] > 0, fill, frame), hole


def _xphoto(frame, mask, algorithm, factor):
  """xphoto.inpaint at 1/factor resolution, upsampled into the hole."""
  hole = lucid.hole_mask(mask, lucid.DreamConfig())
  h, w = hole.shape
  size = (w // factor, h // factor)
  small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
  small_hole = (cv2.resize(hole.astype(np.float32), size,
                           interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
  out = np.zeros_like(small)
  cv2.xphoto.inpaint(small, (1 - small_hole) * 255, out, algorithm)
  fill = cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC)
  return np.where(hole[..., None] > 0, fill, frame), hole


def cmd_inpaint(args):
  cv2.setNumThreads(1)
  root = _root()
  methods = {
      "telea_old": _telea_old,
      "shiftmap/2": lambda f, m: _xphoto(f, m, cv2.xphoto.INPAINT_SHIFTMAP,
                                         2),
      "shiftmap/4": lambda f, m: _xphoto(f, m, cv2.xphoto.INPAINT_SHIFTMAP,
                                         4),
      "fsr_fast/4": lambda f, m: _xphoto(f, m, cv2.xphoto.INPAINT_FSR_FAST,
                                         4),
      "lucid": lambda f, m: (lucid.inpaint_background(f, m),
                             lucid.hole_mask(m, lucid.DreamConfig())),
  }
  names = (args.methods.split(",") if args.methods else
           ["telea_old", "shiftmap/4", "fsr_fast/4", "lucid"])
  for seq in args.sequences.split(","):
    frame, mask = _first(root, seq)
    row = []
    for name in names:
      start = time.perf_counter()
      out, hole = methods[name](frame, mask)
      seconds = time.perf_counter() - start
      row.append(f"{name} {texture_ratio(out, hole):.3f} ({seconds:.2f}s)")
    print(f"{seq:14s} " + "  ".join(row), flush=True)


def cmd_dream(args):
  cv2.setNumThreads(1)
  root = _root()
  real_all, dream_all, times, inpaint_times = [], [], [], []
  for seq in args.sequences.split(","):
    frame, mask = _first(root, seq)
    real, _ = mask_motion([davis_io.read_mask(p)
                           for p in davis_io.mask_paths(root, seq)])
    start = time.perf_counter()
    background = lucid.inpaint_background(frame, mask)
    inpaint_times.append(time.perf_counter() - start)
    steps = []
    for seed in range(args.clips):
      start = time.perf_counter()
      _, masks, _ = lucid.dream_frames(frame, mask, num_frames=16, seed=seed,
                                       background=background)
      times.append(time.perf_counter() - start)
      steps.append(mask_motion(masks)[0])
    steps = np.concatenate(steps)
    real_all.append(real)
    dream_all.append(steps)
    print(f"{seq:14s} real step median {np.median(real):5.2f} p90 "
          f"{np.percentile(real, 90):6.2f} | dreamed median "
          f"{np.median(steps):5.2f} p90 {np.percentile(steps, 90):6.2f} "
          f"max {steps.max():6.2f} | inpaint {inpaint_times[-1]:.2f}s",
          flush=True)
  real, steps = np.concatenate(real_all), np.concatenate(dream_all)
  print(f"{'POOLED':14s} real step median {np.median(real):5.2f} p90 "
        f"{np.percentile(real, 90):6.2f} | dreamed median "
        f"{np.median(steps):5.2f} p90 {np.percentile(steps, 90):6.2f}")
  print(f"dream_frames per 16-frame 480p clip (background given): median "
        f"{np.median(times):.2f}s, max {np.max(times):.2f}s over "
        f"{len(times)} clips; inpaint once per frame: median "
        f"{np.median(inpaint_times):.2f}s")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="cmd", required=True)
  p = sub.add_parser("motion")
  p.add_argument("--split", default="train")
  p = sub.add_parser("inpaint")
  p.add_argument("--sequences", default=VAL_DEFAULT)
  p.add_argument("--methods", default="")
  p = sub.add_parser("dream")
  p.add_argument("--sequences", default=VAL_DEFAULT)
  p.add_argument("--clips", type=int, default=8)
  args = parser.parse_args()
  {"motion": cmd_motion, "inpaint": cmd_inpaint, "dream": cmd_dream}[
      args.cmd](args)


if __name__ == "__main__":
  main()
