"""PML end to end: embedding training, retrieval on val, J&F.

Chen, Pont-Tuset, Montes, Van Gool, "Blazingly Fast Video Object Segmentation
with Pixel-Wise Metric Learning", CVPR 2018. Stages, each writing under the
workdir (a re-run resumes training from its last checkpoint and redoes the
cheap stages):

  data/                 the synthetic DAVIS-format videos (demo only)
  train/                Orbax checkpoints and metrics.jsonl of the embedding
                        training (absent with train.num_steps = 0)
  predictions/<name>/   DAVIS-format PNGs of k-NN retrieval from the first-frame
                        mask + the evaluator's CSVs/results.json
  predictions/first_frame_baseline/   the "copy the first mask" baseline
  summary.json          J&F of both, side by side; the retrieval entry also
                        holds `seconds_per_frame` and `wall_seconds`

Training (modified triplet loss, `vosjax.losses`): each batch element is one
video; anchors come from one frame (`anchors_per_object` pixels of every
label present, background included) and the reference pool from
`num_ref_frames` other frames at most `max_frames_apart` away
(`pool_per_object` pixels per label), all at the embedding resolution (1/8).
"""

import json
import pathlib
import time

from absl import logging
import cv2
import jax
import jax.numpy as jnp
import numpy as np

from vosjax import davis_io
from vosjax import evaluation
from vosjax import inference
from vosjax import input_pipeline
from vosjax import losses
from vosjax import retrieval
from vosjax import train
from vosjax.errors import InputError
from vosjax.models import i3d
from vosjax.programs import common
from vosjax.models import pml
from vosjax.models import pretrained
from vosjax.models import resnet

STRIDE = 8  # Spatial stride of every PML backbone.


def _video_times(indices, num_frames):
  """Frame indices -> t in [-1, 1] over the whole video (0 for one frame)."""
  indices = np.asarray(indices, np.float32)
  return (indices / max(num_frames - 1, 1) * 2 - 1 if num_frames > 1
          else np.zeros_like(indices))


def _sample_per_label(labels, per_label, max_labels, rng):
  """Up to `per_label` positions of each label >= 0, padded with label -1.

  Args:
    labels: `[N]` int labels (-1: not usable).
    per_label: positions drawn per label (all of them if fewer).
    max_labels: label slots; labels >= max_labels are an error.
    rng: `np.random.Generator`.

  Returns:
    `(index [max_labels * per_label] int32, labels [same] int32)`.
  """
  size = max_labels * per_label
  idx = np.zeros(size, np.int32)
  lab = np.full(size, -1, np.int32)
  present = np.unique(labels[labels >= 0])
  if present.size and present.max() >= max_labels:
    raise InputError(f"object id {present.max()} needs "
                     f"--config.train.max_objects >= {present.max()}")
  for slot, value in enumerate(present):
    where = np.flatnonzero(labels == value)
    pick = rng.choice(where, min(per_label, where.size), replace=False)
    idx[slot * per_label:slot * per_label + pick.size] = pick
    lab[slot * per_label:slot * per_label + pick.size] = value
  return idx, lab


