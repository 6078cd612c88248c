"""Forward + backward time of causal self-attention for each kernel, as a ratio to "xla".

    python -m experiments.bench attention [--contexts=256,512,1024] [--record]

Batch 8, 6 heads of 64, float32: the attention of configs/gpt2_bench.py, at longer contexts
too. Each kernel's gradient with respect to query, key and value is jitted on its own and
timed in interleaved rounds (the median of each is reported), so a shared machine's load
falls on every kernel alike. Whether "chunked" wins here decides whether a config uses it.
"""
import statistics
import time

from absl import flags

from decoders.layers import attention as attention_lib
from decoders.layers import chunked_attention

_CONTEXTS = flags.DEFINE_list("contexts", ["256", "512", "1024"], "Sequence lengths to time.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Timed calls of each kernel per context (the median is reported).")

BATCH, HEADS, HEAD_DIM = 8, 6, 64


def kernel_seconds(length: int, rounds: int) -> dict[str, float]:
  """Median seconds of one forward + backward pass of each kernel at `length` tokens."""
  import jax
  import numpy as np

  from decoders.layers import masks

  rng = np.random.default_rng(0)
  query, key, value, d_out = rng.normal(size=(4, BATCH, length, HEADS, HEAD_DIM)).astype(np.float32)
  mask = masks.causal_mask(length)

  def gradient(implementation):
    def attend(q, k, v):
      return attention_lib.attention(q, k, v, mask, implementation)

    return jax.jit(lambda q, k, v, d_out: jax.vjp(attend, q, k, v)[1](d_out))

  steps = {name: gradient(name) for name in attention_lib.IMPLEMENTATIONS}
  for step in steps.values():
    jax.block_until_ready(step(query, key, value, d_out))  # compile
  times = {name: [] for name in steps}
  for _ in range(rounds):
    for name, step in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(step(query, key, value, d_out))
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(seconds) for name, seconds in times.items()}


def run() -> list[str]:
  lines = [
      f"causal self-attention, forward + backward, batch {BATCH}, {HEADS} heads of {HEAD_DIM}, float32, "
      f"chunked blocks of {chunked_attention.BLOCK_SIZE}: median of {_ROUNDS.value} interleaved rounds (ratio to xla)"
  ]
  for length in (int(context) for context in _CONTEXTS.value):
    seconds = kernel_seconds(length, _ROUNDS.value)
    times = [f"{name} {seconds[name] * 1e3:.1f} ms ({seconds[name] / seconds['xla']:.2f}x)" for name in seconds]
    lines.append(f"context {length}: " + ", ".join(times))
  return lines
