"""Beam search: the `width` most likely continuations, kept in one `lax.while_loop`, with an n-best list of ends.

Each step scores every (live beam, next token) pair by its summed log-probability, keeps
the 2 * width best (so that `width` remain live even when `width` of them end with EOS),
continues with the best `width` that did not end, and offers the ones among the best
`width` that ended to the n-best list of finished hypotheses, scored by their sum of
log-probabilities over a length penalty lp(|Y|) of their generated length |Y|:
- "hf": |Y|^alpha, Hugging Face transformers' `length_penalty` (the default);
- "wu": ((5 + |Y|) / 6)^alpha, Wu et al. 2016 ("Google's Neural Machine Translation System", sec. 7, eq. 14).
At the last step every candidate counts as ended. This is transformers' (v5) vectorised
beam search, step for step, so the two agree token for token on the same weights.

When to stop (Hugging Face's `early_stopping`): a prompt is closed once its n-best list is
full and its best live beam, scored at a length bound, cannot beat the list's worst;
the loop ends when every prompt is closed, or after `max_new_tokens`.
- "heuristic" (HF's False, its default): the bound is the current length. Exact when
  alpha <= 0; with alpha > 0 a longer live beam might still have won.
- "exact" (HF's "never"): the bound is `max_new_tokens` when alpha > 0, so no hypothesis
  that could win is cut off (log-probabilities only fall as a beam grows).
- "first" (HF's True): stop as soon as `width` hypotheses have ended.

One forward pass per step over batch * width rows; each prompt is prefilled once and its
cache rows copied to its beams, then reordered to the surviving beams every step (KVCache.select_rows).
"""
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.decoding import seam

NORMALIZATIONS = ("hf", "wu")
EARLY_STOPPING = ("heuristic", "exact", "first")
IMPOSSIBLE = -1.0e9  # Hugging Face's score for what may not be chosen: finite, so sums with it stay ordered


@dataclasses.dataclass(frozen=True)
class Beam:
  width: int = 4
  length_penalty: float = 1.0  # alpha: > 0 favours longer hypotheses, < 0 shorter ones, 0 compares raw sums
  length_normalization: str = "hf"  # one of NORMALIZATIONS
  num_returned: int = 1  # hypotheses returned per prompt, best first (<= width)
  early_stopping: str = "heuristic"  # one of EARLY_STOPPING

  def __post_init__(self):
    if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
      raise ConfigError(f"Beam: width={self.width!r} must be an integer >= 1")
    if not 1 <= self.num_returned <= self.width:
      raise ConfigError(f"Beam: num_returned={self.num_returned} must be between 1 and width={self.width}")
    if self.length_normalization not in NORMALIZATIONS:
      raise ConfigError(f"Beam: length_normalization={self.length_normalization!r} must be one of {NORMALIZATIONS}")
    if self.early_stopping not in EARLY_STOPPING:
      raise ConfigError(f"Beam: early_stopping={self.early_stopping!r} must be one of {EARLY_STOPPING}")

  def length_penalty_of(self, length) -> jax.Array:
    """lp(|Y|): a hypothesis' summed log-probability is divided by it."""
    length = jnp.asarray(length, jnp.float32)
    base = length if self.length_normalization == "hf" else (5.0 + length) / 6.0
    return base**self.length_penalty


class Hypotheses(NamedTuple):
  tokens: jax.Array  # [batch, n, max_new] int32, the fill token past each one's length
  log_probs: jax.Array  # [batch, n, max_new] float32: log p of each token
  scores: jax.Array  # [batch, n]: live beams: summed log-probabilities; finished: over the length penalty
  lengths: jax.Array  # [batch, n] int32: finished ones' generated length (0: an empty slot); unused for live ones

  def take(self, index: jax.Array) -> "Hypotheses":
    """Hypotheses `index` [batch, m] of each prompt."""
    return Hypotheses(*(jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1) for x in self))


