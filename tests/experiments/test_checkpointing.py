"""Checkpoints are never lost, hidden or poisoned.

A broken newest checkpoint is reported once, set aside under a name that never
collides (never deleted) and the one before it used; one written by another config,
bigger or smaller, stops the run and is left where it is.
"""
import glob
import os
import shutil

import jax
import numpy as np
import pytest

from decoders.errors import ConfigError
from experiments import train
from experiments.errors import IncompatibleCheckpointError
from tests.conftest import checkpoint_names


def _delete_metadata(state_dir):
  os.remove(os.path.join(state_dir, "_METADATA"))


def _truncate_data_files(state_dir):
  files = glob.glob(os.path.join(state_dir, "**", "d", "*"), recursive=True)
  assert files
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(10)


def _overwrite_data_files(state_dir):
  for path in glob.glob(os.path.join(state_dir, "**", "d", "*"), recursive=True):
    size = os.path.getsize(path)
    with open(path, "wb") as f:
      f.write(b"\0" * size)


# A failed TensorStore read leaves a callback for an asyncio loop Orbax has already closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("corrupt", [_delete_metadata, _truncate_data_files, _overwrite_data_files])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_step(trained_lm_copy, lm_config, capfd, corrupt):
  workdir = trained_lm_copy
  checkpoints = os.path.join(workdir, "checkpoints")
  newest = os.path.join(checkpoints, "6")
  corrupt(os.path.join(newest, "state"))

  _, _, state = train.restore_for_inference(lm_config, workdir)

  assert int(state.step) == 3
  assert np.isfinite(np.asarray(state.params["embed"]["embedding"])).all()
  output = capfd.readouterr()
  message = output.out + output.err
  assert message.count(f"skipping unreadable checkpoint {newest} ") == 1  # the reason, once
  assert "<class" not in message and " at 0x" not in message  # and no internal object reprs
  assert f"moved to {newest}.unreadable" in message
  assert checkpoint_names(workdir) == ["3", "6.unreadable"]
  assert os.path.isdir(os.path.join(newest + ".unreadable", "state"))  # moved aside, kept for a post-mortem


def test_setting_aside_twice_never_collides(trained_lm_copy, lm_config, capsys):
  workdir = trained_lm_copy
  checkpoints = os.path.join(workdir, "checkpoints")
  for _ in range(2):  # corrupt step 6, fall back to 3, train to 6 again, corrupt it again
    _delete_metadata(os.path.join(checkpoints, "6", "state"))
    train.train_and_evaluate(lm_config, workdir)
  assert "moved to " + os.path.join(checkpoints, "6.unreadable-2") in capsys.readouterr().out
  assert checkpoint_names(workdir) == ["3", "6", "6.unreadable", "6.unreadable-2"]


@pytest.fixture(scope="module")
def two_layer_workdir(data_dir, tmp_path_factory):
  from configs import shakespeare_char

  config = shakespeare_char.get_config("test")
  config.data.data_dir = data_dir
  config.model.num_layers = 2
  config.train.num_steps = 3
  workdir = str(tmp_path_factory.mktemp("two_layers"))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.parametrize("mode", [train.train_and_evaluate, train.evaluate, train.sample])
def test_a_checkpoint_of_a_bigger_model_is_refused_and_left_in_place(two_layer_workdir, lm_config, tmp_path, mode):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(two_layer_workdir, workdir)
  with pytest.raises(IncompatibleCheckpointError, match="it has params/block_1/attention/key/bias, which this config does not"):
    mode(lm_config, workdir)  # num_layers=1
  assert checkpoint_names(workdir) == ["3"]


def test_a_checkpoint_of_a_smaller_model_is_refused_and_left_in_place(trained_lm_copy, lm_config):
  lm_config.model.num_layers = 2
  with pytest.raises(IncompatibleCheckpointError, match="it has no params/block_1/attention/key/bias, which this config needs"):
    train.train_and_evaluate(lm_config, trained_lm_copy)
  assert checkpoint_names(trained_lm_copy) == ["3", "6"]


def test_keeping_no_checkpoint_is_refused_before_any_is_deleted(trained_lm_copy, lm_config):
  lm_config.train.keep_checkpoints = 0
  with pytest.raises(ConfigError, match="train.keep_checkpoints=0"):
    train.train_and_evaluate(lm_config, trained_lm_copy)
  assert checkpoint_names(trained_lm_copy) == ["3", "6"]


@pytest.mark.parametrize("written_scanned", [True, False])
def test_a_checkpoint_of_the_other_layer_layout_is_named_as_such(lm_config, tmp_path, written_scanned):
  # Zeros of the right tree stand in for trained values: only the layout is read before the refusal.
  workdir = str(tmp_path / "workdir")
  lm_config.model.num_layers = 2
  lm_config.model.scan_layers = written_scanned
  _, trainer, checkpointer = train.setup(lm_config, workdir)
  checkpointer.save(3, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), trainer.abstract_state), {"position": 0})
  checkpointer.wait()

  lm_config.model.scan_layers = not written_scanned
  with pytest.raises(IncompatibleCheckpointError) as raised:
    train.train_and_evaluate(lm_config, workdir)

  message = str(raised.value)
  assert "\n" not in message
  assert f"as model.scan_layers={written_scanned} writes them; this config has model.scan_layers={not written_scanned}" in message
  assert checkpoint_names(workdir) == ["3"]
