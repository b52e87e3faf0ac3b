"""FC-I3D end to end: parent training, one-shot fine-tuning, inference, J&F.

Stages, each writing under the workdir (a re-run resumes parent training from
its last checkpoint and redoes the cheap stages):

  data/                 the synthetic DAVIS-format videos (demo only)
  parent/               Orbax checkpoints and metrics.jsonl of parent training
  predictions/parent/   DAVIS-format PNGs + the evaluator's CSVs/results.json
  predictions/oneshot/  the same after one-shot fine-tuning (if enabled)
  predictions/first_frame_baseline/   the "copy the first mask" baseline
  overlays/             per-sequence GIFs and contact sheets of the final masks
  summary.json          J&F of every variant, side by side
"""

import functools
import json
import pathlib
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from vosjax import davis_io
from vosjax import evaluation
from vosjax import finetune
from vosjax import inference
from vosjax import input_pipeline
from vosjax import losses
from vosjax import overlays
from vosjax import train
from vosjax.augment import lucid
from vosjax.programs import common
from vosjax.errors import InputError
from vosjax.models import fc_i3d
from vosjax.models import pretrained


def build_model(model_config):
  return fc_i3d.FCI3D(taps=tuple(common.names(model_config.taps)),
                      side_features=model_config.side_features,
                      width_multiplier=model_config.width_multiplier,
                      conv_impl=model_config.conv_impl)


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


def segmentation_loss(model, variables, frames, labels, side_weight,
                      train_mode):
  """Class-balanced BCE of the fused output plus weighted side outputs.

  Returns (total, new_batch_stats, metrics) with one loss per head.
  """
  if train_mode:
    (fused, endpoints), updates = model.apply(
        variables, frames, train=True, mutable=["batch_stats"])
    new_stats = updates["batch_stats"]
  else:
    fused, endpoints = model.apply(variables, frames)
    new_stats = variables.get("batch_stats", {})
  labels = labels[..., None]
  side = [losses.class_balanced_bce(s, labels)
          for s in endpoints["side_logits"]]
  fused_loss = losses.class_balanced_bce(fused, labels)
  total = side_weight * sum(side) + fused_loss
  metrics = {f"loss_side{i}": l for i, l in enumerate(side)}
  metrics["loss_fused"] = fused_loss
  return total, new_stats, metrics


