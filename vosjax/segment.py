"""Segment your own video with any method: a Python API over the pipeline.

Load a method from a run folder (`<workdir>/<experiment>/`, its stored
`config.json` says which program) or from a checkpoint path inside one, or
the untrained PML retrieval baseline from its experiment name; give it a
video and the first-frame annotation; get `[T, H, W]` object ids back:

  from vosjax import segment
  seg = segment.load("/tmp/vosjax-me/osvos_demo")        # trained run
  seg = segment.load(experiment="pml_i3d_zero_shot",     # untrained PML
                     overrides={"eval.scale": 0.5})
  masks = seg.segment("clip.mp4", "00000.png")           # [T, H, W] uint8

The video is a folder of frames (natural order), a video file OpenCV reads
(MP4, ...) or a `[T, H, W, 3]` uint8 array; the annotation an indexed
(palette) PNG, a grayscale 0/255 PNG (object 1), or a `[H, W]` array of ids
(255 = void); see `vosjax.video_io`. A wrong argument type is a `TypeError`,
a bad value a `SegmentError` (a `ValueError`) raised before any model is
loaded, each naming the argument (`overrides['eval.scale']`, `first_mask`).
Prediction is the program's own: `Method.train(..., evaluate_only=True)`
restores the run's checkpoint and `Method.variants` yields the per-sequence
segmenters that `pipeline.run` evaluates, so the masks are the ones the
program writes for the same sequence (same name, same seeds). One-shot
methods (FC-I3D, OSVOS, MaskTrack's online variants) fine-tune on the given
first frame inside `segment`, with progress shown. Frames of any size go to
the methods as they are: FC-I3D tiles them, OSVOS and MaskTrack resize by
`inference.scale`, PML by `eval.scale`; masks come back at the input size.

Several objects: PML and MaskTrack handle them natively. FC-I3D and OSVOS
are binary, so each object gets its own one-shot network (one sequence per
object, `<name>-obj<k>`), and where two objects' masks overlap the lower id
wins (the methods return masks, not scores). Their parent variants cannot
tell objects apart.

Streaming (`Segmenter.processor`, MaskTrack and PML): `step(image, mask)` on
the first frame, `step(image)` on each next one (Cutie's scripting form).
Only causal information is used, so PML's I3D clips see the past
`eval.clip_len` frames instead of the aligned clip `segment` embeds.
"""

import contextlib
import importlib
import json
import os
import pathlib
import tempfile
import threading
import time

import ml_collections
import numpy as np

from vosjax import davis_io
from vosjax import experiments
from vosjax import image as image_lib
from vosjax import pipeline
from vosjax import video_io
from vosjax import workdir as workdir_lib
from vosjax.errors import InputError
from vosjax.video_io import check_inputs  # pylint: disable=unused-import
from vosjax.video_io import object_ids
from vosjax.video_io import read_first_mask
from vosjax.video_io import read_video  # pylint: disable=unused-import
from vosjax.video_io import SegmentError

# The program of a config -> its Method class in vosjax/programs/.
METHODS = {"fc_i3d": "FCI3DMethod", "pml": "PMLMethod",
           "osvos": "OSVOSMethod", "masktrack": "MaskTrackMethod"}
BINARY = ("fc_i3d", "osvos")  # One foreground output per network.
TRAIN_FOLDER = {"pml": "train"}  # Default "parent" (pipeline.fit_parent).


class ArraySequence(pipeline.Sequence):
  """A `pipeline.Sequence` whose frames live in memory (the user's video)."""

  def __init__(self, name, frames, first_mask, frame_names=None):
    names = frame_names or [f"{i:05d}" for i in range(len(frames))]
    super().__init__(name=name,
                     frame_paths=[pathlib.Path(f"{n}.jpg") for n in names],
                     mask_paths=[], first_mask=np.asarray(first_mask))
    self._frames = frames

  def frames(self):
    return self._frames

  def first_frame(self):
    return self._frames[0]


# ----------------------------------------------------------------------------
# Runs and configs.


def load_run_config(run_dir):
  """The run's stored config (`workdir.check_config` wrote it)."""
  path = pathlib.Path(run_dir) / workdir_lib.CONFIG_FILE
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except (OSError, ValueError) as e:
    raise SegmentError(f"{path}: unreadable config ({e})") from e


def experiment_config(name):
  """`experiments/<name>.py:get_config()` (`experiments.load_config`)."""
  try:
    return experiments.load_config(name)
  except ValueError as e:
    raise SegmentError(f"{video_io.arg_name('experiment')}: {e}") from e


