"""The one run every VOS method shares: data, training, variants, J&F, summary.

A method is a short recipe (see `vosjax/programs/fc_i3d.py`): an object with

  name                      printed in the table ("FC-I3D", "PML", ...)
  train(data, workdir)      parent / embedding training, resumable under
                            `workdir` (its own sub-folder); keeps the result
  variants(data)            yields `Variant(name, segment)`, one per set of
                            predictions to evaluate ("parent", "oneshot", ...);
                            per-sequence adaptation (one-shot fine-tuning)
                            happens before the variant is yielded, so the
                            stage timer charges it to that variant

and `run(config, workdir, method)` does the rest, in this order:

  data/                         synthetic DAVIS-format videos (demos only);
                                a real folder is checked frame by frame
                                before any training (all problems at once)
  <method's training folder>    checkpoints and metrics.jsonl
  predictions/<variant>/        DAVIS-format PNGs + the evaluator's CSVs and
                                results.json; built in `.<variant>.tmp/` and
                                swapped in whole, so a folder is never half
                                old and half new
  predictions/first_frame_baseline/   the "copy the first mask" baseline
  overlays/                     GIF + contact sheet per sequence, final variant
  summary.json                  variant -> global figures, `seconds_per_frame`;
                                plus `stage_seconds`. Removed when a run starts
                                predicting and written last, so it only ever
                                describes one complete run.
"""

import dataclasses
import hashlib
import json
import pathlib
import shutil
import time
from typing import Callable, Iterator, List

from absl import logging
import jax
import numpy as np

from vosjax import curves
from vosjax import davis_io
from vosjax import distributed
from vosjax import evaluation
from vosjax import inference
from vosjax import overlays
from vosjax.errors import InputError

SUMMARY_FILE = "summary.json"
BASELINE = "first_frame_baseline"
DAVIS_HELP = ("download DAVIS 2016 (480p) from "
              "https://davischallenge.org/davis2016/code.html, extract it, "
              "and pass --config.data_dir=/path/to/DAVIS")


@dataclasses.dataclass
class Sequence:
  """One DAVIS sequence as a method sees it.

  Attributes:
    name: sequence name (its folder).
    frame_paths: sorted JPEG paths.
    mask_paths: sorted PNG paths (all frames; methods read only the first).
    first_mask: `[H, W]` uint8 object ids of frame 0 (255 = void).
  """
  name: str
  frame_paths: List[pathlib.Path]
  mask_paths: List[pathlib.Path]
  first_mask: np.ndarray

  def frames(self):
    """`[T, H, W, 3]` uint8 RGB, read from disk on each call."""
    return np.stack([davis_io.read_frame(p) for p in self.frame_paths])

  def first_frame(self):
    """`[H, W, 3]` uint8 RGB of frame 0."""
    return davis_io.read_frame(self.frame_paths[0])

  @property
  def seed(self):
    """A stable 31-bit integer from the name (see `name_seed`)."""
    return name_seed(self.name)


@dataclasses.dataclass
class Data:
  """What a run reads: the DAVIS folder and its chosen sequences.

  `train` names the training sequences (methods read them through their own
  input pipeline); `val` holds the evaluated `Sequence`s.
  """
  root: pathlib.Path
  year: int
  resolution: str
  train_split: str
  val_split: str
  train: List[str]
  val: List[Sequence]
  synthetic: bool


@dataclasses.dataclass
class Variant:
  """One set of predictions: `segment(sequence) -> [T, H, W]` uint8 ids."""
  name: str
  segment: Callable[[Sequence], np.ndarray]


def name_seed(*parts):
  """A stable 31-bit seed from strings/ints (sha256; not Python's `hash`).

  Per-sequence randomness derives from the sequence's name, so a sequence's
  result does not change with the other sequences chosen or their order.
  """
  text = "/".join(str(p) for p in parts).encode()
  return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") >> 1


def names(text):
  """'a, b,c' -> ['a', 'b', 'c'] (empty entries dropped)."""
  return [s.strip() for s in str(text).split(",") if s.strip()]


