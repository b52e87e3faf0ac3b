"""MaskTrack's propagation loop under several thresholds and fed masks.

Fine-tunes a MaskTrack run's offline network once per sequence (the
experiment's online stage, as `run.py` does), then propagates and evaluates
(official J and F at 854x480, `pipeline.predict_and_evaluate`) once per
variant, so variants that change only the loop are compared on the same
networks:

  python benchmarks/masktrack_propagation_ablation.py \
      --data_dir=../shared/data/DAVIS --workdir=RUN/masktrack_offline_davis16_cpu \
      --out=/tmp/mt_ablation \
      --sequences=bmx-trees,kite-surf,scooter-black,parkour,drift-straight,car-shadow \
      --variants='{"control": {}, "t073": {"threshold": 0.731}}'

`--workdir` is a finished run of the experiment (its `parent/` checkpoint is
copied into `--out`, nothing in it is written). A variant is
{"threshold": t} (a pixel is foreground, in the output and in the mask fed
to the next frame, where the network's probability exceeds t; default 0.5;
"balance": per sequence, t = |Y-| / |Y| of the online pool, the prior
correction of the class-balanced loss, which weights positives by |Y-|/|Y|
and negatives by |Y+|/|Y|, so its probability 0.5 is the unweighted
|Y+|/|Y|), {"dilate": r} (the fed mask dilated by a disk of radius r, as
the training input masks are), {"warp": true} (the fed mask moved to the
next frame along its backward DIS flow before the step), {"area_cap": c}
(`inference.area_cap`: each frame's threshold raised until its mask is at
most c times the fed mask's area), or several.
`--online_loss=bce` fine-tunes with
the plain, unweighted BCE instead of the class-balanced one (an ablation,
not a config option: the loss is swapped for the online stage only).
`--finetune` overrides `finetune.*` (JSON). DAVIS 2016 (one object a
sequence) only. Prints one row per variant (J&F,
J, F, seconds per frame) and its per-sequence CSV.
"""

import argparse
import json
import pathlib
import shutil
import sys
import time
from unittest import mock

import cv2
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

# pylint: disable=g-import-not-at-top
import fc_i3d_inference_ablation
from vosjax import davis_io
from vosjax import image
from vosjax import losses
from vosjax import pipeline
from vosjax import propagation
from vosjax.augment import mask_deform
from vosjax.programs import masktrack as masktrack_program


def plain_bce(logits, labels, mask=None):
  """Unweighted BCE, normalised like `losses.class_balanced_bce`."""
  logits = logits.astype(jnp.float32)
  labels = labels.astype(jnp.float32)
  valid = jnp.ones_like(labels) if mask is None else mask.astype(jnp.float32)
  axes = tuple(range(1, logits.ndim))
  ll = (labels * jax.nn.log_sigmoid(logits) +
        (1 - labels) * jax.nn.log_sigmoid(-logits))
  total = jnp.maximum(jnp.sum(valid, axes), 1.0)
  return -jnp.mean(jnp.sum(ll * valid, axes) / total)


def backward_flows(frames):
  """`[T, H, W, 2]` float32 (dx, dy): DIS flow from frame t to frame t - 1."""
  gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
  dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
  return np.stack([np.zeros(gray[0].shape + (2,), np.float32)] +
                  [dis.calc(gray[t], gray[t - 1], None)
                   for t in range(1, len(gray))])


def warp(mask, flow):
  """`[1, H, W]` `mask` of frame t - 1 sampled at x + flow(x) (bilinear)."""
  h, w = mask.shape[1:]
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                        jnp.arange(w, dtype=jnp.float32), indexing="ij")
  coords = [ys + flow[0, ..., 1], xs + flow[0, ..., 0]]
  return jax.scipy.ndimage.map_coordinates(mask[0], coords, order=1,
                                           mode="nearest")[None]


