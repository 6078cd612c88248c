"""Token and position embeddings; a tied token table may be int8 (decoders/layers/quantization.py)."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers import quantization
from decoders.layers.partitioning import EMBED, LENGTH, VOCAB, with_axes

# GPT-2's embedding scale (Radford et al. 2019); the tied output layer reuses the table, so
# this also sets the scale of the initial logits.
TOKEN_INIT_STDDEV = 0.02


class TokenEmbedding(nn.Module):
  """Looks tokens up in a [vocab, width] table; `attend` reuses it as the output layer (tied).

  With int8 `weights` the table is int8 with a float32 `scale` per vocabulary row: a row is an
  output channel of `attend`, and the lookup reads one row and its scale.
  """

  vocab_size: int
  width: int
  dtype: Any = jnp.float32
  init: Any = nn.initializers.normal(stddev=TOKEN_INIT_STDDEV)
  weights: str = "float"  # one of quantization.WEIGHTS

  def setup(self):
    shape = (self.vocab_size, self.width)
    if self.weights == "int8":
      names, axes = ("embedding", "scale"), (VOCAB, EMBED)
      self.table, self.scale = quantization.declare(self, names, self.init, shape, axes, contracting=(1,))
    else:
      self.table = self.param("embedding", with_axes(self.init, VOCAB, EMBED), shape)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    # Look up, then cast: casting the table first would convert all of it every step and
    # sum the gradients of repeated tokens in the compute dtype (bfloat16: 8 bits).
    rows = jnp.take(self.table, tokens, axis=0)
    if self.weights == "int8":
      rows = rows * jnp.take(self.scale, tokens, axis=0)[..., None]
    return rows.astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    """Float32 logits x E^T against every vocabulary entry (Press & Wolf 2017 weight tying).

    The inputs are in the compute dtype, the products float32: bfloat16 logits would
    round away differences the softmax and the loss need.
    """
    if self.weights == "int8":
      return quantization.int8_matmul(x, self.table, self.scale, self.dtype, jnp.float32, transposed=True)
    return jnp.einsum("...d,vd->...v", x, jnp.asarray(self.table, self.dtype), preferred_element_type=jnp.float32)


class LearnedPositions(nn.Module):
  """GPT-style absolute positions: a trained [max_len, width] table added to the input."""

  max_len: int
  width: int
  dtype: Any = jnp.float32
  init: Any = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, positions: jax.Array) -> jax.Array:
    table = self.param("embedding", with_axes(self.init, LENGTH, EMBED), (self.max_len, self.width))
    return jnp.take(table, positions, axis=0).astype(self.dtype)  # look up, then cast: see TokenEmbedding