class StageTimer:
  """Logs each stage's wall time; the totals go into summary.json."""

  def __init__(self):
    self.seconds = {}
    self._t = time.time()

  def done(self, stage):
    now = time.time()
    self.seconds[stage] = round(now - self._t, 1)
    logging.info("stage %s done in %.1f s", stage, now - self._t)
    self._t = now


# ----------------------------------------------------------------------------
# Data.


def data_root(config, workdir):
  """The DAVIS folder: generated (`config.data.synthetic`) or the user's.

  A real folder is `config.data_dir` (the `--config.data_dir` flag). The
  synthetic videos are regenerated when their settings changed.
  """
  dc = config.data
  if dc.synthetic:
    from vosjax.data import synthetic  # pylint: disable=g-import-not-at-top
    root = pathlib.Path(workdir) / "data"
    settings = {k: dc.get(k) for k in ("year", "seed", "num_train", "num_val",
                                       "num_frames", "height", "width",
                                       "num_objects")}
    stamp = root / "settings.json"

    def generate():
      if (not stamp.is_file() or json.loads(stamp.read_text())
          != json.loads(json.dumps(settings))):
        shutil.rmtree(root, ignore_errors=True)
        synthetic.generate(
            root, year=dc.year, seed=dc.get("seed", 0),
            splits=(("train", dc.num_train), ("val", dc.num_val)),
            num_frames=dc.num_frames, height=dc.height, width=dc.width,
            num_objects=dc.get("num_objects", 1))
        davis_io.atomic_write(stamp, lambda f: json.dump(settings, f),
                              mode="w")

    # Several processes: process 0 writes the videos, the others read them.
    distributed.writer_first(generate, "vosjax:synthetic_data")
    return root
  data_dir = config.get("data_dir", "")
  root = pathlib.Path(data_dir or ".").expanduser()
  if not data_dir or not (root / "JPEGImages").is_dir():
    raise InputError(f"--config.data_dir={data_dir!r} is not a DAVIS folder "
                     f"(no JPEGImages/): {DAVIS_HELP}")
  return root


def select_sequences(root, split, wanted, year, resolution):
  """The split's sequences, or the explicit subset `wanted` (comma list).

  A split listing sequences that are not on disk is an error naming them,
  unless the user chose the subset explicitly: nothing is dropped silently.
  """
  in_split = davis_io.read_split(root, split, year)
  chosen = names(wanted) or in_split
  unknown = [s for s in chosen if s not in in_split]
  if unknown:
    raise InputError(f"sequence {unknown[0]} is not in the {year} {split} "
                     f"split of {root}")
  folder = pathlib.Path(root) / "JPEGImages" / resolution
  missing = [s for s in chosen if not (folder / s).is_dir()]
  if missing:
    raise InputError(
        f"{len(missing)} {split} sequences listed in {root}/ImageSets are not "
        f"in {folder} ({', '.join(missing[:5])}"
        f"{', ...' if len(missing) > 5 else ''}); choose the present ones "
        f"with --config.data.{split}_sequences=a,b")
  return chosen


