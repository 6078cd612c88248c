"""Stopping cleanly on SIGTERM (preemption) and SIGINT (Ctrl-C): finish the step, checkpoint, exit.

Cluster schedulers (TPU pods among them) announce preemption with SIGTERM and kill
the process a grace period later. The handlers here only note the signal; the
training loop asks `StopRequests.stop_after(step)` after every step, saves a
checkpoint at that step and raises `Interrupted`, which run.py reports in one line
with exit status 128 + the signal number (what a shell reports for a process that
signal ended). A second signal while that save is under way stops at once
(KeyboardInterrupt): the save in progress is lost, the checkpoints before it are not.

With several processes all must stop after the same step, or the next step's
collectives would wait forever for the ones that left. There JAX's preemption
service (started by `jax.distributed.initialize`) catches SIGTERM on any host and
agrees on a step; `multihost_utils.reached_preemption_sync_point` is True on every
host at that step. Ctrl-C is left to its default there: it is not a pod's signal.
"""
import signal

import jax
from jax.experimental import multihost_utils


class Interrupted(Exception):
  """Training stopped after `step` because of `signal_number`; a checkpoint at `step` is saved."""

  def __init__(self, signal_number: int, step: int):
    self.signal_number = signal_number
    self.step = step
    name = signal.Signals(signal_number).name
    super().__init__(f"{name} at step {step}: saved a checkpoint there; the same command resumes from it")

  @property
  def exit_status(self) -> int:
    return 128 + self.signal_number


class StopRequests:
  """A context in which SIGTERM and SIGINT ask the training loop to stop after the current step."""

  def __init__(self):
    self.signal_number: int | None = None
    self._multi_process = jax.process_count() > 1
    self._previous = {}

  def _handle(self, signal_number, frame):
    del frame
    if self.signal_number is not None:
      raise KeyboardInterrupt  # asked twice: stop now
    self.signal_number = signal_number

  def __enter__(self) -> "StopRequests":
    for number in () if self._multi_process else (signal.SIGTERM, signal.SIGINT):
      self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)

  def stop_after(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step`: on every process alike."""
    if self._multi_process and multihost_utils.reached_preemption_sync_point(step):
      self.signal_number = signal.SIGTERM
    return self.signal_number is not None
