"""Compile time of the train step against depth, with the layers in a Python loop or in one nn.scan.

    python -m experiments.bench compile --config=configs/shakespeare_char.py [--layers=2,24] [--record]

A loop traces and compiles every block, so its compile time grows with depth; a scan
compiles one block whatever the depth. For each depth and layout this lowers the
trainer's jitted step (`.lower`: trace to StableHLO) and compiles it (`.compile`:
XLA), timed apart, and prints the deepest/shallowest ratio of their sum; the CPU
seconds of the process are printed too, as they suffer less from a shared machine.
The compiled step's temporary memory shows what `model.remat` saves in each layout:

    python -m experiments.bench compile --layers=8 --config.model.remat=full --config.data.context_length=256 \
        --config.model.max_len=256 --config.data.batch_size=16
"""
import tempfile
import time

from absl import flags

from experiments.bench import common

_LAYERS = flags.DEFINE_list("layers", ["2", "24"], "Depths (model.num_layers) to compile.")


def compile_seconds(config) -> tuple[float, float, float, int]:
  """Wall-clock seconds lowering and compiling the train step of `config`, the CPU seconds of both,
  and the compiled step's temporary memory in bytes (XLA's buffer assignment: what remat shrinks)."""
  import jax

  from experiments.data.pipeline import BatchIterator
  from experiments.train import setup

  with tempfile.TemporaryDirectory() as workdir:
    task, trainer, _ = setup(config, workdir)
  batch = next(BatchIterator(task.train_batches(config.seed, jax.process_index(), jax.process_count())))
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=trainer.batch_sharding), batch)
  start, cpu_start = time.perf_counter(), time.process_time()
  lowered = trainer.train_step.lower(trainer.abstract_state, batch)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  seconds = lowered_at - start, time.perf_counter() - lowered_at, time.process_time() - cpu_start
  return *seconds, compiled.memory_analysis().temp_size_in_bytes


def run() -> list[str]:
  config = common.CONFIG.value
  depths = [int(depth) for depth in _LAYERS.value]
  model = config.model
  lines = [
      f"train step of {config.model.preset}, width {model.width}, {model.num_heads} heads, MLP {model.mlp_dim}, "
      f"context {config.data.context_length}, batch {config.data.batch_size}, remat {model.remat}",
      "| layers | layout | lower (s) | compile (s) | total (s) | CPU (s) | temporaries (MiB) |",
      "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  # A first compile pays one-time costs (tracing caches, XLA's start-up) that are no layout's.
  config.model.num_layers, config.model.scan_layers = min(depths), False
  compile_seconds(config)
  totals = {}  # (scan, depth) -> (wall, CPU) seconds
  for scan in (False, True):
    for depth in depths:
      config.model.num_layers, config.model.scan_layers = depth, scan
      lower, compile_, cpu, temporaries = compile_seconds(config)
      totals[scan, depth] = lower + compile_, cpu
      layout = "nn.scan" if scan else "loop"
      lines.append(
          f"| {depth} | {layout} | {lower:.2f} | {compile_:.2f} | {lower + compile_:.2f} | {cpu:.2f} | {temporaries / 2**20:.0f} |"
      )
  deepest, shallowest = max(depths), min(depths)
  for scan in (False, True) if deepest > shallowest else ():
    (wall, cpu), (base_wall, base_cpu) = totals[scan, deepest], totals[scan, shallowest]
    lines.append(
        f"{'nn.scan' if scan else 'loop'}: {deepest} layers take {wall / base_wall:.1f}x the wall time "
        f"({cpu / base_cpu:.1f}x the CPU time) of {shallowest}"
    )
  return lines
