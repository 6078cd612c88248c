"""Multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1).

Three interchangeable kernels compute softmax(q k^T / sqrt(d_k) + bias) v under a boolean mask
(decoders/layers/masks.py), d_k being the query's and key's last dim:
  "xla":     `jax.nn.dot_product_attention`, which lets each backend pick a fused
             kernel (cuDNN flash attention on GPU, XLA elsewhere); it takes values of the
             keys' size only, so a separate key size runs the einsum path;
  "einsum":  the explicit einsum path, the reference the tests compare against,
             and the only one that supports dropout on the attention weights;
  "chunked": memory-efficient attention over blocks of queries and keys with an online
             softmax (Rabe & Staats 2021): no [q, k] buffer, and the key blocks a mask
             hides entirely (above a causal diagonal, outside a sliding window) are skipped.
Key and value may have fewer heads than the query: grouped-query attention (Ainslie et al.
2023), whose one-head case is multi-query attention (Shazeer 2019). Queries and keys may have
another size per head than values (d_k against d_v: Vaswani et al. 2017, sec. 3.2.2 and Table 3
row (B), which varies d_k alone).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import quantization
from decoders.layers.chunked_attention import chunked_attention
from decoders.layers.partitioning import EMBED, HEAD_DIM, HEADS, KV_HEADS
from decoders.layers.positions import apply_rope

IMPLEMENTATIONS = ("xla", "einsum", "chunked")


def einsum_attention(query, key, value, mask, dropout_rng=None, dropout_rate=0.0, bias=None):
  """Reference attention. query: [b, q, h, d_k]; key: [b, k, kv, d_k]; value: [b, k, kv, d_v] with h % kv == 0;
  mask (boolean, True = attend) and bias (added to the scaled logits): [b|1, h|1, q, k] or None. Output: [b, q, h, d_v].
  """
  batch, length, heads, depth = query.shape
  kv_heads = key.shape[-2]
  # Query head n * group + g reads key/value head n (Ainslie et al. 2023). Grouping the query
  # heads rather than repeating K/V keeps the key/value cache and its reads kv_heads wide.
  grouped = query.reshape(batch, length, kv_heads, heads // kv_heads, depth)
  logits = jnp.einsum("bqngd,bknd->bngqk", grouped, key) / jnp.sqrt(depth).astype(query.dtype)
  logits = logits.reshape(batch, heads, length, key.shape[1])
  if bias is not None:
    logits = logits + bias.astype(logits.dtype)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  # Softmax in float32 whatever the compute dtype: bf16 exponentials lose the tail.
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(value.dtype)
  if dropout_rng is not None and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(value.dtype)
  weights = weights.reshape(batch, kv_heads, heads // kv_heads, length, key.shape[1])
  return jnp.einsum("bngqk,bknd->bqngd", weights, value).reshape(batch, length, heads, value.shape[-1])


def attention(query, key, value, mask, implementation="xla", dropout_rng=None, dropout_rate=0.0, bias=None):
  """Dispatches to one of IMPLEMENTATIONS; all give the same result without dropout. The logits are scaled by
  1/sqrt(d_k), the query's last dim, whatever the values' size."""
  # jax.nn.dot_product_attention takes values only of the keys' size (and on the CPU its "xla" path is this einsum).
  separate_key_size = key.shape[-1] != value.shape[-1]
  if implementation == "einsum" or (dropout_rng is not None and dropout_rate > 0.0) or (
      implementation == "xla" and separate_key_size
  ):
    return einsum_attention(query, key, value, mask, dropout_rng, dropout_rate, bias)
  if implementation == "xla":
    return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, implementation="xla")
  if implementation == "chunked":
    return chunked_attention(query, key, value, mask, bias)
  raise ValueError(f"unknown attention implementation {implementation!r}; expected one of {IMPLEMENTATIONS}")


class MultiHeadAttention(nn.Module):
  """Self-attention (or cross-attention, given a `source`) with `num_heads` heads of size `head_dim` projected back
  to the input width.

  `num_kv_heads` key/value heads (0: one per query head) make it grouped-query attention;
  `rope_base` > 0 rotates query and key by position (RoPE, Su et al. 2021), which needs an even key size.
  `key_dim` (0: head_dim) is the query and key heads' size d_k, the value heads' staying head_dim (d_v): the
  logits are scaled by 1/sqrt(key_dim). Vaswani et al. 2017 (Table 3 (B)) vary d_k alone this way; a smaller
  one shrinks the query and key projections and the cache's keys.
  """

  num_heads: int
  head_dim: int
  num_kv_heads: int = 0
  key_dim: int = 0
  rope_base: float = 0.0
  implementation: str = "xla"
  dropout_rate: float = 0.0
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.normal(stddev=0.02)
  output_init: Any = nn.initializers.normal(stddev=0.02)
  weights: str = "float"  # one of quantization.WEIGHTS: int8 stores the projections' kernels as int8 + scales

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool, bias=None, positions=None, cache=None, source=None):
    """x: [b, length, width]; mask, bias: as `attention`; positions (for RoPE): [b|-, length], default arange.

    With `cache` (a kv_cache.LayerCache: every layer's cache, this layer's index, the new tokens'
    positions), the queries attend over what the cache keeps and the new keys, the cache masks by
    the positions it holds (`mask` must be None), and the result is (output, cache updated).

    A `source` makes it cross-attention (Vaswani et al. 2017, sec. 3.2.3): the keys and values come from another
    sequence, an encoder's output [b, s, width], or are the pair (key [b, s, kv_heads, key_dim], value [b, s, kv_heads,
    head_dim]) that a call with x None returns, so a decoder projects its source once for every step. RoPE rotates
    self-attention only.
    """
    kv_heads = self.num_kv_heads or self.num_heads
    if kv_heads < 1 or self.num_heads % kv_heads:
      raise ConfigError(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads} (0: num_heads)")
    if self.key_dim < 0:
      raise ConfigError(f"key_dim={self.key_dim} must be >= 0 (0: head_dim)")
    key_dim = self.key_dim or self.head_dim
    if self.rope_base > 0 and key_dim % 2:
      raise ConfigError(f"key size {key_dim} must be even for rotary position embeddings (it rotates pairs)")

    def projection(name, heads, heads_axis, size):
      return quantization.dense(
          self.weights,
          (heads, size),
          (EMBED, heads_axis, HEAD_DIM),
          use_bias=self.use_bias,
          dtype=self.dtype,
          kernel_init=self.kernel_init,
          name=name,
      )

    if isinstance(source, tuple):
      key, value = source
    else:
      inputs = x if source is None else source
      key = projection("key", kv_heads, KV_HEADS, key_dim)(inputs)
      value = projection("value", kv_heads, KV_HEADS, self.head_dim)(inputs)
      if x is None:
        return key, value
    query = projection("query", self.num_heads, HEADS, key_dim)(x)
    if self.rope_base > 0 and source is None:
      positions = jnp.arange(x.shape[-2]) if positions is None else positions
      query, key = apply_rope(query, positions, self.rope_base), apply_rope(key, positions, self.rope_base)
    implementation = self.implementation
    if cache is not None:
      if mask is not None:
        raise ConfigError("attention over a key/value cache takes no mask: the cache masks by the positions it holds")
      # A few queries against a long cache: the chunked kernel's blocks are for long query runs.
      implementation = "xla" if implementation == "chunked" else implementation
    dropout_rng = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout_rng = self.make_rng("dropout")
    kernel = lambda q, k, v, m: attention(q, k, v, m, implementation, dropout_rng, self.dropout_rate, bias)
    if cache is None:
      out = kernel(query, key, value, mask)
    else:
      out, cache = cache.attend(query, key, value, kernel)
    out = quantization.dense(
        self.weights,
        x.shape[-1],
        (HEADS, HEAD_DIM, EMBED),
        num_inputs=2,
        use_bias=self.use_bias,
        dtype=self.dtype,
        kernel_init=self.output_init,
        name="out",
    )(out)
    return out if cache is None else (out, cache)
