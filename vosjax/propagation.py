"""Mask propagation through a video as one jitted `lax.scan` on device.

MaskTrack (Perazzi, Khoreva et al., CVPR 2017, Sec. 3) segments frame t from
frame t and its own estimate for frame t - 1, starting from the annotated
first frame. Here the whole sequence is one compiled program: the frames go
to the device once, each step's output feeds the next step inside the scan,
and the probabilities come back once, with no host round trip per frame.

The step is any `step_fn(variables, frame, prev) -> prob`, so the same scan
runs one stream or MaskTrack's two streams (RGB and optical-flow magnitude,
their probabilities averaged).
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

FEEDS = ("binary", "probability")
# The thresholds `cap_area_growth` chooses from (0.5: the plain one).
GROWTH_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("feed",))
def propagate(step_fn, variables, frames, first_mask, *, feed="binary"):
  """Foreground probabilities of every frame, each fed the previous output.

  Args:
    step_fn: `step_fn(variables, frame, prev) -> prob`: `frame` is one time
      step of `frames` with a leading batch axis of 1 (a pytree like
      `frames`), `prev` `[1, H, W]` float32 in [0, 1], `prob` `[1, H, W]`
      float32 in [0, 1]. Hashable (static): one compilation per function.
    variables: pytree passed to `step_fn` as is.
    frames: pytree of `[T, ...]` arrays (e.g. `[T, H, W, 3]` uint8 RGB, or
      {"rgb": ..., "flow": ...}).
    first_mask: `[H, W]` the annotated frame 0, in [0, 1].
    feed: "binary": the next step sees `prob > 0.5` as {0, 1};
      "probability": it sees `prob` itself.

  Returns:
    `[T, H, W]` float32 in [0, 1]: frame 0 is `first_mask`, frame t >= 1 the
    network's output given frame t and the fed output of frame t - 1.
  """
  if feed not in FEEDS:
    raise ValueError(f"feed must be one of {FEEDS}, got {feed!r}")
  first = jnp.asarray(first_mask, jnp.float32)

  def body(prev, frame):
    frame = jax.tree.map(lambda x: x[None], frame)
    prob = step_fn(variables, frame, prev[None])[0]
    fed = (prob > 0.5).astype(jnp.float32) if feed == "binary" else prob
    return fed, prob

  rest = jax.tree.map(lambda x: x[1:], frames)
  _, probs = lax.scan(body, first, rest)
  return jnp.concatenate([first[None], probs.astype(jnp.float32)])


def propagate_padded(step_fn, variables, frames, first_mask, *, feed="binary",
                     bucket=1):
  """`propagate` with T rounded up to a multiple of `bucket` (host in/out).

  Sequences of different lengths then share compilations: the last frame is
  repeated and the extra outputs dropped (the scan is causal, so the padding
  never changes the real frames' outputs).

  Returns:
    `[T, H, W]` float32 NumPy in [0, 1].
  """
  num = jax.tree.leaves(frames)[0].shape[0]
  padded = -(-num // max(int(bucket), 1)) * max(int(bucket), 1)
  index = np.minimum(np.arange(padded), num - 1)
  frames = jax.tree.map(lambda x: np.asarray(x)[index], frames)
  probs = propagate(step_fn, variables, frames, first_mask, feed=feed)
  return np.asarray(jax.device_get(probs))[:num]


def cap_area_growth(prob, prev, cap):
  """A frame's probabilities shifted so its mask grows at most `cap`-fold.

  The mask is `prob > t` for the lowest t of `GROWTH_THRESHOLDS` whose mask
  covers at most `cap` times the fed mask's area `|prev > 0.5|` (the
  highest t when none does; t = 0.5 when the fed mask is empty, so a lost
  object can come back). Shrinking is free. The result is `prob` with its
  logit shifted by -logit(t), so thresholding it at 0.5, as the scan's
  binary feed and the programs do, gives exactly that mask.

  Not in MaskTrack (Perazzi et al. 2017): a prior that an object's area
  changes by at most a factor `cap` from one frame to the next, against
  the loop's failure mode of masks that spread into similar background
  and feed the spread on. Measured on MaskTrack (docs/RESULTS.md): 1.1
  gains 0.09 J&F on six val sequences but loses 0.02 on all 20, where it
  starves objects that grow fast (a mask cut back regains at most the
  cap a frame); no experiment sets it.

  Args:
    prob: `[1, H, W]` foreground probabilities in [0, 1].
    prev: `[1, H, W]` the fed mask (or probabilities) in [0, 1].
    cap: the largest area ratio allowed, > 0.

  Returns:
    `[1, H, W]` float32 in [0, 1].
  """
  thresholds = jnp.asarray(GROWTH_THRESHOLDS, jnp.float32)
  shifts = jnp.log(thresholds) - jnp.log1p(-thresholds)
  p = jnp.clip(prob.astype(jnp.float32), 1e-7, 1 - 1e-7)
  logit = jnp.log(p) - jnp.log1p(-p)
  areas = jnp.sum(logit[None] > shifts[:, None, None, None], (1, 2, 3))
  prev_area = jnp.sum(prev > 0.5)
  ok = areas <= cap * prev_area
  pick = jnp.where(jnp.any(ok), jnp.argmax(ok), len(GROWTH_THRESHOLDS) - 1)
  shift = jnp.where(prev_area > 0, shifts[pick], 0.0)
  return jax.nn.sigmoid(logit - shift)
