"""run.py turns each user error into one line naming the problem, not a traceback."""
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments import train


def assert_one_line_error(result, *fragments):
  """The run failed, printed no traceback, and its last word is one `error:` line holding `fragments`."""
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == errors[0]
  for fragment in fragments:
    assert fragment in errors[0]
  return errors[0]


def test_unknown_config_key(run_py, tmp_path):
  result = run_py(str(tmp_path), "--config.model.no_such_key=1")
  assert_one_line_error(result, "--config.model.no_such_key", "'no_such_key'")


def test_misspelt_config_key_suggests_the_right_one(run_py, tmp_path):
  result = run_py(str(tmp_path), "--config.train.num_stpes=3")
  assert_one_line_error(result, "--config.train.num_stpes", 'Did you mean "num_steps"')


def test_width_not_divisible_by_heads(run_py, tmp_path):
  result = run_py(str(tmp_path), "--config.model.width=30", "--config.model.num_heads=4")
  assert_one_line_error(result, "model.width=30", "model.num_heads=4")
  assert not os.path.exists(tmp_path / "checkpoints")  # failed before creating anything


def test_missing_data_source(run_py, tmp_path):
  fresh = str(tmp_path / "tfds")  # nothing prepared here, so the builder must read the source
  result = run_py(str(tmp_path / "workdir"), "--config.data.source_dir=/nonexistent", data_dir=fresh)
  assert_one_line_error(result, "'/nonexistent'", "source_dir")


def test_workdir_with_a_checkpoint_from_another_config(run_py, trained_lm, tmp_path):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(trained_lm[0], workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))

  result = run_py(workdir, "--config.model.width=48")

  checkpoint = os.path.join(workdir, "checkpoints", before[-1])
  assert_one_line_error(result, f"checkpoint {checkpoint} was written by a different config", "--workdir")
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before  # left as it was


def test_nan_loss_stops_training_and_keeps_only_finite_checkpoints(run_py, lm_config, tmp_path):
  # Warmup gives step 1 a learning rate of 0 and step 2 one of 5e29: step 2's loss is still
  # finite (computed before its update) but step 3's overflows the layer norms.
  workdir = str(tmp_path)
  result = run_py(
      workdir,
      "--config.optimizer.learning_rate=1e30",
      "--config.train.checkpoint_every=1",
      "--config.train.log_every=1",
  )
  line = assert_one_line_error(result, "became NaN/Inf at step ")
  bad_step = int(line.split("at step ")[1].split(";")[0])
  saved = sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")))
  assert saved and saved[-1] == bad_step - 1  # up to the step before, nothing from the bad step on
  assert f"checkpoint (step {saved[-1]}) is kept" in line

  _, trainer, _ = train.setup(lm_config, workdir)  # for the abstract state: the shapes are the same
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  for step in saved:
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(trainer.abstract_state)))
    leaves = jax.tree.leaves(jax.device_get((state["state"].params, state["state"].opt_states)))
    assert all(np.isfinite(leaf).all() for leaf in leaves), f"a non-finite value in checkpoint {step}"
