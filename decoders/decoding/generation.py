"""The generation driver: prefill every prompt in one call, then one `lax.while_loop` step per token.

    out = generate(model, params, [[5, 9, 2], [7]], strategy=Temperature(0.0), max_new_tokens=32, eos_id=2)
    out.tokens[b, :out.num_generated[b]]       # row b's new tokens; out.log_probs likewise

The model is seen only through `tokens_to_logits(tokens, cache) -> (logits, cache)` with
an explicit key/value cache (decoders/layers/kv_cache.py): the prompts, right-padded,
fill it in one forward pass, and each iteration then feeds every row its last token.
Rows stop at their own EOS, and the loop stops as soon as every row has. The whole
generation is one compiled call; calls with the same shapes and settings reuse it.
"""
import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from decoders.errors import ConfigError
from decoders.models import decoder_lm

# (logits [batch, vocab], rng) -> tokens [batch], hashable (a frozen dataclass): see strategies.py.
Strategy = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Generation:
  tokens: np.ndarray  # [batch, max_new_tokens] int32; after a row's end: its EOS (or 0 without one)
  log_probs: np.ndarray  # [batch, max_new_tokens] float32: log p(token) under the model's own distribution
  num_generated: np.ndarray  # [batch] int32: tokens generated per row, its EOS included

  def rows(self) -> list[list[int]]:
    return [row[:count].tolist() for row, count in zip(self.tokens, self.num_generated)]


def pad_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded int32 prompts [batch, longest] and their lengths [batch]; a ConfigError for an impossible one."""
  if len(prompts) == 0:
    raise ConfigError("no prompts: generation needs at least one")
  lengths = np.array([len(p) for p in prompts], np.int32)
  if lengths.min() == 0:
    raise ConfigError(f"prompt {int(np.argmin(lengths))} is empty: generation needs at least one token to continue")
  padded = np.zeros((len(prompts), lengths.max()), np.int32)
  for row, prompt in enumerate(prompts):
    padded[row, : len(prompt)] = prompt
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
      raise ConfigError(f"prompt {row} has token id {bad[0]}, outside the model's vocabulary of {vocab_size}")
  return padded, lengths


def generate(
    model: decoder_lm.DecoderLM,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    strategy: Strategy,
    max_new_tokens: int,
    rng: jax.Array | None = None,
    eos_id: int | None = None,
) -> Generation:
  """Continues each prompt (a list of token ids) by up to `max_new_tokens`, as `strategy` picks them."""
  cfg = model.config
  if max_new_tokens < 0:
    raise ConfigError(f"max_new_tokens={max_new_tokens} must be >= 0")
  tokens, lengths = pad_prompts(prompts, cfg.vocab_size)
  capacity = int(lengths.max()) + max_new_tokens
  if capacity > cfg.max_len:
    raise ConfigError(
        f"the longest prompt ({int(lengths.max())} tokens) plus max_new_tokens={max_new_tokens} exceeds "
        f"model.max_len={cfg.max_len}"
    )
  rng = jax.random.key(0) if rng is None else rng
  tokens_out, log_probs, counts = _generate(model, strategy, max_new_tokens, eos_id, params, tokens, lengths, rng)
  return Generation(*jax.device_get((tokens_out, log_probs, counts)))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _generate(model, strategy, max_new_tokens, eos_id, params, prompts, lengths, rng):
  batch = prompts.shape[0]
  cache = decoder_lm.init_cache(model.config, batch, prompts.shape[1] + max_new_tokens)
  step_logits = functools.partial(model.apply, {"params": params}, method=decoder_lm.DecoderLM.tokens_to_logits)
  logits, cache = step_logits(prompts, cache, lengths)
  last = logits[jnp.arange(batch), lengths - 1]  # each row's logits after its own last prompt token
  fill = 0 if eos_id is None else eos_id

  def running(state):
    step, _, _, _, _, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def step_once(state):
    step, last, cache, out, log_probs, done, counts = state
    token = jnp.where(done, fill, strategy(last, jax.random.fold_in(rng, step)))
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(last), token[:, None], axis=-1)[:, 0]
    out = out.at[:, step].set(token)
    log_probs = log_probs.at[:, step].set(jnp.where(done, 0.0, log_prob))
    counts = counts + (~done).astype(jnp.int32)
    if eos_id is not None:
      done = done | (token == eos_id)
    logits, cache = step_logits(token[:, None], cache)
    return step + 1, logits[:, 0], cache, out, log_probs, done, counts

  state = (
      jnp.int32(0),
      last,
      cache,
      jnp.full((batch, max_new_tokens), fill, jnp.int32),
      jnp.zeros((batch, max_new_tokens), jnp.float32),
      jnp.zeros((batch,), jnp.bool_),
      jnp.zeros((batch,), jnp.int32),
  )
  _, _, _, out, log_probs, _, counts = jax.lax.while_loop(running, step_once, state)
  return out, log_probs, counts
