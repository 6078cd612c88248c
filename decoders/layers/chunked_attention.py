"""Memory-efficient attention: an online softmax over blocks of keys (Rabe & Staats 2021).

The "chunked" kernel of decoders/layers/attention.py. Queries and keys are cut into blocks;
each query block walks the key blocks keeping a float32 running maximum and sum (Milakov &
Gimelshein 2018), so no [q, k] logits buffer ever exists, only [block, block] tiles. Key
blocks that the mask hides from every query of a block (above a causal diagonal, outside a
sliding window) are never visited. The backward pass is a custom VJP that rebuilds each
tile's softmax from the saved log-sum-exp, as FlashAttention-2 does (Dao 2023), rather than
`jax.checkpoint` on the block function: on a 2-core CPU that was 1.3-2x faster at contexts
256-1024, with the same O(length) memory.
"""
import functools

import jax
import jax.numpy as jnp

# Queries and keys per block of the "chunked" kernel. On a 2-core CPU (batch 8, 6 heads of 64)
# 64 was the fastest of 32-256 at contexts 256 and 512, and as fast as 128 at 1024.
BLOCK_SIZE = 64


def chunked_attention(query, key, value, mask, bias=None, *, block_size=BLOCK_SIZE):
  """Attention computed block by block, never holding more than a [block, block] tile of logits.

  Shapes as `einsum_attention`. Each query block visits the key blocks with an online softmax
  (Milakov & Gimelshein 2018; Rabe & Staats 2021, sec. 2): a running maximum and sum in
  float32 rescale the partial output as each key block arrives. Only the key blocks between
  the first and the last that the mask lets any query of the block see are visited, so a
  causal mask costs about half, a sliding window only its band. A length that is not a
  multiple of the block is padded with masked keys. A query that sees no key at all gets
  zeros (the other kernels: the mean of the values); masks.py never builds one. The
  gradient is a custom VJP (`_blockwise_backward`): reverse mode only, no `jax.jvp`.
  """
  batch, q_len, heads, depth = query.shape
  k_len, kv_heads = key.shape[1], key.shape[2]
  q_block, k_block = min(block_size, q_len), min(block_size, k_len)
  q_padded, k_padded = -(-q_len // q_block) * q_block, -(-k_len // k_block) * k_block
  # Head-major blocks: [b, kv, group, q, d] queries (grouped as in einsum_attention) and
  # [b, kv, k, d] keys and values, scaled once here rather than on every logit tile.
  grouped = (query * jnp.asarray(depth**-0.5, query.dtype)).reshape(batch, q_len, kv_heads, heads // kv_heads, depth)
  q = _pad_to(grouped.transpose(0, 2, 3, 1, 4), 3, q_padded, 0)
  k = _pad_to(key.transpose(0, 2, 1, 3), 2, k_padded, 0)
  v = _pad_to(value.transpose(0, 2, 1, 3), 2, k_padded, 0)
  if mask is not None:
    mask = _pad_to(_pad_to(_four_d(mask).astype(jnp.bool_), 2, q_padded, False), 3, k_padded, False)
  if k_padded > k_len:
    real = (jnp.arange(k_padded) < k_len)[None, None, None, :]
    mask = real if mask is None else mask & real
  if bias is not None:
    bias = _pad_to(_pad_to(_four_d(bias), 2, q_padded, 0), 3, k_padded, 0)
  out = _blockwise_attention(q, k, v, mask, bias, q_block, k_block)
  return out[:, :, :, :q_len].transpose(0, 3, 1, 2, 4).reshape(batch, q_len, heads, value.shape[-1])


def _four_d(x):
  x = jnp.asarray(x)
  return x.reshape((1,) * (4 - x.ndim) + x.shape)


def _pad_to(x, axis, length, value):
  """`x` padded with `value` to `length` along `axis`, unless that axis broadcasts (size 1)."""
  if x.shape[axis] in (1, length):
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def _tile_corner(x, i, j, q_block, k_block):
  """Where tile (i, j) of a [b|1, h|1, q|1, k|1] mask or bias starts; broadcast axes start at 0."""
  return [0, 0, i * q_block if x.shape[2] > 1 else 0, j * k_block if x.shape[3] > 1 else 0]


def _tile(x, i, j, q_block, k_block):
  """Tile (i, j) of a [b|1, h|1, q|1, k|1] mask or bias; its broadcast axes stay of size 1."""
  sizes = [x.shape[0], x.shape[1], min(q_block, x.shape[2]), min(k_block, x.shape[3])]
  return jax.lax.dynamic_slice(x, _tile_corner(x, i, j, q_block, k_block), sizes)


def _grouped_heads(x, kv_heads):
  """[b|1, h|1, ...] -> [b|1, kv|1, group|1, ...], to broadcast against grouped logits."""
  kv = kv_heads if x.shape[1] > 1 else 1
  return x.reshape(x.shape[0], kv, x.shape[1] // kv, *x.shape[2:])


def _key_block_ranges(mask, num_q_blocks, num_k_blocks):
  """Per query block, the first key block and one past the last with any key the mask shows."""
  if mask is None:
    return jnp.zeros(num_q_blocks, jnp.int32), jnp.full(num_q_blocks, num_k_blocks, jnp.int32)
  seen = mask.any(axis=(0, 1))  # [q|1, k|1]
  rows, cols = (blocks if size > 1 else 1 for blocks, size in zip((num_q_blocks, num_k_blocks), seen.shape))
  seen = seen.reshape(rows, -1, cols, seen.shape[1] // cols).any(axis=(1, 3))
  seen = jnp.broadcast_to(seen, (num_q_blocks, num_k_blocks))
  first = jnp.argmax(seen, axis=1)
  end = num_k_blocks - jnp.argmax(seen[:, ::-1], axis=1)
  anything = seen.any(axis=1)
  return jnp.where(anything, first, 0).astype(jnp.int32), jnp.where(anything, end, 0).astype(jnp.int32)


def _scaled_logits(q_i, k, mask, bias, i, j, q_block, k_block):
  """Float32 logits [b, kv, group, q_block, k_block] of query block i against key block j."""
  k_j = jax.lax.dynamic_slice_in_dim(k, j * k_block, k_block, axis=2)
  logits = jnp.einsum("bngqd,bnkd->bngqk", q_i, k_j, preferred_element_type=jnp.float32)
  if bias is not None:
    logits = logits + _grouped_heads(_tile(bias, i, j, q_block, k_block), k.shape[1]).astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(_grouped_heads(_tile(mask, i, j, q_block, k_block), k.shape[1]), logits, -jnp.inf)
  return logits, k_j


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _blockwise_attention(q, k, v, mask, bias, q_block, k_block):
  """q: [b, kv, group, q, d_k] (scaled); k: [b, kv, k, d_k]; v: [b, kv, k, d_v]; lengths multiples of the blocks."""
  return _blockwise_forward(q, k, v, mask, bias, q_block, k_block)[0]


def _blockwise_forward(q, k, v, mask, bias, q_block, k_block):
  (batch, kv_heads, group, q_len, _), depth = q.shape, v.shape[-1]  # the output has the values' size
  first, end = _key_block_ranges(mask, q_len // q_block, k.shape[2] // k_block)
  row_shape = (batch, kv_heads, group, q_block)

  def query_block(_, i):
    q_i = jax.lax.dynamic_slice_in_dim(q, i * q_block, q_block, axis=3)

    def key_block(j, carry):
      running_max, running_sum, acc = carry
      logits, _ = _scaled_logits(q_i, k, mask, bias, i, j, q_block, k_block)
      new_max = jnp.maximum(running_max, logits.max(axis=-1))
      # A row that has seen only masked keys keeps a -inf maximum: shift it by 0, not by -inf.
      shift = jnp.where(new_max == -jnp.inf, 0.0, new_max)
      weights = jnp.exp(logits - shift[..., None])
      rescale = jnp.exp(running_max - shift)
      v_j = jax.lax.dynamic_slice_in_dim(v, j * k_block, k_block, axis=2)
      update = jnp.einsum("bngqk,bnkd->bngqd", weights.astype(v.dtype), v_j, preferred_element_type=jnp.float32)
      return new_max, running_sum * rescale + weights.sum(axis=-1), acc * rescale[..., None] + update

    f32 = jnp.float32
    init = (jnp.full(row_shape, -jnp.inf, f32), jnp.zeros(row_shape, f32), jnp.zeros((*row_shape, depth), f32))
    running_max, running_sum, acc = jax.lax.fori_loop(first[i], end[i], key_block, init)
    seen = running_sum > 0
    out = acc / jnp.where(seen, running_sum, 1.0)[..., None]
    # The log-sum-exp of each row is all the backward pass needs to rebuild its weights;
    # +inf makes those of a row that saw nothing exp(-inf - inf) = 0.
    logsumexp = jnp.where(seen, running_max + jnp.log(jnp.where(seen, running_sum, 1.0)), jnp.inf)
    return None, (out.astype(q.dtype), logsumexp)

  _, (out, logsumexp) = jax.lax.scan(query_block, None, jnp.arange(q_len // q_block))
  # [q blocks, b, kv, group, q_block, ...] -> [b, kv, group, q, ...]
  out = jnp.moveaxis(out, 0, 3).reshape(*q.shape[:-1], depth)
  logsumexp = jnp.moveaxis(logsumexp, 0, 3).reshape(q.shape[:-1])
  return out, (q, k, v, mask, bias, out, logsumexp)


def _blockwise_backward(q_block, k_block, residuals, d_out):
  """Each tile's weights rebuilt from the saved log-sum-exp (FlashAttention-2, Dao 2023, alg. 2).

  This is the recomputation that Rabe & Staats (sec. 3) get by `jax.checkpoint` on the
  block function, without differentiating through the online rescaling: 1.3-2x faster
  on the CPU at contexts 256-1024, and memory stays O(length) beside the mask and bias.
  """
  q, k, v, mask, bias, out, logsumexp = residuals
  first, end = _key_block_ranges(mask, q.shape[3] // q_block, k.shape[2] // k_block)
  # D_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij: the softmax Jacobian's correction term.
  delta = jnp.einsum("bngqd,bngqd->bngq", d_out, out, preferred_element_type=jnp.float32)

  def query_block(carry, i):
    q_i, d_out_i, logsumexp_i, delta_i = (
        jax.lax.dynamic_slice_in_dim(x, i * q_block, q_block, axis=3) for x in (q, d_out, logsumexp, delta)
    )

    def key_block(j, carry):
      d_q_i, d_k, d_v, d_bias = carry
      logits, k_j = _scaled_logits(q_i, k, mask, bias, i, j, q_block, k_block)
      v_j = jax.lax.dynamic_slice_in_dim(v, j * k_block, k_block, axis=2)
      weights = jnp.exp(logits - logsumexp_i[..., None])
      d_weights = jnp.einsum("bngqd,bnkd->bngqk", d_out_i, v_j, preferred_element_type=jnp.float32)
      d_logits = weights * (d_weights - delta_i[..., None])
      d_logits_lowp = d_logits.astype(q.dtype)  # the matmuls take the compute dtype, as in the forward pass
      d_q_i = d_q_i + jnp.einsum("bngqk,bnkd->bngqd", d_logits_lowp, k_j, preferred_element_type=jnp.float32)
      d_k_j = jnp.einsum("bngqk,bngqd->bnkd", d_logits_lowp, q_i, preferred_element_type=jnp.float32)
      d_v_j = jnp.einsum("bngqk,bngqd->bnkd", weights.astype(q.dtype), d_out_i, preferred_element_type=jnp.float32)
      d_k, d_v = _add_block(d_k, d_k_j, j * k_block), _add_block(d_v, d_v_j, j * k_block)
      if d_bias is not None:
        d_bias = _add_bias_tile(d_bias, d_logits, i, j, q_block, k_block)
      return d_q_i, d_k, d_v, d_bias

    d_q_i, *carry = jax.lax.fori_loop(first[i], end[i], key_block, (jnp.zeros(q_i.shape, jnp.float32), *carry))
    return tuple(carry), d_q_i

  init = tuple(None if x is None else jnp.zeros(x.shape, jnp.float32) for x in (k, v, bias))
  (d_k, d_v, d_bias), d_q = jax.lax.scan(query_block, init, jnp.arange(q.shape[3] // q_block))
  d_q = jnp.moveaxis(d_q, 0, 3).reshape(q.shape)
  d_bias = None if bias is None else d_bias.astype(bias.dtype)
  return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), None, d_bias


def _add_block(total, block, start):
  """total[:, :, start:start + len(block)] += block, along the key axis."""
  current = jax.lax.dynamic_slice_in_dim(total, start, block.shape[2], axis=2)
  return jax.lax.dynamic_update_slice_in_dim(total, current + block, start, axis=2)


def _add_bias_tile(d_bias, d_logits, i, j, q_block, k_block):
  """Adds a tile's logit gradient to the bias gradient, summed over the axes the bias broadcasts."""
  tile = _tile(d_bias, i, j, q_block, k_block)
  d_logits = d_logits.reshape(d_logits.shape[0], -1, *d_logits.shape[3:])  # [b, h, q_block, k_block]
  d_logits = d_logits.sum(axis=tuple(a for a in range(4) if tile.shape[a] == 1 < d_logits.shape[a]), keepdims=True)
  return jax.lax.dynamic_update_slice(d_bias, tile + d_logits, _tile_corner(d_bias, i, j, q_block, k_block))


_blockwise_attention.defvjp(_blockwise_forward, _blockwise_backward)
