"""Where metrics go: TensorBoard event files and a JSON-lines file in the workdir, and a progress bar."""
import json
import os

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter


class MetricsWriter:
  """Writes scalars from process 0 only (every process computes the same global values)."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if self._active:
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write(self, step: int, prefix: str, scalars: dict) -> None:
    if not self._active:
      return
    values = {k: float(v) for k, v in scalars.items()}
    for name, value in values.items():
      self._tensorboard.add_scalar(f"{prefix}/{name}", value, step)
    self._jsonl.write(json.dumps({"step": step, "split": prefix, **values}) + "\n")
    self._jsonl.flush()

  def write_text(self, step: int, tag: str, text: str) -> None:
    if self._active:
      self._tensorboard.add_text(tag, text, step)

  def close(self) -> None:
    if self._active:
      self._tensorboard.close()
      self._jsonl.close()


class ProgressBar:
  """A tqdm bar over the steps of this run, showing step, loss, learning rate and throughput."""

  def __init__(self, first_step: int, num_steps: int, unit: str):
    self._unit = unit
    self._bar = tqdm.tqdm(
        total=num_steps, initial=first_step, unit="step", dynamic_ncols=True, disable=jax.process_index() != 0
    )

  def advance(self, steps: int = 1) -> None:
    self._bar.update(steps)

  def show(self, step: int, metrics: dict, units_per_second: float) -> None:
    self._bar.set_postfix_str(
        f"loss={metrics['loss']:.4f} lr={metrics['learning_rate']:.2e} {self._unit}/s={units_per_second:,.0f}",
        refresh=False,
    )

  def print(self, message: str) -> None:
    self._bar.write(message)

  def close(self) -> None:
    self._bar.close()


def mean_metrics(history: list[dict]) -> dict:
  """Averages a window of per-step metric dicts fetched from the devices."""
  return {k: float(np.mean([m[k] for m in history])) for k in history[0]}
