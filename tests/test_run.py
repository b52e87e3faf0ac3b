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
  cache = tmp_path / "jax_cache"
  result = _run("--experiment=smoke", f"--workdir={tmp_path}",
                "--config.num_steps=150", f"--compilation_cache={cache}")
  assert result.returncode == 0, result.stderr
  import json  # pylint: disable=g-import-not-at-top
  metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
  # A constant predictor scores IoU ~0.1 on these disks; learning must beat it.
  assert metrics["test_iou"] > 0.5, metrics
  # The persistent compilation cache holds the run's compiled programs.
  assert len(list(cache.iterdir())) >= 3, sorted(cache.iterdir())


# ---------------------------------------------------------------------------
# One run per workdir, resumes that respect the config, one-line errors.
# Each stops before the program's heavy work (seconds per test).

import fcntl  # pylint: disable=g-import-not-at-top,g-bad-import-order
import json  # pylint: disable=g-import-not-at-top,g-bad-import-order
import logging as std_logging  # pylint: disable=g-import-not-at-top,g-bad-import-order
import os  # pylint: disable=g-import-not-at-top,g-bad-import-order
import pathlib  # pylint: disable=g-import-not-at-top,g-bad-import-order
import time  # pylint: disable=g-import-not-at-top,g-bad-import-order

import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order

from vosjax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top,g-bad-import-order