def apply_overrides(config, overrides, trained):
  """Sets dotted fields (`{"eval.scale": 0.5}`) on `config`, in place
  (`experiments.override_config`: strings parsed as on run.py's command line).

  On a trained run only the fields a resume may change
  (`workdir.RESUMABLE_FIELDS`: fine-tuning, inference, evaluation) are
  allowed: the others decide the restored model. None is refused where the
  field holds a value (it would only fail later, inside `segment`).
  """
  overrides = overrides or {}
  for field in overrides:
    if trained and not workdir_lib.is_resumable(field):
      raise video_io.OverrideError(
          f"{video_io.field_name(field)}: a trained run's {field} decides its "
          f"checkpoint; only {', '.join(workdir_lib.RESUMABLE_FIELDS)} may "
          f"change")
  video_io.check_override_values(config, overrides)
  try:
    experiments.override_config(config, overrides)
  except ValueError as e:
    raise video_io.OverrideError(video_io.in_callers_terms(e)) from None


def validate(config):
  """`experiments.validate_config` (the one home of config value checks, as
  run.py uses it), its message naming fields as the caller set them."""
  try:
    experiments.validate_config(config)
  except InputError as e:
    raise video_io.OverrideError(video_io.in_callers_terms(e)) from None


# ----------------------------------------------------------------------------
# Progress.