class PairBatches:
  """Anchor frame + reference frames per video, as a checkpointable iterator.

  Each batch is a pure function of (seed, step), so `get_state()` is just the
  step. Element b of a batch:

    frames:        [B, 1 + K, c, c, 3] float32 in [-1, 1]; frame 0 anchors
    times:         [B, 1 + K] float32 frame times in [-1, 1] over the video
    anchor_index:  [B, A] int32 into the anchor frame's h * w grid
    anchor_labels: [B, A] int32 (-1: padding)
    ref_index:     [B, R] int32 into the K reference frames' K * h * w grid
    ref_labels:    [B, R] int32 (-1: padding)

  with c = crop_size, h = w = ceil(c / 8), A = (max_objects + 1) *
  anchors_per_object, R = (max_objects + 1) * pool_per_object.
  """

  def __init__(self, source, train_config, seed):
    self.source, self.tc, self.seed = source, train_config, seed
    self.step = 0
    self.feat = -(-train_config.crop_size // STRIDE)

  def __iter__(self):
    return self

  def get_state(self):
    return {"step": self.step}

  def set_state(self, state):
    self.step = int(state["step"])

  def _element(self, rng):
    tc = self.tc
    seq = int(rng.integers(len(self.source)))
    n = self.source.num_frames(seq)
    anchor = int(rng.integers(n))
    near = [j for j in range(max(0, anchor - tc.max_frames_apart),
                             min(n, anchor + tc.max_frames_apart + 1))
            if j != anchor] or [anchor]
    refs = rng.choice(near, tc.num_ref_frames,
                      replace=len(near) < tc.num_ref_frames)
    order = [anchor] + [int(j) for j in refs]
    frames, ids = self.source.read_clip(seq, order)
    frames, ids = input_pipeline.augment_clip(
        frames, ids, rng, crop_size=(tc.crop_size, tc.crop_size),
        min_foreground=tc.min_foreground)
    maps = np.stack([retrieval.labels_from_mask(m, (self.feat, self.feat))
                     for m in ids])
    slots = tc.max_objects + 1
    a_idx, a_lab = _sample_per_label(maps[0].reshape(-1),
                                     tc.anchors_per_object, slots, rng)
    r_idx, r_lab = _sample_per_label(maps[1:].reshape(-1),
                                     tc.pool_per_object, slots, rng)
    return {"frames": frames.astype(np.float32) / 127.5 - 1.0,
            "times": _video_times(order, n),
            "anchor_index": a_idx, "anchor_labels": a_lab,
            "ref_index": r_idx, "ref_labels": r_lab}

  def __next__(self):
    elements = [self._element(np.random.default_rng([self.seed, self.step, b]))
                for b in range(self.tc.batch_size)]
    self.step += 1
    return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


# ---------------------------------------------------------------------------
# Model.


def build_model(model_config):
  blocks = model_config.get("resnet_stage_blocks", "")
  return pml.PML(
      backbone=model_config.backbone, depth=model_config.depth,
      width_multiplier=model_config.width_multiplier,
      resnet_stage_blocks=(tuple(int(b) for b in common.names(blocks))
                           or None),
      i3d_endpoint=model_config.i3d_endpoint,
      embed_dim=model_config.embed_dim, hidden_dim=model_config.hidden_dim,
      use_coords=model_config.use_coords, use_head=model_config.use_head)


def init_variables(model, model_config, sample_shape, rng):
  """Initial variables; the backbone from Kinetics-400 I3D or an .npz if asked.

  Args:
    model: a `pml.PML`.
    model_config: `init` is 'random', 'kinetics400' (I3D backbone, width 1)
      or 'npz' (ResNet backbone, `weights_path` as for
      `resnet.load_weights_npz`).
    sample_shape: `[B, T, H, W, 3]` of the init input.
    rng: a `jax.random.key`.
  """
  variables = jax.jit(model.init)(rng, jnp.zeros(sample_shape, jnp.float32))
  variables = jax.tree.map(np.asarray, variables)
  init = model_config.init
  if init == "kinetics400":
    if model.backbone != "i3d" or model.width_multiplier != 1.0:
      raise InputError("--config.model.init=kinetics400 needs "
                       "--config.model.backbone=i3d and width_multiplier=1.0")
    weights = pretrained.load_i3d_kinetics400(
        i3d.InceptionI3d(final_endpoint=model.i3d_endpoint))
    for collection in ("params", "batch_stats"):
      variables[collection]["i3d"] = jax.tree.map(np.asarray,
                                                  weights[collection])
  elif init == "npz":
    if model.backbone != "resnet":
      raise InputError("--config.model.init=npz needs "
                       "--config.model.backbone=resnet")
    try:
      loaded = resnet.load_weights_npz(
          {c: variables[c]["resnet"] for c in ("params", "batch_stats")},
          model_config.weights_path)
    except (FileNotFoundError, ValueError) as e:
      raise InputError(f"--config.model.weights_path: {e}") from e
    for collection in ("params", "batch_stats"):
      variables[collection]["resnet"] = loaded[collection]
  elif init != "random":
    raise InputError(f"--config.model.init={init!r}: expected 'random', "
                     "'kinetics400' or 'npz'")
  return variables


def triplet_loss(model, variables, batch, margin, train_mode):
  """Modified triplet loss averaged over the batch's videos.

  Returns:
    `(loss, new_batch_stats, metrics)`.
  """
  if train_mode:
    (emb, _), updates = model.apply(variables, batch["frames"],
                                    times=batch["times"], train=True,
                                    mutable=["batch_stats"])
    new_stats = updates["batch_stats"]
  else:
    emb, _ = model.apply(variables, batch["frames"], times=batch["times"])
    new_stats = variables.get("batch_stats", {})
  b, t, h, w, d = emb.shape
  anchors = jnp.take_along_axis(emb[:, 0].reshape(b, h * w, d),
                                batch["anchor_index"][..., None], 1)
  refs = jnp.take_along_axis(emb[:, 1:].reshape(b, (t - 1) * h * w, d),
                             batch["ref_index"][..., None], 1)
  per_video = jax.vmap(
      lambda a, al, r, rl: losses.modified_triplet_loss(a, al, r, rl, margin))(
          anchors, batch["anchor_labels"], refs, batch["ref_labels"])
  loss = jnp.mean(per_video)
  return loss, new_stats, {"triplet": loss}


def train_embedding(model, variables, source, config, workdir):
  """Trains with the modified triplet loss (`train.fit`); returns variables."""
  tc = config.train
  tx, lr_fn = train.make_optimizer(tc)
  update_stats = tc.get("update_batch_stats", True)

  def loss_fn(params, batch_stats, batch, rng, step):
    del rng, step  # No stochastic layers; a constant loss over steps.
    loss, stats, metrics = triplet_loss(
        model, {"params": params, "batch_stats": batch_stats}, batch,
        tc.margin, train_mode=update_stats)
    return loss, (stats, metrics)

  state = train.TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=tx,
      batch_stats=variables.get("batch_stats"))
  state = train.fit(
      state, train.make_train_step(loss_fn, lr_fn),
      PairBatches(source, tc, config.seed), num_steps=tc.num_steps,
      workdir=workdir, rng=jax.random.key(config.seed),
      mesh=train.mesh_for_batch(tc.batch_size), checkpoint_every=tc.checkpoint_every,
      log_every=tc.log_every)
  return jax.device_get(state.variables)