def _one_line(result, code=1):
  """The single stderr line of a failed run (no traceback)."""
  assert result.returncode == code, (result.returncode, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
  assert lines[0].startswith("run.py: "), lines[0]
  return lines[0]


def test_second_run_on_a_locked_workdir_stops_at_once(tmp_path):
  folder = tmp_path / "smoke"
  folder.mkdir()
  with open(folder / ".lock", "w") as f:  # This test process is the holder.
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write(f"{os.getpid()}\n")
    f.flush()
    start = time.time()
    line = _one_line(_run("--experiment=smoke", f"--workdir={tmp_path}"))
  assert time.time() - start < 60
  assert f"pid {os.getpid()}" in line and str(folder) in line
  assert not (folder / "metrics.json").exists()  # The program never ran.


def _demo_config():
  namespace = {}
  path = experiments.experiment_path("fc_i3d_demo")
  exec(compile(open(path).read(), path, "exec"), namespace)  # pylint: disable=exec-used
  return namespace["get_config"]()


def test_resume_with_a_different_model_config_is_refused(tmp_path):
  folder = tmp_path / "fc_i3d_demo"
  folder.mkdir()
  workdir_lib.check_config(_demo_config(), folder)  # The first run's config.
  (folder / "parent").mkdir()  # ... and its results.
  line = _one_line(_run(
      "--experiment=fc_i3d_demo", f"--workdir={tmp_path}",
      "--config.train.num_steps=60", "--config.model.side_features=16",
      "--config.data.num_val=1", "--config.train.log_every=5"))
  assert ("data.num_val 3 -> 1, model.side_features 8 -> 16, "
          "train.num_steps 240 -> 60.") in line, line
  assert "another --workdir" in line and "log_every 25" not in line
  stored = json.loads((folder / "config.json").read_text())
  assert stored["train"]["num_steps"] == 240  # Untouched by the refusal.


@pytest.mark.parametrize("override, field", [
    ("--config.train.batch_size=0", "train.batch_size"),
    ("--config.train.checkpoint_every=0", "train.checkpoint_every"),
    ("--config.train.num_steps=-5", "train.num_steps"),
])
def test_bad_counts_are_usage_errors_before_compiling(tmp_path, override,
                                                      field):
  line = _one_line(_run("--experiment=fc_i3d_demo", f"--workdir={tmp_path}",
                        override), code=2)
  assert line.startswith(f"run.py: --config.{field}="), line
  assert not any(tmp_path.iterdir())  # Stopped before touching the workdir.


@pytest.mark.parametrize("experiment, override, message", [
    # Every frame after the first came out background (J&F 0.000).
    ("pml_i3d_zero_shot", "--config.eval.scale=0",
     "--config.eval.scale=0.0: must be a number in (0, 4]"),
    ("osvos_demo", "--config.inference.scale=-0.5",
     "--config.inference.scale=-0.5: must be a number in (0, 4]"),
    # A 108-line traceback after loading the model.
    ("pml_i3d_zero_shot", "--config.eval.k=0",
     "--config.eval.k=0: must be a whole number >= 1"),
    # Ran all 20 sequences, where `evaluate --sequences ,` is an error.
    ("osvos_demo", "--config.data.val_sequences=,",
     "--config.data.val_sequences=',': names no sequence; give "
     "comma-separated names, or leave it empty for the whole split"),
])
def test_bad_values_are_usage_errors_before_any_work(tmp_path, experiment,
                                                     override, message):
  """One line naming the field, exit 2, before the workdir is touched (an
  empty workdir: nothing else can stop the run first)."""
  line = _one_line(_run(f"--experiment={experiment}", f"--workdir={tmp_path}",
                        override), code=2)
  assert line == f"run.py: {message}"
  assert not any(tmp_path.iterdir())  # No run folder, lock or config.json.


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  line = _one_line(_run("--experiment=smoke", f"--workdir={tmp_path}/file"))
  assert f"{tmp_path}/file is a file" in line


def test_unwritable_workdir_is_one_line(tmp_path):
  if os.geteuid() != 0:
    target = tmp_path / "ro"
    target.mkdir(mode=0o555)
  elif os.path.isdir("/sys/kernel"):
    target = pathlib.Path("/sys/kernel")  # Root cannot create folders here.
  else:
    pytest.skip("no unwritable folder for this user")
  line = _one_line(_run("--experiment=smoke", f"--workdir={target}"))
  assert f"--workdir: cannot create {target}/smoke" in line


def test_default_workdir_of_another_user_is_refused(tmp_path):
  if os.geteuid() != 0:
    pytest.skip("needs root to give a folder to another user")
  env = {**os.environ, "TMPDIR": str(tmp_path)}
  default = subprocess.run(
      [sys.executable, "-c", "from vosjax import workdir; "
       "print(workdir.default_workdir())"], cwd=REPO_ROOT, env=env,
      capture_output=True, text=True, check=True).stdout.strip()
  assert default.startswith(f"{tmp_path}/vosjax-")
  os.mkdir(default)
  os.chown(default, 12345, 12345)
  result = subprocess.run([sys.executable, "run.py", "--experiment=smoke"],
                          cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert "belongs to another user (uid 12345)" in _one_line(result)


def test_run_errors_are_one_line(tmp_path):
  """NonFiniteLossError (a RunError) from a program: its message, no trace."""
  code = (
      "import sys\n"
      "from absl import app\n"
      "import run\n"
      "from vosjax import experiments, train\n"
      "def program(config, workdir):\n"
      "  raise train.NonFiniteLossError('non-finite loss or gradient at step"
      " 3; training stopped. Last good checkpoint: none in X')\n"
      "experiments.get_program = lambda config: program\n"
      f"sys.argv = ['run.py', '--experiment=smoke', '--workdir={tmp_path}']\n"
      "app.run(run.main, flags_parser=run._parse_flags)\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  # The run logs its config first; the error is the last line, alone.
  assert result.returncode == 1 and "Traceback" not in result.stderr
  line = result.stderr.strip().splitlines()[-1]
  assert result.stderr.count("run.py: ") == 1
  assert line == ("run.py: non-finite loss or gradient at step 3; training "
                  "stopped. Last good checkpoint: none in X")


def test_mistyped_field_is_printed_plainly():
  line = _one_line(_run("--experiment=fc_i3d_demo",
                        "--config.train.num_stepz=3"), code=2)
  assert line == ("run.py: unknown config field --config.train.num_stepz in "
                  "experiment 'fc_i3d_demo'; Did you mean \"num_steps\" "
                  "instead of \"num_stepz\"?"), line


def test_help_lists_the_experiments():
  result = _run("--help")
  for name in experiments.available_experiments():
    assert f"    {name}: " in result.stdout, name


def test_orbax_tracebacks_are_dropped_from_the_log():
  import run  # pylint: disable=g-import-not-at-top
  try:
    raise OSError(28, "No space left on device")
  except OSError:
    exc_info = sys.exc_info()
  record = std_logging.LogRecord(
      "absl", std_logging.ERROR, "/x/orbax/checkpoint/m.py", 1,
      "save failed", None, exc_info)
  assert run._QuietLibraries().filter(record) and record.exc_info is None
  info = std_logging.LogRecord("absl", std_logging.INFO,
                               "/x/orbax/checkpoint/m.py", 1, "m", None, None)
  assert not run._QuietLibraries().filter(info)
  ours = std_logging.LogRecord("absl", std_logging.ERROR, "/x/vosjax/train.py",
                               1, "m", None, exc_info)
  assert run._QuietLibraries().filter(ours) and ours.exc_info is not None


def test_ci_script_removes_its_environment(tmp_path):
  """.ci/run with stub python/pip: the temp folder goes, the status stays."""
  stubs = tmp_path / "bin"
  stubs.mkdir()
  (stubs / "python3").write_text(
      "#!/bin/sh\n"  # `python3 -m venv DIR`: a venv whose tools are stubs.
      "mkdir -p \"$3/bin\"\n"
      f"printf 'PATH=\"%s/venvbin:$PATH\"\\n' \"{tmp_path}\" "
      "> \"$3/bin/activate\"\n")
  venvbin = tmp_path / "venvbin"
  venvbin.mkdir()
  (venvbin / "pip").write_text("#!/bin/sh\nexit 0\n")
  (venvbin / "python").write_text(  # pytest fails with status 3.
      "#!/bin/sh\ncase \"$*\" in *pytest*) exit 3;; esac\nexit 0\n")
  for stub in (stubs / "python3", venvbin / "pip", venvbin / "python"):
    stub.chmod(0o755)
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}",
         "TMPDIR": str(scratch)}
  result = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "run")],
                          cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 3, result.stderr
  assert not list(scratch.iterdir())


