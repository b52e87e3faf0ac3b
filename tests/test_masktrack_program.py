"""MaskTrack program: the shared pipeline on tiny synthetic data, and the demo."""

import json
import types

import jax
import numpy as np
import pytest

from experiments import masktrack_davis16
from experiments import masktrack_davis16_cpu
from experiments import masktrack_demo
from tests import real_video
from vosjax import pipeline
from vosjax.models import masktrack
from vosjax.models import osvos
from vosjax.programs import masktrack as masktrack_program

METRICS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
           "F-Decay")


def _tiny():
  """The demo shrunk to seconds: 1/16-width VGG, 6-frame 48x64 videos."""
  config = masktrack_demo.get_config()
  config.data.num_train = 2
  config.data.num_val = 2
  config.data.num_frames = 6
  config.data.height = 48
  config.data.width = 64
  config.model.width_multiplier = 1 / 16
  config.model.side_features = 4
  config.train.num_steps = 3
  config.train.batch_size = 2
  config.train.crop_size = 32
  config.train.checkpoint_every = 2
  config.train.log_every = 1
  config.finetune.num_steps = 2
  config.finetune.batch_size = 2
  config.finetune.pool_size = 3
  config.finetune.crop_size = 32
  config.flow.enabled = True
  config.inference.scale = 0.5
  config.inference.length_bucket = 4
  return config


def test_tiny_pipeline_writes_the_shared_layout_and_resumes(tmp_path):
  config = _tiny()
  summary = masktrack_program.run(config, tmp_path)
  variants = ("offline", "online", "two_stream", "first_frame_baseline")
  assert set(summary) == set(variants) | {"stage_seconds"}
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk["online"] == pytest.approx(summary["online"])
  for variant in variants:
    folder = tmp_path / "predictions" / variant
    assert set(METRICS) <= set(summary[variant])
    assert json.loads((folder / "results.json").read_text())["global"]
    for seq in ("val-000", "val-001"):
      assert len(list((folder / seq).glob("*.png"))) == 6
  lines = (tmp_path / "parent" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2, 3]
  # The resume restores the offline network: the same figures (timings
  # aside). Fine-tuning is left out of the second run to fit the suite; its
  # determinism is the one-shot tests' (per-sequence keys, batched equals
  # sequential).
  config.finetune.enabled = False
  again = masktrack_program.run(config, tmp_path)
  assert set(again) == {"offline", "first_frame_baseline", "stage_seconds"}
  for variant in ("offline", "first_frame_baseline"):
    assert ({k: again[variant][k] for k in METRICS} ==
            {k: summary[variant][k] for k in METRICS})
  assert len((tmp_path / "parent" / "metrics.jsonl").read_text()
             .splitlines()) == 3


def test_inference_offline_false_leaves_the_offline_variant_out(tmp_path):
  config = _tiny()
  config.finetune.enabled = False  # Variants are then built, not run.
  method = masktrack_program.MaskTrackMethod(config, tmp_path)
  assert [v.name for v in method.variants(data=None)] == ["offline"]
  config.inference.offline = False
  assert not list(method.variants(data=None))
  config.inference.offline = True
  config.train.num_steps = 0  # No offline network to propagate with.
  assert not list(method.variants(data=None))


def test_inference_flip_is_mirror_equivariant():
  """Propagation with `inference.flip`. Reference: the masks of a mirrored
  video are the mirrored masks (each step's two views, plain and mirrored,
  average to the same sum in either order, and the fed mask stays mirrored),
  which the random network alone is not; one object, random frames."""
  config = _tiny()
  config.flow.enabled = False
  method = masktrack_program.MaskTrackMethod(config, "/unused")
  variables = masktrack.init_variables(method.model, config.model,
                                       jax.random.key(0, impl="rbg"))
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
  first = np.zeros((48, 64), np.uint8)
  first[10:30, 8:28] = 1

  def masks(video, mask, flip):
    config.inference.flip = flip
    seq = types.SimpleNamespace(name="s", frames=lambda: video,
                                first_mask=mask)
    return method._segmenter(lambda _: variables)(seq)  # pylint: disable=protected-access

  mirror = lambda x: np.ascontiguousarray(x[..., ::-1] if x.ndim == 2
                                          else x[:, :, ::-1])
  plain = masks(frames, first, False)
  assert plain.shape == (5, 48, 64)
  assert not np.array_equal(mirror(masks(mirror(frames), mirror(first),
                                         False)), plain)
  flipped = masks(frames, first, True)
  np.testing.assert_array_equal(
      mirror(masks(mirror(frames), mirror(first), True)), flipped)
  assert not np.array_equal(flipped, plain)


