"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation", sec. 4, eq. 5).

Among the k most probable next tokens v, pick the one that maximises

    (1 - alpha) * p(v | x)  -  alpha * max_j cos(h_v, h_j)

where h_v is the final hidden state the model computes for v appended to the sequence and
h_j ranges over the final hidden states of every token so far, the prompt's included. The
second term, the degeneration penalty, steers away from tokens whose representation
repeats the context; alpha = 0 is greedy decoding.

Each step runs the k candidates of every row as one batch [batch * k, 1] through
`tokens_to_hidden` on k copies of the row's cache (KVCache.select_rows), then keeps the
chosen candidate's cache row and hidden state: one forward pass per step, no rerun. Past
hidden states live in a buffer [batch, capacity, width]. One `lax.while_loop`; rows stop
at their own EOS and then emit it (or 0) as generate() does.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.decoding import seam


@dataclasses.dataclass(frozen=True)
class Contrastive:
  k: int = 4  # candidates per step (the vocabulary, when larger)
  alpha: float = 0.6  # weight of the degeneration penalty, in [0, 1]

  def __post_init__(self):
    if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
      raise ConfigError(f"Contrastive: k={self.k!r} must be an integer >= 1")
    if not 0 <= self.alpha <= 1:
      raise ConfigError(f"Contrastive: alpha={self.alpha} must be in [0, 1]")


def _max_cosine(candidates: jax.Array, context: jax.Array, context_lengths: jax.Array) -> jax.Array:
  """max_j cos(candidate, context_j) [batch, k] over each row's first `context_lengths` states [batch, capacity, d]."""
  unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  cosines = jnp.einsum("bkd,bcd->bkc", unit(candidates), unit(context))
  valid = jnp.arange(context.shape[1])[None, None] < context_lengths[:, None, None]
  return jnp.max(jnp.where(valid, cosines, -jnp.inf), axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def search(
    model, strategy: Contrastive, max_new_tokens: int, eos_id: int | None, params, prompts, lengths, sources=None,
    source_lengths=None,
):
  """tokens, log_probs [batch, max_new_tokens] and counts [batch], as generate()'s loop returns them; `sources` for
  an encoder-decoder."""
  cfg = model.config
  batch, capacity, k = prompts.shape[0], prompts.shape[1] + max_new_tokens, min(strategy.k, cfg.vocab_size)
  tokens_to_hidden, unembed_hidden = (seam.method(model, params, name) for name in ("tokens_to_hidden", "unembed_hidden"))
  cache = seam.start_cache(model, params, batch, capacity, sources=sources, source_lengths=source_lengths)
  hidden, cache = tokens_to_hidden(prompts, cache, lengths)
  context = jnp.zeros((batch, capacity, hidden.shape[-1]), hidden.dtype).at[:, : prompts.shape[1]].set(hidden)
  logits = unembed_hidden(hidden[jnp.arange(batch), lengths - 1])
  fill = 0 if eos_id is None else eos_id
  rows = jnp.arange(batch)

  def running(state):
    step, _, _, _, _, _, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def step_once(state):
    step, logits, cache, context, out, log_probs, done, counts = state
    probabilities = jax.nn.softmax(logits[:, : cfg.vocab_size])
    top_probabilities, candidates = jax.lax.top_k(probabilities, k)  # [batch, k]
    copies = cache.select_rows(jnp.repeat(rows, k))  # k copies of each row's cache, one per candidate
    hidden, copies = tokens_to_hidden(candidates.reshape(-1, 1), copies)
    hidden = hidden.reshape(batch, k, -1)
    penalty = _max_cosine(hidden.astype(jnp.float32), context.astype(jnp.float32), cache.lengths)
    choice = jnp.argmax((1 - strategy.alpha) * top_probabilities - strategy.alpha * penalty, axis=-1)
    chosen = candidates[rows, choice]
    cache = copies.select_rows(rows * k + choice)
    context = context.at[rows, cache.lengths - 1].set(hidden[rows, choice])
    token = jnp.where(done, fill, chosen)
    out = out.at[:, step].set(token)
    log_prob = jax.nn.log_softmax(logits)[rows, chosen]
    log_probs = log_probs.at[:, step].set(jnp.where(done, 0.0, log_prob))
    counts = counts + (~done).astype(jnp.int32)
    if eos_id is not None:
      done = done | (token == eos_id)
    logits = unembed_hidden(hidden[rows, choice])
    return step + 1, logits, cache, context, out, log_probs, done, counts

  state = (
      jnp.int32(0), logits, cache, context, jnp.full((batch, max_new_tokens), fill, jnp.int32),
      jnp.zeros((batch, max_new_tokens), jnp.float32), jnp.zeros((batch,), jnp.bool_), jnp.zeros((batch,), jnp.int32),
  )
  _, _, _, _, out, log_probs, _, counts = jax.lax.while_loop(running, step_once, state)
  return out, log_probs, counts
