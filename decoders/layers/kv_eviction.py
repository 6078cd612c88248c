"""Which keys a bounded key/value cache keeps once a row has seen more tokens than it has slots.

  "window" (capacity W): a ring buffer, slot = position % W, holding the last W positions: with a
      model whose sliding window is W (Mistral, Jiang et al. 2023, sec. 2 "rolling buffer cache")
      decoding is exact; with a longer window or full attention it is that attention truncated.
  "sinks" (capacity S + W): StreamingLLM (Xiao et al. 2023, sec. 3.2): the first S positions,
      the "attention sinks" that softmax dumps its mass on, are kept forever, and the last W in a
      ring after them. StreamingLLM re-numbers positions within the cache for RoPE; here keys
      are stored already rotated at their absolute positions, which is the same while positions
      stay below model.max_len (beyond it a learned table has no entry and RoPE extrapolates).
  "h2o" (budget B, R recent): Heavy-Hitter Oracle (Zhang et al. 2023, Alg. 1): every key keeps its
      attention weight summed over the steps (and over the query heads of its KV head's group);
      when a new token exceeds the budget, the key outside the R most recent with the least
      accumulated attention is evicted. Each layer and KV head evicts on its own, so each keeps its
      own slot -> position map. A prompt is taken token by token (a scan over it within each layer),
      so prefilling equals decoding it: the paper's rule, not its implementation's shortcut of one
      full-attention prefill. The policy needs the weights, so it runs its own einsum attention.
Each is an approximation of full attention (the point: memory bounded by the capacity), exact only
where the model would not look further back anyway (a window no longer than the ring's).
"""
import functools

import jax
import jax.numpy as jnp


def ring_slots(positions: jax.Array, lengths: jax.Array, capacity: int, sinks: int = 0) -> jax.Array:
  """[batch, t] the slot of each new position [batch, t] once rows have seen `lengths` [batch] tokens;
  `capacity` (out of range: dropped) for padding (not below `lengths`) and positions already evicted."""
  window, lengths = capacity - sinks, lengths[:, None]
  kept = (positions < lengths) & ((positions < sinks) | (positions >= lengths - window))
  slot = jnp.where(positions < sinks, positions, sinks + jnp.mod(positions - sinks, window))
  return jnp.where(kept, slot, capacity)


def ring_slot_positions(lengths: jax.Array, capacity: int, sinks: int = 0) -> jax.Array:
  """[batch, capacity] the position each slot holds once rows have seen `lengths` [batch] tokens (-1: none yet):
  sink slot s holds position s, ring slot sinks + r the newest position p >= sinks with (p - sinks) % window == r."""
  slot, lengths, window = jnp.arange(capacity)[None], lengths[:, None], capacity - sinks
  seen = lengths - sinks  # positions past the sinks
  ring = sinks + seen - 1 - jnp.mod(seen - 1 - (slot - sinks), window)
  return jnp.where(slot < sinks, jnp.where(slot < lengths, slot, -1), jnp.where(slot - sinks < seen, ring, -1))


def kept_by_policy(query_positions: jax.Array, key_positions: jax.Array, spec, capacity: int) -> jax.Array | None:
  """[batch, 1, q, k] True where a "window" or "sinks" cache still holds the key when the query comes: the
  attention each query had if decoded alone, for a prompt attended over [slots ++ new keys]. None: keeps all."""
  if spec.eviction not in ("window", "sinks"):
    return None
  i, j = query_positions[:, None, :, None], key_positions[:, None, None, :]
  recent = i - j < capacity - spec.sinks
  return recent | (j < spec.sinks) if spec.sinks else recent


