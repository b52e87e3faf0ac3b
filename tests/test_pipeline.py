"""The shared pipeline: checks before training, whole-variant swaps, resume
from a checkpoint without training, stable per-sequence seeds."""

from PIL import Image
import pytest

from experiments import fc_i3d_demo
from vosjax import pipeline
from vosjax.data import synthetic
from vosjax.errors import InputError


def _real_folder_config(root):
  config = fc_i3d_demo.get_config()
  config.data.synthetic = False
  config.data_dir = str(root)
  return config


def test_every_bad_frame_and_mask_is_reported_before_training(tmp_path):
  """A truncated val JPEG, a wrong-size train mask and a missing val mask
  are all named at once by `prepare`, which runs before any training."""
  root = tmp_path / "DAVIS"
  synthetic.generate(root, year=2016, splits=(("train", 1), ("val", 2)),
                     num_frames=4, height=32, width=48, seed=0)
  jpeg = root / "JPEGImages/480p/val-000/00002.jpg"
  jpeg.write_bytes(jpeg.read_bytes()[:60])
  mask = root / "Annotations/480p/train-000/00001.png"
  Image.new("L", (40, 32)).save(mask)
  (root / "Annotations/480p/val-001/00003.png").unlink()
  with pytest.raises(InputError) as err:
    pipeline.prepare(_real_folder_config(root), tmp_path / "work")
  message = str(err.value)
  assert "3 problems" in message
  assert "val-000/00002.jpg is truncated" in message
  assert "train-000/00001.png is 40x32" in message
  assert "val-001: 4 frames but 3 masks" in message
  assert "\n" not in message


def test_name_seed_is_stable_and_order_free():
  assert pipeline.name_seed(0, "blackswan", 3) == pipeline.name_seed(
      0, "blackswan", 3)
  seeds = {pipeline.name_seed(0, "blackswan", k) for k in range(64)}
  assert len(seeds) == 64  # No collisions where seed*1000+s*16+k collided.
  assert all(0 <= s < 2**31 for s in seeds)


def _tiny_fc_i3d():
  config = fc_i3d_demo.get_config()
  config.data.num_train = 1
  config.data.num_val = 1
  config.data.num_frames = 4
  config.data.height = 32
  config.data.width = 48
  config.model.taps = "Conv3d_1a_7x7"
  config.train.num_steps = 2
  config.train.batch_size = 2
  config.train.clip_len = 4
  config.train.crop_size = 32
  config.train.checkpoint_every = 2
  config.finetune.enabled = False
  config.inference.tile = 32
  config.inference.stride = 16
  config.inference.clip_len = 4
  config.inference.clip_stride = 4
  config.inference.overlays = False
  return config


def test_evaluate_only_restores_the_checkpoint_without_training(tmp_path):
  from vosjax.programs import fc_i3d  # pylint: disable=g-import-not-at-top
  config = _tiny_fc_i3d()
  with pytest.raises(InputError, match="holds no checkpoint"):
    config.evaluate_only = True
    fc_i3d.run(config, tmp_path)
  config.evaluate_only = False
  trained = fc_i3d.run(config, tmp_path)
  metrics = (tmp_path / "parent" / "metrics.jsonl").read_text()
  config.evaluate_only = True
  again = fc_i3d.run(config, tmp_path)
  assert again["parent"]["J&F-Mean"] == trained["parent"]["J&F-Mean"]
  assert (tmp_path / "parent" / "metrics.jsonl").read_text() == metrics
  assert again["stage_seconds"]["training"] < trained["stage_seconds"][
      "training"]


def test_interrupted_variant_leaves_the_previous_folder_whole(tmp_path):
  """A segmenter failing mid-way leaves the old predictions and no tmp."""
  root = tmp_path / "DAVIS"
  synthetic.generate(root, year=2016, splits=(("train", 1), ("val", 2)),
                     num_frames=3, height=16, width=24, seed=0)
  config = _real_folder_config(root)
  data = pipeline.prepare(config, tmp_path / "work", need_train=False)
  out = tmp_path / "predictions"
  baseline = pipeline.Variant("v", pipeline.first_frame_baseline)
  first = pipeline.predict_and_evaluate(baseline, data, out)
  before = sorted(p.relative_to(out) for p in out.rglob("*"))

  def fails_on_second(seq):
    if seq.name == "val-001":
      raise RuntimeError("killed")
    return pipeline.first_frame_baseline(seq)

  with pytest.raises(RuntimeError):
    pipeline.predict_and_evaluate(pipeline.Variant("v", fails_on_second),
                                  data, out)
  after = sorted(p.relative_to(out) for p in out.rglob("*")
                 if not p.relative_to(out).parts[0].startswith("."))
  assert after == before
  pipeline._remove_stale(out)  # pylint: disable=protected-access
  assert not [p for p in out.iterdir() if p.name.startswith(".")]
  assert first["J&F-Mean"] >= 0
