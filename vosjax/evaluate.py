r"""Command-line DAVIS evaluation, a drop-in for the official tool.

  python -m vosjax.evaluate --davis_path DIR --results_path DIR \
      --set val --year 2016 --task semi-supervised [--sequences a,b]
      [--exclude_void]

Writes `global_results-<set>.csv`, `per-sequence_results-<set>.csv` and
`results.json` into the results folder and prints the tables like the
official `evaluation_method.py`. `--sequences` (evaluate a subset of the split)
and `--exclude_void` (void pixels left out of J and F instead of scored as
background; not the official protocol) are extensions of the official tool.
The three output files are deleted before evaluating, so a failed run never
leaves the previous figures looking current. Bad input: a one-line error on
stderr naming the file, sequence or flag, exit status 1, nothing written. It
is stricter than the official tool where that would score the wrong thing:
`--sequences` must belong to `--set`, every PNG of a sequence's results
must be named after one of its ground-truth frames (missing and extra names
are listed), and 16-bit PNGs holding ids above 255 are refused.
"""

import argparse
import sys
import time

from vosjax import davis_io
from vosjax.evaluation import davis


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m vosjax.evaluate", description=__doc__.split("\n")[0])
  parser.add_argument("--davis_path", required=True,
                      help="DAVIS folder with Annotations/ and ImageSets/")
  parser.add_argument("--results_path", required=True,
                      help="folder with one sub-folder of PNG masks per "
                           "sequence; the CSVs are written here")
  parser.add_argument("--set", default="val", help="split to evaluate")
  parser.add_argument("--year", default="2016", choices=("2016", "2017"))
  parser.add_argument("--task", default="semi-supervised",
                      choices=davis.TASKS)
  parser.add_argument("--sequences", default=None,
                      help="comma-separated subset of --set (extension)")
  parser.add_argument("--exclude_void", action="store_true",
                      help="drop ground-truth void pixels (255) from J and F; "
                           "NOT the official protocol, which scores them as "
                           "background (2017 only)")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  start = time.time()
  sequences = None
  if args.sequences:
    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
  print(f"Evaluating sequences for the {args.task} task...")
  try:
    results = davis.evaluate_davis(
        args.davis_path, args.results_path, split=args.set,
        year=int(args.year), task=args.task, sequences=sequences, write=True,
        exclude_void=args.exclude_void)
  except (davis_io.DavisFormatError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Global results saved in {args.results_path}/"
        f"global_results-{args.set}.csv")
  print(f"Per-sequence results saved in {args.results_path}/"
        f"per-sequence_results-{args.set}.csv")
  davis.print_results(results, args.set)
  print(f"\nTotal time: {time.time() - start:.2f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