def test_compilation_cache_defaults_to_xdg_cache_home(monkeypatch):
  import run  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
  assert run.default_compilation_cache() == "/x/cache/vosjax/jax"
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert run.default_compilation_cache() == os.path.join(
      os.path.expanduser("~"), ".cache", "vosjax", "jax")


@pytest.mark.parametrize("args, message", [
    (["--num_processes=0"], "--num_processes"),
    (["--process_id=-1"], "--process_id"),
    (["--num_processes=2", "--process_id=2",
      "--coordinator_address=localhost:1"], "--process_id=2"),
])
def test_bad_multiprocess_flags_are_usage_errors(tmp_path, args, message):
  line = _one_line(_run("--experiment=smoke", f"--workdir={tmp_path}",
                        *args), code=2)
  assert message in line, line
  assert not (tmp_path / "smoke").exists()  # Stopped before the workdir.


def test_helpfull_lists_the_multiprocess_and_cache_flags():
  result = _run("--helpfull")
  for flag in ("--coordinator_address", "--num_processes", "--process_id",
               "--compilation_cache"):
    assert flag in result.stdout, flag


# ---------------------------------------------------------------------------
# Ctrl-C: one line, exit 130, nothing half-written, the same command resumes.

import re  # pylint: disable=g-import-not-at-top,g-bad-import-order
import signal  # pylint: disable=g-import-not-at-top,g-bad-import-order

# run.py's main with a program that trains the toy model of test_train for
# 12 steps, checkpointing every 2 (slowly while $SLOW_BATCHES is set).
_TOY_TRAINING = (
    "import os, sys, time\n"
    "from absl import app\n"
    "import run\n"
    "from tests import test_train as tt\n"
    "from vosjax import experiments, train\n"
    "class Batches(tt._Batches):\n"
    "  def __next__(self):\n"
    "    if os.environ.get('SLOW_BATCHES'):\n"
    "      time.sleep(0.3)\n"
    "    return super().__next__()\n"
    "def program(config, workdir):\n"
    "  train.fit(tt._init_state(), tt._TRAIN_STEP, Batches(), num_steps=12,\n"
    "            workdir=workdir, rng=tt._key(1), checkpoint_every=2,\n"
    "            log_every=2, log_every_secs=0.0)\n"
    "  print('trained', flush=True)\n"
    "experiments.get_program = lambda config: program\n"
    "sys.argv = ['run.py', '--experiment=smoke', '--workdir=' + sys.argv[1]]\n"
    "app.run(run.main, flags_parser=run._parse_flags)\n")


def _default_sigint():
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_exit_130_and_the_same_command_resumes(tmp_path):
  command = [sys.executable, "-c", _TOY_TRAINING, str(tmp_path)]
  ckpt_dir = tmp_path / "smoke" / "checkpoints"
  proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "SLOW_BATCHES": "1"},
                          # A shell's background job (`cmd &`) starts with
                          # SIGINT ignored, and children inherit that:
                          # give the child a real Ctrl-C.
                          preexec_fn=_default_sigint)
  try:
    deadline = time.time() + 120
    while not (ckpt_dir / "2").is_dir() and proc.poll() is None:
      assert time.time() < deadline, "no checkpoint within 120 s"
      time.sleep(0.1)
    time.sleep(0.5)  # Into the next steps, a save possibly under way.
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 130, stderr
  assert "Traceback" not in stderr and stderr.count("run.py: ") == 1, stderr
  last = stderr.strip().splitlines()[-1]
  match = re.fullmatch(r"run\.py: interrupted at step (\d+); rerun the same "
                       r"command to resume \(from the step-(\d+) checkpoint\)",
                       last)
  assert match, last
  step, saved = int(match.group(1)), int(match.group(2))
  assert 2 <= saved <= step < 12, (saved, step)
  # Only whole checkpoints, the newest the one named; no temporary folder.
  names = sorted(p.name for p in ckpt_dir.iterdir())
  assert names == sorted(str(s) for s in (saved - 2, saved) if s), names
  before = (tmp_path / "smoke" / "metrics.jsonl").read_text()
  assert before.endswith("\n")  # No line cut short.

  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0 and result.stdout == "trained\n", result.stderr
  assert f"Resumed from step {saved} in {ckpt_dir}" in result.stderr
  steps = [json.loads(line)["step"] for line in
           (tmp_path / "smoke" / "metrics.jsonl").read_text().splitlines()]
  assert steps == [2, 4, 6, 8, 10, 12], steps
