"""Training throughput of a config's compiled train step, and its model-FLOPs utilisation.

    python -m experiments.bench train --config=configs/shakespeare_char.py [--steps=30] [--record]

Measures this machine's float32 matmul throughput (the peak we divide by) before and
after the training measurement, then prints units/s (tokens/s for sequences,
examples/s for images) and MFU: analytic model FLOPs per second / the measured peak.
"""
import statistics
import tempfile
import time

from absl import flags

from experiments.bench import common

_STEPS = flags.DEFINE_integer("steps", 30, "Timed training steps (after 3 warm-up steps).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Matmul timing repeats (the median is reported).")


def train_throughput(config, steps: int) -> dict:
  """Median step time of the config's compiled train step, timed in 5 chunks after warm-up."""
  import jax

  from experiments import sharding
  from experiments.data.pipeline import BatchIterator
  from experiments.train import setup

  with tempfile.TemporaryDirectory() as workdir:
    task, trainer, _ = setup(config, workdir)
  state = trainer.init(jax.random.key(config.seed))
  batches = BatchIterator(task.train_batches(config.seed, jax.process_index(), jax.process_count()))
  device_batches = [sharding.global_batch(next(batches), trainer.batch_sharding) for _ in range(8)]
  for i in range(3):
    state, metrics = trainer.train_step(state, device_batches[i])
  jax.block_until_ready(metrics)
  chunk = max(1, steps // 5)
  step_times = []
  for c in range(5):
    start = time.perf_counter()
    for i in range(chunk):
      state, metrics = trainer.train_step(state, device_batches[(c * chunk + i) % len(device_batches)])
    jax.block_until_ready(metrics)
    step_times.append((time.perf_counter() - start) / chunk)
  step_time = statistics.median(step_times)
  return {
      "task": task,
      "step_seconds": step_time,
      "units_per_second": task.units_per_step() / step_time,
      "model_flops_per_second": (task.model_flops_per_step() or 0.0) / step_time,
      "devices": jax.device_count(),
  }


def run() -> list[str]:
  peak = common.matmul_peak(repeats=_REPEATS.value)
  result = train_throughput(common.CONFIG.value, _STEPS.value)
  peak = max(peak, common.matmul_peak(repeats=_REPEATS.value))  # bracket the run: noise shows as a gap
  task = result["task"]
  lines = [
      f"f32 matmul peak (2048^3, median, max of before/after): {peak / 1e9:.0f} GFLOP/s",
      f"train step: {result['step_seconds'] * 1e3:.1f} ms (median of 5 chunks), "
      f"{result['units_per_second']:,.0f} {task.unit}/s on {result['devices']} device(s)",
  ]
  if result["model_flops_per_second"]:
    mfu = result["model_flops_per_second"] / peak
    lines.append(f"model FLOP/s: {result['model_flops_per_second'] / 1e9:.1f} G = {mfu:.1%} of the measured matmul peak (MFU)")
  return lines + [common.peak_memory_line()]
