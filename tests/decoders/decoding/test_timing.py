"""The stopwatch splits a first (compiling) call from a cached one."""
import jax
import jax.numpy as jnp

from decoders.decoding import timing


def test_the_first_call_compiles_and_the_second_only_runs():
  square = jax.jit(lambda x: jnp.tanh(x) @ x.T)
  x = jnp.ones((64, 64))
  with timing.Stopwatch() as first:
    square(x).block_until_ready()
  with timing.Stopwatch() as second:
    square(x).block_until_ready()
  assert first.compilations == 1 and first.compile_seconds > 0
  assert 0 <= first.run_seconds <= first.total_seconds
  assert second.compilations == 0 and second.compile_seconds == 0 and second.run_seconds == second.total_seconds
  y = jnp.ones((32, 64))
  with timing.Stopwatch() as other_shape:
    square(y).block_until_ready()
  assert other_shape.compilations == 1