@contextlib.contextmanager
def progress(message, log, every=10.0):
  """Logs `message`, then the elapsed time every `every` s and at the end."""
  start, stop = time.time(), threading.Event()

  def tick():
    while not stop.wait(every):
      log(f"  {message}: {time.time() - start:.0f} s ...")

  log(f"{message} ...")
  thread = threading.Thread(target=tick, daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
  log(f"{message}: done in {time.time() - start:.1f} s")


# ----------------------------------------------------------------------------
# The segmenter.


class Segmenter:
  """A method restored once; `segment` any number of videos with it."""

  def __init__(self, config, run_dir=None, *, variant=None,
               log=video_io.log_stderr):
    program = config.get("program", "")
    if program not in METHODS:
      raise SegmentError(f"config program {program!r} cannot segment videos; "
                         f"expected one of {', '.join(METHODS)}")
    self.config, self.program, self.log = config, program, log
    self.run_dir = pathlib.Path(run_dir) if run_dir else None
    self.variant = variant
    # A bad variant or a missing checkpoint is reported before any loading.
    self.chosen_variant()
    untrained = not pipeline.trains_parent(config)
    if not untrained:
      self._check_checkpoint()
    self._scratch = tempfile.TemporaryDirectory(prefix="vosjax-segment-")
    module = importlib.import_module(f"vosjax.programs.{program}")
    self.method = getattr(module, METHODS[program])(config, self._scratch.name)
    what = ("untrained" if untrained else
            f"the checkpoint of {self.run_dir}")
    with progress(f"loading {self.method.name} ({what})", log):
      self.method.train(self._data([]), self.run_dir or self._scratch.name,
                        evaluate_only=True)

  def _check_checkpoint(self):
    if self.run_dir is None:
      raise SegmentError(f"{self.program} needs a trained run: pass "
                         f"{video_io.arg_name('path')}")
    folder = (self.run_dir / TRAIN_FOLDER.get(self.program, "parent")
              / "checkpoints")
    steps = ([p for p in folder.iterdir() if p.name.isdigit()]
             if folder.is_dir() else [])
    if not steps:
      raise SegmentError(
          f"{folder}: no checkpoint; train first: python run.py "
          f"--experiment={self.run_dir.name} --workdir={self.run_dir.parent}")

  def _data(self, sequences):
    dc = self.config.data
    return pipeline.Data(root=self.run_dir, year=dc.year,
                         resolution=dc.resolution, train_split=dc.train_split,
                         val_split=dc.val_split, train=[], val=sequences,
                         synthetic=False)

  def variant_names(self):
    """The variants this run's config yields, in order (the last: default)."""
    c, p = self.config, self.program
    if p == "pml":
      return [c.eval.name]
    if p == "masktrack":
      return (["offline"] + (["online"] if c.finetune.enabled else []) +
              (["two_stream"] if c.finetune.enabled and c.flow.enabled
               else []))
    parent = [] if p == "osvos" and not c.inference.get("parent", True) else [
        "parent"]
    return parent + (["oneshot"] if c.finetune.enabled else [])

  def chosen_variant(self):
    names = self.variant_names()
    name = self.variant or names[-1]
    if name not in names:
      raise SegmentError(f"{video_io.arg_value('variant', name)}: "
                         f"{self.program} with this config gives "
                         f"{', '.join(names)}")
    return name

  def adapted_variant(self, sequences):
    """`pipeline.Variant` of `chosen_variant()`, adapted to `sequences`."""
    name = self.chosen_variant()
    adapts = name in ("oneshot", "online", "two_stream")
    label = (f"{name}: fine-tuning {self.method.name} on the first frame"
             if adapts else f"{name}: preparing")
    with progress(label, self.log):
      for variant in self.method.variants(self._data(sequences)):
        if variant.name == name:
          return variant
    raise SegmentError(f"{self.program} did not yield variant {name}")

  def segment(self, video, first_mask, *, name=None, allow_truncated=False):
    """`[T, H, W]` uint8 object ids of `video`, frame 0 from `first_mask`.

    Args:
      video: a folder of frames (natural order), a video file, or
        `[T, H, W, 3]` uint8.
      first_mask: a PNG path or `[H, W]` ids (0 background, 255 void).
      name: the sequence's name (its seeds derive from it, as in the
        pipeline); default the folder's or file's name, else "video".
      allow_truncated: accept a video file that decodes fewer frames than
        its container announces (`video_io.read_video`).

    Raises:
      TypeError: an argument of the wrong type.
      SegmentError: (a `ValueError`) frames or mask that cannot be used.
    """
    if name is not None and not (isinstance(name, str) and name):
      raise TypeError(f"name must be a non-empty str, got {name!r}")
    mask, _ = read_first_mask(first_mask)
    frames, _ = read_video(
        video, allow_truncated=allow_truncated, log=self.log,
        exclude=[(video_io.arg_name("first_mask"), first_mask)]
        if isinstance(first_mask, (str, os.PathLike)) else ())
    check_inputs(frames, mask)
    if name is None:
      name = (pathlib.Path(video).stem
              if isinstance(video, (str, os.PathLike)) else "video")
    objects = object_ids(mask)
    if self.program in BINARY and len(objects) > 1:
      seqs = [ArraySequence(f"{name}-obj{k}", frames,
                            np.where(mask == davis_io.VOID_LABEL, mask,
                                     (mask == k).astype(np.uint8)))
              for k in objects]
    else:
      seqs = [ArraySequence(name, frames, mask)]
    variant = self.adapted_variant(seqs)
    out = np.zeros(frames.shape[:3], np.uint8)
    with progress(f"segmenting {len(frames)} frames of "
                  f"{frames.shape[2]}x{frames.shape[1]}", self.log):
      if len(seqs) == 1:
        out[...] = np.asarray(variant.segment(seqs[0]), np.uint8)
      else:
        for k, seq in zip(objects, seqs):  # Lower ids first: they win.
          fg = np.asarray(variant.segment(seq)) > 0
          out[fg & (out == 0)] = k
    return out

  __call__ = segment

  def processor(self, num_frames=None, name="video", variant=None):
    """A frame-by-frame `Processor` (MaskTrack and PML only).

    Args:
      num_frames: the video's length, needed by PML models with (x, y, t)
        coordinates (t is the frame's place in the whole video).
      name: the sequence's name (MaskTrack's one-shot seeds).
      variant: overrides the segmenter's variant (e.g. "offline").
    """
    if self.program not in ("masktrack", "pml"):
      raise SegmentError(f"{self.program} segments whole videos (one-shot "
                         f"fine-tuning or clips): use segment()")
    self.variant = variant or self.variant
    if self.chosen_variant() == "two_stream":
      raise SegmentError(f"{video_io.arg_value('variant', 'two_stream')} "
                         f"fine-tunes on the flow of frames 0-1: use "
                         f"segment(), or variant online")
    return Processor(self, num_frames, name)


def load(path=None, *, experiment=None, overrides=None, variant=None,
         log=video_io.log_stderr):
  """A `Segmenter` from a run folder or checkpoint path, or an experiment.

  Args:
    path: a run folder `<workdir>/<experiment>` (or a workdir holding one
      run, or any path inside a run, e.g. its `parent/checkpoints`).
    experiment: with `path`, picks `<path>/<experiment>`; alone, an
      experiment that trains nothing (`pml_i3d_zero_shot`: the untrained
      retrieval baseline) loaded from `experiments/`.
    overrides: `{"a.b": value}` config fields (strings are parsed to the
      field's type); on a trained run only fine-tuning, inference and
      evaluation fields.
    variant: which variant to apply (default the run's last, e.g. oneshot).
    log: where progress lines go (default stderr).

  Raises:
    TypeError: an argument of the wrong type (`overrides` a str or list).
    SegmentError: (a `ValueError`) no run there, no checkpoint, an unknown
      or unusable override or variant; all before any model is loaded.
  """
  video_io.check_load_args(path, experiment, overrides, variant)
  run_dir = None
  if path is not None:
    run_dir = video_io.find_run(path, experiment,
                                workdir_lib.CONFIG_FILE)
    config = load_run_config(run_dir)
  elif experiment:
    config = experiment_config(experiment)
  else:
    raise SegmentError(f"pass {video_io.arg_name('path')} or "
                       f"{video_io.arg_name('experiment')}")
  trained = pipeline.trains_parent(config)
  config = ml_collections.ConfigDict(config.to_dict())  # Unlocked copy.
  apply_overrides(config, overrides, trained=trained and run_dir is not None)
  if run_dir is None and pipeline.trains_parent(config):
    # Without a run, only an experiment that trains no parent can segment:
    # the pretrained network, fine-tuned on the first frame (one-shot
    # methods) or used as it is (PML retrieval).
    raise SegmentError(
        f"{video_io.arg_value('experiment', experiment)} trains a parent "
        f"network: train it with python run.py --experiment={experiment} "
        f"--workdir=DIR, then pass "
        f"{video_io.arg_value('path', f'DIR/{experiment}')}; or start from "
        f"the pretrained network with "
        f"{video_io.field_name('train.num_steps')}=0")
  validate(config)
  return Segmenter(config, run_dir, variant=variant, log=log)


# ----------------------------------------------------------------------------
# Streaming.


class Processor:
  """`step(image, mask)` on frame 0, then `step(image)`: `[H, W]` uint8 ids.

  MaskTrack: each object's own previous output is its next input, as
  `propagation.propagate` scans (same step function, same resizing, same
  merge), so the masks equal `segment`'s. PML: frame t is embedded with the
  past `eval.clip_len` frames as context (frame 0 repeated before it) and
  labelled by 1-NN from the first-frame pool; with online adaptation the
  adaptive pool is the same FIFO ring `retrieval.segment_video_online` keeps,
  carried here between calls. With a per-frame backbone (ResNet) the masks
  equal `segment`'s; I3D's context differs (causal, not the aligned clip).
  """

  def __init__(self, segmenter, num_frames, name):
    self.seg, self.num_frames, self.name = segmenter, num_frames, name
    self.t = 0

  def step(self, image, mask=None):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise SegmentError(f"step: image must be [H, W, 3] uint8, got "
                         f"{image.shape} {image.dtype}")
    if self.t == 0:
      if mask is None:
        raise SegmentError("step: the first call needs the first-frame mask")
      mask, _ = read_first_mask(mask)
      check_inputs(image[None], mask, "step(mask)")
      self.size = image.shape[:2]
      start = (self._start_masktrack if self.seg.program == "masktrack"
               else self._start_pml)
      start(image, mask)
      out = np.where(mask == davis_io.VOID_LABEL, 0, mask).astype(np.uint8)
    else:
      if mask is not None:
        raise SegmentError("step: a mask is only given with the first frame")
      if image.shape[:2] != self.size:
        raise SegmentError(f"step: frame {self.t} is {image.shape[1]}x"
                           f"{image.shape[0]}, frame 0 was {self.size[1]}x"
                           f"{self.size[0]}")
      out = (self._masktrack if self.seg.program == "masktrack"
             else self._pml)(image)
    self.t += 1
    return out

  # MaskTrack.

  def _start_masktrack(self, image, mask):
    import jax  # pylint: disable=g-import-not-at-top
    from vosjax.programs import masktrack  # pylint: disable=g-import-not-at-top
    method, ic = self.seg.method, self.seg.config.inference
    if self.seg.chosen_variant() == "online":
      seq = ArraySequence(self.name, image[None], mask)
      with progress(f"online: fine-tuning {method.name} on the first frame",
                    self.seg.log):
        self.variables = method.one_shot([seq])[self.name]
    else:
      self.variables = method.parent
    self.resize = lambda x, **kw: image_lib.resize(x, ic.scale, **kw)
    self.step_fn = jax.jit(masktrack.propagation_step(
        method.model, flip=bool(ic.get("flip", False)),
        area_cap=float(ic.get("area_cap", 0.0))))
    first = self.resize(mask[None], nearest=True)[0]
    self.objects = object_ids(mask)
    self.prev = {k: (first == k).astype(np.float32) for k in self.objects}

  def _masktrack(self, image):
    ic = self.seg.config.inference
    height, width = self.size
    small = self.resize(image[None])
    best = np.zeros(self.size, np.float32)
    out = np.zeros(self.size, np.uint8)
    for k in self.objects:
      prob = np.asarray(self.step_fn(self.variables, small,
                                     self.prev[k][None]))[0]
      self.prev[k] = ((prob > 0.5).astype(np.float32)
                      if ic.feed == "binary" else prob)
      prob = image_lib.upsample(prob[None], height, width)[0]
      win = (prob > 0.5) & (prob > best)
      out[win], best[win] = k, prob[win]
    return out

  # PML.

  def _start_pml(self, image, mask):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from vosjax import embedding  # pylint: disable=g-import-not-at-top
    from vosjax import retrieval  # pylint: disable=g-import-not-at-top
    config, method = self.seg.config, self.seg.method
    if (config.model.use_head and config.model.use_coords
        and not self.num_frames):
      raise SegmentError("processor(num_frames=...): this PML model embeds "
                         "each frame's time in the video; give its length")
    self.ec, self.jnp, self.retrieval = config.eval, jnp, retrieval
    self.resize = lambda x: image_lib.resize(x, self.ec.scale)
    self.embed = embedding.make_embed_fn(method.model, method.variables)
    self.times = lambda t: embedding.video_times(
        t, max(self.num_frames or 1, int(np.max(t)) + 1))
    self.window = [self.resize(image[None])[0]] * self.ec.clip_len
    emb = self._embed()
    self.pool = retrieval.pool_from_label_maps(
        emb[None], {0: retrieval.labels_from_mask(mask, emb.shape[:2])})
    valid = mask[mask != davis_io.VOID_LABEL]
    self.num_labels = max(2, int(valid.max(initial=0)) + 1)
    cap = self.ec.online_capacity
    self.ring_e = np.zeros((cap, emb.shape[-1]), np.float32)
    self.ring_l = np.full((cap,), retrieval.IGNORE, np.int32)
    self.ptr = 0

  def _embed(self):
    clip_len = len(self.window)
    idx = np.arange(self.t - clip_len + 1, self.t + 1)
    times = self.times(np.maximum(idx, 0))
    return self.embed(np.stack(self.window), times)[-1]

  def _pml(self, image):
    ec, r = self.ec, self.retrieval
    self.window = self.window[1:] + [self.resize(image[None])[0]]
    emb = self._embed()
    by_distance = ec.get("upsample", "labels") == "distances"
    tiles = dict(chunk_size=ec.chunk_size, ref_chunk_size=ec.ref_chunk_size)
    if not ec.online:
      if by_distance:
        dist = r.label_distances(emb[None], self.pool.emb, self.pool.labels,
                                 num_labels=self.num_labels, **tiles)
        return r.labels_from_distances(dist, self.size)[0].astype(np.uint8)
      return np.asarray(r.segment_frame(
          emb, self.pool.emb, self.pool.labels, out_size=self.size, k=ec.k,
          **tiles), np.uint8)
    jnp = self.jnp
    low, (new_e, new_l), *dist = r.segment_video_online(
        emb[None], jnp.concatenate([self.pool.emb.astype(jnp.float32),
                                    jnp.asarray(self.ring_e)]),
        jnp.concatenate([self.pool.labels.astype(jnp.int32),
                         jnp.asarray(self.ring_l)]),
        num_labels=self.num_labels, capacity=ec.online_capacity,
        max_add_per_frame=ec.online_max_add_per_frame,
        confidence_ratio=ec.online_confidence_ratio,
        return_distances=by_distance, **tiles)
    # The call's own pool starts empty at slot 0: its first n slots are
    # this frame's additions, written into the carried ring at its pointer.
    new_l = np.asarray(new_l)
    n = int(np.sum(new_l != r.IGNORE))
    slots = (self.ptr + np.arange(n)) % len(self.ring_l)
    self.ring_e[slots] = np.asarray(new_e)[:n]
    self.ring_l[slots] = new_l[:n]
    self.ptr = (self.ptr + n) % len(self.ring_l)
    if by_distance:
      return r.labels_from_distances(dist[0], self.size)[0].astype(np.uint8)
    return np.asarray(r.upsample_labels(low, self.size))[0].astype(np.uint8)