# ---------------------------------------------------------------------------
# Retrieval on the validation videos.


def _resize(frames, scale):
  if scale == 1.0:
    return frames
  h, w = frames.shape[1:3]
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA)
                   for f in frames])


def make_embed_fn(model, variables):
  """`embed(frames [T, H, W, 3] uint8, times [T]) -> [T, h, w, D]` (jitted)."""
  @jax.jit
  def apply(v, x, t):
    x = x.astype(jnp.float32) / 127.5 - 1.0
    return model.apply(v, x[None], times=t[None])[0][0]
  # Variables as an argument, not a closure: no weights baked into the HLO.
  variables = jax.device_put(variables)
  return lambda frames, times: apply(variables, jnp.asarray(frames),
                                     jnp.asarray(times))


def _clips(num_frames, clip_len):
  """(start, stop) of consecutive clips; the last one is padded."""
  return [(s, min(s + clip_len, num_frames))
          for s in range(0, num_frames, clip_len)]


def segment_sequence(embed, frames, first_mask, eval_config):
  """Labels `[T, H, W]` of one video by retrieval from the first-frame mask.

  Frames are embedded in clips of `clip_len` (the last padded with its last
  frame, so one compiled shape serves every clip). Without online adaptation
  each clip is segmented as soon as it is embedded (memory stays one clip);
  with it the whole video's embeddings are kept and segmented in order
  (1-NN, `retrieval.segment_video_online`; `k` applies without it). Frame 0
  is the given mask (void written as background).

  Args:
    embed: `embed(frames [clip_len, h', w', 3] uint8, times [clip_len]) ->
      [clip_len, h, w, D]`, e.g. from `make_embed_fn`.
    frames: `[T, H, W, 3]` uint8 video.
    first_mask: `[H, W]` object ids of frame 0 (255 = void).
    eval_config: the config's `eval` section.

  Returns:
    `[T, H, W]` int32 object ids.
  """
  ec = eval_config
  num, height, width = frames.shape[:3]
  small = _resize(frames, ec.scale)
  times = _video_times(np.arange(num), num)
  pool, per_clip = None, []
  for start, stop in _clips(num, ec.clip_len):
    idx = np.minimum(np.arange(start, start + ec.clip_len), num - 1)
    emb = embed(small[idx], times[idx])
    if pool is None:
      feat_hw = emb.shape[1:3]
      pool = retrieval.pool_from_label_maps(
          emb[:1], {0: retrieval.labels_from_mask(first_mask, feat_hw)})
    if ec.online:
      per_clip.append(emb[:stop - start])
    else:
      # The whole padded clip: one compiled shape; padding dropped after.
      per_clip.append(np.asarray(retrieval.segment_video(
          emb, pool.emb, pool.labels, out_size=(height, width), k=ec.k,
          chunk_size=ec.chunk_size,
          ref_chunk_size=ec.ref_chunk_size))[:stop - start])
  if ec.online:
    num_labels = max(2, int(first_mask[first_mask != 255].max(initial=0)) + 1)
    low, _ = retrieval.segment_video_online(
        jnp.concatenate(per_clip), pool.emb, pool.labels,
        num_labels=num_labels, capacity=ec.online_capacity,
        max_add_per_frame=ec.online_max_add_per_frame,
        confidence_ratio=ec.online_confidence_ratio,
        chunk_size=ec.chunk_size, ref_chunk_size=ec.ref_chunk_size)
    labels = np.array(retrieval.upsample_labels(low, (height, width)))
  else:
    labels = np.concatenate(per_clip)
  labels[0] = np.where(first_mask == 255, 0, first_mask)
  return labels