def train_parent(model, variables, source, config, workdir, mesh):
  """Parent training on clips of the train split; returns the variables."""
  tc = config.train
  tx, lr_fn = train.make_optimizer(tc)
  num_epochs = max(-(-tc.num_steps // tc.steps_per_epoch), 1)

  def loss_fn(params, batch_stats, batch, rng, step):
    del rng  # The model has no stochastic layers.
    weight = train.side_loss_weight(step // tc.steps_per_epoch, num_epochs)
    total, stats, metrics = segmentation_loss(
        model, {"params": params, "batch_stats": batch_stats},
        batch["frames"], batch["labels"], weight, train_mode=True)
    return total, (stats, metrics)

  state = train.TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=tx,
      batch_stats=variables.get("batch_stats"))
  dataset = input_pipeline.make_dataset(
      source, global_batch_size=tc.batch_size, clip_length=tc.clip_len,
      crop_size=tc.crop_size, seed=config.seed,
      min_foreground=tc.min_foreground)
  batches = _TrainingBatches(iter(dataset))
  state = train.fit(
      state, train.make_train_step(loss_fn, lr_fn), batches,
      num_steps=tc.num_steps, workdir=workdir, rng=jax.random.key(config.seed),
      mesh=mesh, checkpoint_every=tc.checkpoint_every, log_every=tc.log_every)
  return jax.device_get(state.variables)


class _TrainingBatches:
  """The pipeline's iterator, keeping only the arrays the step consumes."""

  def __init__(self, iterator):
    self._it = iterator

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    return {"frames": batch["frames"], "labels": batch["labels"]}

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


def _finetune_loss(model, side_weight, params, batch_stats, batch, rng):
  del rng
  frames = batch["frames"].astype(jnp.float32) / 127.5 - 1.0
  labels = (batch["masks"] > 0).astype(jnp.float32)
  total, _, _ = segmentation_loss(
      model, {"params": params, "batch_stats": batch_stats}, frames, labels,
      side_weight, train_mode=False)
  return total, batch_stats


def one_shot(model, variables, first_frames, config, mesh):
  """Per-sequence fine-tuning on dreamed clips, all sequences in one program.

  Batch norm keeps the parent's statistics (a single dreamed clip is too small
  a batch to estimate them), as in OSVOS-style online training.

  Returns:
    A list of per-sequence variables, in the order of `first_frames`.
  """
  fc = config.finetune
  pools = []
  for s, (frame, mask) in enumerate(first_frames):
    clips = [lucid.dream_clip(frame, mask, num_frames=fc.num_frames,
                              crop_size=config.train.crop_size,
                              seed=config.seed * 1000 + s * 16 + k,
                              min_foreground=config.train.min_foreground)
             for k in range(fc.get("clips_per_sequence", 4))]
    pools.append({"frames": np.stack([c[0] for c in clips]),
                  "masks": np.stack([c[1] for c in clips])})
  data = jax.tree.map(lambda *xs: np.stack(xs), *pools)
  num_seq = len(first_frames)
  tx, _ = train.make_optimizer({
      "learning_rate": fc.learning_rate, "momentum": config.train.momentum,
      "weight_decay": config.train.weight_decay})
  loss_fn = functools.partial(_finetune_loss, model, fc.side_loss_weight)
  result = finetune.finetune(
      loss_fn, tx, finetune.broadcast(variables["params"], num_seq), data,
      jax.random.split(jax.random.key(config.seed + 1), num_seq),
      num_steps=fc.num_steps, batch_size=fc.batch_size,
      model_state=finetune.broadcast(variables["batch_stats"], num_seq),
      max_batch_sequences=fc.max_batch_sequences, mesh=mesh)
  logging.info("one-shot fine-tuning: mean loss %.4f -> %.4f",
               float(result.losses[:, 0].mean()),
               float(result.losses[:, -1].mean()))
  return [{"params": jax.tree.map(lambda x, s=s: x[s], result.params),
           "batch_stats": variables["batch_stats"]} for s in range(num_seq)]


def predict(model, variables_per_seq, sequences, root, out_dir, config,
            overlay_dir=None):
  """Tiled full-resolution inference; writes DAVIS PNGs (and overlays)."""
  ic = config.inference
  apply_fn = _apply_fused(model)
  for seq, variables in zip(sequences, variables_per_seq):
    paths = davis_io.frame_paths(root, seq, config.data.resolution)
    frames = np.stack([davis_io.read_frame(p) for p in paths])
    logits = inference.tiled_logits(
        apply_fn, frames.astype(np.float32) / 127.5 - 1.0, params=variables,
        tile=ic.tile, stride=ic.stride, clip_len=ic.clip_len,
        clip_stride=ic.clip_stride, batch_size=ic.batch_size)
    masks = inference.predict_masks(logits)
    inference.write_sequence_masks(masks, out_dir, seq,
                                   [p.stem for p in paths])
    if overlay_dir is not None:
      overlays.write_overlays(frames, masks, overlay_dir, seq)


@functools.lru_cache(maxsize=None)
def _apply_fused(model):
  # One function object per model, so tiled inference compiles once.
  return lambda variables, clips: model.apply(variables, clips)[0]


class _StageTimer:
  """Logs each stage's wall time; the totals go into summary.json."""

  def __init__(self):
    self.seconds = {}
    self._t = time.time()

  def done(self, stage):
    now = time.time()
    self.seconds[stage] = round(now - self._t, 1)
    logging.info("stage %s done in %.1f s", stage, now - self._t)
    self._t = now


def run(config, workdir):
  """Runs FC-I3D: see the module docstring for what is written where."""
  workdir = pathlib.Path(workdir)
  timer = _StageTimer()
  dc = config.data
  root = common.prepare_data(config, workdir)
  train_seqs = common.select_sequences(
      root, dc.train_split, dc.train_sequences, dc.year, dc.resolution)
  val_seqs = common.select_sequences(root, dc.val_split, dc.val_sequences,
                                     dc.year, dc.resolution)
  mesh = train.mesh_for_batch(config.train.batch_size)
  model = build_model(config.model)
  clip_shape = (1, config.train.clip_len, config.train.crop_size,
                config.train.crop_size, 3)
  # rbg: initialising with threefry compiles for minutes on XLA:CPU.
  variables = init_variables(model, config.model, clip_shape,
                             jax.random.key(config.seed, impl="rbg"))
  timer.done("data_and_init")
  source = input_pipeline.DavisFolderSource(
      root, dc.train_split, year=dc.year, resolution=dc.resolution,
      sequences=train_seqs, in_memory=dc.synthetic)
  parent = train_parent(model, variables, source, config, workdir / "parent",
                        mesh)
  timer.done("parent_training")

  def evaluate(name):
    out = workdir / "predictions" / name
    return evaluation.evaluate_davis(root, out, split=dc.val_split,
                                     year=dc.year, sequences=val_seqs)

  summary = {}
  variants = [("parent", [parent] * len(val_seqs))]
  if config.finetune.enabled:
    firsts = []
    for seq in val_seqs:
      frame = davis_io.read_frame(
          davis_io.frame_paths(root, seq, dc.resolution)[0])
      mask = davis_io.to_object_ids(davis_io.read_mask(
          davis_io.mask_paths(root, seq, dc.resolution)[0]), dc.year)
      firsts.append((frame, mask))
    # No more devices than sequences in a chunk: padding a chunk to the
    # device count would only repeat sequences.
    chunk = min(len(firsts), config.finetune.max_batch_sequences or 1 << 30)
    ft_mesh = train.make_mesh(jax.devices()[:min(jax.device_count(), chunk)])
    variants.append(("oneshot", one_shot(model, parent, firsts, config,
                                         ft_mesh)))
    timer.done("one_shot_finetuning")
  for i, (name, per_seq) in enumerate(variants):
    is_final = i == len(variants) - 1
    predict(model, per_seq, val_seqs, root, workdir / "predictions" / name,
            config, overlay_dir=(workdir / "overlays"
                                 if is_final and config.inference.overlays
                                 else None))
    summary[name] = evaluate(name)["global"]
    timer.done(f"predict_and_evaluate_{name}")
  common.first_frame_baseline(root, val_seqs,
                       workdir / "predictions" / "first_frame_baseline",
                       dc.year, dc.resolution)
  summary["first_frame_baseline"] = evaluate("first_frame_baseline")["global"]
  timer.done("baseline")
  summary["stage_seconds"] = timer.seconds
  davis_io.atomic_write(workdir / "summary.json",
                        lambda f: json.dump(summary, f, indent=2), mode="w")
  print(f"FC-I3D on {len(val_seqs)} {dc.val_split} sequences "
        f"({'synthetic' if dc.synthetic else root}):")
  print(f"  {'variant':<22}{'J&F-Mean':>10}{'J-Mean':>10}{'F-Mean':>10}")
  for name, g in summary.items():
    if name == "stage_seconds":
      continue
    print(f"  {name:<22}{g['J&F-Mean']:>10.3f}{g['J-Mean']:>10.3f}"
          f"{g['F-Mean']:>10.3f}")
  print(f"  results: {workdir}")
  return summary
