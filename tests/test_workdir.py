"""Tests of vosjax.workdir: the run lock, the stored config, the checks."""

import json
import os

import ml_collections
import pytest

from vosjax import workdir


def _config(**train):
  config = ml_collections.ConfigDict()
  config.program = "fc_i3d"
  config.seed = 0
  config.model = ml_collections.ConfigDict({"side_features": 8,
                                            "taps": ("a", "b")})
  config.train = ml_collections.ConfigDict(
      {"num_steps": 120, "log_every": 25, "checkpoint_every": 80})
  config.train.update(train)
  config.inference = ml_collections.ConfigDict({"stride": 32})
  return config


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
  held = workdir.lock(tmp_path)
  assert (tmp_path / workdir.LOCK_FILE).read_text() == f"{os.getpid()}\n"
  # flock conflicts between open file descriptions, even in one process.
  with pytest.raises(workdir.WorkdirError,
                     match=rf"in use by another run \(pid {os.getpid()},"):
    workdir.lock(tmp_path)
  held.release()
  workdir.lock(tmp_path).release()  # Free again.


def test_fresh_folder_stores_config_and_resume_may_change_cadence(tmp_path):
  assert workdir.check_config(_config(), tmp_path) == []
  stored = json.loads((tmp_path / workdir.CONFIG_FILE).read_text())
  assert stored["train"]["num_steps"] == 120 and stored["model"]["taps"] == [
      "a", "b"]
  (tmp_path / "parent").mkdir()  # A result: now the config is checked.
  changed = _config(log_every=5)
  changed.inference.stride = 16
  assert workdir.check_config(changed, tmp_path) == [
      "inference.stride", "train.log_every"]
  assert workdir.check_config(changed, tmp_path) == []  # Stored anew.


def test_resume_refuses_fields_that_decide_the_model(tmp_path):
  workdir.check_config(_config(), tmp_path)
  (tmp_path / "parent").mkdir()
  bad = _config(num_steps=60, log_every=5)
  bad.model.side_features = 16
  with pytest.raises(workdir.WorkdirError) as info:
    workdir.check_config(bad, tmp_path)
  message = str(info.value)
  assert "\n" not in message
  assert "model.side_features 8 -> 16, train.num_steps 120 -> 60." in message
  assert "log_every 25" not in message  # Allowed, so not listed.
  assert "another --workdir" in message and str(tmp_path) in message
  # The stored config is unchanged by a refused run.
  stored = json.loads((tmp_path / workdir.CONFIG_FILE).read_text())
  assert stored["train"]["num_steps"] == 120


def test_fields_added_later_resume_at_the_value_old_runs_had(tmp_path):
  """A config stored before `model.compute_dtype` existed ran in float32."""
  workdir.check_config(_config(), tmp_path)  # Stored without the field.
  (tmp_path / "parent").mkdir()
  same = _config()
  same.model.compute_dtype = "float32"
  assert workdir.check_config(same, tmp_path) == []
  (tmp_path / workdir.CONFIG_FILE).write_text(json.dumps(
      workdir.config_to_dict(_config())))  # Old again.
  bf16 = _config()
  bf16.model.compute_dtype = "bfloat16"
  with pytest.raises(workdir.WorkdirError,
                     match=r"model.compute_dtype \"float32\" -> \"bfloat16\""):
    workdir.check_config(bf16, tmp_path)


def test_folder_without_results_takes_the_new_config(tmp_path):
  workdir.check_config(_config(), tmp_path)
  workdir.lock(tmp_path).release()  # .lock and config.json are no results.
  assert workdir.check_config(_config(num_steps=60), tmp_path) == []


def test_results_without_config_are_refused(tmp_path):
  (tmp_path / "metrics.jsonl").write_text("{}\n")
  with pytest.raises(workdir.WorkdirError, match="no config.json"):
    workdir.check_config(_config(), tmp_path)


def test_is_resumable():
  assert workdir.is_resumable("finetune.num_steps")
  assert workdir.is_resumable("train.log_every")
  assert not workdir.is_resumable("train.num_steps")
  assert not workdir.is_resumable("data.num_val")
  assert not workdir.is_resumable("seed")


def test_prepare_refuses_a_file_and_another_users_default(tmp_path,
                                                          monkeypatch):
  (tmp_path / "f").write_text("")
  with pytest.raises(workdir.WorkdirError, match=r"f is a file, not a folder"):
    workdir.prepare(tmp_path / "f" / "smoke")
  root = tmp_path / "vosjax-me"
  assert workdir.prepare(root / "smoke", private_root=root).is_dir()
  assert root.stat().st_mode & 0o777 == 0o700
  monkeypatch.setattr(os, "geteuid", lambda: root.stat().st_uid + 1)
  with pytest.raises(workdir.WorkdirError, match="belongs to another user"):
    workdir.prepare(root / "smoke", private_root=root)


def test_default_workdir_is_per_user():
  assert os.path.basename(workdir.default_workdir()).startswith("vosjax-")
  assert workdir.default_workdir() != os.path.join(
      os.path.dirname(workdir.default_workdir()), "vosjax")
