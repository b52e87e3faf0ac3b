"""FC-I3D one-shot J&F with the old and the new lucid dreaming, all else equal.

The old dreaming is `vosjax/augment/lucid.py` as first committed (8ff43cf:
independent random-walk motion, Telea inpainting, hard paste), read from the
git history into a private module; the new one is the library's. Both
fine-tune the same starting network on the same sequences with the same
config, seeds and number of clips, and are evaluated by the pipeline
(official J and F at 854x480). The starting network is Kinetics-400 I3D
where the experiment trains no parent (`train.num_steps = 0`, as
`fc_i3d_davis16_cpu`), else the parent checkpoint of a finished run of it:

  python benchmarks/lucid_oneshot_ablation.py \
      --data_dir=../shared/data/DAVIS --out=/tmp/lucid_ablation \
      --sequences=blackswan,car-shadow,cows,dog,parkour --dreaming=old,new
  python benchmarks/lucid_oneshot_ablation.py --experiment=EXP_WITH_PARENT \
      --parent_run=/work/runs/EXP_WITH_PARENT ... (the same flags)

Prints one row per dreaming (J&F, J, F, one-shot stage seconds) and writes
each run's `summary.json` under `<out>/<dreaming>/`.
"""

import argparse
import contextlib
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vosjax import experiments  # pylint: disable=g-import-not-at-top
from vosjax import pipeline  # pylint: disable=g-import-not-at-top
from vosjax.augment import lucid  # pylint: disable=g-import-not-at-top
from vosjax.programs import fc_i3d  # pylint: disable=g-import-not-at-top

OLD_COMMIT = "8ff43cf"
REPO = pathlib.Path(__file__).resolve().parents[1]


def old_lucid():
  """The first committed lucid.py as a module (dream_clip) + today's sheet."""
  source = subprocess.run(
      ["git", "show", f"{OLD_COMMIT}:vosjax/augment/lucid.py"], cwd=REPO,
      check=True, capture_output=True, text=True).stdout
  path = pathlib.Path(tempfile.mkdtemp()) / "lucid_old.py"
  path.write_text(source)
  spec = importlib.util.spec_from_file_location("lucid_old", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return types.SimpleNamespace(dream_clip=module.dream_clip,
                               contact_sheet=lucid.contact_sheet)


class OneShotOnly(fc_i3d.FCI3DMethod):
  """FC-I3D from its starting network (a restored parent or Kinetics); only
  the `oneshot` variant."""

  def variants(self, data):
    adapted = self.one_shot(data.val)
    yield pipeline.Variant("oneshot", self._segmenter(
        lambda seq: adapted[seq.name]))


@contextlib.contextmanager
def dreaming(module):
  saved = fc_i3d.lucid
  fc_i3d.lucid = module
  try:
    yield
  finally:
    fc_i3d.lucid = saved


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parent_run",
                      help="a finished run's experiment folder (only where "
                      "--experiment trains a parent)")
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--sequences",
                      default="blackswan,car-shadow,cows,dog,parkour")
  parser.add_argument("--dreaming", default="old,new")
  parser.add_argument("--experiment", default="fc_i3d_davis16_cpu")
  args = parser.parse_args()
  with_parent = pipeline.trains_parent(experiments.load_config(
      args.experiment))
  parent = pathlib.Path(args.parent_run or ".") / "parent"
  if with_parent and not (parent / "checkpoints").is_dir():
    sys.exit(f"lucid_oneshot_ablation: {parent}/checkpoints not found; "
             f"--parent_run needs a finished {args.experiment} run")
  rows = {}
  for name in args.dreaming.split(","):
    module = {"old": old_lucid, "new": lambda: lucid}[name]()
    config = experiments.load_config(args.experiment)
    config.data_dir = args.data_dir
    config.data.val_sequences = args.sequences
    config.evaluate_only = True
    config.inference.overlays = False
    workdir = pathlib.Path(args.out) / name
    workdir.mkdir(parents=True, exist_ok=True)
    if with_parent and not (workdir / "parent").exists():
      shutil.copytree(parent, workdir / "parent")
    with dreaming(module):
      summary = pipeline.run(config, workdir, OneShotOnly(config, workdir))
    rows[name] = summary
  print(f"FC-I3D one-shot on {args.sequences} ({args.experiment}):")
  print(f"  {'dreaming':<10}{'J&F':>8}{'J':>8}{'F':>8}{'one-shot s':>12}")
  for name, s in rows.items():
    g = s["oneshot"]
    print(f"  {name:<10}{g['J&F-Mean']:>8.3f}{g['J-Mean']:>8.3f}"
          f"{g['F-Mean']:>8.3f}{s['stage_seconds']['adapt_oneshot']:>12.0f}")
  (pathlib.Path(args.out) / "ablation.json").write_text(
      json.dumps({k: {"oneshot": v["oneshot"],
                      "stage_seconds": v["stage_seconds"]}
                  for k, v in rows.items()}, indent=2))


if __name__ == "__main__":
  main()
