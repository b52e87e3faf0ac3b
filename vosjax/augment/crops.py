"""The one crop choice of every training pipeline (clips, dreamed clips, PML).

FC-I3D keeps a random crop only if the object covers more than 10% of it in
the clip's first frame; the input pipeline, lucid dreaming and PML's pair
sampler all choose their crops here.
"""

import numpy as np


def choose_crop(first_mask, crop_size, rng, min_foreground=0.1):
  """Top-left corner of a crop whose foreground fraction exceeds the minimum.

  FC-I3D keeps a random crop only if the object covers more than 10% of it in
  the first frame. Instead of retrying a bounded number of random crops, the
  foreground of every crop position is counted at once (integral image) and
  one position is drawn uniformly among the accepted ones: the distribution
  of unbounded rejection sampling, at a fixed cost. When no position is
  accepted (small or absent object) it falls back to the crop with the most
  foreground (ties broken at random; with an empty mask, any crop).

  Args:
    first_mask: `[H, W]` bool foreground of the clip's first frame.
    crop_size: `(h, w)` with h <= H, w <= W.
    rng: `np.random.Generator`.
    min_foreground: strict lower bound on the crop's foreground fraction.

  Returns:
    `(top, left)` ints.
  """
  h, w = crop_size
  integral = np.pad(first_mask.astype(np.int64).cumsum(0).cumsum(1),
                    ((1, 0), (1, 0)))
  counts = (integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] +
            integral[:-h, :-w])  # [H - h + 1, W - w + 1]
  accepted = counts > min_foreground * h * w
  if not accepted.any():
    accepted = counts == counts.max()
  positions = np.flatnonzero(accepted)
  top, left = np.unravel_index(rng.choice(positions), counts.shape)
  return int(top), int(left)
