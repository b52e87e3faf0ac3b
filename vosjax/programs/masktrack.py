"""MaskTrack as a recipe over the shared pipeline (`vosjax.pipeline`).

Perazzi, Khoreva, Benenson, Schiele, Sorkine-Hornung, "Learning Video Object
Segmentation from Static Images", CVPR 2017:

  * offline: the network (`vosjax.models.masktrack`: RGB + previous mask)
    learns to refine a rough mask into the object's mask, from static images
    whose input mask is the ground truth deformed (`vosjax.augment.mask_deform`;
    here the train split's frames as independent images);
  * online: the offline network fine-tuned on each test sequence's first
    frame, again with deformed copies of its mask as input, all sequences in
    one program (`vosjax.finetune`);
  * test: the first-frame mask propagated frame by frame, each output the
    next input, one jitted scan per sequence (`vosjax.propagation`);
  * optional second stream: the same network fine-tuned on the first frame's
    optical-flow magnitude (OpenCV DIS flow), its probabilities averaged with
    the RGB stream's (Sec. 3.3). No CRF (the paper's 79.7 J uses one).
  * not in the paper, off unless set: `inference.area_cap`, a mask may grow
    at most that factor from one frame to the next
    (`vosjax.propagation.cap_area_growth`), against masks that spread into
    similar background and feed the spread on (measured, not used by any
    experiment: docs/RESULTS.md).

Variants: `offline` (no fine-tuning), `online`, `two_stream` (flow on), plus
the pipeline's baseline. Several objects are propagated one by one with the
sequence's network and merged (highest probability above 0.5 wins). Writes
`parent/` (checkpoints, metrics.jsonl).
"""

import functools
import pathlib
import time

from absl import logging
import cv2
import jax
import jax.numpy as jnp
import numpy as np

from vosjax import davis_io
from vosjax import finetune
from vosjax import image
from vosjax import input_pipeline
from vosjax import pipeline
from vosjax import propagation
from vosjax import train
from vosjax.augment import mask_deform
from vosjax.models import masktrack
from vosjax.programs import osvos as osvos_program


def masktrack_loss(model, side_weight_fn, params, batch_stats, batch, rng,
                   step):
  """The one loss signature (`vosjax.train.make_train_step`) for MaskTrack.

  Args:
    batch: `frames` `[B, (1,) H, W, 3]` uint8 or float32 in [-1, 1], `prev`
      `[B, (1,) H, W]` {0, 1} (the deformed input mask), and `labels`
      `[B, (1,) H, W]` {0, 1} or `ids` (255 = void, counted as background).

  Returns:
    `(total, (batch_stats, metrics))`: OSVOS's class-balanced BCE of the
    fused output plus `side_weight_fn(step)` times its side outputs'.
  """
  labels = (batch["labels"] if "labels" in batch
            else input_pipeline.foreground(batch["ids"]).astype(jnp.float32))
  x = masktrack.model_input(batch["frames"], batch["prev"])
  return osvos_program.segmentation_loss(
      model, side_weight_fn, params, batch_stats,
      {"frames": x, "labels": labels}, rng, step)


def deformed_prev(ids, seed, dilation_radius):
  """`[H, W]` uint8 {0, 1}: the foreground of the deformed `ids`."""
  return input_pipeline.foreground(mask_deform.deform(
      ids, seed, dilation_radius=dilation_radius)).astype(np.uint8)


def add_deformed_masks(batch, rng, *, dilation_radius):
  """Grain `random_map` on a batch: adds `prev`, the deformed input masks.

  Each example's seed is drawn from grain's per-element generator, so the
  stream (and a resumed one) is a pure function of the run's seed.
  """
  ids = batch["ids"]  # [B, 1, H, W]
  flat = ids.reshape((-1,) + ids.shape[-2:])
  seeds = rng.integers(0, 2**63 - 1, size=len(flat))
  prev = np.stack([deformed_prev(m, int(s), dilation_radius)
                   for m, s in zip(flat, seeds)])
  return dict(batch, prev=prev.reshape(ids.shape))


