"""run.py: experiment selection, overrides, and its usage errors."""

import subprocess
import sys

from tests.conftest import REPO_ROOT
from vosjax import experiments


def _run(*args):
  return subprocess.run([sys.executable, "run.py", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)


def test_every_experiment_loads_a_config_naming_a_program():
  names = experiments.available_experiments()
  assert "smoke" in names
  for name in names:
    namespace = {}
    path = experiments.experiment_path(name)
    exec(compile(open(path).read(), path, "exec"), namespace)  # pylint: disable=exec-used
    config = namespace["get_config"]()
    assert experiments.get_program(config) is not None, name


def test_unknown_experiment_is_one_line_usage_error():
  result = _run("--experiment=nope")
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert "nope" in lines[0] and "smoke" in lines[0]


def test_unknown_override_is_one_line_usage_error():
  result = _run("--experiment=smoke", "--config.no_such_key=1")
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert "no_such_key" in lines[0]


def test_helpfull_lists_experiment_and_workdir():
  result = _run("--helpfull")  # absl's help exits 1 by design; read the text.
  assert "--experiment" in result.stdout and "--workdir" in result.stdout


def test_smoke_runs_with_override_and_learns(tmp_path):
  result = _run("--experiment=smoke", f"--workdir={tmp_path}",
                "--config.num_steps=150")
  assert result.returncode == 0, result.stderr
  import json  # pylint: disable=g-import-not-at-top
  metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
  # A constant predictor scores IoU ~0.1 on these disks; learning must beat it.
  assert metrics["test_iou"] > 0.5, metrics
