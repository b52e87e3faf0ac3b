"""OSVOS as a recipe over the shared pipeline (`vosjax.pipeline`).

Caelles et al., "One-Shot Video Object Segmentation", CVPR 2017, as released
in OSVOS-PyTorch (kmaninis/OSVOS-PyTorch): an ImageNet VGG16 with side
outputs (`vosjax.models.osvos`) trained as a parent network on the frames of
the train split as independent images (deep supervision fading as
1 - epoch / nEpochs, train_parent.py), then fine-tuned on the augmented first
frame of every test sequence (fused loss only, train_online.py), all test
sequences in one program (`vosjax.finetune`), and applied to every frame
independently, whole frames batched. Variants: `parent`, `oneshot`, plus the
pipeline's baseline. Writes `parent/` (checkpoints, metrics.jsonl).
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vosjax import finetune
from vosjax import image
from vosjax import inference
from vosjax import input_pipeline
from vosjax import losses
from vosjax import pipeline
from vosjax import train
from vosjax.models import osvos


def scale_updates(multipliers):
  """Multiplies each update by a fixed per-parameter factor.

  After SGD with momentum (linear in the gradient), this equals per-group
  learning rates: OSVOS-PyTorch's groups (`osvos.learning_rate_multipliers`).
  """

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update)


def make_optimizer(optim_config, params, stage):
  """`train.make_optimizer`, then the release's per-group factors.

  `optim_config.group_factors` (default True) applies OSVOS-PyTorch's
  per-group learning-rate factors (`osvos.learning_rate_multipliers`); they
  were set for SGD on the Caffe VGG16's activation scale, and an adaptive
  optimizer (Adam) may leave them out (each experiment says which, measured).
  """
  tx, lr_fn = train.make_optimizer(optim_config)
  if not optim_config.get("group_factors", True):
    return tx, lr_fn
  return optax.chain(tx, scale_updates(
      osvos.learning_rate_multipliers(params, stage))), lr_fn


def segmentation_loss(model, side_weight_fn, params, batch_stats, batch, rng,
                      step):
  """The one loss signature (`vosjax.train.make_train_step`) for OSVOS.

  Args:
    batch: `frames` `[B, (1,) H, W, 3]` float32 in [-1, 1] or uint8 and
      `labels` `[B, (1,) H, W]` in {0, 1} or `ids` (255 = void). A clip axis
      of length 1 (the input pipeline's clips of one frame) is dropped.

  Returns:
    `(total, (batch_stats, metrics))`.
  """
  del rng  # No stochastic layers.
  frames = batch["frames"]
  frames = frames.reshape((-1,) + frames.shape[-3:])
  if frames.dtype == jnp.uint8:
    frames = image.to_model_range(frames)
  labels = (batch["labels"] if "labels" in batch
            else input_pipeline.foreground(batch["ids"]).astype(jnp.float32))
  labels = labels.reshape((-1,) + labels.shape[-2:] + (1,))
  fused, endpoints = model.apply({"params": params}, frames)
  total, metrics = losses.deeply_supervised_bce(
      fused, endpoints["side_logits"], labels, side_weight_fn(step))
  return total, (batch_stats, metrics)


def _no_sides(step):
  del step
  return 0.0  # train_online.py: the fused output's loss only.


class OSVOSMethod:
  """Parent training, batched one-shot fine-tuning, per-frame inference."""

  name = "OSVOS"

  def __init__(self, config, workdir):
    self.config = config
    self.workdir = pathlib.Path(workdir)
    self.model = osvos.build_model(config.model)
    self.parent = None

  def train(self, data, workdir, *, evaluate_only=False):
    config, tc = self.config, self.config.train
    variables = osvos.init_variables(
        self.model, config.model, (1, 32, 32, 3),
        jax.random.key(config.seed, impl="rbg"))
    loss_fn = functools.partial(
        segmentation_loss, self.model,
        train.epoch_side_weight(tc))
    batches = None
    if not evaluate_only and tc.num_steps > 0:
      # Frames as images: clips of one frame, flipped, scaled and rotated
      # (train_parent.py: RandomHorizontalFlip, ScaleNRotate(rots=(-30, 30),
      # scales=(.75, 1.25))).
      dataset = input_pipeline.make_dataset(
          pipeline.training_source(config, data, workdir),
          global_batch_size=tc.batch_size, clip_length=1,
          crop_size=tc.crop_size, seed=config.seed,
          scale_range=tuple(tc.scale_range), rotation=tc.rotation,
          min_foreground=tc.min_foreground)
      batches = input_pipeline.KeepKeys(iter(dataset), ("frames", "labels"))
    tx, _ = make_optimizer(tc, variables["params"], "parent")
    self.parent = pipeline.fit_parent(
        variables, loss_fn, batches, tc, pathlib.Path(workdir) / "parent",
        seed=config.seed, evaluate_only=evaluate_only, tx=tx)

  def variants(self, data):
    if (self.config.inference.get("parent", True)
        and pipeline.trains_parent(self.config)):
      yield pipeline.Variant("parent", self._segmenter(
          lambda seq: self.parent))
    if self.config.finetune.enabled:
      adapted = self.one_shot(data.val)
      yield pipeline.Variant("oneshot", self._segmenter(
          lambda seq: adapted[seq.name]))

  def one_shot(self, sequences):
    """Fine-tunes the parent on each sequence's augmented first frame.

    Each sequence gets a pool of `finetune.pool_size` augmentations of frame 0
    (at `finetune.scale` of full resolution, flipped, scaled 0.75-1.25,
    rotated within +-30 degrees, cropped to `finetune.crop_size`); each step
    averages the gradient of `finetune.batch_size` of them (train_online.py:
    nAveGrad = 5 images per update).

    Returns:
      `{sequence name: variables}`.
    """
    config, fc = self.config, self.config.finetune
    pools = []
    for seq in sequences:
      frame = image.resize(seq.first_frame()[None], fc.scale)
      mask = image.resize(seq.first_mask[None], fc.scale, nearest=True)
      rng = np.random.default_rng(pipeline.name_seed(config.seed, seq.name))
      crops = [input_pipeline.augment_clip(
          frame, mask, rng, crop_size=(fc.crop_size, fc.crop_size),
          scale_range=tuple(fc.scale_range), rotation=fc.rotation,
          min_foreground=0.0) for _ in range(fc.pool_size)]
      pools.append({"frames": np.concatenate([c[0] for c in crops]),
                    "ids": np.concatenate([c[1] for c in crops])})
    data = jax.tree.map(lambda *xs: np.stack(xs), *pools)
    params = self.parent["params"]
    tx, _ = make_optimizer(fc, params, "online")
    loss_fn = functools.partial(segmentation_loss, self.model, _no_sides)
    rngs = finetune.sequence_keys(
        config.seed, [pipeline.name_seed(seq.name) for seq in sequences])
    result = finetune.finetune(
        loss_fn, tx, finetune.broadcast(params, len(sequences)), data, rngs,
        num_steps=fc.num_steps, batch_size=fc.batch_size,
        model_state=finetune.broadcast({}, len(sequences)),
        max_batch_sequences=fc.max_batch_sequences or None,
        strategy=fc.strategy or None)
    pipeline.record_finetune(self.workdir, "oneshot", sequences,
                             result.losses)
    return {seq.name: {"params": jax.tree.map(lambda x, s=s: x[s],
                                              result.params)}
            for s, seq in enumerate(sequences)}

  def _segmenter(self, variables_of):
    ic = self.config.inference
    apply_fn = _apply_fused(self.model)

    def segment(seq):
      def predict(frames):
        return inference.batched_apply(
            apply_fn, variables_of(seq), image.to_model_range(frames),
            batch_size=ic.batch_size)[..., 0]

      # Bilinear upsampling of the logits to the original 854x480, then the
      # threshold (the official evaluation's size); test-time scales and
      # mirroring (not in the release) average the logits first.
      logits = image.augmented_logits(predict, seq.frames(), ic)
      return inference.predict_masks(logits[..., None])

    return segment


@functools.lru_cache(maxsize=None)
def _apply_fused(model):
  # One function object per model, so inference compiles once per shape.
  return lambda variables, x: model.apply(variables, x)[0]


def run(config, workdir):
  """Runs OSVOS through the shared pipeline; returns the summary."""
  return pipeline.run(config, workdir, OSVOSMethod(config, workdir))

