"""A run killed with SIGKILL and restarted ends with exactly the parameters of an uninterrupted run."""
import os
import time

import jax
import numpy as np

from experiments import train

NUM_STEPS = 40
FLAGS = (
    f"--config.train.num_steps={NUM_STEPS}",
    "--config.train.checkpoint_every=5",
    "--config.train.eval_every=1000",  # no periodic evaluation: the test is about the train state
)


def _finished_steps(workdir):
  """Steps of complete checkpoints (Orbax renames a checkpoint to its bare step number when done)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _wait_for_first_checkpoint(process, workdir, timeout=300):
  deadline = time.monotonic() + timeout
  while not _finished_steps(workdir):
    assert process.poll() is None, f"run.py exited ({process.returncode}) before its first checkpoint; see {workdir}.log"
    assert time.monotonic() < deadline, "no checkpoint within the timeout"
    time.sleep(0.01)


def test_killed_and_resumed_run_equals_an_uninterrupted_run(tmp_path, lm_config, start_run_py, run_py):
  interrupted, uninterrupted = str(tmp_path / "interrupted"), str(tmp_path / "uninterrupted")
  reference = start_run_py(uninterrupted, *FLAGS)  # meanwhile, on the other core

  victim = start_run_py(interrupted, *FLAGS)
  _wait_for_first_checkpoint(victim, interrupted)
  victim.kill()  # SIGKILL: no cleanup, possibly mid-save
  victim.wait()
  killed_at = _finished_steps(interrupted)
  assert killed_at and killed_at[-1] < NUM_STEPS, f"killed too late to test resuming: {killed_at}"

  resumed = run_py(interrupted, *FLAGS)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resuming from the checkpoint at step {killed_at[-1]} " in resumed.stdout
  assert reference.wait(timeout=300) == 0

  lm_config.train.num_steps = NUM_STEPS
  _, _, resumed_state = train.restore_for_inference(lm_config, interrupted)
  _, _, reference_state = train.restore_for_inference(lm_config, uninterrupted)
  assert int(resumed_state.step) == int(reference_state.step) == NUM_STEPS
  # Bit-for-bit: the same batches, RNG and optimizer state, whatever the interruption.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed_state), jax.device_get(reference_state))
  with open(f"{uninterrupted}.log", encoding="utf-8") as f:
    final_line = next(line for line in f if line.startswith("final eval"))
  assert final_line in resumed.stdout
