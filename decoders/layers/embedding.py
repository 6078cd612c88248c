"""Token and position embeddings."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers.partitioning import EMBED, LENGTH, VOCAB, with_axes


class TokenEmbedding(nn.Module):
  """Looks tokens up in a [vocab, width] table; `attend` reuses it as the output layer (tied)."""

  vocab_size: int
  width: int
  dtype: Any = jnp.float32
  init: Any = nn.initializers.normal(stddev=0.02)

  def setup(self):
    self.table = self.param("embedding", with_axes(self.init, VOCAB, EMBED), (self.vocab_size, self.width))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return jnp.take(jnp.asarray(self.table, self.dtype), tokens, axis=0)

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits x E^T against every vocabulary entry (Press & Wolf 2017 weight tying)."""
    return jnp.einsum("...d,vd->...v", x, jnp.asarray(self.table, self.dtype))


class LearnedPositions(nn.Module):
  """GPT-style absolute positions: a trained [max_len, width] table added to the input."""

  max_len: int
  width: int
  dtype: Any = jnp.float32
  init: Any = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, positions: jax.Array) -> jax.Array:
    table = self.param("embedding", with_axes(self.init, LENGTH, EMBED), (self.max_len, self.width))
    return jnp.take(jnp.asarray(table, self.dtype), positions, axis=0)
