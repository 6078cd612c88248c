"""Position information for attention: fixed sinusoids, rotary embeddings and T5 relative biases.

  sinusoidal:             absolute encodings added to the input (Vaswani et al. 2017, sec. 3.5);
  apply_rope:             rotates queries and keys by their positions (Su et al. 2021), so that
                          q.k depends only on the offset between them;
  RelativePositionBias:   a learned per-head bias on the attention logits, one value per bucket
                          of key - query offsets (Raffel et al. 2020, sec. 2.1).
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers.partitioning import HEADS, with_axes


def sinusoidal(positions: jax.Array, width: int, max_timescale: float = 10_000.0) -> jax.Array:
  """[..., width] float32 encodings of int `positions` [...] (Vaswani et al. 2017, sec. 3.5).

  PE(pos, 2i) = sin(pos / max_timescale^(2i/width)), PE(pos, 2i+1) = cos(same): sines on the
  even dimensions and cosines on the odd ones, interleaved as in the paper.
  """
  if width <= 0 or width % 2:
    raise ConfigError(f"width={width} must be a positive even number for sinusoidal positions")
  exponents = jnp.arange(0, width, 2, dtype=jnp.float32) / width  # 2i / width
  angles = jnp.asarray(positions, jnp.float32)[..., None] / max_timescale**exponents
  # Stacking on a new last axis then flattening puts sin(i) at 2i and cos(i) at 2i + 1.
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], width)


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10_000.0) -> jax.Array:
  """Rotary position embedding of x [batch, length, heads, head_dim] (Su et al. 2021, eq. 34).

  Dimension i is paired with i + head_dim/2 ("rotate half", as in LLaMA and Hugging Face
  checkpoints) rather than with i + 1 as in the paper, and each pair is rotated by the angle
  position * base^(-2i/head_dim). `positions` is int [batch, length] or [length].
  """
  head_dim = x.shape[-1]
  if head_dim % 2:
    raise ConfigError(f"head_dim={head_dim} must be even for rotary position embeddings")
  # 1 / base^(2i/d), written as HF LLaMA writes it so float32 frequencies match theirs bit for bit.
  inv_freq = 1.0 / base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  # [..., length, 1, head_dim/2]: the new axis broadcasts over heads, a missing batch axis over batch.
  angles = jnp.asarray(positions, jnp.float32)[..., None, None] * inv_freq
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def relative_position_bucket(
    relative_position: jax.Array, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> jax.Array:
  """int32 bucket in [0, num_buckets) of each key - query offset (Raffel et al. 2020, sec. 2.1).

  The formula of mesh-tensorflow's and Hugging Face's T5 `_relative_position_bucket`, float32
  included, so imported T5 checkpoints see the same bucket for every offset: distances below
  max_exact get a bucket each, larger ones share logarithmically wider buckets up to
  max_distance, beyond which everything lands in the last bucket.
  """
  half = num_buckets // 2 if bidirectional else num_buckets
  max_exact = half // 2
  if max_exact < 1:
    raise ConfigError(f"num_buckets={num_buckets} is too few for {'bi' if bidirectional else 'uni'}directional buckets")
  if max_distance <= max_exact:
    raise ConfigError(f"max_distance={max_distance} must exceed the {max_exact} exact buckets")
  relative_position = jnp.asarray(relative_position, jnp.int32)
  if bidirectional:
    # Keys after the query (positive offsets) use the upper half of the buckets.
    offset = jnp.where(relative_position > 0, half, 0)
    distance = jnp.abs(relative_position)
  else:
    # A causal decoder never attends to the future, so those offsets all share bucket 0.
    offset = 0
    distance = jnp.maximum(-relative_position, 0)
  # The max only keeps log(0) out of the unused branch; it changes no bucket that jnp.where picks.
  log_ratio = jnp.log(jnp.maximum(distance, max_exact).astype(jnp.float32) / max_exact)
  scaled = log_ratio / math.log(max_distance / max_exact)
  # Truncation toward zero (the cast), as torch's `.to(torch.long)` does.
  if_large = jnp.minimum(max_exact + (scaled * (half - max_exact)).astype(jnp.int32), half - 1)
  return (offset + jnp.where(distance < max_exact, distance, if_large)).astype(jnp.int32)


class RelativePositionBias(nn.Module):
  """T5's learned additive attention bias, one scalar per (offset bucket, head) (Raffel et al. 2020, sec. 2.1)."""

  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  bidirectional: bool = True
  dtype: Any = jnp.float32
  embedding_init: Any = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, query_length: int, key_length: int) -> jax.Array:
    """[1, num_heads, query_length, key_length] bias for queries at 0..q-1 and keys at 0..k-1."""
    table = self.param(
        "embedding", with_axes(self.embedding_init, None, HEADS), (self.num_buckets, self.num_heads)
    )
    relative_position = jnp.arange(key_length)[None, :] - jnp.arange(query_length)[:, None]
    buckets = relative_position_bucket(relative_position, self.bidirectional, self.num_buckets, self.max_distance)
    bias = jnp.take(jnp.asarray(table, self.dtype), buckets, axis=0)  # [q, k, heads]
    return jnp.transpose(bias, (2, 0, 1))[None]
