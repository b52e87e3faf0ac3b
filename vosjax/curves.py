"""Loss curves for people: `<run_dir>/curves.png`, one panel per stage.

A run folder (`<workdir>/<experiment>/`) holds a `metrics.jsonl` per
training stage (`parent/`, `train/`; `train.fit`) and, for one-shot methods,
`finetune/<variant>_losses.json` (`save_finetune_losses`). `write_curves`
stacks one 1000 px wide panel per stage: a training stage plots every metric
named "*loss*" against `step` (the total thicker); a one-shot variant the
mean over sequences per step over bands (min-max light, 25-75% darker), its
title giving the first and last mean, so a run that does not learn shows as
a flat line and e.g. "0.217 -> 0.216". The y axis is logarithmic when the
values span more than 10x. Drawn with OpenCV (matplotlib is no dependency);
`PALETTE` and `write_png` are shared with `vosjax/tools/davis_results.py`.
"""

import io
import json
import math
import pathlib
import warnings

import cv2
import numpy as np
from PIL import Image

from vosjax import davis_io

FINETUNE_DIR = "finetune"
CURVES_FILE = "curves.png"
METRICS_FILE = "metrics.jsonl"  # train.METRICS_FILE (layer 4, not importable).

# matplotlib's tab10, then the light shades of tab20: 14 distinct RGB colours.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
           (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
           (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
           (152, 223, 138), (255, 152, 150))

# Layout of the picture, in pixels: each panel is WIDTH x PANEL_HEIGHT and its
# plot area is inset by the margins (title and legend above, ticks left and
# below).
WIDTH, PANEL_HEIGHT = 1000, 320
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 58, 40
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GRID, _AXIS, _TEXT = (225, 225, 225), (90, 90, 90), (0, 0, 0)


def write_png(path, image):
  """Writes `[H, W, 3]` uint8 RGB `image` to `path` as a PNG, atomically."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
  davis_io.atomic_write(path, lambda f: f.write(buffer.getvalue()))


def save_finetune_losses(run_dir, variant, sequence_names, losses):
  """Writes `<run_dir>/finetune/<variant>_losses.json` atomically.

  Args:
    run_dir: the run folder, `<workdir>/<experiment>`.
    variant: the variant's name (e.g. "oneshot").
    sequence_names: S names, one per row of `losses`.
    losses: `[S, N]` float, the loss of each of N fine-tuning steps.

  Returns:
    The path written. Values keep 6 significant digits; NaN/Inf become null.
  """
  losses = np.asarray(losses, np.float64)
  names = [str(n) for n in sequence_names]
  if losses.ndim != 2 or losses.shape[0] != len(names):
    raise ValueError(f"losses of shape {losses.shape}: expected "
                     f"[{len(names)}, num_steps], one row per sequence")
  rows = [[float(f"{v:.6g}") if math.isfinite(v) else None for v in row]
          for row in losses.tolist()]
  record = {"variant": str(variant), "sequences": names, "losses": rows}
  path = pathlib.Path(run_dir) / FINETUNE_DIR / f"{variant}_losses.json"
  davis_io.atomic_write(path, lambda f: json.dump(record, f), mode="w")
  return path


def _float(value):
  try:
    return float(value)
  except (TypeError, ValueError):  # null, a string: nothing to plot.
    return math.nan


def _read_metrics(path):
  """`(steps [T], {loss key: [T]})` of a metrics.jsonl; None if no loss.

  Lines that do not parse (the last one of a run being written) are skipped.
  """
  records = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
      records.append((float(record["step"]), record))
    except (ValueError, KeyError, TypeError):
      continue
  keys = sorted({k for _, r in records for k in r if "loss" in k},
                key=lambda k: (k != "loss", k))  # The total first.
  if not keys:
    return None
  steps = np.array([s for s, _ in records])
  return steps, {k: np.array([_float(r.get(k)) for _, r in records])
                 for k in keys}


def _read_finetune(path):
  """`(variant, [S, N] losses)` of a `save_finetune_losses` file, or None."""
  try:
    record = json.loads(path.read_text())
    losses = np.array([[_float(v) for v in row] for row in record["losses"]],
                      np.float64)
  except (ValueError, KeyError, TypeError):
    return None
  if losses.ndim != 2 or losses.size == 0:
    return None
  return record.get("variant", path.stem), losses


def _to_pixels(values, lo, hi, start, end, log=False):
  """Maps data `values` in [lo, hi] linearly onto pixels [start, end].

  With `log`, log10 of the values is mapped (lo and hi are still data values,
  > 0) and values <= 0 become NaN. NaN stays NaN. Returns float64 of the
  shape of `values`; for a y axis pass start = the bottom row, end = the top.
  """
  v = np.asarray(values, np.float64)
  if log:
    with np.errstate(divide="ignore", invalid="ignore"):
      v = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
    lo, hi = math.log10(lo), math.log10(hi)
  return start + (v - lo) / (hi - lo) * (end - start)


def _y_range(values):
  """`(lo, hi, log)`: the finite values' range padded by 5% of its span.

  Logarithmic (padding in log10) when every value is > 0 and max/min > 10.
  """
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return 0.0, 1.0, False
  lo, hi = float(v.min()), float(v.max())
  if lo > 0 and hi / lo > 10:
    a, b = math.log10(lo), math.log10(hi)
    pad = 0.05 * (b - a)
    return 10 ** (a - pad), 10 ** (b + pad), True
  pad = 0.05 * (hi - lo) if hi > lo else max(0.1 * abs(hi), 1e-3)
  return lo - pad, hi + pad, False


def _ticks(lo, hi, log=False, count=5, integer=False):
  """Round ticks inside [lo, hi]: 1-2-5 steps (>= 1 if `integer`), decades."""
  if log:
    decades = [10.0 ** k for k in range(math.floor(math.log10(lo)),
                                        math.ceil(math.log10(hi)) + 1)]
    if sum(lo <= d <= hi for d in decades) < 3:  # Two decades or less: 1-2-5.
      decades = [d * m for d in decades for m in (1, 2, 5)]
    return [d for d in decades if lo <= d <= hi]
  raw = (hi - lo) / count
  base = 10.0 ** math.floor(math.log10(raw))
  step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
  step = max(step, 1) if integer else step
  return [k * step for k in range(math.ceil(lo / step),
                                  math.floor(hi / step) + 1)]


def _text(img, text, x, y, scale=0.45, colour=_TEXT, align="left"):
  """Draws `text` with its baseline at row y, starting/centred/ending at x."""
  (w, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
  x -= {"left": 0, "center": w // 2, "right": w}[align]
  cv2.putText(img, text, (int(x), int(y)), _FONT, scale, colour, 1,
              cv2.LINE_AA)


class _Axes:
  """Panel `index`'s plot area (0 at the top) over `steps` and `y_range`."""

  def __init__(self, img, index, steps, y_range, title, legend):
    top = index * PANEL_HEIGHT
    self.img, self.x0, self.x1 = img, LEFT, WIDTH - RIGHT
    self.y0, self.y1 = top + TOP, top + PANEL_HEIGHT - BOTTOM
    self.xlo, self.xhi = float(np.min(steps)), float(np.max(steps))
    if self.xhi == self.xlo:  # One logged step: centred.
      self.xlo, self.xhi = self.xlo - 0.5, self.xhi + 0.5
    self.ylo, self.yhi, self.log = y_range
    for t in _ticks(self.xlo, self.xhi, integer=True):
      x = int(round(_to_pixels(t, self.xlo, self.xhi, self.x0, self.x1)))
      cv2.line(img, (x, self.y0), (x, self.y1), _GRID, 1)
      cv2.line(img, (x, self.y1), (x, self.y1 + 4), _AXIS, 1)
      _text(img, f"{t:g}", x, self.y1 + 18, align="center")
    for t in _ticks(self.ylo, self.yhi, self.log):
      y = int(round(_to_pixels(t, self.ylo, self.yhi, self.y1, self.y0,
                               self.log)))
      cv2.line(img, (self.x0, y), (self.x1, y), _GRID, 1)
      cv2.line(img, (self.x0 - 4, y), (self.x0, y), _AXIS, 1)
      _text(img, f"{t:.3g}", self.x0 - 7, y + 5, align="right")
    cv2.rectangle(img, (self.x0, self.y0), (self.x1, self.y1), _AXIS, 1)
    _text(img, "step", self.x1, self.y1 + 34, align="right")
    _text(img, "loss (log)" if self.log else "loss", 8, self.y0 - 22)
    _text(img, title, self.x0, self.y0 - 36, scale=0.6)
    x = self.x0 + 90
    for name, colour in legend:  # One row of swatches under the title.
      cv2.rectangle(img, (x, self.y0 - 18), (x + 18, self.y0 - 8), colour, -1)
      _text(img, name, x + 24, self.y0 - 8)
      x += 40 + cv2.getTextSize(name, _FONT, 0.45, 1)[0][0]

  def xy(self, steps, values):
    """Float pixel `(x [T], y [T])` of data points; NaN where not drawable."""
    return (_to_pixels(steps, self.xlo, self.xhi, self.x0, self.x1),
            _to_pixels(values, self.ylo, self.yhi, self.y1, self.y0,
                       self.log))

  def line(self, steps, values, colour, thickness):
    """A polyline broken at NaN values (and at values <= 0 on log)."""
    x, y = self.xy(steps, values)
    pts = np.round(np.nan_to_num(np.stack([x, y], -1))).astype(np.int32)
    good = np.isfinite(x) & np.isfinite(y)
    # Runs of consecutive drawable points: split where `good` changes.
    for run in np.split(np.arange(len(x)), np.flatnonzero(np.diff(good)) + 1):
      if good[run[0]] and len(run) == 1:  # A lone point: a dot.
        cv2.circle(self.img, tuple(map(int, pts[run[0]])), thickness + 1,
                   colour, -1, cv2.LINE_AA)
      elif good[run[0]]:
        cv2.polylines(self.img, [pts[run]], False, colour, thickness,
                      cv2.LINE_AA)

  def band(self, steps, lower, upper, colour):
    """Fills between `lower` and `upper`, one quad per finite step pair."""
    x, lo = self.xy(steps, lower)
    _, hi = self.xy(steps, upper)
    quads = [np.round([[x[i], lo[i]], [x[i + 1], lo[i + 1]],
                       [x[i + 1], hi[i + 1]], [x[i], hi[i]]]).astype(np.int32)
             for i in range(len(x) - 1)
             if np.isfinite([lo[i], lo[i + 1], hi[i], hi[i + 1]]).all()]
    if quads:
      cv2.fillPoly(self.img, quads, colour)


def _first_last(values):
  """The first and last finite value of `values [T]` (NaN if none)."""
  good = np.asarray(values)[np.isfinite(values)]
  return (good[0], good[-1]) if good.size else (math.nan, math.nan)


def _tint(colour, amount):
  """`colour` mixed with white: amount 0 is white, 1 the colour itself."""
  return tuple(int(round(255 - amount * (255 - c))) for c in colour)


def _finetune_stats(losses):
  """`{name: [N]}` per-step mean, min, max, 25th and 75th percentiles."""
  # nan* of an all-NaN column (every sequence diverged) warns and gives
  # NaN, which is then not drawn: what the picture should show.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return {"mean": np.nanmean(losses, 0), "min": np.nanmin(losses, 0),
            "max": np.nanmax(losses, 0),
            "p25": np.nanpercentile(losses, 25, 0),
            "p75": np.nanpercentile(losses, 75, 0)}


