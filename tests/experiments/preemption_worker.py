"""One of two processes of tests/experiments/test_preemption.py: `python preemption_worker.py PORT ID DIR`.

Steps a loop with a cross-process reduction each step (as a sharded train step has)
under `StopRequests`, until it says stop; writes DIR/ready<ID> once it is running.
"""
import os
import sys
import time

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, process_id, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec  # noqa: E402

from experiments import preemption  # noqa: E402

mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))
with preemption.StopRequests() as stop:
  for step in range(1, 1_000_000):
    local = np.full((jax.local_device_count(),), step, np.float32)
    float(total(jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")), local)))
    if step == 20:
      open(os.path.join(directory, f"ready{process_id}"), "w").close()
    if stop.stop_after(step):
      print(f"stopped after step {step} on {stop.signal_number}", flush=True)
      break
    time.sleep(0.002)
