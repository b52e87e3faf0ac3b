"""FC-I3D program: the whole pipeline on tiny synthetic data, and the demo."""

import json
import types

import jax
import numpy as np
import pytest

from experiments import fc_i3d_davis16
from experiments import fc_i3d_demo
from tests import real_video
from vosjax.errors import InputError
from vosjax.programs import fc_i3d

METRICS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
           "F-Decay")


def _tiny():
  """The demo shrunk to seconds: two shallow taps, 8-frame 48x64 videos."""
  config = fc_i3d_demo.get_config()
  config.data.num_train = 2
  config.data.num_val = 2
  config.data.num_frames = 8
  config.data.height = 48
  config.data.width = 64
  # A shallow backbone compiles in seconds; the deep taps are covered by
  # tests/test_fc_i3d.py and the slow demo test below.
  config.model.taps = "Conv3d_1a_7x7,Conv3d_2c_3x3"
  config.train.num_steps = 3
  config.train.batch_size = 2
  config.train.clip_len = 4
  config.train.crop_size = 32
  config.train.checkpoint_every = 2
  config.train.log_every = 1
  config.finetune.num_steps = 2
  config.finetune.num_frames = 4
  config.finetune.clips_per_sequence = 1
  config.inference.tile = 32
  config.inference.stride = 16
  config.inference.clip_len = 4
  config.inference.clip_stride = 2
  return config


