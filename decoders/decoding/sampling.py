"""The cache-free generation loop: one `lax.while_loop` that slides the model's context over a longer text.

The model is seen only through `next_token_logits(window, length) -> [batch, vocab]`:
the logits after the first `length` tokens of a fixed-size `window`, recomputed for every
token. `generation.generate` (a key/value cache) is the fast way; this loop is what goes
on past max_len for a model whose positions cannot (learned ones), and the baseline the
cache is measured against (`python -m experiments.bench kv_cache`).
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp

from decoders.errors import ConfigError

NextTokenLogits = Callable[[jax.Array, jax.Array], jax.Array]
Strategy = Callable[[jax.Array, jax.Array], jax.Array]


def generate(
    next_token_logits: NextTokenLogits,
    prompt: jax.Array,
    num_new_tokens: int,
    strategy: Strategy,
    rng: jax.Array,
    window: int,
) -> jax.Array:
  """Continues `prompt` [batch, prompt_len] by `num_new_tokens`; returns [batch, prompt_len + new]."""
  batch, prompt_len = prompt.shape
  if not 0 < prompt_len <= window:
    raise ConfigError(f"prompt of {prompt_len} tokens must be between 1 and the model's context of {window}")
  total = prompt_len + num_new_tokens
  # Room for at least one full window, so dynamic_slice never needs to clamp.
  buffer = jnp.zeros((batch, max(total, window)), jnp.int32).at[:, :prompt_len].set(prompt)

  def step(carry):
    position, tokens = carry
    start = jnp.clip(position - window, 0, tokens.shape[1] - window)
    context = jax.lax.dynamic_slice_in_dim(tokens, start, window, axis=1)
    logits = next_token_logits(context, position - start)
    token = strategy(logits, jax.random.fold_in(rng, position))
    return position + 1, jax.lax.dynamic_update_slice_in_dim(tokens, token[:, None], position, axis=1)

  _, tokens = jax.lax.while_loop(lambda c: c[0] < total, step, (jnp.int32(prompt_len), buffer))
  return tokens[:, :total]