def prepare(config, workdir, *, need_train=True):
  """Resolves and checks every file the run will read, before any training.

  Every frame and mask of the chosen sequences is checked (header, size,
  complete file, as many masks as frames for val), and all problems are
  reported in one `InputError`.
  """
  dc = config.data
  root = data_root(config, workdir)
  train = (select_sequences(root, dc.train_split, dc.train_sequences, dc.year,
                            dc.resolution) if need_train else [])
  val_names = select_sequences(root, dc.val_split, dc.val_sequences, dc.year,
                               dc.resolution)
  problems = davis_io.check_sequences(root, train, dc.resolution,
                                      need_all_masks=True)
  problems += davis_io.check_sequences(root, val_names, dc.resolution,
                                       need_all_masks=True)
  if problems:
    shown = "; ".join(problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise InputError(f"{len(problems)} problems in {root}: {shown}{more}")
  val = []
  for name in val_names:
    masks = davis_io.mask_paths(root, name, dc.resolution)
    val.append(Sequence(
        name=name, frame_paths=davis_io.frame_paths(root, name, dc.resolution),
        mask_paths=masks,
        first_mask=davis_io.to_object_ids(davis_io.read_mask(masks[0]),
                                          dc.year)))
  return Data(root=root, year=dc.year, resolution=dc.resolution,
              train_split=dc.train_split, val_split=dc.val_split, train=train,
              val=val, synthetic=bool(dc.synthetic))


def training_source(config, data, workdir):
  """The training sequences as an `input_pipeline` source.

  Real data goes through the tfds builder: prepared once from the DAVIS
  folder (the manual directory) into `config.tfds_data_dir` (default
  `<workdir>/tfds`), reused by later runs, read with `as_data_source()` and
  decoded once into memory (the 9 train sequences at hand: about 0.6 GB).
  The synthetic demo videos are read straight from their folder.
  """
  from vosjax import input_pipeline  # pylint: disable=g-import-not-at-top
  if data.synthetic:
    return input_pipeline.DavisFolderSource(
        data.root, data.train_split, year=data.year,
        resolution=data.resolution, sequences=data.train, in_memory=True)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vosjax.data import davis_tfds  # pylint: disable=g-import-not-at-top
  builder_cls = {2016: davis_tfds.Davis2016, 2017: davis_tfds.Davis2017}[
      data.year]
  tfds_dir = pathlib.Path(config.get("tfds_data_dir", "") or
                          pathlib.Path(workdir) / "tfds")
  builder = builder_cls(data_dir=str(tfds_dir),
                        config=("480p" if data.resolution == "480p"
                                else "full_resolution"),
                        sequences={data.train_split: data.train})
  t0 = time.time()
  if not builder.is_prepared():
    logging.info("preparing tfds %s (%d %s sequences) from %s into %s, once",
                 builder.info.full_name, len(data.train), data.train_split,
                 data.root, tfds_dir)
  # Several processes: process 0 prepares, the others find it prepared.
  distributed.writer_first(lambda: builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(data.root))),
                           "vosjax:tfds_prepare")
  source = input_pipeline.TfdsSource(
      builder.as_data_source(data.train_split), in_memory=True)
  logging.info("training data: %d sequences ready in %.1f s", len(source),
               time.time() - t0)
  return source


def fit_parent(variables, loss_fn, batches, train_config, workdir, *, seed,
               evaluate_only=False, tx=None):
  """Trains (or resumes, or with `evaluate_only` restores) the parent model.

  Args:
    variables: initial `{'params': ..., 'batch_stats': ...}`.
    loss_fn: the one loss signature (`train.make_train_step`).
    batches: a checkpointable iterator of host batches (None when
      `evaluate_only`).
    train_config: `num_steps`, `batch_size`, `checkpoint_every`, `log_every`
      and the optimiser fields of `train.make_optimizer`.
    workdir: the training folder (`checkpoints/`, `metrics.jsonl`).
      With `train_config.num_steps == 0` nothing is trained or read: the
      initial `variables` are returned (`batches` may be None).
    seed: the run's seed (each step's key is `fold_in(key(seed), step)`).
    evaluate_only: restore the latest checkpoint instead of training.
    tx: the optax optimizer; default `train.make_optimizer(train_config)`.

  Returns:
    The trained variables, as host NumPy arrays.
  """
  from vosjax import sharding  # pylint: disable=g-import-not-at-top
  from vosjax import train  # pylint: disable=g-import-not-at-top
  from vosjax.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  tc = train_config
  default_tx, lr_fn = train.make_optimizer(tc)
  tx = default_tx if tx is None else tx
  state = train.TrainState.create(
      apply_fn=None, params=variables["params"], tx=tx,
      batch_stats=variables.get("batch_stats"))
  workdir = pathlib.Path(workdir)
  if tc.num_steps == 0:
    # No parent training (the papers' "no parent" ablations: OSVOS from
    # ImageNet, MaskTrack online-only, FC-I3D from Kinetics): the pretrained
    # trunk with freshly initialised heads, for one-shot fine-tuning.
    logging.info("train.num_steps=0: no parent training; starting from the "
                 "pretrained network")
    return jax.tree.map(np.asarray, jax.device_get(variables))
  if evaluate_only:
    ckpt = Checkpointer(workdir / train.CHECKPOINT_DIR, async_save=False)
    try:
      step = ckpt.latest_step()
      if step is None:
        raise InputError(f"--config.evaluate_only=True but {workdir} holds no "
                         f"checkpoint; train first (same command without it)")
      state, _ = ckpt.restore(state)
    finally:
      ckpt.close()
    # The step restored: the newest one may have been unreadable.
    logging.info("evaluating the step-%d checkpoint of %s",
                 int(jax.device_get(state.step)), workdir)
  else:
    state = train.fit(
        state, train.make_train_step(loss_fn, lr_fn), batches,
        num_steps=tc.num_steps, workdir=workdir, rng=jax.random.key(seed),
        mesh=sharding.mesh_for_batch(tc.batch_size),
        checkpoint_every=tc.checkpoint_every, log_every=tc.log_every)
  return jax.tree.map(np.asarray, jax.device_get(state.variables))


