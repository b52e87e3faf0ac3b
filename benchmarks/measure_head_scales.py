"""Activation scale at every head input of vosjax's pretrained trunks.

  python benchmarks/measure_head_scales.py --data_dir=../shared/data/DAVIS

Why (issue 28): OSVOS, MaskTrack and FC-I3D took their learning rates from
releases whose trunks saw another input scale. SGD moves a linear head's
logits by `lr * |a|^2 * dL/dlogit` per step (a: the head's input), so a
trunk whose activations are c times smaller takes c^2 times smaller steps
at the same learning rate. This prints the RMS of each head input on DAVIS
frames for vosjax's input and for the release's input scale through the
same weights:

  * VGG16 (OSVOS, MaskTrack; taps conv2_2, conv3_3, conv4_3, conv5_3):
    vosjax feeds torchvision's normalisation, (x - mean) / std with x in
    [0, 1]; OSVOS-PyTorch and MaskTrack's DeepLab feed Caffe's BGR 0-255
    minus the mean, i.e. the same pattern 255 * std (about 57.6) times
    larger. The Caffe VGG16's own weights are not available offline, so its
    scale is estimated as this trunk's on the 57.6x input (ReLU networks are
    positively homogeneous up to their biases); an estimate, stated as one.
  * I3D (FC-I3D; taps Conv3d_1a_7x7, Conv3d_2c_3x3, Mixed_3c, Mixed_4f):
    vosjax feeds [-1, 1] (what the Kinetics weights were trained on); the
    FC-I3D release fed [0, 1].

Prints one row per tap: RMS with vosjax's input, with the release's, their
ratio, and the ratio squared (the factor between SGD's logit steps).
"""

import argparse
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np

import vosjax  # noqa: F401  (XLA flags before JAX starts)
from vosjax import davis_io
from vosjax import image
from vosjax.models import i3d
from vosjax.models import pretrained
from vosjax.models import vgg

VGG_TAPS = ("conv2_2", "conv3_3", "conv4_3", "conv5_3")
I3D_TAPS = ("Conv3d_1a_7x7", "Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f")
SEQUENCES = ("blackswan", "bmx-trees", "car-shadow", "cows", "dog",
             "kite-surf", "libby", "parkour")


def _frames(root, sequence, count, scale):
  paths = sorted((pathlib.Path(root) / "JPEGImages" / "480p" / sequence)
                 .glob("*.jpg"))[:count]
  import cv2  # pylint: disable=g-import-not-at-top
  out = []
  for p in paths:
    f = davis_io.read_frame(p)
    out.append(cv2.resize(f, None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_AREA))
  return np.stack(out)


def _rms(x):
  return float(jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)))))


def vgg_scales(root, scale):
  model = vgg.VGG16()
  params = pretrained.load_vgg16_imagenet()["params"]
  frames = np.stack([_frames(root, s, 1, scale)[0] for s in SEQUENCES])
  x = image.to_model_range(frames)
  # The Caffe input is (255 * x01 - mean_255), i.e. std_255 = 255 * std times
  # torchvision's (x01 - mean) / std. Feed that amplitude through the same
  # weights: scale the model-range input so that vgg.normalize's output is
  # multiplied by c (normalize is affine: shift the [-1, 1] input about the
  # mean's position).
  c = 255.0 * float(np.mean(vgg.IMAGENET_STD))
  mean = np.asarray(vgg.IMAGENET_MEAN, np.float32) * 2.0 - 1.0
  x_release = (x - mean) * c + mean
  apply = jax.jit(lambda v: model.apply({"params": params}, v)[1])
  ours, theirs = apply(x), apply(x_release)
  return [(t, _rms(ours[t]), _rms(theirs[t])) for t in VGG_TAPS], c


def i3d_scales(root, scale, frames_per_clip=8):
  model = i3d.InceptionI3d(final_endpoint=I3D_TAPS[-1])
  weights = pretrained.load_i3d_kinetics400(model)
  clips = np.stack([_frames(root, s, frames_per_clip, scale)
                    for s in SEQUENCES[:2]])
  x = image.to_model_range(clips)  # [-1, 1]: vosjax and the Kinetics weights.
  x_release = (x + 1.0) * 0.5  # [0, 1]: the FC-I3D release.
  apply = jax.jit(lambda v: model.apply(weights, v, train=False)[1])
  ours, theirs = apply(x), apply(x_release)
  return [(t, _rms(ours[t]), _rms(theirs[t])) for t in I3D_TAPS]


def _table(title, rows):
  print(title)
  print(f"  {'tap':<16}{'vosjax RMS':>12}{'release RMS':>13}{'ratio':>9}"
        f"{'ratio^2':>10}")
  for tap, ours, theirs in rows:
    r = theirs / ours
    print(f"  {tap:<16}{ours:>12.4g}{theirs:>13.4g}{r:>9.3g}{r * r:>10.4g}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", default="../shared/data/DAVIS")
  parser.add_argument("--scale", type=float, default=0.5,
                      help="frame scale (0.5: 427x240)")
  args = parser.parse_args()
  rows, c = vgg_scales(args.data_dir, args.scale)
  _table(f"VGG16 (torchvision ImageNet) on first frames of "
         f"{len(SEQUENCES)} val sequences at {args.scale}: release input "
         f"= {c:.1f}x the normalised pattern (Caffe BGR 0-255 - mean)", rows)
  _table("I3D (Kinetics-400) on two 8-frame val clips: release input "
         "[0, 1] instead of [-1, 1]", i3d_scales(args.data_dir, args.scale))


if __name__ == "__main__":
  main()