def _finetune_title(variant, losses):
  first, last = _first_last(_finetune_stats(losses)["mean"])
  count = losses.shape[0]
  return (f"{variant}: {count} sequence{'s' * (count != 1)}, mean loss "
          f"{first:.3g} -> {last:.3g}")


def write_curves(run_dir):
  """Draws `<run_dir>/curves.png` (atomically) from the run's loss files.

  Reads every `<run_dir>/*/metrics.jsonl` (a panel per training stage, by
  folder name) and `<run_dir>/finetune/*_losses.json` (a panel per one-shot
  variant). The picture is `[PANEL_HEIGHT * panels, WIDTH, 3]`.

  Returns:
    The path written, or None when there is nothing to plot (then nothing
    is written).
  """
  run_dir = pathlib.Path(run_dir)
  panels = []
  for path in sorted(run_dir.glob(f"*/{METRICS_FILE}")):
    read = _read_metrics(path)
    if read is not None:
      panels.append(("train", path.parent.name, read))
  for path in sorted((run_dir / FINETUNE_DIR).glob("*_losses.json")):
    read = _read_finetune(path)
    if read is not None:
      panels.append(("finetune", *read))
  if not panels:
    return None
  img = np.full((PANEL_HEIGHT * len(panels), WIDTH, 3), 255, np.uint8)
  for index, (kind, name, data) in enumerate(panels):
    if kind == "train":
      steps, series = data
      colours = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(series)}
      first, last = _first_last(next(iter(series.values())))
      title = (f"{name}: {next(iter(series))} {first:.3g} -> {last:.3g}, "
               f"steps {steps.min():g}-{steps.max():g}")
      axes = _Axes(img, index, steps,
                   _y_range(np.concatenate(list(series.values()))), title,
                   list(colours.items()))
      for i, (key, values) in reversed(list(enumerate(series.items()))):
        axes.line(steps, values, colours[key], 2 if i == 0 else 1)
    else:
      stats = _finetune_stats(data)
      steps = np.arange(data.shape[1])
      colour = PALETTE[0]
      axes = _Axes(img, index, steps,
                   _y_range(np.concatenate([stats["min"], stats["max"]])),
                   _finetune_title(name, data),
                   [("mean", colour), ("25-75%", _tint(colour, 0.45)),
                    ("min-max", _tint(colour, 0.18))])
      axes.band(steps, stats["min"], stats["max"], _tint(colour, 0.18))
      axes.band(steps, stats["p25"], stats["p75"], _tint(colour, 0.45))
      axes.line(steps, stats["mean"], colour, 2)
  path = run_dir / CURVES_FILE
  write_png(path, img)
  return path
