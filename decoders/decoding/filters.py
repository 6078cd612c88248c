"""Logits filters: pure functions `(logits, ...) -> logits` that set every removed entry to -inf.

Pure functions on arrays, so a strategy can compose them inside the jitted generation loop, and so each can be
checked one by one against the reference it copies: the Hugging Face `transformers` LogitsProcessor of the same
name (v5), "keep at least one token" included. Logits are [..., vocab]; every leading axis is a batch axis.

- `temperature`: TemperatureLogitsWarper.
- `top_k` (Fan et al. 2018, "Hierarchical Neural Story Generation"): TopKLogitsWarper.
- `top_p` (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"): TopPLogitsWarper.
- `min_p` (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling for Creative and Coherent LLM Outputs"):
  MinPLogitsWarper.
- `typical` (Meister et al. 2023, "Locally Typical Sampling"): TypicalLogitsWarper.
- `repetition_penalty` (Keskar et al. 2019, "CTRL: A Conditional Transformer Language Model for Controllable
  Generation"): RepetitionPenaltyLogitsProcessor.
- `no_repeat_ngram` (Paulus et al. 2018, "A Deep Reinforced Model for Abstractive Summarization", n-gram blocking):
  NoRepeatNGramLogitsProcessor.

Two deliberate differences from the bare processors:
- top_p = 1 and typical mass = 1 return the logits unchanged, as `generate()` does by not adding those processors;
  the processors themselves would still drop tokens whose probability rounds to nothing.
- top_p keeps every token tied with the least probable token it keeps, as top-k keeps ties at the k-th value. The
  processor keeps only some of them, chosen by the order torch's unstable sort happens to leave equal values in.

Parameters are checked when they are Python numbers (at trace time under jit); traced values are not checked.
"""
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

from decoders.errors import ConfigError

FILTERS = ("temperature", "top_k", "top_p", "min_p", "typical")


def _check(function: str, name: str, value, holds: Callable[[float], bool], rule: str) -> None:
  """Raises ConfigError unless `holds(value)`; values only known at run time (traced) pass unchecked."""
  if isinstance(value, numbers.Real) and not holds(value):
    raise ConfigError(f"{function}: {name}={value!r} must be {rule}")


def _check_count(function: str, name: str, value, minimum: int) -> None:
  """Raises ConfigError unless `value` is a Python integer >= minimum (it fixes a shape, so it must be static)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ConfigError(f"{function}: {name}={value!r} must be an integer >= {minimum}")


def _is(value, constant: float) -> bool:
  """Whether a parameter is known (not traced) to equal `constant`."""
  return isinstance(value, numbers.Real) and value == constant


def _remove(logits: jax.Array, removed: jax.Array) -> jax.Array:
  return jnp.where(removed, -jnp.inf, logits)


def _sorted_probabilities(logits: jax.Array, order: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The logits taken in `order` along the last axis, and the cumulative softmax probability along that order."""
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  return sorted_logits, jnp.cumsum(jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1), axis=-1)


def temperature(logits: jax.Array, t: float) -> jax.Array:
  """logits / t: t < 1 sharpens the distribution, t > 1 flattens it."""
  _check("temperature", "t", t, lambda t: t > 0, "> 0 (greedy decoding is a strategy, not a temperature)")
  return logits / t