def test_tiny_pipeline_writes_every_output_and_resumes(tmp_path):
  config = _tiny()
  summary = fc_i3d.run(config, tmp_path)
  assert set(summary) == {"parent", "oneshot", "first_frame_baseline",
                          "stage_seconds"}
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["oneshot"] == pytest.approx(summary["oneshot"])
  for variant in ("parent", "oneshot", "first_frame_baseline"):
    folder = tmp_path / "predictions" / variant
    assert set(summary[variant]) == set(METRICS) | {"seconds_per_frame"}
    assert all(0 <= summary[variant][k] <= 1 for k in ("J-Mean", "F-Mean"))
    header = (folder / "global_results-val.csv").read_text().splitlines()[0]
    assert header == ",".join(METRICS)
    assert json.loads((folder / "results.json").read_text())["global"]
    for seq in ("val-000", "val-001"):
      assert len(list((folder / seq).glob("*.png"))) == 8
  metrics = [json.loads(l) for l in
             (tmp_path / "parent" / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics] == [1, 2, 3]
  assert {"loss", "loss_fused", "loss_side0", "loss_side1"} <= set(metrics[0])
  for seq in ("val-000", "val-001"):
    assert (tmp_path / "overlays" / f"{seq}_sheet.png").stat().st_size > 0

  # Same command again: parent training resumes at its last step (no new
  # metric lines) and the predictions are reproduced exactly.
  again = fc_i3d.run(config, tmp_path)
  for variant in ("parent", "oneshot"):
    assert ({k: again[variant][k] for k in METRICS}
            == {k: summary[variant][k] for k in METRICS})
  lines = (tmp_path / "parent" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 3


def test_missing_data_dir_is_input_error_naming_it_and_how_to_fix(tmp_path):
  config = fc_i3d_davis16.get_config()
  config.data_dir = str(tmp_path / "nowhere")
  with pytest.raises(InputError, match="nowhere") as err:
    fc_i3d.run(config, tmp_path / "work")
  assert "davischallenge.org" in str(err.value)
  assert "--config.data_dir" in str(err.value)
  assert not (tmp_path / "work" / "summary.json").exists()


def test_unknown_sequence_is_input_error(davis_root, tmp_path):
  config = fc_i3d_davis16.get_config()
  config.data_dir = str(davis_root)
  config.data.train_sequences = "surf,no-such-seq"
  with pytest.raises(InputError, match="no-such-seq"):
    fc_i3d.run(config, tmp_path)


@pytest.mark.slow
def test_demo_beats_copy_first_frame_and_one_shot_helps(tmp_path):
  # The README's main command, as configured (about 4 minutes on 2 cores).
  summary = fc_i3d.run(fc_i3d_demo.get_config(), tmp_path)
  baseline = summary["first_frame_baseline"]["J&F-Mean"]
  assert summary["oneshot"]["J&F-Mean"] > baseline + 0.2, summary
  assert summary["oneshot"]["J&F-Mean"] > summary["parent"]["J&F-Mean"], (
      summary)


def test_it_learns_ci_sized_parent_beats_copy_first_frame(tmp_path):
  """It learns, CI-sized: the demo's parent, 60 steps on three shallow taps.

  About a minute on 2 cores; measured J&F 0.235 against the baseline's
  0.095. The stated margin is 0.1.
  """
  config = fc_i3d_demo.get_config()
  config.model.taps = "Conv3d_1a_7x7,Conv3d_2c_3x3,Mixed_3c"
  config.train.num_steps = 60
  config.train.checkpoint_every = 60
  config.finetune.enabled = False
  config.inference.overlays = False
  summary = fc_i3d.run(config, tmp_path)
  assert set(summary) == {"parent", "first_frame_baseline", "stage_seconds"}
  assert (summary["parent"]["J&F-Mean"] >
          summary["first_frame_baseline"]["J&F-Mean"] + 0.1), summary


def test_learns_real_video_from_kinetics(davis_root):
  """No parent: Kinetics-400 I3D fine-tuned on clips dreamed from
  car-shadow's frame 0 (quarter resolution, 60 Adam steps at 3e-4 on four
  8x96x96 clips to fit the suite), then tiled over all 40 frames in 8-frame
  windows (I3D needs consecutive frames), must segment frames 20, 30, 39
  above copying the first mask (J 0.30). With the one-shot stage's old SGD
  (it ignored `finetune.optimizer`) J was 0.004. Adam varies from run to run
  (XLA:CPU's threaded reductions are not bitwise reproducible): 120 steps
  gave J 0.487 in one suite run and passed +0.2 in another; 80 steps 0.525
  and 0.519 (baseline 0.301) in 81 s, 92 s in the suite beside another
  worker; 60 steps 0.533 (fine-tuning 63 s instead of 73 s beside another
  job). Hence a margin of 0.1, not OSVOS's and MaskTrack's 0.2: it still
  fails the SGD bug by 0.4."""
  j, baseline = real_video.learned_and_baseline_j(
      davis_root, "fc_i3d_davis16_cpu",
      {"finetune.num_steps": 60, "finetune.learning_rate": 3e-4,
       "finetune.scale": 1.0, "finetune.num_frames": 8,
       "finetune.clips_per_sequence": 4, "train.crop_size": 96,
       "inference.scale": 1.0, "inference.scales": (),
       "inference.flip": False, "inference.tile": 128,
       "inference.stride": 96, "inference.clip_len": 8,
       "inference.clip_stride": 8},
      propagate=True)
  assert j >= baseline + 0.1, (j, baseline)


def test_inference_scales_replace_scale_and_average():
  """`inference.scales`: (1.0, 1.0) predicts exactly what `scale=1.0` does,
  whatever `scale` says (the mean of two equal logits is each of them);
  the averaging itself is tested against a hand reference in
  tests/test_image.py."""
  config = _tiny()
  method = fc_i3d.FCI3DMethod(config, "/unused")
  variables = fc_i3d.init_variables(
      method.model, config.model, (1, 4, 32, 32, 3),
      jax.random.key(0, impl="rbg"))
  frames = np.random.default_rng(0).integers(0, 256, (6, 48, 64, 3),
                                             dtype=np.uint8)
  seq = types.SimpleNamespace(frames=lambda: frames)

  def masks(**inference):
    config.inference.update(inference)
    return method._segmenter(lambda _: variables)(seq)  # pylint: disable=protected-access

  full = masks(scale=1.0, scales=())
  half = masks(scale=0.5, scales=())
  assert full.shape == half.shape == (6, 48, 64)
  assert not np.array_equal(full, half)  # Scales matter for this network.
  np.testing.assert_array_equal(masks(scale=0.5, scales=(1.0, 1.0)), full)