def flow_images(frames, preset=cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
  """Optical-flow magnitude images of a sequence (`masktrack.flow_image`).

  Frame t's flow is DIS flow from frame t to frame t - 1 (frame 0: to frame
  1), so each image lies on its own frame's pixel grid.

  Args:
    frames: `[T, H, W, 3]` uint8 RGB, T >= 1.

  Returns:
    `[T, H, W, 3]` uint8.
  """
  gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
  if len(gray) == 1:
    return np.zeros_like(frames)
  dis = cv2.DISOpticalFlow_create(preset)
  out = []
  for t, g in enumerate(gray):
    other = gray[t - 1] if t > 0 else gray[1]
    out.append(masktrack.flow_image(dis.calc(g, other, None)))
  return np.stack(out)


class MaskTrackMethod:
  """Offline training, batched online fine-tuning, scan propagation."""

  name = "MaskTrack"

  def __init__(self, config, workdir):
    self.config = config
    self.workdir = pathlib.Path(workdir)
    self.model = masktrack.build_model(config.model)
    self.parent = None

  def train(self, data, workdir, *, evaluate_only=False):
    config, tc = self.config, self.config.train
    variables = masktrack.init_variables(
        self.model, config.model, jax.random.key(config.seed, impl="rbg"))
    loss_fn = functools.partial(
        masktrack_loss, self.model,
        train.epoch_side_weight(tc))
    batches = None
    if not evaluate_only and tc.num_steps > 0:
      # Frames as static images (clips of one frame), flipped, scaled and
      # rotated, each with a deformed copy of its mask as the input mask.
      dataset = input_pipeline.make_dataset(
          pipeline.training_source(config, data, workdir),
          global_batch_size=tc.batch_size, clip_length=1,
          crop_size=tc.crop_size, seed=config.seed,
          scale_range=tuple(tc.scale_range), rotation=tc.rotation,
          min_foreground=tc.min_foreground)
      dataset = dataset.random_map(functools.partial(
          add_deformed_masks, dilation_radius=config.deform.dilation_radius),
                                   seed=config.seed)
      batches = input_pipeline.KeepKeys(iter(dataset),
                                        ("frames", "labels", "prev"))
    tx, _ = osvos_program.make_optimizer(tc, variables["params"], "parent")
    self.parent = pipeline.fit_parent(
        variables, loss_fn, batches, tc, pathlib.Path(workdir) / "parent",
        seed=config.seed, evaluate_only=evaluate_only, tx=tx)

  def variants(self, data):
    if (self.config.inference.get("offline", True)
        and pipeline.trains_parent(self.config)):
      yield pipeline.Variant("offline", self._segmenter(
          lambda seq: self.parent))
    if not self.config.finetune.enabled:
      return
    adapted = self.one_shot(data.val)
    yield pipeline.Variant("online", self._segmenter(
        lambda seq: adapted[seq.name]))
    if self.config.flow.enabled:
      flows = self.one_shot(data.val, stream="flow")
      yield pipeline.Variant("two_stream", self._segmenter(
          lambda seq: {"rgb": adapted[seq.name], "flow": flows[seq.name]},
          two_stream=True))

  def _pool(self, seq, stream):
    """One sequence's fine-tuning pool: augmented frame 0 + deformed masks."""
    config, fc = self.config, self.config.finetune
    if stream == "flow":
      frames = image.resize(seq.frames()[:2], fc.scale)
      frame = flow_images(frames)[:1]
    else:
      frame = image.resize(seq.first_frame()[None], fc.scale)
    mask = image.resize(seq.first_mask[None], fc.scale, nearest=True)
    rng = np.random.default_rng(pipeline.name_seed(config.seed, seq.name,
                                                   stream))
    frames, ids, prev = [], [], []
    for _ in range(fc.pool_size):
      f, m = input_pipeline.augment_clip(
          frame, mask, rng, crop_size=(fc.crop_size, fc.crop_size),
          scale_range=tuple(fc.scale_range), rotation=fc.rotation,
          min_foreground=0.0)
      frames.append(f[0])
      ids.append(m[0])
      prev.append(deformed_prev(m[0], int(rng.integers(2**63 - 1)),
                                config.deform.finetune_dilation_radius))
    return {"frames": np.stack(frames), "ids": np.stack(ids),
            "prev": np.stack(prev)}

  def one_shot(self, sequences, stream="rgb"):
    """Fine-tunes the offline network on each sequence's first frame.

    Each sequence gets a pool of `finetune.pool_size` augmentations of frame 0
    (or of its flow-magnitude image for `stream="flow"`), each with its own
    deformed input mask; each step averages `finetune.batch_size` of them.

    Returns:
      `{sequence name: variables}`.
    """
    config, fc = self.config, self.config.finetune
    data = jax.tree.map(lambda *xs: np.stack(xs),
                        *[self._pool(seq, stream) for seq in sequences])
    params = self.parent["params"]
    tx, _ = osvos_program.make_optimizer(fc, params, "online")
    loss_fn = _online_loss(self.model)
    rngs = finetune.sequence_keys(
        config.seed, [pipeline.name_seed(seq.name, stream) for seq in sequences])
    result = finetune.finetune(
        loss_fn, tx, finetune.broadcast(params, len(sequences)), data, rngs,
        num_steps=fc.num_steps, batch_size=fc.batch_size,
        model_state=finetune.broadcast({}, len(sequences)),
        max_batch_sequences=fc.max_batch_sequences or None,
        strategy=fc.strategy or None)
    pipeline.record_finetune(
        self.workdir, "online" if stream == "rgb" else f"online_{stream}",
        sequences, result.losses)
    return {seq.name: {"params": jax.tree.map(lambda x, s=s: x[s],
                                              result.params)}
            for s, seq in enumerate(sequences)}

  def _segmenter(self, variables_of, two_stream=False):
    ic = self.config.inference
    step_fn = _step_fn(self.model, two_stream, bool(ic.get("flip", False)),
                       float(ic.get("area_cap", 0.0)))

    def segment(seq):
      frames = seq.frames()
      height, width = frames.shape[1:3]
      small = image.resize(frames, ic.scale)
      inputs = small
      if two_stream:
        t0 = time.time()
        inputs = {"rgb": small, "flow": flow_images(small)}
        logging.info("%s: DIS flow %.3f s/frame at %dx%d", seq.name,
                     (time.time() - t0) / len(small), small.shape[2],
                     small.shape[1])
      first = image.resize(seq.first_mask[None], ic.scale, nearest=True)[0]
      objects = [i for i in np.unique(seq.first_mask)
                 if i not in (0, davis_io.VOID_LABEL)]
      best = np.zeros((len(frames), height, width), np.float32)
      out = np.zeros((len(frames), height, width), np.uint8)
      for obj in objects:
        probs = propagation.propagate_padded(
            step_fn, variables_of(seq), inputs,
            (first == obj).astype(np.float32), feed=ic.feed,
            bucket=ic.length_bucket)
        # Bilinear upsampling to 854x480, then the threshold (as osvos.py
        # does with logits).
        probs = image.upsample(probs, height, width)
        win = (probs > 0.5) & (probs > best)
        out[win], best[win] = obj, probs[win]
      out[0] = np.where(seq.first_mask == davis_io.VOID_LABEL, 0,
                        seq.first_mask)  # Frame 0 is given.
      return out

    return segment


@functools.lru_cache(maxsize=None)
def _online_loss(model):
  # Fused loss only (train_online.py of OSVOS; the network's recipe). One
  # object per model, so `finetune` reuses its compiled program.
  return functools.partial(masktrack_loss, model, osvos_program._no_sides)  # pylint: disable=protected-access


@functools.lru_cache(maxsize=None)
def _step_fn(model, two_stream, flip=False, area_cap=0.0):
  """The propagation step (hashable, one per model and mode).

  With `flip` (test-time augmentation, not in the paper) each frame and its
  input mask are also seen mirrored, in the same batch, and the mirrored
  view's probabilities, mirrored back, are averaged with the plain view's.
  With `area_cap` > 0 (`inference.area_cap`, not in the paper) the mask
  may grow at most that factor a frame (`propagation.cap_area_growth`).
  """

  def prob(variables, frames, prev):
    return jax.nn.sigmoid(masktrack.apply_fused(model, variables, frames,
                                                prev))

  def streams(variables, frame, prev):
    if not two_stream:
      return prob(variables, frame, prev)
    # Sec. 3.3: the two streams' outputs averaged.
    return 0.5 * (prob(variables["rgb"], frame["rgb"], prev) +
                  prob(variables["flow"], frame["flow"], prev))

  def views(variables, frame, prev):
    if not flip:
      return streams(variables, frame, prev)
    both = lambda x: jnp.concatenate([x, jnp.flip(x, axis=2)])
    p = streams(variables, jax.tree.map(both, frame), both(prev))
    return 0.5 * (p[:1] + jnp.flip(p[1:], axis=2))

  def step(variables, frame, prev):
    p = views(variables, frame, prev)
    return propagation.cap_area_growth(p, prev, area_cap) if area_cap else p

  return step


def run(config, workdir):
  """Runs MaskTrack through the shared pipeline; returns the summary."""
  return pipeline.run(config, workdir, MaskTrackMethod(config, workdir))


def propagation_step(model, two_stream=False, flip=False, area_cap=0.0):
  """The per-frame step `_segmenter` scans, for frame-by-frame use.

  `step(variables, frame [1, h, w, 3] uint8, prev [1, h, w] float32) -> prob
  [1, h, w]` in [0, 1] (`vosjax.segment`'s streaming processor); `flip` and
  `area_cap` as `inference.flip` and `inference.area_cap`.
  """
  return _step_fn(model, two_stream, flip, float(area_cap))