def variant_step(model, dilate, warped=False, area_cap=0.0):
  """`step(variables, frame, prev)`; variables = {"net", "shift"}.

  The network's logit is shifted by -shift (threshold sigmoid(shift)), so
  the scan's binary feed and the output's 0.5 threshold both sit at it.
  With `warped`, `frame` is {"rgb", "flow"} and the fed mask is first moved
  to frame t along the backward flow (Perazzi et al. 2017, Sec. 3.3).
  With `area_cap` c > 0, the shifted probabilities then go through
  `propagation.cap_area_growth` (a mask grows at most a factor c a frame,
  as `inference.area_cap` does in the program).
  """
  base = masktrack_program.propagation_step(model)
  kernel = jnp.asarray(mask_deform.disk(dilate), jnp.float32)[..., None, None]

  def step(variables, frame, prev):
    if warped:
      prev = (warp(prev, frame["flow"]) > 0.5).astype(jnp.float32)
      frame = frame["rgb"]
    if dilate:
      prev = lax.conv_general_dilated(
          prev[..., None], kernel, (1, 1), "SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))[..., 0]
      prev = (prev > 0.5).astype(jnp.float32)
    p = jnp.clip(base(variables["net"], frame, prev), 1e-7, 1 - 1e-7)
    p = jax.nn.sigmoid(jnp.log(p) - jnp.log1p(-p) - variables["shift"])
    return propagation.cap_area_growth(p, prev, area_cap) if area_cap else p

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--experiment", default="masktrack_offline_davis16_cpu")
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--sequences", default="")
  parser.add_argument("--variants", default='{"control": {}}')
  parser.add_argument("--finetune", default="{}",
                      help="JSON overrides of finetune.*")
  parser.add_argument("--online_loss", default="balanced",
                      choices=("balanced", "bce"))
  args = parser.parse_args()
  config = fc_i3d_inference_ablation.ablation_config(args)
  out = pathlib.Path(args.out)
  parent = pathlib.Path(args.workdir) / "parent"
  if not (parent / "checkpoints").is_dir():
    sys.exit(f"{sys.argv[0]}: no parent/checkpoints in {args.workdir}")
  if not (out / "parent").exists():
    shutil.copytree(parent, out / "parent")
  data = pipeline.prepare(config, out, need_train=False)
  if data.year != 2016:
    sys.exit(f"{sys.argv[0]}: DAVIS 2016 only (one object a sequence)")
  method = masktrack_program.MaskTrackMethod(config, out)
  method.train(data, out, evaluate_only=True)
  start = time.time()
  loss = plain_bce if args.online_loss == "bce" else losses.class_balanced_bce
  with mock.patch.object(losses, "class_balanced_bce", loss):
    adapted = method.one_shot(data.val)
  print(f"online stage ({args.online_loss}) of {len(data.val)} sequences: "
        f"{time.time() - start:.0f} s", flush=True)
  ic = config.inference
  for name, v in json.loads(args.variants).items():
    step = variant_step(method.model, int(v.get("dilate", 0)),
                        bool(v.get("warp", False)),
                        float(v.get("area_cap", 0.0)))

    def segment(seq, threshold=v.get("threshold", 0.5), step=step):
      if threshold == "balance":
        ids = method._pool(seq, "rgb")["ids"]  # pylint: disable=protected-access
        threshold = 1.0 - float(np.mean(ids == 1))
      shift = float(np.log(threshold) - np.log1p(-threshold))
      frames = seq.frames()
      height, width = frames.shape[1:3]
      first = image.resize(seq.first_mask[None], ic.scale, nearest=True)[0]
      small = image.resize(frames, ic.scale)
      inputs = ({"rgb": small, "flow": backward_flows(small)}
                if v.get("warp") else small)
      probs = propagation.propagate_padded(
          step, {"net": adapted[seq.name], "shift": jnp.float32(shift)},
          inputs, (first == 1).astype(np.float32),
          feed=ic.feed, bucket=ic.length_bucket)
      masks = (image.upsample(probs, height, width) > 0.5).astype(np.uint8)
      masks[0] = np.where(seq.first_mask == davis_io.VOID_LABEL, 0,
                          seq.first_mask)
      return masks

    fc_i3d_inference_ablation.evaluate_variant(name, v, segment, data, out)


if __name__ == "__main__":
  main()
