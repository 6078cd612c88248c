"""A run stopped by SIGKILL, SIGTERM or SIGINT and restarted ends exactly as an uninterrupted run.

SIGKILL gives no warning: the run resumes from its last periodic checkpoint.
SIGTERM (preemption) and SIGINT (Ctrl-C) finish the step, save a checkpoint at it,
and exit with one line and status 128 + the signal number. Either way the logs of
the resumed run hold each step once, in order.
"""
import collections
import glob
import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event

from experiments import train
from experiments.metrics import read_records
from tests.conftest import REPO, run_py_args, subprocess_env

NUM_STEPS = 300
FLAGS = (
    f"--config.train.num_steps={NUM_STEPS}",
    "--config.train.checkpoint_every=50",
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


def _logged_steps(workdir):
  """{(file, split or tag): [steps in the order written]} for metrics.jsonl and the TensorBoard files."""
  logged = collections.defaultdict(list)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for row in map(json.loads, f):
      logged["jsonl", row["split"]].append(row["step"])
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    records, complete = read_records(path)
    assert complete
    for event in map(Event.FromString, records):
      for value in event.summary.value:
        logged["tensorboard", value.tag].append(event.step)
  return logged


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
  """Starts the reference run (beside the first interrupted one); calling the result waits for it."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted") / "workdir")
  with open(f"{workdir}.log", "w") as log:
    process = subprocess.Popen(run_py_args(workdir, *FLAGS, data_dir=data_dir), cwd=REPO, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)

  def finished():
    assert process.wait(timeout=300) == 0, f"see {workdir}.log"
    return workdir

  return finished


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: signal.Signals(s).name)
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_run(
    tmp_path, lm_config, start_run_py, run_py, uninterrupted, signal_number
):
  interrupted = str(tmp_path / "interrupted")
  victim = start_run_py(interrupted, *FLAGS)
  _wait_for_first_checkpoint(victim, interrupted)
  victim.send_signal(signal_number)
  status = victim.wait(timeout=300)
  stopped_at = _finished_steps(interrupted)
  assert stopped_at and stopped_at[-1] < NUM_STEPS, f"stopped too late to test resuming: {stopped_at}"
  with open(f"{interrupted}.log", encoding="utf-8") as f:
    log_lines = f.read().strip().splitlines()
  if signal_number == signal.SIGKILL:
    assert status == -signal.SIGKILL
  else:  # a clean stop: the step finished, checkpointed, one line, status 128 + signal
    assert status == 128 + signal_number
    name = signal.Signals(signal_number).name
    assert log_lines[-1] == f"interrupted: {name} at step {stopped_at[-1]}: saved a checkpoint there; the same command resumes from it"
    assert not any("Traceback" in line for line in log_lines)
    assert not os.path.exists(os.path.join(interrupted, "lock"))

  resumed = run_py(interrupted, *FLAGS)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resuming from the checkpoint at step {stopped_at[-1]} " in resumed.stdout
  reference = uninterrupted()

  lm_config.train.num_steps = NUM_STEPS
  _, _, resumed_state = train.restore_for_inference(lm_config, interrupted)
  _, _, reference_state = train.restore_for_inference(lm_config, reference)
  assert int(resumed_state.step) == int(reference_state.step) == NUM_STEPS
  # Bit-for-bit: the same batches, RNG and optimizer state, whatever the interruption.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed_state), jax.device_get(reference_state))
  with open(f"{reference}.log", encoding="utf-8") as f:
    final_line = next(line for line in f if line.startswith("final eval"))
  assert final_line in resumed.stdout

  # Each step logged once, in order, and every step the uninterrupted run logged is there.
  logged, expected = _logged_steps(interrupted), _logged_steps(reference)
  assert logged.keys() == expected.keys()
  for key, steps in logged.items():
    assert steps == sorted(set(steps)), f"{key}: a step twice or out of order"
    assert set(expected[key]) <= set(steps), key
