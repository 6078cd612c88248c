"""The workdir: one run at a time (a lock), the run's config saved, changes since the last run listed."""
import json
import os
import subprocess
import sys

import pytest

from experiments import train, workdir
from experiments.errors import IncompatibleCheckpointError, UserError


def test_a_workdir_held_by_a_live_run_is_refused(lm_config, tmp_path):
  with workdir.lock(str(tmp_path)):
    with pytest.raises(UserError, match=f"is in use by process {os.getpid()} on "):
      train.train_and_evaluate(lm_config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")  # refused before writing anything


def test_the_lock_of_a_process_that_is_gone_is_taken_over(tmp_path, capsys):
  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  pid = int(gone.stdout)
  (tmp_path / workdir.LOCK_FILE).write_text(json.dumps({"pid": pid, "host": "somewhere", "started": "then"}))

  with workdir.lock(str(tmp_path)):
    holder = json.loads((tmp_path / workdir.LOCK_FILE).read_text())
  assert holder["pid"] == os.getpid()
  assert f"taking over the lock of process {pid} on somewhere" in capsys.readouterr().out
  assert not os.path.exists(tmp_path / workdir.LOCK_FILE)  # released: removed on the way out


def test_the_lock_is_released_when_the_run_fails(tmp_path):
  with pytest.raises(UserError, match="a failure inside"):
    with workdir.lock(str(tmp_path)):
      raise UserError("a failure inside")
  assert not os.path.exists(tmp_path / workdir.LOCK_FILE)
  with workdir.lock(str(tmp_path)):  # free again
    pass


def _saved_config(run) -> str:
  with open(os.path.join(run, workdir.CONFIG_FILE), encoding="utf-8") as f:
    return f.read()


def test_config_changes_are_listed_and_the_config_saved(trained_lm_copy, lm_config, capsys):
  run = trained_lm_copy
  saved = json.loads(_saved_config(run))
  assert saved["optimizer"]["learning_rate"] == lm_config.optimizer.learning_rate

  lm_config.optimizer.learning_rate = 1e-3  # allowed: reported, and the run goes on
  lm_config.train.num_steps = 8
  train.train_and_evaluate(lm_config, run)

  out = capsys.readouterr().out
  assert "config changed since the last run in this workdir: optimizer.learning_rate: 0.003 -> 0.001" in out
  assert "config changed since the last run in this workdir: train.num_steps: 6 -> 8" in out
  assert out.count("config changed") == 2
  saved = json.loads(_saved_config(run))
  assert saved["optimizer"]["learning_rate"] == 1e-3 and saved["train"]["num_steps"] == 8


def test_a_changed_shape_keeps_the_saved_config(trained_lm_copy, lm_config):
  before = _saved_config(trained_lm_copy)
  lm_config.model.mlp_dim = 128
  with pytest.raises(IncompatibleCheckpointError):
    train.train_and_evaluate(lm_config, trained_lm_copy)
  assert _saved_config(trained_lm_copy) == before  # still the config of the checkpoints


@pytest.mark.parametrize("make_bad", ["parent is a file", "is a file"])
def test_a_directory_that_cannot_be_made_is_named(tmp_path, make_bad):
  (tmp_path / "file").write_text("")
  path = str(tmp_path / "file" / "sub") if make_bad == "parent is a file" else str(tmp_path / "file")
  with pytest.raises(UserError, match=f"--workdir={path} "):
    workdir.make_directory(path, "--workdir")
