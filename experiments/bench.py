"""Benchmarks, measured in one run so the ratio survives a noisy, shared machine.

    python -m experiments.bench train --config=configs/shakespeare_char.py [--steps=30] [--record]

`train` measures this machine's float32 matmul throughput (the peak we divide by),
then the training throughput of the config's train step, and prints units/s
(tokens/s for sequences, examples/s for images) and model-FLOPs utilisation:
analytic model FLOPs per second / the measured matmul peak. `--record` appends
the result, with the command and the machine, to BENCHMARKS.md.
"""
import datetime
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shakespeare_char.py", "Config to benchmark.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 30, "Timed training steps (after 3 warm-up steps).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Matmul timing repeats (the median is reported).")
_RECORD = flags.DEFINE_bool("record", False, "Append the result to BENCHMARKS.md.")


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
  """Median float32 FLOP/s of a [size, size] x [size, size] jitted matmul."""
  import jax
  import jax.numpy as jnp

  a = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(5):
      out = matmul(a, a)
    out.block_until_ready()
    rates.append(5 * 2 * size**3 / (time.perf_counter() - start))
  return statistics.median(rates)


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


def machine() -> str:
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      info = f.read().splitlines()
    cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    # Machines sold under one model name differ ~2.5x in matmul speed by their widest vector unit.
    flags = next(line.split(":", 1)[1].split() for line in info if line.startswith("flags"))
    cpu += next((f" with {simd.upper()}" for simd in ("avx512f", "avx2") if simd in flags), "")
  except (OSError, StopIteration):
    pass
  return f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} on {jax.default_backend()}"


def main(argv):
  if argv[1:] != ["train"]:
    raise app.UsageError("usage: python -m experiments.bench train --config=configs/X.py [--steps=N] [--record]")
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  peak = matmul_peak(repeats=_REPEATS.value)
  result = train_throughput(config, _STEPS.value)
  peak_after = matmul_peak(repeats=_REPEATS.value)  # bracket the run: noise shows as a gap
  peak = max(peak, peak_after)
  task = result["task"]
  lines = [
      f"machine: {machine()}",
      f"f32 matmul peak (2048^3, median, max of before/after): {peak / 1e9:.0f} GFLOP/s",
      f"train step: {result['step_seconds'] * 1e3:.1f} ms (median of 5 chunks), "
      f"{result['units_per_second']:,.0f} {task.unit}/s on {result['devices']} device(s)",
  ]
  if result["model_flops_per_second"]:
    mfu = result["model_flops_per_second"] / peak
    lines.append(f"model FLOP/s: {result['model_flops_per_second'] / 1e9:.1f} G = {mfu:.1%} of the measured matmul peak (MFU)")
  lines.append(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
  print("\n".join(lines))
  if _RECORD.value:
    command = "python -m experiments.bench " + " ".join(sys.argv[1:])
    with open("BENCHMARKS.md", "a", encoding="utf-8") as f:
      f.write(f"\n## {datetime.date.today()} — `{command}`\n\n" + "".join(f"- {line}\n" for line in lines))


if __name__ == "__main__":
  app.run(main)