def _concat(a: Hypotheses, b: Hypotheses) -> Hypotheses:
  return Hypotheses(*(jnp.concatenate(pair, axis=1) for pair in zip(a, b)))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def search(
    model, strategy: Beam, max_new_tokens: int, eos_id: int | None, params, prompts, lengths, sources=None,
    source_lengths=None,
):
  """The `num_returned` best hypotheses per prompt, best first: tokens, log_probs [batch, n, max_new], lengths and
  scores [batch, n]. For max_new_tokens >= 1 (generate() answers 0 itself); `sources` for an encoder-decoder."""
  batch, width, steps, vocab = prompts.shape[0], strategy.width, max_new_tokens, model.config.vocab_size
  candidates = min(2 * width, width * vocab)
  fill = 0 if eos_id is None else eos_id
  step_logits = seam.method(model, params, "tokens_to_logits")
  cache = seam.start_cache(model, params, batch, prompts.shape[1] + steps, sources=sources, source_lengths=source_lengths)
  logits, cache = step_logits(prompts, cache, lengths)
  beam_rows = jnp.repeat(jnp.arange(batch), width)  # prefilled once per prompt, then copied to its beams
  logits, cache = logits[jnp.arange(batch), lengths - 1][beam_rows], cache.select_rows(beam_rows)

  def empty(first_score: float) -> Hypotheses:
    scores = jnp.full((batch, width), IMPOSSIBLE).at[:, 0].set(first_score)
    return Hypotheses(jnp.full((batch, width, steps), fill, jnp.int32), jnp.zeros((batch, width, steps)), scores,
                      jnp.zeros((batch, width), jnp.int32))

  def full(finished: Hypotheses) -> jax.Array:
    return jnp.all(finished.lengths > 0, axis=1)

  def accepting(finished: Hypotheses, open_: jax.Array) -> jax.Array:
    return open_ & ~full(finished) if strategy.early_stopping == "first" else open_

  def running(state):
    step, _, _, _, finished, open_ = state
    return (step < steps) & jnp.any(accepting(finished, open_))

  def step_once(state):
    step, logits, cache, live, finished, open_ = state
    log_probs = jax.nn.log_softmax(logits[:, :vocab]).reshape(batch, width * vocab)
    totals, flat = jax.lax.top_k(log_probs + jnp.repeat(live.scores, vocab, axis=1), candidates)
    parent, token = flat // vocab, flat % vocab
    extended = live.take(parent)
    extended = extended._replace(
        tokens=extended.tokens.at[:, :, step].set(token),
        log_probs=extended.log_probs.at[:, :, step].set(jnp.take_along_axis(log_probs, flat, axis=1)),
    )
    ended = jnp.broadcast_to(step == steps - 1, token.shape)
    if eos_id is not None:
      ended = ended | (token == eos_id)
    # The best `width` candidates that go on.
    alive_totals = totals + IMPOSSIBLE * ended
    _, keep = jax.lax.top_k(alive_totals, width)
    live = extended._replace(scores=alive_totals).take(keep)
    # Ended candidates among the best `width` join the n-best list, if it still takes any.
    joins = ended & (jnp.arange(candidates) < width) & accepting(finished, open_)[:, None]
    ends = extended._replace(
        scores=jnp.where(joins, totals / strategy.length_penalty_of(step + 1), IMPOSSIBLE),
        lengths=jnp.where(joins, step + 1, 0),
    )
    merged = _concat(finished, ends)
    finished = merged.take(jax.lax.top_k(merged.scores, width)[1])
    # The live beams' caches, then their next logits.
    rows = (jnp.arange(batch)[:, None] * width + jnp.take_along_axis(parent, keep, axis=1)).reshape(-1)
    logits, cache = step_logits(live.tokens[:, :, step].reshape(-1, 1), cache.select_rows(rows))
    open_ = open_ & _can_improve(strategy, live, finished, step + 1, steps)
    return step + 1, logits[:, 0], cache, live, finished, open_

  state = (jnp.int32(0), logits, cache, empty(0.0), empty(IMPOSSIBLE), jnp.ones((batch,), jnp.bool_))
  finished = jax.lax.while_loop(running, step_once, state)[4]
  n = strategy.num_returned
  return finished.tokens[:, :n], finished.log_probs[:, :n], finished.lengths[:, :n], finished.scores[:, :n]


def _can_improve(strategy: Beam, live: Hypotheses, finished: Hypotheses, length, steps: int) -> jax.Array:
  """[batch]: whether each prompt's best live beam, at the stopping rule's length bound, beats its worst finished one
  (always, while its n-best list has an empty slot)."""
  bound = steps if strategy.early_stopping == "exact" and strategy.length_penalty > 0 else length
  best_live = live.scores[:, :1] / strategy.length_penalty_of(bound)  # top_k left the best live beam first
  worst_finished = jnp.where(finished.lengths > 0, jnp.min(finished.scores, axis=1, keepdims=True), IMPOSSIBLE)
  return jnp.any(best_live > worst_finished, axis=1)
