"""What every benchmark shares: the machine's measured matmul peak and its description."""
import datetime
import os
import platform
import resource
import statistics
import time

from ml_collections import config_flags

# The config a benchmark trains (train, compile). absl allows a flag name once, so it lives here.
CONFIG = config_flags.DEFINE_config_file("config", "configs/shakespeare_char.py", "Config to benchmark.", lock_config=True)


def matmul_peak(size: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
  """Median FLOP/s of a [size, size] x [size, size] jitted matmul."""
  import jax
  import jax.numpy as jnp

  a = jnp.ones((size, size), dtype)
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


def timed(step, repeats: int = 5) -> float:
  """Median seconds per call of `step()` (which must block on its result) over `repeats` calls."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


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
  backend = jax.default_backend()
  accelerator = "" if backend == "cpu" else f" ({len(jax.devices())} x {jax.devices()[0].device_kind})"
  return f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} on {backend}{accelerator}"


def peak_memory_line() -> str:
  return f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def record(command: str, lines: list[str], path: str = "BENCHMARKS.md") -> None:
  """Appends a result under a heading with the date and the command that produced it."""
  with open(path, "a", encoding="utf-8") as f:
    body, in_table = "", False
    for line in lines:  # table rows stay rows, set apart by blank lines; every other line is a bullet
      if line.startswith("|") != in_table:
        in_table = not in_table
        body += "\n" if body else ""
      body += f"{line}\n" if in_table else f"- {line}\n"
    f.write(f"\n## {datetime.date.today()} — `{command}`\n\n{body}")
