"""The key/value cache of a decoder: an explicit pytree, passed in and returned, never hidden state.

Autoregressive decoding recomputes nothing of the past: each layer keeps the keys and
values of the tokens seen so far, and a new token's query attends over them (Vaswani et
al. 2017, sec. 3.2.3, applied incrementally). The cache is sized by the KV heads, so
grouped-query and multi-query attention shrink it (Ainslie et al. 2023; Shazeer 2019).

Each row has its own length: a batch of prompts of different lengths is right-padded,
prefilled in one call, and each row then writes its next token at its own position.
"""
import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class KVCache:
  key: jax.Array  # [layers, batch, capacity, kv_heads, head_dim], keys after RoPE
  value: jax.Array  # [layers, batch, capacity, kv_heads, head_dim]
  lengths: jax.Array  # [batch] int32: tokens written to each row so far (its next token's position)

  @property
  def capacity(self) -> int:
    return self.key.shape[2]

  @classmethod
  def zeros(cls, num_layers: int, batch: int, capacity: int, kv_heads: int, head_dim: int, dtype=jnp.float32):
    shape = (num_layers, batch, capacity, kv_heads, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))

  def nbytes(self) -> int:
    return self.key.nbytes + self.value.nbytes

  def select_rows(self, rows: jax.Array) -> "KVCache":
    """The cache of rows `rows` [new_batch] (indices into the batch, repeats allowed): beam search
    reorders its hypotheses' caches with it, and expands one prompt's cache to its beams."""
    return KVCache(jnp.take(self.key, rows, axis=1), jnp.take(self.value, rows, axis=1), self.lengths[rows])


def write(cached: jax.Array, new: jax.Array, starts: jax.Array) -> jax.Array:
  """One layer's cache [batch, capacity, ...] with `new` [batch, t, ...] written at each row's `starts` [batch]."""
  return jax.vmap(lambda row, update, start: jax.lax.dynamic_update_slice_in_dim(row, update, start, axis=0))(
      cached, new.astype(cached.dtype), starts
  )
