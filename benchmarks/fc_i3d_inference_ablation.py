"""FC-I3D one-shot J&F under several inference settings, one fine-tuning.

Fine-tunes `fc_i3d_davis16_cpu` (or --experiment) once per sequence, as
`run.py` does, then predicts and evaluates (official J and F at 854x480,
`pipeline.predict_and_evaluate`) once per inference setting, so settings
that change only prediction are compared on the same networks:

  python benchmarks/fc_i3d_inference_ablation.py \
      --data_dir=../shared/data/DAVIS --out=/tmp/fc_i3d_inference \
      --variants='{"scale050": {}, "scale075": {"scale": 0.75}}'

`--variants` maps a name to `inference.*` overrides ({} = the config's;
{"scales": [s1, s2, ...]}: multi-scale testing, the logits at each scale
upsampled to 854x480 and averaged before the threshold); `--finetune`
overrides `finetune.*` the same way. Prints one row per variant (J&F, J, F,
seconds per frame) and its per-sequence CSV.
"""

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# pylint: disable=g-import-not-at-top
from vosjax import experiments
from vosjax import pipeline
from vosjax.programs import fc_i3d


def ablation_config(args):
  """`args.experiment`'s config with the ablations' shared flags applied
  (--data_dir, --sequences, --finetune JSON overrides of finetune.*).

  Shared by the inference ablations (this one, masktrack_propagation_...).
  """
  config = experiments.load_config(args.experiment)
  config.data_dir = args.data_dir
  config.data.val_sequences = args.sequences
  for key, value in json.loads(args.finetune).items():
    config.finetune[key] = value
  return config


def evaluate_variant(name, overrides, segment, data, out):
  """Predicts and evaluates one variant; prints its row and per-sequence CSV.

  Shared by the inference ablations (this one, masktrack_propagation_...).
  """
  r = pipeline.predict_and_evaluate(pipeline.Variant(name, segment), data,
                                    out / "predictions")
  print(f"{name} {json.dumps(overrides)}: J&F {r['J&F-Mean']:.3f} "
        f"J {r['J-Mean']:.3f} F {r['F-Mean']:.3f} "
        f"s/frame {r['seconds_per_frame']:.3f}", flush=True)
  print((out / "predictions" / name /
         "per-sequence_results-val.csv").read_text(), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--experiment", default="fc_i3d_davis16_cpu")
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--sequences", default="",
                      help="comma-separated val sequences (default: all)")
  parser.add_argument("--variants", default='{"config": {}}')
  parser.add_argument("--finetune", default="{}")
  args = parser.parse_args()
  config = ablation_config(args)
  out = pathlib.Path(args.out)
  data = pipeline.prepare(config, out, need_train=False)
  method = fc_i3d.FCI3DMethod(config, out)
  method.train(data, out)
  start = time.time()
  adapted = method.one_shot(data.val)
  print(f"one-shot of {len(data.val)} sequences: "
        f"{time.time() - start:.0f} s", flush=True)
  configured = dict(config.inference)
  for name, overrides in json.loads(args.variants).items():
    config.inference.update(configured)
    config.inference.update({k: tuple(v) if isinstance(v, list) else v
                             for k, v in overrides.items()})
    segment = method._segmenter(  # pylint: disable=protected-access
        lambda seq: adapted[seq.name])
    evaluate_variant(name, overrides, segment, data, out)


if __name__ == "__main__":
  main()
