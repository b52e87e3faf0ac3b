"""curves.png from hand-made metrics.jsonl and one-shot loss files.

The expected pixel positions are computed here by hand from the documented
layout (`curves.WIDTH`, `PANEL_HEIGHT` and the margins) and axis rule (the
data range padded by 5% of its span), not with the module's own mapping.
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from vosjax import curves

BLUE = np.array(curves.PALETTE[0])


def _metrics(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(lines))


def _record(step, loss):
  # What train.fit writes: loss keys among others that are not plotted.
  return json.dumps({"step": step, "grad_norm": 3.0, "learning_rate": 1e-4,
                     "loss": loss, "steps_per_sec": 2.0,
                     "clips_per_sec": 4.0, "eta_sec": 9.0}) + "\n"


def _rows_of(img, panel, x, colour, tol=30):
  """Rows (of the picture) in panel `panel`'s column `x` near `colour`."""
  top = panel * curves.PANEL_HEIGHT
  column = img[top:top + curves.PANEL_HEIGHT, x].astype(int)
  dist = np.abs(column - np.asarray(colour)).max(-1)
  return top + np.flatnonzero(dist <= tol)


def _y(value, lo, hi, panel):
  """Hand mapping onto panel `panel`'s plot rows (top margin to bottom)."""
  top = panel * curves.PANEL_HEIGHT + curves.TOP
  bottom = (panel + 1) * curves.PANEL_HEIGHT - curves.BOTTOM
  return bottom + (value - lo) / (hi - lo) * (top - bottom)


def _x(step, lo, hi):
  return curves.LEFT + (step - lo) / (hi - lo) * (
      curves.WIDTH - curves.RIGHT - curves.LEFT)


def test_to_pixels_linear_and_log_by_hand():
  np.testing.assert_allclose(curves._to_pixels([0, 5, 10], 0, 10, 100, 300),
                             [100, 200, 300])
  # A y axis: bottom row 300 is the low end; log puts 10 half-way to 100.
  got = curves._to_pixels([1, 10, 100, 0, math.nan], 1, 100, 300, 100,
                          log=True)
  np.testing.assert_allclose(got, [300, 200, 100, math.nan, math.nan])


def test_log_scale_only_beyond_ten_times():
  assert curves._y_range([0.5, 1.0])[2] is False
  lo, hi, log = curves._y_range([0.01, 1.0, math.nan])
  assert log and lo == pytest.approx(10 ** -2.1) and hi == pytest.approx(
      10 ** 0.1)
  assert curves._ticks(0.01, 1.0, log=True) == [0.01, 0.1, 1.0]
  assert curves._ticks(0.0, 1.0) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])


def test_finetune_json_round_trips(tmp_path):
  losses = [[0.5, 1 / 3, math.nan], [0.25, 0.125, 0.0625]]
  path = curves.save_finetune_losses(tmp_path, "oneshot", ["a", "b"], losses)
  assert path == tmp_path / "finetune" / "oneshot_losses.json"
  record = json.loads(path.read_text())  # Standard JSON: NaN is null.
  assert record == {"variant": "oneshot", "sequences": ["a", "b"],
                    "losses": [[0.5, 0.333333, None],
                               [0.25, 0.125, 0.0625]]}
  variant, read = curves._read_finetune(path)
  assert variant == "oneshot"
  np.testing.assert_allclose(read, [[0.5, 0.333333, math.nan],
                                    [0.25, 0.125, 0.0625]])
  with pytest.raises(ValueError, match="one row per sequence"):
    curves.save_finetune_losses(tmp_path, "x", ["a"], losses)


def test_truncated_last_line_and_nan_are_tolerated(tmp_path):
  path = tmp_path / "parent" / "metrics.jsonl"
  _metrics(path, [_record(10, 0.9), "\n", _record(20, math.nan),
                  json.dumps({"step": 30, "loss": 0.7,
                              "loss_fused": 0.5}) + "\n",
                  '{"step": 40, "loss": 0.'])  # A run still writing.
  steps, series = curves._read_metrics(path)
  np.testing.assert_array_equal(steps, [10, 20, 30])
  assert list(series) == ["loss", "loss_fused"]  # Total first; lr not.
  np.testing.assert_allclose(series["loss"], [0.9, math.nan, 0.7])
  np.testing.assert_allclose(series["loss_fused"], [math.nan] * 2 + [0.5])


def test_curves_png_panels_and_line_positions(tmp_path):
  steps = range(10, 101, 10)
  lines = [_record(s, 1 - s / 400) for s in steps]
  lines[4] = _record(50, math.nan)  # A NaN breaks the line around step 50.
  _metrics(tmp_path / "parent" / "metrics.jsonl",
           lines + ['{"step": 110, "loss": 0.'])
  # Three sequences, each falling linearly by half over 10 steps.
  losses = np.array([[1.0], [2.0], [3.0]]) * (1 - 0.05 * np.arange(11))
  curves.save_finetune_losses(tmp_path, "oneshot", ["a", "b", "c"], losses)

  path = curves.write_curves(tmp_path)
  assert path == tmp_path / "curves.png"
  img = np.asarray(Image.open(path).convert("RGB"))
  assert img.shape == (2 * curves.PANEL_HEIGHT, curves.WIDTH, 3)

  # Panel 0: loss 1 - step/400 in [0.75, 0.975] (under 10x: linear), the
  # truncated step 110 ignored, so x spans steps 10..100.
  lo, hi = 0.75 - 0.05 * 0.225, 0.975 + 0.05 * 0.225
  for step in (30, 80):
    rows = _rows_of(img, 0, round(_x(step, 10, 100)), BLUE)
    assert abs(rows.mean() - _y(1 - step / 400, lo, hi, 0)) <= 1.5
  assert _rows_of(img, 0, round(_x(50, 10, 100)), BLUE).size == 0

  # Panel 1: mean 2 * (1 - 0.05 step); y spans min 0.5 .. max 3 (linear).
  lo, hi = 0.5 - 0.125, 3.0 + 0.125
  x = round(_x(5, 0, 10))
  rows = _rows_of(img, 1, x, BLUE)
  assert abs(rows.mean() - _y(1.5, lo, hi, 1)) <= 1.5
  # At step 5 the sequences are 0.75, 1.5, 2.25: percentiles 25/75 are
  # 1.125 and 1.875, so 1.7 lies in the dark band and 2.1 only in min-max.
  dark, light = curves._tint(BLUE, 0.45), curves._tint(BLUE, 0.18)
  assert round(_y(1.7, lo, hi, 1)) in _rows_of(img, 1, x, dark, tol=3)
  assert round(_y(2.1, lo, hi, 1)) in _rows_of(img, 1, x, light, tol=3)
  assert round(_y(2.6, lo, hi, 1)) not in _rows_of(img, 1, x, light, tol=3)
  assert curves._finetune_title("oneshot", losses) == (
      "oneshot: 3 sequences, mean loss 2 -> 1")


def test_nothing_to_plot_writes_nothing(tmp_path):
  assert curves.write_curves(tmp_path) is None
  _metrics(tmp_path / "parent" / "metrics.jsonl",
           [json.dumps({"step": 1, "learning_rate": 0.1}) + "\n",
            '{"step": 2, "lo'])
  (tmp_path / "finetune").mkdir()
  assert curves.write_curves(tmp_path) is None
  assert not (tmp_path / "curves.png").exists()