def top_k(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the entries >= the k-th largest (all of them when tied with it); k beyond the vocabulary keeps all."""
  _check_count("top_k", "k", k, 1)
  kth_largest = jax.lax.top_k(logits, min(k, logits.shape[-1]))[0][..., -1:]
  return _remove(logits, logits < kth_largest)


def top_p(logits: jax.Array, p: float) -> jax.Array:
  """Keeps the most probable tokens whose probabilities add up to at least p (the nucleus); at least one.

  As the processor: going up from the least probable token, drop those whose cumulative probability is still <= 1 - p.
  """
  _check("top_p", "p", p, lambda p: 0 < p <= 1, "in (0, 1]")
  if _is(p, 1):
    return logits
  sorted_logits, cumulative = _sorted_probabilities(logits, jnp.argsort(logits, axis=-1))
  dropped = jnp.minimum(jnp.sum(cumulative <= 1 - p, axis=-1, keepdims=True), logits.shape[-1] - 1)
  least_kept = jnp.take_along_axis(sorted_logits, dropped, axis=-1)
  return _remove(logits, logits < least_kept)


def min_p(logits: jax.Array, p: float) -> jax.Array:
  """Removes the tokens less probable than p times the most probable one; p = 0 keeps all."""
  _check("min_p", "p", p, lambda p: 0 <= p <= 1, "in [0, 1]")
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  # For p <= 1 the most probable token is never below the threshold: at least one token always stays.
  return _remove(logits, probabilities < p * jnp.max(probabilities, axis=-1, keepdims=True))


def typical(logits: jax.Array, mass: float) -> jax.Array:
  """Keeps the tokens whose surprise (-log p) is closest to the entropy, until they hold `mass`; at least one."""
  _check("typical", "mass", mass, lambda mass: 0 < mass <= 1, "in (0, 1]")
  if _is(mass, 1):
    return logits
  log_probabilities = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  # nansum: a removed token contributes -inf * 0 = nan, which means nothing.
  entropy = -jnp.nansum(log_probabilities * jnp.exp(log_probabilities), axis=-1, keepdims=True)
  atypicality = jnp.abs(-log_probabilities - entropy)
  order = jnp.argsort(atypicality, axis=-1)
  _, cumulative = _sorted_probabilities(logits, order)
  last_kept = jnp.minimum(jnp.sum(cumulative < mass, axis=-1, keepdims=True), logits.shape[-1] - 1)
  threshold = jnp.take_along_axis(jnp.take_along_axis(atypicality, order, axis=-1), last_kept, axis=-1)
  # The most typical token is at or below the threshold, so it is always kept.
  return _remove(logits, atypicality > threshold)


def _check_leading_axes(function: str, name: str, tokens: jax.Array, logits: jax.Array) -> None:
  if tokens.shape[:-1] != logits.shape[:-1]:
    raise ConfigError(f"{function}: {name} of shape {tokens.shape} must have the leading axes of logits {logits.shape}")


def _token_mask(tokens: jax.Array, include: jax.Array, vocab: int) -> jax.Array:
  """[rows, n] ids -> [rows, vocab] bool, True at each id whose `include` is True; ids outside the vocab are ignored."""
  include = include & (tokens >= 0) & (tokens < vocab)
  # What is not included goes to a spare column past the vocabulary, where it cannot mark a real token.
  columns = jnp.where(include, tokens, vocab)
  rows = jnp.arange(tokens.shape[0])[:, None]
  return jnp.zeros((tokens.shape[0], vocab + 1), bool).at[rows, columns].set(True)[:, :vocab]


def repetition_penalty(
    logits: jax.Array, previous_tokens: jax.Array, penalty: float, previous_mask: jax.Array | None = None
) -> jax.Array:
  """Makes every token of previous_tokens [..., n] less likely: positive logits / penalty, negative * penalty.

  previous_mask [..., n] (default all True) marks which previous positions count; the rest is padding.
  """
  _check("repetition_penalty", "penalty", penalty, lambda penalty: penalty > 0, "> 0")
  _check_leading_axes("repetition_penalty", "previous_tokens", previous_tokens, logits)
  vocab, n = logits.shape[-1], previous_tokens.shape[-1]
  tokens = previous_tokens.reshape(-1, n)
  include = jnp.ones(tokens.shape, bool) if previous_mask is None else jnp.reshape(previous_mask, tokens.shape)
  seen = _token_mask(tokens, include, vocab).reshape(logits.shape)
  penalised = jnp.where(logits < 0, logits * penalty, logits / penalty)
  return jnp.where(seen, penalised, logits)


def no_repeat_ngram(
    logits: jax.Array, previous_tokens: jax.Array, n: int, length: jax.Array | None = None
) -> jax.Array:
  """Bans every token that would complete an n-gram already present in previous_tokens [..., total].

  length [...] (default total) counts the valid tokens at the start of each row; the rest is padding.
  """
  _check_count("no_repeat_ngram", "n", n, 1)
  _check_leading_axes("no_repeat_ngram", "previous_tokens", previous_tokens, logits)
  total = previous_tokens.shape[-1]
  if total < n:
    return logits
  tokens = previous_tokens.reshape(-1, total)
  length = jnp.full(tokens.shape[:1], total) if length is None else jnp.reshape(length, tokens.shape[:1])
  starts = total - n + 1
  windows = jnp.stack([tokens[:, i : i + starts] for i in range(n)], axis=-1)  # [rows, starts, n]
  # The n - 1 last valid tokens: a window starting with them would be completed by the next token.
  suffix_positions = jnp.clip(length[:, None] - (n - 1) + jnp.arange(n - 1), 0, total - 1)
  suffix = jnp.take_along_axis(tokens, suffix_positions, axis=-1)
  matches = jnp.all(windows[..., :-1] == suffix[:, None, :], axis=-1)
  within_length = jnp.arange(starts) + n <= length[:, None]
  banned = _token_mask(windows[..., -1], matches & within_length, logits.shape[-1])
  return _remove(logits, banned.reshape(logits.shape))


_BY_NAME = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p, "typical": typical}


def apply_filters(
    logits: jax.Array,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical: float | None = None,
) -> jax.Array:
  """Applies the filters that are given (not None) in the order of FILTERS, the order `generate()` uses."""
  settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p, "typical": typical}
  for name in FILTERS:
    if settings[name] is not None:
      logits = _BY_NAME[name](logits, settings[name])
  return logits