def test_deformed_training_stream_is_deterministic():
  """The `prev` masks are a pure function of grain's per-element rng."""
  batch = {"ids": np.zeros((2, 1, 40, 40), np.uint8)}
  batch["ids"][:, :, 10:30, 12:28] = 1
  a = masktrack_program.add_deformed_masks(
      batch, np.random.default_rng(5), dilation_radius=2)["prev"]
  b = masktrack_program.add_deformed_masks(
      batch, np.random.default_rng(5), dilation_radius=2)["prev"]
  assert a.shape == (2, 1, 40, 40) and set(np.unique(a)) == {0, 1}
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a[0], a[1])  # Each example its own draw.


def test_online_fine_tuning_batched_equals_sequential(tmp_path):
  """A sequence's online result does not change with the other sequences.

  Reference: each sequence fine-tuned alone (sequentially) against both in
  one batched `finetune` call, in the other order.
  """
  config = _tiny()
  data = pipeline.prepare(config, tmp_path)
  method = masktrack_program.MaskTrackMethod(config, tmp_path)
  # The initial network stands in for the offline one (no training needed).
  method.parent = masktrack.init_variables(
      method.model, config.model, jax.random.key(0, impl="rbg"))
  a, b = data.val
  alone = method.one_shot([a])[a.name]
  together = method.one_shot([b, a])[a.name]
  changed = False
  for x, y, p in zip(jax.tree.leaves(alone), jax.tree.leaves(together),
                     jax.tree.leaves(method.parent["params"])):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    changed |= not np.allclose(x, p)
  assert changed  # Fine-tuning did update the network.


def test_flow_images_cover_every_frame():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
  flows = masktrack_program.flow_images(frames)
  assert flows.shape == frames.shape and flows.dtype == np.uint8
  # Identical frames: no motion anywhere.
  still = masktrack_program.flow_images(np.repeat(frames[:1], 2, axis=0))
  assert still.max() <= 1


def test_configs():
  config = masktrack_davis16.get_config()
  assert config.program == "masktrack"
  assert config.train.num_steps == 200_000 and config.train.batch_size == 10
  assert config.finetune.num_steps == 200
  cpu = masktrack_davis16_cpu.get_config()
  assert cpu.model.init == "imagenet" and not cpu.flow.enabled
  assert isinstance(masktrack_program.MaskTrackMethod(cpu, "/tmp").model,
                    osvos.OSVOS)


@pytest.mark.slow
def test_demo_beats_copy_first_frame(tmp_path):
  summary = masktrack_program.run(masktrack_demo.get_config(), tmp_path)
  baseline = summary["first_frame_baseline"]["J&F-Mean"]
  # Measured 0.268 against 0.095 (2 shared cores); the margin asks for a
  # clear win, not the measured figure.
  assert summary["online"]["J&F-Mean"] > baseline + 0.1, summary


def test_learns_real_video_online_only(davis_root):
  """Online-only MaskTrack (no offline stage) from ImageNet VGG16, fine-tuned
  on car-shadow's frame 0 at quarter resolution (40 Adam steps at 3e-4 on
  96x96 crops, to fit the suite) and propagated over 40 frames: J on frames
  20, 30, 39 well above copying the first mask (J 0.30)."""
  j, baseline = real_video.learned_and_baseline_j(
      davis_root, "masktrack_davis16_cpu",
      {"finetune.num_steps": 40, "finetune.learning_rate": 3e-4,
       "finetune.scale": 1.0, "finetune.crop_size": 96,
       "finetune.pool_size": 8, "deform.finetune_dilation_radius": 1,
       "inference.scale": 1.0}, propagate=True)
  assert j >= baseline + 0.2, (j, baseline)
