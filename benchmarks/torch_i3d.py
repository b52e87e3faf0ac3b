"""A PyTorch I3D that loads vosjax's parameters: the side-by-side baseline.

Written for `bench_i3d.py` from the architecture of DeepMind's kinetics-i3d
(`i3d.py`) as `vosjax.models.i3d` implements it, with the conventions of
pytorch-i3d (piergiaj), the PyTorch port the issue timed: NCDHW tensors,
`torch.nn.Conv3d` after an explicit TF 'SAME' `F.pad`, max pools padded with
-inf (the padding never wins), batch norm as `F.batch_norm` (eps 1e-3, no
scale). No code is taken from either repository. PyTorch is optional:
nothing in vosjax imports this module.

`load_flax(model, variables)` copies a `vosjax.models.i3d.InceptionI3d`'s
`{'params', 'batch_stats'}` into the module, so both frameworks run the same
network on the same clip; `bench_i3d.py` prints their largest logit
difference as the check that they do.
"""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from vosjax.models import i3d as i3d_lib


def _same_pads(size, kernel, stride):
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _pad_same(x, kernel, stride, value=0.0):
  """Pads NCDHW `x` as TF 'SAME' would for a (t, h, w) window."""
  pads = []
  for n, k, s in reversed(tuple(zip(x.shape[2:], kernel, stride))):
    pads.extend(_same_pads(n, k, s))  # F.pad wants the last axis first.
  return F.pad(x, pads, value=value) if any(pads) else x


class Unit3D(nn.Module):
  """Conv3d (no bias) + batch norm (offset, no scale) + ReLU."""

  def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1),
               batch_norm=True, bias=False, activation=True):
    super().__init__()
    self.kernel, self.stride = tuple(kernel), tuple(stride)
    self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=bias)
    self.batch_norm = batch_norm
    self.activation = activation
    if batch_norm:
      self.bn_bias = nn.Parameter(torch.zeros(cout))
      self.register_buffer('running_mean', torch.zeros(cout))
      self.register_buffer('running_var', torch.ones(cout))

  def forward(self, x):
    x = self.conv(_pad_same(x, self.kernel, self.stride))
    if self.batch_norm:
      # Sonnet-v1 batch norm: eps 1e-3, offset only. Momentum 1 - 0.999.
      x = F.batch_norm(x, self.running_mean, self.running_var, None,
                       self.bn_bias, self.training, 1e-3, 1e-3)
    return F.relu(x) if self.activation else x


def _max_pool(x, window, stride):
  return F.max_pool3d(_pad_same(x, window, stride, -np.inf), window, stride)


class Inception(nn.Module):

  def __init__(self, cin, widths):
    super().__init__()
    w = widths
    three = (3, 3, 3)
    self.b0 = Unit3D(cin, w[0])
    self.b1a, self.b1b = Unit3D(cin, w[1]), Unit3D(w[1], w[2], three)
    self.b2a, self.b2b = Unit3D(cin, w[3]), Unit3D(w[3], w[4], three)
    self.b3 = Unit3D(cin, w[5])
    self.out_channels = w[0] + w[2] + w[4] + w[5]

  def forward(self, x):
    pooled = _max_pool(x, (3, 3, 3), (1, 1, 1))
    return torch.cat([self.b0(x), self.b1b(self.b1a(x)),
                      self.b2b(self.b2a(x)), self.b3(pooled)], dim=1)


class InceptionI3d(nn.Module):
  """I3D up to the Kinetics logits: [B, 3, T, H, W] -> [B, num_classes]."""

  def __init__(self, num_classes=400):
    super().__init__()
    self.layers = nn.ModuleDict()
    cin = 3
    for name, kind, spec in i3d_lib._LAYERS:  # pylint: disable=protected-access
      if kind == 'unit':
        features, kernel, stride = spec
        self.layers[name] = Unit3D(cin, features, kernel, stride)
        cin = features
      elif kind == 'mixed':
        self.layers[name] = Inception(
            cin, i3d_lib._MIXED[name])  # pylint: disable=protected-access
        cin = self.layers[name].out_channels
    self.logits = Unit3D(cin, num_classes, batch_norm=False, bias=True,
                         activation=False)

  def forward(self, x):
    for name, kind, spec in i3d_lib._LAYERS:  # pylint: disable=protected-access
      x = _max_pool(x, *spec) if kind == 'pool' else self.layers[name](x)
    window = tuple(min(k, n) for k, n in zip((2, 7, 7), x.shape[2:]))
    x = self.logits(F.avg_pool3d(x, window, 1))
    return x.mean(dim=(2, 3, 4))


def _unit_from_flax(unit, params, stats):
  kernel = np.asarray(params['conv_3d']['kernel'])  # (kt, kh, kw, in, out)
  unit.conv.weight.data = torch.from_numpy(
      np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))
  if unit.conv.bias is not None:
    unit.conv.bias.data = torch.from_numpy(
        np.asarray(params['conv_3d']['bias']).copy())
  if unit.batch_norm:
    unit.bn_bias.data = torch.from_numpy(
        np.asarray(params['batch_norm']['bias']).copy())
    unit.running_mean.copy_(torch.from_numpy(
        np.array(stats['batch_norm']['mean'])))
    unit.running_var.copy_(torch.from_numpy(
        np.array(stats['batch_norm']['var'])))


def load_flax(model, variables):
  """Copies a Flax `InceptionI3d`'s variables (Kinetics-400 widths, up to
  Logits) into `model`; returns it."""
  params, stats = variables['params'], variables['batch_stats']
  with torch.no_grad():
    for name, kind, _ in i3d_lib._LAYERS:  # pylint: disable=protected-access
      if kind == 'unit':
        _unit_from_flax(model.layers[name], params[name], stats[name])
      elif kind == 'mixed':
        p, s, m = params[name], stats[name], model.layers[name]
        for unit, branch, scope in (
            (m.b0, 'Branch_0', 'Conv3d_0a_1x1'),
            (m.b1a, 'Branch_1', 'Conv3d_0a_1x1'),
            (m.b1b, 'Branch_1', 'Conv3d_0b_3x3'),
            (m.b2a, 'Branch_2', 'Conv3d_0a_1x1'),
            (m.b2b, 'Branch_2', 'Conv3d_0b_3x3'),
            (m.b3, 'Branch_3', 'Conv3d_0b_1x1')):
          _unit_from_flax(unit, p[branch][scope], s[branch][scope])
    _unit_from_flax(model.logits, params['Logits']['Conv3d_0c_1x1'], None)
  return model
