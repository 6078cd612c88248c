"""A `jax.profiler` trace of a few training steps, written into the workdir.

    --config.train.profile_steps=5   # trace 5 steps, after 2 that compile and warm up

The trace lands in <workdir>/profile/plugins/profile/<time>/: the `.xplane.pb` file is
what TensorBoard's profile plugin reads (`tensorboard --logdir <workdir>/profile`), and
the `.trace.json.gz` file opens in Perfetto (ui.perfetto.dev). Each step is marked with
a StepTraceAnnotation, so the viewers show step boundaries.
"""
import os

import jax

WARMUP_STEPS = 2  # the first step compiles; the second still pays for first-touch allocations


class StepProfiler:
  """Starts tracing before step `first + WARMUP_STEPS + 1` and stops after `num_steps` steps (0: never)."""

  def __init__(self, workdir: str, first_step: int, num_steps: int):
    self.directory = os.path.join(workdir, "profile")
    self.start = first_step + WARMUP_STEPS
    self.stop = self.start + num_steps
    self.enabled = num_steps > 0
    self.active = False

  def step(self, step: int) -> jax.profiler.StepTraceAnnotation:
    """Call with the number of steps done so far, before each step; the step runs inside the returned context."""
    if self.enabled and step == self.start:
      jax.profiler.start_trace(self.directory)
      self.active = True
    return jax.profiler.StepTraceAnnotation("train", step_num=step + 1)

  def step_done(self, step: int, state) -> None:
    """Call after each step with the steps done; stops the trace once the traced steps have finished computing."""
    if self.active and step == self.stop:
      jax.block_until_ready(state)  # the trace must hold the device work, not only its dispatch
      self.close()
      print(f"profile of steps {self.start + 1}-{self.stop} written to {self.directory}", flush=True)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