def h2o_attend(layer_cache, query, key, value):
  """Attention output [batch, t, heads, head_dim] of new tokens under H2O eviction, token after token, and the
  cache with this layer's slots, positions and accumulated scores updated. query: [batch, t, heads, key_dim];
  key: [batch, t, kv_heads, key_dim]; value: [batch, t, kv_heads, head_dim] (key_dim may differ from head_dim)."""
  cache, layer = layer_cache.cache, layer_cache.layer
  pick = lambda x: jax.lax.dynamic_index_in_dim(x, layer, axis=0, keepdims=False)
  state = (cache.layer_arrays(layer), pick(cache.slot_positions), pick(cache.scores))
  real = jnp.arange(query.shape[1])[None] < layer_cache.valid_lengths[:, None]
  time_major = lambda x: jnp.swapaxes(x, 0, 1)
  inputs = tuple(map(time_major, (query, key, value, layer_cache.positions, real)))
  step = functools.partial(_h2o_step, cache, layer_cache.window)
  (arrays, slot_positions, scores), out = jax.lax.scan(step, state, inputs)
  put = lambda full, part: jax.lax.dynamic_update_index_in_dim(full, part, layer, axis=0)
  cache = cache.with_layer_arrays(arrays, layer)
  cache = cache.replace(slot_positions=put(cache.slot_positions, slot_positions), scores=put(cache.scores, scores))
  return time_major(out), cache


def _h2o_step(cache, window: int, state, inputs):
  """One token of Zhang et al. 2023, Alg. 1 for every row and KV head: attend over the kept keys and itself,
  add the weights to the scores, then store the token in an empty slot or in place of the evicted key."""
  arrays, slot_positions, scores = state  # KVCache.layer_arrays (head-major); [batch, capacity, kv_heads] x2
  query, key, value, position, real = inputs  # [batch, heads, d_k], [batch, kv_heads, d_k | d_v], [batch], [batch]
  (batch, heads, depth), (capacity, kv_heads) = query.shape, slot_positions.shape[1:]
  new = cache.stored(key, value)
  keys, values = cache.read(arrays, query.dtype)
  key, value = cache.dequantized(new, query.dtype)  # the token's own key and value, read back as stored
  keys, values = jnp.concatenate([keys, key[:, None]], axis=1), jnp.concatenate([values, value[:, None]], axis=1)
  here = position[:, None, None]
  key_positions = jnp.concatenate([slot_positions, jnp.broadcast_to(here, (batch, 1, kv_heads))], axis=1)
  visible = (key_positions >= 0) & (key_positions <= here)
  if window:
    visible &= here - key_positions < window
  grouped = query.reshape(batch, kv_heads, heads // kv_heads, depth)
  logits = jnp.einsum("bngd,bknd->bngk", grouped, keys) / jnp.sqrt(depth).astype(query.dtype)
  logits = jnp.where(jnp.swapaxes(visible, 1, 2)[:, :, None], logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  out = jnp.einsum("bngk,bknd->bngd", weights.astype(values.dtype), values).reshape(batch, heads, values.shape[-1])
  accumulated = jnp.pad(scores, ((0, 0), (0, 1), (0, 0))) + jnp.swapaxes(weights.sum(axis=2), 1, 2)
  recent = slot_positions > here - cache.spec.recent  # with the new token, the R most recent positions
  priority = jnp.where(slot_positions < 0, -jnp.inf, jnp.where(recent, jnp.inf, accumulated[:, :capacity]))
  target = jnp.where(real[:, None], jnp.argmin(priority, axis=1), capacity)  # [batch, kv_heads]; padding: dropped
  rows, kv = jnp.arange(batch)[:, None], jnp.arange(kv_heads)[None]
  # The keys and values are head-major, [row, head, slot]; the slot positions and scores [row, slot, head].
  put = lambda full, part: full.at[rows, target, kv].set(part, mode="drop")
  arrays = jax.tree.map(lambda full, part: full.at[rows, kv, target].set(part, mode="drop"), arrays, new)
  slot_positions = put(slot_positions, jnp.broadcast_to(position[:, None], (batch, kv_heads)))
  scores = put(jnp.where(real[:, None, None], accumulated[:, :capacity], scores), accumulated[:, capacity])
  return (arrays, slot_positions, scores), out