# ----------------------------------------------------------------------------
# Predictions, evaluation, the baseline, the summary.


def record_finetune(workdir, stage, sequences, losses):
  """Logs a fine-tuning stage and keeps its per-step losses for curves.png.

  Args:
    workdir: the run folder (`<workdir>/<experiment>`).
    stage: the stage's name (e.g. "oneshot", "online_flow").
    sequences: the fine-tuned `Sequence`s, in the order of `losses`' rows.
    losses: `[S, num_steps]`, `finetune.FinetuneResult.losses`.
  """
  losses = np.asarray(losses, np.float32)
  logging.info("%s fine-tuning of %d sequences: mean loss %.4f -> %.4f",
               stage, len(sequences), float(losses[:, 0].mean()),
               float(losses[:, -1].mean()))
  if distributed.is_writer():
    curves.save_finetune_losses(workdir, stage, [s.name for s in sequences],
                                losses)


def trains_parent(config):
  """Whether the run trains a parent network (`train.num_steps > 0`).

  Without one, methods skip their parent variant (its heads would be the
  random initialisation) and fine-tune the pretrained network directly.
  """
  return config.get("train", {}).get("num_steps", 1) > 0


def first_frame_baseline(sequence):
  """The trivial baseline: the first-frame mask copied to every frame."""
  return np.repeat(sequence.first_mask[None], len(sequence.frame_paths),
                   axis=0)


