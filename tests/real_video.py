"""Real DAVIS frames for the "it learns on real video" tests (issue 28).

Each method's test fine-tunes from its pretrained network on frame 0 of a
real val sequence at a small scale and compares J on later frames with the
copy-first-frame baseline on the same frames. J is the official region
similarity (`vosjax.evaluation.metrics.frame_jf`, equal to the DAVIS tool).
"""

import cv2
import numpy as np

from vosjax import davis_io
from vosjax.evaluation import metrics


def load_clip(davis_root, sequence, num_frames, scale):
  """Frames 0..num_frames-1 of `sequence`, resized by `scale`.

  Returns:
    (`[T, h, w, 3]` uint8 RGB, `[T, h, w]` uint8 {0, 1} ground truth).
  """
  frames, masks = [], []
  for i in range(num_frames):
    frame = davis_io.read_frame(
        davis_root / "JPEGImages" / "480p" / sequence / f"{i:05d}.jpg")
    mask = davis_io.to_object_ids(davis_io.read_mask(
        davis_root / "Annotations" / "480p" / sequence / f"{i:05d}.png"), 2016)
    size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
    frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    masks.append(cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))
  return np.stack(frames), (np.stack(masks) > 0).astype(np.uint8)


def mean_j(pred, gt, frames):
  """Mean J of `pred` against `gt` over the frame indices `frames`."""
  return float(np.mean([metrics.frame_jf(gt[t] > 0, pred[t] > 0)[0]
                        for t in frames]))


# car-shadow at quarter resolution (214x120): the car drives across the
# frame, so copying frame 0's mask scores J 0.30 on frames 20, 30 and 39.
SEQUENCE = "car-shadow"
NUM_FRAMES = 40
SCORED = (20, 30, 39)
SCALE = 0.25


def learned_and_baseline_j(davis_root, experiment, overrides, *,
                           propagate=False, scale=SCALE,
                           sequence=SEQUENCE):
  """J of `experiment` (no training run: `segment.load(experiment=...)`) on
  the SCORED frames of `sequence`, and the copy-first-frame J there.

  One-shot methods see frame 0 and the scored frames only (they segment
  each frame on its own); propagating ones (`propagate`) every frame.
  """
  from vosjax import segment  # pylint: disable=g-import-not-at-top
  frames, gt = load_clip(davis_root, sequence, NUM_FRAMES, scale)
  seg = segment.load(experiment=experiment, overrides=overrides,
                     log=lambda *a, **k: None)
  if propagate:
    pred = seg.segment(frames, gt[0], name=sequence)
  else:
    chosen = [0, *SCORED]
    pred = np.zeros_like(gt)
    pred[chosen] = seg.segment(frames[chosen], gt[0], name=sequence)
  baseline = np.repeat(gt[:1], len(gt), axis=0)
  return mean_j(pred, gt, SCORED), mean_j(baseline, gt, SCORED)
