"""run.py turns each user error into one line naming the problem, in every mode, never a traceback."""
import concurrent.futures
import dataclasses
import os
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import train
from tests.conftest import LM_CONFIG, REPO, checkpoint_names, run_py_args, run_py_to_completion, subprocess_env


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


@dataclasses.dataclass(frozen=True)
class Case:
  flags: tuple[str, ...]
  fragments: tuple[str, ...]
  config: str = LM_CONFIG
  devices: int = 1
  creates_nothing: bool = True  # fails before the workdir exists


# One case per class of mistake; tests/experiments/test_config_checks.py holds the list of keys and values.
CASES = {
    "unknown key": Case(("--config.model.no_such_key=1",), ("--config.model.no_such_key", "'no_such_key'")),
    "misspelt key": Case(("--config.train.num_stpes=3",), ("--config.train.num_stpes", 'Did you mean "num_steps"')),
    "value of the wrong type": Case(("--config.train.num_steps=abc",), ("--config.train.num_steps=abc", "'abc'")),
    "unknown mode": Case(("--mode=fit",), ("--mode=fit", "train|eval|sample|export|inspect")),
    "config file missing": Case((), ("--config=configs/nope.py", "does not exist"), config="configs/nope.py"),
    "config path a directory": Case((), ("--config=configs", "is a directory"), config="configs"),
    "unknown variant": Case((), ("unknown variant 'tiny'",), config="configs/shakespeare_char.py:tiny"),
    "bad value, train mode": Case(("--config.train.log_every=0",), ("train.log_every=0",)),
    "bad value, eval mode": Case(("--mode=eval", "--config.optimizer.learning_rate=inf"), ("optimizer.learning_rate=inf",)),
    "bad value, sample mode": Case(("--mode=sample", "--config.sample.temperature=-1"), ("sample.temperature=-1.0",)),
    "width not divisible by heads": Case(("--config.model.width=30", "--config.model.num_heads=4"), ("model.width=30", "model.num_heads=4")),
    "heads over a tensor axis of 4": Case(
        ("--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.tensor=4"), ("model.num_heads=2", "mesh.tensor=4"), devices=8
    ),
    "autoencoder over a tensor axis": Case(
        ("--config.mesh.data=1", "--config.mesh.tensor=2"),
        ("up_1/conv/bias has 1 entries", "mesh.tensor=2"),
        config="configs/autoencoder.py:conv,test",
        devices=2,
        creates_nothing=False,  # a parameter's shape is known once the data is: after the workdir is made
    ),
    "prompt outside the vocabulary": Case(("--config.sample.prompt=☃",), ("sample.prompt='☃'", "82-character vocabulary"), creates_nothing=False),
    "eval without a checkpoint": Case(("--mode=eval",), ("no checkpoint in", "train first")),
    "prompts file missing": Case(
        ("--mode=sample", "--prompts_file=/nonexistent/prompts.txt"), ("--prompts_file=/nonexistent/prompts.txt", "No such file")
    ),
    "prompt outside sample mode": Case(("--prompt=ROMEO",), ("--prompt and --prompts_file are for --mode=sample",)),
    "a filter beam search ignores": Case(
        ("--mode=sample", "--config.sample.strategy=beam", "--config.sample.top_k=5"), ("sample.top_k=5", "strategy='sample' only")
    ),
    "one of several processes, without its id": Case(
        ("--coordinator_address=127.0.0.1:1234", "--num_processes=2"), ("--coordinator_address needs", "--process_id")
    ),
    "a process id beyond the job": Case(
        ("--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=2"), ("--process_id=2 must be in [0",)
    ),
    "data dir under a file": Case(("--config.data.data_dir={file}/tfds",), ("a_file/tfds", "Not a directory"), creates_nothing=False),
}


@pytest.fixture(scope="module")
def results(data_dir, tmp_path_factory):
  """Every case's CompletedProcess, three run.py processes at a time."""
  root = tmp_path_factory.mktemp("run_py_cases")
  a_file = root / "a_file"
  a_file.write_text("")

  def run(name):
    case = CASES[name]
    workdir = str(root / name.replace(" ", "_").replace(",", ""))
    flags = [flag.format(file=a_file) for flag in case.flags]
    result = run_py_to_completion(workdir, *flags, data_dir=data_dir, config=case.config, devices=case.devices)
    return result, os.path.exists(workdir)

  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    return dict(zip(CASES, pool.map(run, CASES)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_mistake_is_one_line(results, name):
  result, workdir_exists = results[name]
  assert_one_line_error(result, *CASES[name].fragments)
  if CASES[name].creates_nothing:
    assert not workdir_exists


def test_every_mode_but_inspect_needs_a_workdir(data_dir):
  command = [arg for arg in run_py_args("unused", data_dir=data_dir) if not arg.startswith("--workdir=")]
  result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=60)
  assert_one_line_error(result, "--workdir is required, except with --mode=inspect")


def test_workdir_under_a_file(run_py, tmp_path):
  (tmp_path / "a_file").write_text("")
  workdir = str(tmp_path / "a_file" / "workdir")
  assert_one_line_error(run_py(workdir), f"--workdir={workdir}", "Not a directory")


def test_missing_data_source(run_py, tmp_path):
  fresh = str(tmp_path / "tfds")  # nothing prepared here, so the builder must read the source
  result = run_py(str(tmp_path / "workdir"), "--config.data.source_dir=/nonexistent", data_dir=fresh)
  assert_one_line_error(result, "'/nonexistent'", "source_dir")


def test_workdir_with_a_checkpoint_from_another_config(run_py, trained_lm_copy):
  workdir = trained_lm_copy
  before = checkpoint_names(workdir)

  result = run_py(workdir, "--config.model.width=48")

  checkpoint = os.path.join(workdir, "checkpoints", before[-1])
  line = assert_one_line_error(result, f"checkpoint {checkpoint} was written by a different config", "--workdir")
  assert "params/block_0/attention/key/bias is float32[2, 16] there, float32[2, 24] in this config" in line
  assert "config changed since the last run in this workdir: model.width: 32 -> 48" in result.stdout
  assert checkpoint_names(workdir) == before  # left as it was


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
