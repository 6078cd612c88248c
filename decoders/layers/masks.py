"""Boolean attention masks: True where a query may attend to a key.

Every mask is 4-D and broadcasts against the logits [batch, heads, q, k], so masks
of different kinds `combine` by logical AND and both attention kernels take them.
"""
import functools

import jax
import jax.numpy as jnp

from decoders.errors import ConfigError


def _positions(length: int) -> tuple[jax.Array, jax.Array]:
  """Query positions as a column [length, 1] and key positions as a row [1, length]."""
  i = jnp.arange(length)
  return i[:, None], i[None, :]


def causal_mask(length: int) -> jax.Array:
  """[1, 1, q, k] mask letting position i attend to positions <= i (Vaswani et al. 2017, sec. 3.2.3)."""
  return jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))[None, None]


def sliding_window_mask(length: int, window: int) -> jax.Array:
  """[1, 1, q, k] causal mask where position i sees only the last `window` keys, itself included.

  Mistral's sliding window attention (Jiang et al. 2023): key j is visible iff 0 <= i - j < window,
  so `window` >= length is the plain causal mask and `window` = 1 attends to itself only.
  """
  if window < 1:
    raise ConfigError(f"attention window={window} must be at least 1")
  i, j = _positions(length)
  return ((j <= i) & (i - j < window))[None, None]


def cached_causal_mask(
    query_positions: jax.Array, key_positions: jax.Array, window: int = 0, prefix_lengths: jax.Array | None = None
) -> jax.Array:
  """[batch, 1, q, k] causal (or sliding-window, or prefix LM) mask of new queries over the keys a cache holds.

  `query_positions` [batch, q] and `key_positions` [batch|1, k] are absolute positions (a cache
  without eviction: its slot indices); -1 marks an empty slot. Key j is visible to query i iff
  0 <= position(j) <= position(i) and, with a window, position(i) - position(j) < window (Jiang et
  al. 2023). A slot past a row's length lies after its queries, so a stale entry stays hidden.
  With `prefix_lengths` [batch], a key at a position below its row's prefix length is visible to
  every query too, as in `prefix_lm_mask` (the window still bounds how far back a query looks).
  """
  i = jnp.asarray(query_positions)[:, None, :, None]
  j = jnp.asarray(key_positions)[:, None, None, :]
  seen = j <= i
  if prefix_lengths is not None:
    seen = seen | (j < jnp.asarray(prefix_lengths)[:, None, None, None])
  visible = (j >= 0) & seen
  return visible & (i - j < window) if window else visible


def padding_mask(valid: jax.Array) -> jax.Array:
  """[batch, 1, 1, k] mask hiding padding keys; `valid` [batch, k] is true (non-zero) for real tokens.

  It leaves padding queries free to attend to real keys. Combined with `causal_mask`, a
  left-padded row's first queries see no key at all: pad on the right.
  """
  return jnp.asarray(valid).astype(jnp.bool_)[:, None, None, :]


def prefix_lm_mask(length: int, prefix_lengths: jax.Array, window: int = 0) -> jax.Array:
  """[batch, 1, q, k] mask that is bidirectional over each row's prefix and causal after it.

  The prefix LM of Raffel et al. 2020 (sec. 3.2.1, fig. 3 right) and UniLM (Dong et al. 2019): key
  j is visible to query i iff j <= i or j < prefix_lengths[b]. A prefix length of 0 is causal.
  A sliding `window` (0: none) keeps only keys with i - j < window: it bounds how far back a query
  looks, never what it sees ahead in the prefix (`cached_causal_mask` decodes the same mask).
  """
  i, j = _positions(length)
  prefix = jnp.asarray(prefix_lengths)[:, None, None]
  visible = (j <= i) | (j < prefix)
  return (visible & (i - j < window) if window else visible)[:, None]


def segment_mask(segment_ids: jax.Array) -> jax.Array:
  """[batch, 1, q, k] mask for packed sequences: a token attends only within its own segment.

  `segment_ids` [batch, length] numbers the sequences packed into each row; 0 marks padding.
  Not causal by itself: `combine` it with `causal_mask` for a decoder. A padding query attends
  to itself only rather than to nothing, because a fully masked softmax row is NaN in some
  kernels; its output is garbage that the loss ignores, and no real token ever sees it.
  """
  ids = jnp.asarray(segment_ids)
  real = (ids != 0)[:, :, None]
  same = ids[:, :, None] == ids[:, None, :]
  itself = jnp.eye(ids.shape[-1], dtype=jnp.bool_)[None]
  return jnp.where(real, same, itself)[:, None]


def combine(*masks: jax.Array | None) -> jax.Array | None:
  """The logical AND of `masks`, broadcast together; None entries are skipped (None if all are)."""
  present = [jnp.asarray(m, dtype=jnp.bool_) for m in masks if m is not None]
  return functools.reduce(jnp.logical_and, present) if present else None