def predict(embed, sequences, root, out_dir, config):
  """Writes DAVIS PNGs for every sequence; returns (frames, seconds)."""
  dc = config.data
  total_frames, t0 = 0, time.time()
  for seq in sequences:
    t_seq = time.time()
    paths = davis_io.frame_paths(root, seq, dc.resolution)
    masks = davis_io.mask_paths(root, seq, dc.resolution)
    frames = np.stack([davis_io.read_frame(p) for p in paths])
    first = davis_io.to_object_ids(davis_io.read_mask(masks[0]), dc.year)
    labels = segment_sequence(embed, frames, first, config.eval)
    inference.write_sequence_masks(labels.astype(np.uint8), out_dir, seq,
                                   [p.stem for p in paths])
    total_frames += len(paths)
    logging.info("%s: %d frames in %.1f s", seq, len(paths),
                 time.time() - t_seq)
  return total_frames, time.time() - t0


def run(config, workdir):
  """Runs PML: see the module docstring for what is written where."""
  t_start = time.time()
  workdir = pathlib.Path(workdir)
  dc = config.data
  root = common.prepare_data(config, workdir)
  val_seqs = common.select_sequences(root, dc.val_split, dc.val_sequences,
                                     dc.year, dc.resolution)
  model = build_model(config.model)
  crop = config.train.crop_size
  # An 'rbg' key: its random initialisers compile ~3x faster than
  # threefry's on XLA:CPU (seconds per model here), equally seeded.
  variables = init_variables(model, config.model,
                             (1, 1 + config.train.num_ref_frames, crop, crop,
                              3), jax.random.key(config.seed, impl="rbg"))
  t_train = time.time()
  if config.train.num_steps > 0:
    train_seqs = common.select_sequences(
        root, dc.train_split, dc.train_sequences, dc.year, dc.resolution)
    source = input_pipeline.DavisFolderSource(
        root, dc.train_split, year=dc.year, resolution=dc.resolution,
        sequences=train_seqs, in_memory=dc.synthetic)
    variables = train_embedding(model, variables, source, config,
                                workdir / "train")
  train_seconds = time.time() - t_train

  def evaluate(name):
    out = workdir / "predictions" / name
    return evaluation.evaluate_davis(root, out, split=dc.val_split,
                                     year=dc.year, sequences=val_seqs)

  name = config.eval.name
  num_frames, seconds = predict(make_embed_fn(model, variables), val_seqs,
                                root, workdir / "predictions" / name, config)
  summary = {name: dict(evaluate(name)["global"])}
  summary[name].update(seconds_per_frame=seconds / max(num_frames, 1),
                       num_frames=num_frames, train_seconds=train_seconds)
  common.first_frame_baseline(root, val_seqs,
                       workdir / "predictions" / "first_frame_baseline",
                       dc.year, dc.resolution)
  summary["first_frame_baseline"] = evaluate("first_frame_baseline")["global"]
  summary[name]["wall_seconds"] = time.time() - t_start
  davis_io.atomic_write(workdir / "summary.json",
                        lambda f: json.dump(summary, f, indent=2), mode="w")
  print(f"PML on {len(val_seqs)} {dc.val_split} sequences "
        f"({'synthetic' if dc.synthetic else root}), "
        f"{config.train.num_steps} training steps:")
  print(f"  {'variant':<22}{'J&F-Mean':>10}{'J-Mean':>10}{'F-Mean':>10}")
  for variant, g in summary.items():
    print(f"  {variant:<22}{g['J&F-Mean']:>10.3f}{g['J-Mean']:>10.3f}"
          f"{g['F-Mean']:>10.3f}")
  print(f"  retrieval: {num_frames} frames in {seconds:.1f} s "
        f"({seconds / max(num_frames, 1):.3f} s/frame); total "
        f"{summary[name]['wall_seconds']:.1f} s")
  print(f"  results: {workdir}")
  return summary
