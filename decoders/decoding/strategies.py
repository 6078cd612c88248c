"""Decoding strategies: small frozen dataclasses mapping (logits, rng, history) -> next tokens.

Frozen and hashable, so the compiled generation loop takes them as static arguments: a
strategy's settings are part of the program, and changing one compiles a new loop.

`history` holds the tokens so far (prompt and generated) of each row; the history-aware
processors need it: the repetition penalty (Keskar et al. 2019, sec. 4.1) and n-gram
blocking (Paulus et al. 2018, sec. 2.5). Hugging Face's `generate()` applies those two
first, repetition penalty then no-repeat-n-gram, and the warpers (temperature, top-k, ...)
after them; so do `Greedy` and `Sample`. Strategies that need no history accept None.
Beam search and contrastive search are loops of their own: beam.py, contrastive.py.
"""
import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from decoders.decoding import filters
from decoders.errors import ConfigError


class History(NamedTuple):
  tokens: jax.Array  # [batch, total] int32: each row's prompt, then its generated tokens, then padding
  lengths: jax.Array  # [batch] int32: how many tokens at the start of each row are real (never the padding)


def penalise_history(
    logits: jax.Array, history: History | None, repetition_penalty: float | None, no_repeat_ngram: int | None
) -> jax.Array:
  """The logits after the repetition penalty and n-gram blocking that are set (not None), in Hugging Face's order."""
  if repetition_penalty is None and no_repeat_ngram is None:
    return logits
  if history is None:
    raise ConfigError("repetition_penalty and no_repeat_ngram need the tokens so far: use decoding.generate")
  if repetition_penalty is not None:
    seen = jnp.arange(history.tokens.shape[-1])[None] < history.lengths[:, None]
    logits = filters.repetition_penalty(logits, history.tokens, repetition_penalty, seen)
  if no_repeat_ngram is not None:
    logits = filters.no_repeat_ngram(logits, history.tokens, no_repeat_ngram, history.lengths)
  return logits


def _dummy_history() -> History:
  """One row of one token: running a strategy's processors on it makes each check its setting, before any loop."""
  return History(jnp.zeros((1, 1), jnp.int32), jnp.ones((1,), jnp.int32))


@dataclasses.dataclass(frozen=True)
class Greedy:
  """The most likely token (the first one on a tie) after the repetition penalty and n-gram blocking, if set."""

  repetition_penalty: float | None = None
  no_repeat_ngram: int | None = None

  def __post_init__(self):
    penalise_history(jnp.zeros((1, 2), jnp.float32), _dummy_history(), self.repetition_penalty, self.no_repeat_ngram)

  def __call__(self, logits: jax.Array, rng: jax.Array, history: History | None = None) -> jax.Array:
    logits = penalise_history(logits, history, self.repetition_penalty, self.no_repeat_ngram)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Sample:
  """Samples after the processors that are set, in Hugging Face's order: repetition penalty and n-gram blocking,
  then the filters in the order users expect (filters.FILTERS): temperature, top-k, top-p, min-p and typical;
  each as Hugging Face's processor of that name. Greedy decoding is `Greedy`, not temperature 0."""

  temperature: float = 1.0
  top_k: int | None = None
  top_p: float | None = None
  min_p: float | None = None
  typical: float | None = None
  repetition_penalty: float | None = None
  no_repeat_ngram: int | None = None

  def __post_init__(self):
    self.processed(jnp.zeros((1, 2), jnp.float32), _dummy_history())  # fail here on a bad setting, not in the loop

  def processed(self, logits: jax.Array, history: History | None = None) -> jax.Array:
    """The logits [batch, vocab] the next token is drawn from: every processor that is set, in order."""
    logits = penalise_history(logits, history, self.repetition_penalty, self.no_repeat_ngram)
    return filters.apply_filters(logits, **{name: getattr(self, name) for name in filters.FILTERS})

  def __call__(self, logits: jax.Array, rng: jax.Array, history: History | None = None) -> jax.Array:
    return jax.random.categorical(rng, self.processed(logits, history), axis=-1).astype(jnp.int32)
