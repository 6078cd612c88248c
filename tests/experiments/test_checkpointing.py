"""A broken newest checkpoint is reported, set aside (never deleted) and the one before it used."""
import glob
import os
import shutil

import numpy as np
import pytest

from experiments import train


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
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_step(trained_lm, lm_config, tmp_path, capsys, corrupt):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(trained_lm[0], workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  newest = os.path.join(checkpoints, "6")
  corrupt(os.path.join(newest, "state"))

  _, _, state = train.restore_for_inference(lm_config, workdir)

  assert int(state.step) == 3
  assert np.isfinite(np.asarray(state.params["embed"]["embedding"])).all()
  message = capsys.readouterr().out
  assert f"skipping unreadable checkpoint {newest} " in message
  assert f"moved to {newest}.unreadable" in message
  assert sorted(os.listdir(checkpoints)) == ["3", "6.unreadable"]
  assert os.path.isdir(os.path.join(newest + ".unreadable", "state"))  # moved aside, kept for a post-mortem
