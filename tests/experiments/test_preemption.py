"""With several processes, SIGTERM on one host stops every host after the same step.

Two local processes form one JAX job over the CPU (`jax.distributed.initialize`, gloo
collectives), as hosts of a pod do; only one of them is sent SIGTERM. A host that
stopped alone would leave the other waiting forever in the next step's collective.
"""
import os
import signal
import subprocess
import sys
import time

import portpicker

from tests.conftest import REPO, subprocess_env

WORKER = os.path.join(os.path.dirname(__file__), "preemption_worker.py")


def test_sigterm_on_one_host_stops_all_hosts_after_the_same_step(tmp_path):
  port = portpicker.pick_unused_port()
  env = subprocess_env(devices=2)
  workers = [
      subprocess.Popen([sys.executable, WORKER, str(port), str(i), str(tmp_path)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)
  ]
  try:
    deadline = time.monotonic() + 120
    while not all(os.path.exists(tmp_path / f"ready{i}") for i in range(2)):
      assert all(w.poll() is None for w in workers) and time.monotonic() < deadline, "the two processes did not start"
      time.sleep(0.05)
    workers[1].send_signal(signal.SIGTERM)
    outputs = [w.communicate(timeout=120)[0] for w in workers]
  finally:
    for w in workers:
      w.kill()
  assert [w.returncode for w in workers] == [0, 0], outputs
  stops = [next(line for line in out.splitlines() if line.startswith("stopped after step")) for out in outputs]
  assert stops[0] == stops[1], stops  # the same step on both, and both saw it as SIGTERM
  assert stops[0].endswith(f"on {int(signal.SIGTERM)}")