def predict_and_evaluate(variant, data, predictions_dir, overlay_dir=None):
  """Writes a variant's PNGs and figures into a fresh folder, then swaps it in.

  Returns:
    The evaluator's global figures plus `seconds_per_frame` (segmentation
    only: reading frames, writing PNGs and evaluating are not counted).
  """
  final = pathlib.Path(predictions_dir) / variant.name
  tmp = final.with_name(f".{variant.name}.tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  seconds, num_frames = 0.0, 0
  for seq in data.val:
    need_frames = overlay_dir is not None
    frames = seq.frames() if need_frames else None
    t0 = time.time()
    masks = np.asarray(variant.segment(seq))
    seconds += time.time() - t0
    if masks.shape[0] != len(seq.frame_paths):
      raise ValueError(f"variant {variant.name} gave {masks.shape[0]} masks "
                       f"for the {len(seq.frame_paths)} frames of {seq.name}")
    num_frames += masks.shape[0]
    inference.write_sequence_masks(masks.astype(np.uint8), tmp, seq.name,
                                   [p.stem for p in seq.frame_paths])
    if need_frames:
      gt = np.stack([davis_io.to_object_ids(davis_io.read_mask(p), data.year)
                     for p in seq.mask_paths])
      overlays.write_overlays(frames, masks, overlay_dir, seq.name,
                              gt_masks=gt, label=variant.name)
  figures = evaluation.evaluate_davis(
      data.root, tmp, split=data.val_split, year=data.year,
      sequences=[s.name for s in data.val])["global"]
  old = final.with_name(f".{variant.name}.old")
  shutil.rmtree(old, ignore_errors=True)
  if final.exists():
    final.rename(old)
  tmp.rename(final)
  shutil.rmtree(old, ignore_errors=True)
  result = dict(figures)
  result["seconds_per_frame"] = round(seconds / max(num_frames, 1), 4)
  return result


def print_table(title, summary):
  print(title)
  print(f"  {'variant':<22}{'J&F-Mean':>10}{'J-Mean':>10}{'F-Mean':>10}"
        f"{'s/frame':>10}")
  for name, g in summary.items():
    if name == "stage_seconds":
      continue
    print(f"  {name:<22}{g['J&F-Mean']:>10.3f}{g['J-Mean']:>10.3f}"
          f"{g['F-Mean']:>10.3f}{g.get('seconds_per_frame', 0.0):>10.3f}")


def run(config, workdir, method):
  """Runs a method end to end; returns the summary (also summary.json).

  With several processes, all of them train; process 0 alone then adapts,
  predicts, evaluates and writes (the others return None).
  """
  workdir = pathlib.Path(workdir)
  timer = StageTimer()
  evaluate_only = bool(config.get("evaluate_only", False))
  # Training data is read (and checked) only when something is trained.
  data = prepare(config, workdir,
                 need_train=trains_parent(config) and not evaluate_only)
  timer.done("data")
  method.train(data, workdir, evaluate_only=evaluate_only)
  timer.done("training")
  if not distributed.is_writer():
    # Training was the collective stage. Fine-tuning, prediction and
    # evaluation run on process 0's devices (`sharding.make_mesh()` is
    # process-local), which alone writes predictions and summary.json.
    return None
  (workdir / SUMMARY_FILE).unlink(missing_ok=True)
  predictions = workdir / "predictions"
  summary = {}
  variants = list(_timed_variants(method.variants(data), timer))
  variants.append(Variant(BASELINE, first_frame_baseline))
  # `inference.overlays` (FC-I3D, OSVOS, MaskTrack) or `eval.overlays` (PML).
  write_overlays = any(config.get(section, {}).get("overlays", False)
                       for section in ("inference", "eval"))
  final = variants[-2].name if len(variants) > 1 else None
  for variant in variants:
    summary[variant.name] = predict_and_evaluate(
        variant, data, predictions,
        overlay_dir=(workdir / "overlays"
                     if write_overlays and variant.name == final else None))
    timer.done(f"predict_and_evaluate_{variant.name}")
  _remove_stale(predictions)
  summary["stage_seconds"] = timer.seconds
  curves.write_curves(workdir)
  davis_io.atomic_write(workdir / SUMMARY_FILE,
                        lambda f: json.dump(summary, f, indent=2), mode="w")
  source = "synthetic" if data.synthetic else data.root
  print_table(f"{method.name} on {len(data.val)} {data.val_split} sequences "
              f"({source}):", summary)
  print(f"  results: {workdir}")
  return summary


def _timed_variants(variants: Iterator[Variant], timer):
  # Adaptation (e.g. one-shot fine-tuning) runs inside the method's generator
  # before it yields the variant: time it as that variant's stage.
  for variant in variants:
    timer.done(f"adapt_{variant.name}")
    yield variant


def _remove_stale(predictions):
  """Removes temporary folders an interrupted run left behind."""
  if not predictions.is_dir():
    return
  for path in predictions.iterdir():
    if path.name.startswith(".") and path.name.endswith((".tmp", ".old")):
      shutil.rmtree(path, ignore_errors=True)

