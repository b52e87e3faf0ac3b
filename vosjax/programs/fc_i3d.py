"""FC-I3D as a recipe over the shared pipeline (`vosjax.pipeline`).

Munukutla & Jain, "One Shot Learning for Video Object Segmentation using Fully
Convolutional I3D Network": a parent network trained on clips of the train
split, then fine-tuned one shot per test sequence on clips lucid-dreamed from
its first frame, and tiled full-resolution inference. Variants: `parent`,
`oneshot` (if `finetune.enabled`), plus the pipeline's baseline. Writes
`parent/` (checkpoints, metrics.jsonl) and `dreams/` (a contact sheet of
dreamed clips per sequence) beside the pipeline's outputs.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vosjax import davis_io
from vosjax import finetune
from vosjax import image
from vosjax import inference
from vosjax import input_pipeline
from vosjax import losses
from vosjax import pipeline
from vosjax import train
from vosjax.augment import lucid
from vosjax.errors import InputError
from vosjax.models import fc_i3d
from vosjax.models import pretrained


def build_model(model_config):
  # compute_dtype: "float32" (the default, also without the field) or
  # "bfloat16" (mixed precision, parameters stay float32).
  dtype = fc_i3d.conv3d.compute_dtype(model_config.get("compute_dtype"))
  return fc_i3d.FCI3D(taps=tuple(pipeline.names(model_config.taps)),
                      side_features=model_config.side_features,
                      width_multiplier=model_config.width_multiplier,
                      conv_impl=model_config.conv_impl, dtype=dtype)


def init_variables(model, model_config, clip_shape, rng):
  """Initial variables; the backbone from Kinetics-400 I3D if asked."""
  variables = jax.jit(model.init)(rng, jnp.zeros(clip_shape, jnp.float32))
  variables = jax.tree.map(np.asarray, variables)
  if model_config.init == "kinetics400":
    if model_config.width_multiplier != 1.0:
      raise InputError("--config.model.init=kinetics400 needs "
                       "--config.model.width_multiplier=1.0")
    last = max(model.taps, key=list(fc_i3d.TAP_STRIDES).index)
    weights = pretrained.load_i3d_kinetics400(
        fc_i3d.i3d.InceptionI3d(final_endpoint=last))
    for collection in ("params", "batch_stats"):
      backbone = variables[collection]["backbone"]
      for name in backbone:
        backbone[name] = weights[collection][name]
  elif model_config.init != "random":
    raise InputError(f"--config.model.init={model_config.init!r}: expected "
                     f"'kinetics400' or 'random'")
  return variables


def segmentation_loss(model, side_weight_fn, train_mode, params, batch_stats,
                      batch, rng, step):
  """The one loss signature (`vosjax.train.make_train_step`) for FC-I3D.

  Class-balanced BCE of the fused output plus `side_weight_fn(step)` times the
  sum of the side outputs' (deep supervision, as OSVOS/HED).

  Args:
    batch: `frames` `[B, T, H, W, 3]` float32 in [-1, 1] or uint8, and
      `labels` `[B, T, H, W]` in {0, 1} or `ids` (object ids, 255 = void).
    train_mode: batch norm in training mode (parent training) or frozen at
      the given statistics (one-shot fine-tuning).

  Returns:
    `(total, (new_batch_stats, metrics))`, one loss per head in `metrics`.
  """
  del rng  # The model has no stochastic layers.
  frames = batch["frames"]
  if frames.dtype == jnp.uint8:
    frames = image.to_model_range(frames)
  labels = (batch["labels"] if "labels" in batch
            else input_pipeline.foreground(batch["ids"]).astype(jnp.float32))
  variables = {"params": params, "batch_stats": batch_stats}
  if train_mode:
    (fused, endpoints), updates = model.apply(
        variables, frames, train=True, mutable=["batch_stats"])
    batch_stats = updates["batch_stats"]
  else:
    fused, endpoints = model.apply(variables, frames)
  total, metrics = losses.deeply_supervised_bce(
      fused, endpoints["side_logits"], labels[..., None],
      side_weight_fn(step))
  return total, (batch_stats, metrics)


class FCI3DMethod:
  """Parent training, one-shot fine-tuning and tiled inference of FC-I3D."""

  name = "FC-I3D"

  def __init__(self, config, workdir):
    self.config = config
    self.workdir = pathlib.Path(workdir)
    self.model = build_model(config.model)
    self.parent = None

  def train(self, data, workdir, *, evaluate_only=False):
    config, tc = self.config, self.config.train
    clip_shape = (1, tc.clip_len, tc.crop_size, tc.crop_size, 3)
    # rbg: initialising with threefry compiles for minutes on XLA:CPU.
    variables = init_variables(self.model, config.model, clip_shape,
                               jax.random.key(config.seed, impl="rbg"))
    # Side supervision fades as 1 - epoch / num_epochs (the released code's
    # train_parent.py; `train.side_loss_weight`).
    loss_fn = functools.partial(
        segmentation_loss, self.model,
        train.epoch_side_weight(tc), True)
    batches = None
    if not evaluate_only and tc.num_steps > 0:
      dataset = input_pipeline.make_dataset(
          pipeline.training_source(config, data, workdir),
          global_batch_size=tc.batch_size, clip_length=tc.clip_len,
          crop_size=tc.crop_size, seed=config.seed,
          min_foreground=tc.min_foreground)
      batches = input_pipeline.KeepKeys(iter(dataset), ("frames", "labels"))
    self.parent = pipeline.fit_parent(
        variables, loss_fn, batches, tc, pathlib.Path(workdir) / "parent",
        seed=config.seed, evaluate_only=evaluate_only)

  def variants(self, data):
    if pipeline.trains_parent(self.config):
      yield pipeline.Variant("parent", self._segmenter(
          lambda seq: self.parent))
    if self.config.finetune.enabled:
      adapted = self.one_shot(data.val)
      yield pipeline.Variant("oneshot", self._segmenter(
          lambda seq: adapted[seq.name]))

  def one_shot(self, sequences):
    """Fine-tunes the parent on each sequence's dreamed clips, all at once.

    Batch norm keeps the parent's statistics (a single dreamed clip is too
    small a batch to estimate them): a deviation from the released
    train_online.py, whose network stays in PyTorch's training mode.

    Returns:
      `{sequence name: variables}`.
    """
    config, fc = self.config, self.config.finetune
    pools = []
    scale = fc.get("scale", 1.0)  # Configs older than the field: 1.0.
    for seq in sequences:
      frame = image.resize(seq.first_frame()[None], scale)[0]
      first_mask = image.resize(seq.first_mask[None], scale, nearest=True)[0]
      # Seeds from the name: a sequence's clips do not depend on which other
      # sequences are chosen, nor on their order.
      clips = [lucid.dream_clip(frame, first_mask,
                                num_frames=fc.num_frames,
                                crop_size=config.train.crop_size,
                                seed=pipeline.name_seed(config.seed, seq.name,
                                                        k),
                                min_foreground=config.train.min_foreground)
               for k in range(fc.clips_per_sequence)]
      pools.append({"frames": np.stack([c[0] for c in clips]),
                    "ids": np.stack([c[1] for c in clips])})
      # For people: a few dreamed clips, one row each.
      sheet = Image.fromarray(lucid.contact_sheet([c[:2] for c in clips[:4]]))
      davis_io.atomic_write(self.workdir / "dreams" / f"{seq.name}.png",
                            lambda f, im=sheet: im.save(f, format="PNG"))
    data = jax.tree.map(lambda *xs: np.stack(xs), *pools)
    num_seq = len(sequences)
    # All of `finetune`'s optimizer keys (optimizer, learning_rate, momentum,
    # weight_decay, schedule, ...), as OSVOS and MaskTrack read theirs.
    tx, _ = train.make_optimizer(fc)
    # Side supervision fades over fine-tuning too (train_online.py:
    # loss = (1 - epoch / nEpochs) * sum(side) + fused, one clip per epoch).
    loss_fn = functools.partial(
        segmentation_loss, self.model,
        functools.partial(_fading_side_weight, fc.side_loss_weight,
                          fc.num_steps), False)
    rngs = finetune.sequence_keys(
        config.seed, [pipeline.name_seed(seq.name) for seq in sequences])
    result = finetune.finetune(
        loss_fn, tx, finetune.broadcast(self.parent["params"], num_seq),
        data, rngs, num_steps=fc.num_steps, batch_size=fc.batch_size,
        model_state=finetune.broadcast(self.parent["batch_stats"], num_seq),
        max_batch_sequences=fc.max_batch_sequences or None,
        strategy=fc.strategy or None)
    pipeline.record_finetune(self.workdir, "oneshot", sequences,
                             result.losses)
    return {seq.name: {"params": jax.tree.map(lambda x, s=s: x[s],
                                              result.params),
                       "batch_stats": self.parent["batch_stats"]}
            for s, seq in enumerate(sequences)}

  def _segmenter(self, variables_of):
    ic = self.config.inference
    apply_fn = _apply_fused(self.model)

    def segment(seq):
      def predict(frames):
        logits = inference.tiled_logits(
            apply_fn, image.to_model_range(frames),
            params=variables_of(seq), tile=ic.tile, stride=ic.stride,
            clip_len=ic.clip_len, clip_stride=ic.clip_stride,
            batch_size=ic.batch_size)
        return np.asarray(logits)[..., 0]

      # Bilinear upsampling of the logits to the original size, then the
      # threshold (as OSVOS at a reduced scale); several scales' logits are
      # averaged first, as are mirrored views with `flip` (test-time
      # augmentation, not in the paper).
      logits = image.augmented_logits(predict, seq.frames(), ic)
      return inference.predict_masks(logits[..., None])

    return segment


def _fading_side_weight(initial, num_steps, step):
  return initial * train.side_loss_weight(step, num_steps)


@functools.lru_cache(maxsize=None)
def _apply_fused(model):
  # One function object per model, so tiled inference compiles once.
  return lambda variables, clips: model.apply(variables, clips)[0]


def run(config, workdir):
  """Runs FC-I3D through the shared pipeline; returns the summary."""
  return pipeline.run(config, workdir, FCI3DMethod(config, workdir))
