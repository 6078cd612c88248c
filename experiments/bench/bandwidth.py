"""This machine's memory read bandwidth, and the decoding speed it allows: the roofline's memory roof.

    python -m experiments.bench bandwidth [--bandwidth_gib=1] [--record]

Generating a token at batch 1 multiplies one vector by every weight matrix, so each step
reads every weight once and does two FLOPs per weight read: far below any CPU's
FLOPs-per-byte ridge point, so memory bandwidth, not arithmetic, bounds its speed (the
roofline model: Williams et al. 2009, sec. 2). The bound is

    tokens/s <= batch * bandwidth / (weight bytes + batch * KV cache bytes read per row)

since one step serves every row of the batch from one read of the weights, while each
row reads its own keys and values. The bandwidth is measured, like the matmul peak of
the other benchmarks, in the same run: a jitted sum of a 1 GiB float32 array that is far
larger than any cache. XLA:CPU runs one reduction on one thread but independent ones
side by side, so the array is held as one separate buffer per core (slices of one buffer
would be copied first) and summed in one call: this reads with every core, as a decoder
running on all of them does.
"""
import os
import statistics
import time

from absl import flags

_GIB = flags.DEFINE_float("bandwidth_gib", 1.0, "GiB of float32 summed per bandwidth measurement.")


def read_bandwidth(gib: float = 1.0, repeats: int = 7) -> float:
  """Median bytes/s of a jitted float32 sum of `gib` GiB, one buffer per core summed side by side."""
  import jax
  import jax.numpy as jnp

  parts = os.cpu_count() or 1
  length = int(gib * 2**30) // 4 // parts
  buffers = [jnp.full((length,), float(part), jnp.float32) for part in range(parts)]
  total = jax.jit(lambda buffers: sum(jnp.sum(b) for b in buffers))
  total(buffers).block_until_ready()  # compile, and fault every page in
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    total(buffers).block_until_ready()
    times.append(time.perf_counter() - start)
  return parts * length * 4 / statistics.median(times)


def bound_tokens_per_second(weight_bytes: float, kv_bytes_per_row: float, batch: int, bandwidth: float) -> float:
  """The most tokens/s a batch of `batch` rows can decode when every step reads all weights and each row's cache."""
  return batch * bandwidth / (weight_bytes + batch * kv_bytes_per_row)


def tree_bytes(tree) -> int:
  """Bytes of every array in a pytree (parameters as stored: their dtype decides what a step reads)."""
  import jax

  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def run() -> list[str]:
  first = read_bandwidth(_GIB.value)
  second = read_bandwidth(_GIB.value)
  return [
      f"memory read bandwidth ({_GIB.value:g} GiB float32 jitted sum over {os.cpu_count()} buffers, median of 7): "
      f"{first / 1e9:.1f} GB/s, again {second / 1e9:.1f} GB/s"
  ]
