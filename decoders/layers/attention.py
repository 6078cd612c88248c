"""Multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1).

Two interchangeable kernels compute softmax(q k^T / sqrt(d)) v:
  "xla":    `jax.nn.dot_product_attention`, which lets each backend pick a fused
            kernel (cuDNN flash attention on GPU, XLA elsewhere);
  "einsum": the explicit einsum path, the reference the tests compare against,
            and the only one that supports dropout on the attention weights.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers.partitioning import EMBED, HEAD_DIM, HEADS, with_axes

IMPLEMENTATIONS = ("xla", "einsum")


def causal_mask(length: int) -> jax.Array:
  """[1, 1, q, k] boolean mask letting position i attend to positions <= i."""
  return jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))[None, None]


def einsum_attention(query, key, value, mask, dropout_rng=None, dropout_rate=0.0):
  """Reference attention. query: [b, q, h, d]; key, value: [b, k, h, d]; mask: [b|1, h|1, q, k]."""
  depth = query.shape[-1]
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) / jnp.sqrt(depth).astype(query.dtype)
  logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  # Softmax in float32 whatever the compute dtype: bf16 exponentials lose the tail.
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(value.dtype)
  if dropout_rng is not None and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(value.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


def attention(query, key, value, mask, implementation="xla", dropout_rng=None, dropout_rate=0.0):
  """Dispatches to one of IMPLEMENTATIONS; both give the same result without dropout."""
  if implementation == "einsum" or (dropout_rng is not None and dropout_rate > 0.0):
    return einsum_attention(query, key, value, mask, dropout_rng, dropout_rate)
  if implementation == "xla":
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")
  raise ValueError(f"unknown attention implementation {implementation!r}; expected one of {IMPLEMENTATIONS}")


class MultiHeadAttention(nn.Module):
  """Self-attention with `num_heads` heads of size `head_dim` projected back to the input width."""

  num_heads: int
  head_dim: int
  implementation: str = "xla"
  dropout_rate: float = 0.0
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.normal(stddev=0.02)
  output_init: Any = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool):
    def projection(name):
      return nn.DenseGeneral(
          features=(self.num_heads, self.head_dim),
          use_bias=self.use_bias,
          dtype=self.dtype,
          kernel_init=with_axes(self.kernel_init, EMBED, HEADS, HEAD_DIM),
          bias_init=with_axes(nn.initializers.zeros, HEADS, HEAD_DIM),
          name=name,
      )

    query, key, value = projection("query")(x), projection("key")(x), projection("value")(x)
    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng("dropout")
    out = attention(query, key, value, mask, self.implementation, dropout_rng, self.dropout_rate)
    return nn.DenseGeneral(
        features=x.shape[-1],
        axis=(-2, -1),
        use_bias=self.use_bias,
        dtype=self.dtype,
        kernel_init=with_axes(self.output_init, HEADS, HEAD_DIM, EMBED),
        bias_init=with_axes(nn.initializers.zeros, EMBED),
        name="out",
    )(out)
