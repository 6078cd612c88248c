"""The key/value cache of a decoder: an explicit pytree, passed in and returned, never hidden state.

Autoregressive decoding recomputes nothing of the past: each layer keeps the keys and
values of the tokens seen so far, and a new token's query attends over them (Vaswani et
al. 2017, sec. 3.2.3, applied incrementally). The cache is sized by the KV heads, so
grouped-query and multi-query attention shrink it (Ainslie et al. 2023; Shazeer 2019).

Each row has its own length: a batch of prompts of different lengths is right-padded,
prefilled in one call, and each row then writes its next token at its own position.

A `CacheSpec` (static: jit specialises on it) picks how values are stored and which are kept:
  quantization "none":  the compute dtype, exact; or `dtype` ("float32", "bfloat16") apart from it, as a float32
                        cache for a bfloat16 model: XLA:CPU writes into a bfloat16 array by converting all of
                        it to float32 and back, every step (BENCHMARKS.md, `loop_reads`), where float32 writes in
                        place. A bfloat16 model's keys and values are rounded to bfloat16 either way, so a float32
                        cache holds the same values and gives the same logits, at twice the memory.
               "int8":  per token and KV head, absmax-scaled int8 values in [-127, 127] and a
                        float32 scale (the int8 KV cache of LLM.int8-style absmax quantisation,
                        Dettmers et al. 2022, sec. 3.1, at the granularity of KIVI, Liu et al. 2024).
               "int4":  the same with values in [-7, 7], two per byte: element i of the first half of
                        the head dim in the low half byte, element i of the second in the high one
                        (head_dim and the key size must be even).
               Every key and value is read back dequantised, the call's own new ones included.
  eviction     "none":  slot = position; lowering `lengths` rewinds a row (speculative decoding).
               "window", "sinks", "h2o": memory bounded by `capacity` whatever the length, at
                        the price of attention over a subset of the past (kv_eviction.py).
The whole cache travels through the layers (see `LayerCache`): each layer updates its own
slice in place, so a decoding step writes one token per layer instead of copying the cache.

Keys may have another size per head than values (`key_dim`: a model's d_k apart from d_v, Vaswani et al. 2017,
Table 3 (B)); every kind of storage and eviction above keeps them at their own size.

A prefix LM's cache (Raffel et al. 2020, sec. 3.2.1) also keeps each row's prefix length: the first
tokens a row is given, its prompt, see each other both ways during their prefill, and every later
token sees them causally anyway. Kept in the cache rather than inferred from an empty row, a
rewind (speculative decoding) never turns re-fed or drafted tokens into a prefix. H2O cannot serve
it: it takes a prompt token by token, so no prompt token could see a later one.
"""
import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import kv_eviction, masks

QUANTIZATIONS = ("none", "int8", "int4")
EVICTIONS = ("none", "window", "sinks", "h2o")
FLOAT_DTYPES = ("float32", "bfloat16")
LEVELS = {"int8": 127, "int4": 7}  # the largest quantised magnitude: symmetric, so 0 stays exact


@dataclasses.dataclass(frozen=True)
class CacheSpec:
  """How a cache stores values and which it keeps; its size is `init_cache`'s `capacity` (for "window" the
  window, for "sinks" sinks + window, for "h2o" the whole budget)."""

  quantization: str = "none"
  eviction: str = "none"
  sinks: int = 0  # "sinks": the first positions kept forever (StreamingLLM uses 4)
  recent: int = 0  # "h2o": the most recent positions always kept; the rest of the budget holds heavy hitters
  dtype: str = ""  # quantization "none": the storage dtype, one of FLOAT_DTYPES ("": the compute dtype)

  def __post_init__(self):
    if self.quantization not in QUANTIZATIONS:
      raise ConfigError(f"cache quantization={self.quantization!r} is not one of {QUANTIZATIONS}")
    if self.eviction not in EVICTIONS:
      raise ConfigError(f"cache eviction={self.eviction!r} is not one of {EVICTIONS}")
    if (self.eviction == "sinks") != (self.sinks > 0) or self.sinks < 0:
      raise ConfigError(f"cache sinks={self.sinks} must be positive with eviction='sinks' and 0 otherwise")
    if (self.eviction == "h2o") != (self.recent > 0) or self.recent < 0:
      raise ConfigError(f"cache recent={self.recent} must be positive with eviction='h2o' and 0 otherwise")
    if self.dtype and self.dtype not in FLOAT_DTYPES:
      raise ConfigError(f"cache dtype={self.dtype!r} is not one of {FLOAT_DTYPES} (or '' for the compute dtype)")
    if self.dtype and self.quantization != "none":
      raise ConfigError(f"cache dtype={self.dtype!r} is for quantization='none': {self.quantization} stores its own")

  def check(self, capacity: int, head_dim: int, key_dim: int | None = None):
    """A ConfigError if a cache of `capacity` slots of `head_dim` values (`key_dim` for keys, default head_dim)
    cannot follow this spec."""
    if capacity < 1:
      raise ConfigError(f"cache capacity={capacity} must be at least 1")
    if self.quantization == "int4" and head_dim % 2:
      raise ConfigError(f"an int4 cache packs two values per byte: head_dim={head_dim} must be even")
    if self.quantization == "int4" and key_dim is not None and key_dim % 2:
      raise ConfigError(f"an int4 cache packs two values per byte: the key size key_dim={key_dim} must be even")
    if self.eviction == "sinks" and capacity <= self.sinks:
      raise ConfigError(f"cache capacity={capacity} must exceed sinks={self.sinks}: it holds sinks + a recent window")
    if self.eviction == "h2o" and capacity <= self.recent:
      raise ConfigError(f"cache capacity={capacity} must exceed recent={self.recent}: the rest holds heavy hitters")


def quantize(x: jax.Array, quantization: str) -> tuple[jax.Array, jax.Array]:
  """x [..., head_dim] -> (values, float32 scale [...]): absmax per vector, int8 or two int4 per uint8."""
  x = x.astype(jnp.float32)
  scale = jnp.max(jnp.abs(x), axis=-1) / LEVELS[quantization]
  levels = jnp.round(x / jnp.where(scale > 0, scale, 1.0)[..., None])
  if quantization == "int8":
    return levels.astype(jnp.int8), scale
  nibbles = (levels + 8).astype(jnp.uint8)  # [1, 15]: offset binary; the low half byte holds the first half
  half = x.shape[-1] // 2
  return nibbles[..., :half] | (nibbles[..., half:] << 4), scale


def dequantize(values: jax.Array, scale: jax.Array, quantization: str, dtype) -> jax.Array:
  """The inverse of `quantize`, in `dtype`."""
  if quantization == "int4":
    values = jnp.concatenate([values & 15, values >> 4], axis=-1).astype(jnp.int8) - 8
  return (values.astype(jnp.float32) * scale[..., None]).astype(dtype)


@flax.struct.dataclass
class KVCache:
  # Head-major, as the attention's batched matmuls read them (batch and head leading, one head's slots contiguous):
  # position-major [..., capacity, kv_heads, ...] made XLA copy every layer's cache into this order on every step.
  key: jax.Array  # [layers, batch, kv_heads, capacity, key_dim] keys after RoPE (int8; uint8 [..., key_dim / 2] int4)
  value: jax.Array  # as key, of head_dim
  lengths: jax.Array  # [batch] int32: tokens each row has seen (its next token's position)
  key_scale: jax.Array | None = None  # quantised: [layers, batch, kv_heads, capacity] float32
  value_scale: jax.Array | None = None
  # "h2o": the position each slot of each KV head holds (-1: empty), and its accumulated attention.
  slot_positions: jax.Array | None = None  # [layers, batch, capacity, kv_heads] int32
  scores: jax.Array | None = None  # [layers, batch, capacity, kv_heads] float32
  # A prefix LM's: [batch] int32, positions below it visible to every token of the row (0: none yet; `with_prefixes`).
  prefix_lengths: jax.Array | None = None
  spec: CacheSpec = flax.struct.field(pytree_node=False, default=CacheSpec())

  @property
  def capacity(self) -> int:
    return self.key.shape[3]

  @classmethod
  def zeros(cls, num_layers: int, batch: int, capacity: int, kv_heads: int, head_dim: int, dtype=jnp.float32,
            spec: CacheSpec = CacheSpec(), prefix_lm: bool = False, key_dim: int | None = None):
    """An empty cache: values of `head_dim` per KV head, keys of `key_dim` (None: head_dim)."""
    key_dim = head_dim if key_dim is None else key_dim
    if key_dim < 1:
      raise ConfigError(f"cache key_dim={key_dim} must be at least 1")
    spec.check(capacity, head_dim, key_dim)
    if prefix_lm and spec.eviction == "h2o":
      raise ConfigError("a prefix LM cannot decode with cache eviction='h2o': it takes the prompt token by token")
    shape = (num_layers, batch, kv_heads, capacity)
    fields = {}  # one array per field, never shared: a caller may donate the cache to a jitted step
    if spec.quantization == "none":
      storage = jnp.dtype(spec.dtype or dtype)
      fields["key"], fields["value"] = (jnp.zeros((*shape, size), storage) for size in (key_dim, head_dim))
    else:
      packed = lambda size: size // 2 if spec.quantization == "int4" else size
      storage = jnp.int8 if spec.quantization == "int8" else jnp.uint8
      fields["key"], fields["value"] = (jnp.zeros((*shape, packed(size)), storage) for size in (key_dim, head_dim))
      fields["key_scale"], fields["value_scale"] = (jnp.zeros(shape, jnp.float32) for _ in range(2))
    if spec.eviction == "h2o":
      slots = (num_layers, batch, capacity, kv_heads)
      fields["slot_positions"], fields["scores"] = jnp.full(slots, -1, jnp.int32), jnp.zeros(slots, jnp.float32)
    if prefix_lm:
      fields["prefix_lengths"] = jnp.zeros((batch,), jnp.int32)
    return cls(lengths=jnp.zeros((batch,), jnp.int32), spec=spec, **fields)

  def nbytes(self) -> int:
    """Bytes of every array the cache holds: values, scales and bookkeeping (works on abstract shapes too)."""
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(self))

  def select_rows(self, rows: jax.Array) -> "KVCache":
    """The cache of rows `rows` [new_batch] (indices into the batch, repeats allowed): beam search
    reorders its hypotheses' caches with it, and expands one prompt's cache to its beams."""
    per_layer = jax.tree.map(lambda x: jnp.take(x, rows, axis=1), self.replace(lengths=None, prefix_lengths=None))
    prefix_lengths = None if self.prefix_lengths is None else self.prefix_lengths[rows]
    return per_layer.replace(lengths=self.lengths[rows], prefix_lengths=prefix_lengths)

  def with_prefixes(self, added: jax.Array) -> "KVCache":
    """A prefix LM's cache about to take `added` [batch] tokens per row: a row with no prefix yet gets them as
    its prefix (its prompt: the first tokens it is given). Any other cache is returned as it is."""
    if self.prefix_lengths is None:
      return self
    return self.replace(prefix_lengths=jnp.where(self.prefix_lengths == 0, added, self.prefix_lengths))

  def rewind(self, lengths: jax.Array) -> "KVCache":
    """The cache with rows cut back to `lengths` (no more than they have): entries past a row's length are
    invisible. Only a cache without eviction can rewind: an evicting one has overwritten what came before."""
    if self.spec.eviction != "none":
      raise ConfigError(f"a cache with eviction={self.spec.eviction!r} cannot rewind: it overwrites old positions")
    return self.replace(lengths=lengths)

  def stored(self, new_key: jax.Array, new_value: jax.Array) -> tuple:
    """New keys [..., kv_heads, key_dim] and values [..., kv_heads, head_dim] as the cache stores them:
    ((key, key_scale), (value, value_scale)) in their own (token-major) layout, scales None when not quantised."""
    if self.spec.quantization == "none":
      return (new_key.astype(self.key.dtype), None), (new_value.astype(self.value.dtype), None)
    return quantize(new_key, self.spec.quantization), quantize(new_value, self.spec.quantization)

  def layer_arrays(self, layer) -> tuple:
    """((key, key_scale), (value, value_scale)) of one layer, head-major ([batch, kv_heads, capacity, ...]), scales
    None when not quantised."""
    pick = lambda x: None if x is None else jax.lax.dynamic_index_in_dim(x, layer, axis=0, keepdims=False)
    return (pick(self.key), pick(self.key_scale)), (pick(self.value), pick(self.value_scale))

  def with_layer_arrays(self, arrays: tuple, layer) -> "KVCache":
    """The cache with one layer's ((key, key_scale), (value, value_scale)) replaced."""
    put = lambda full, part: jax.lax.dynamic_update_index_in_dim(full, part, layer, axis=0)
    (key, key_scale), (value, value_scale) = jax.tree.map(
        put, ((self.key, self.key_scale), (self.value, self.value_scale)), arrays
    )
    return self.replace(key=key, key_scale=key_scale, value=value, value_scale=value_scale)

  def read(self, arrays: tuple, dtype) -> tuple[jax.Array, jax.Array]:
    """Keys [batch, capacity, kv_heads, key_dim] and values [..., head_dim] in `dtype` from one layer's arrays (as
    `layer_arrays` gives them). The swap to the attention kernels' layout cancels against the head-major storage
    inside their matmuls: no copy is made."""
    return tuple(jnp.swapaxes(x, 1, 2) for x in self.dequantized(arrays, dtype))

  def dequantized(self, arrays: tuple, dtype) -> tuple[jax.Array, jax.Array]:
    """Keys and values in `dtype` from arrays as the cache stores them, in their layout."""
    if self.spec.quantization == "none":
      return arrays[0][0].astype(dtype), arrays[1][0].astype(dtype)
    return tuple(dequantize(values, scale, self.spec.quantization, dtype) for values, scale in arrays)

  def write(self, layer, slots: jax.Array, new_key: jax.Array, new_value: jax.Array) -> "KVCache":
    """New keys [batch, t, kv_heads, key_dim] and values [..., head_dim] written to `layer` at `slots` [batch, t]; a
    slot outside [0, capacity) drops its token. A row's in-range slots must differ: a scatter's duplicate winner is
    undefined."""
    # Indices [batch, t, kv_heads] into the head-major arrays: the updates keep the new tokens' own layout.
    rows, heads = jnp.arange(slots.shape[0])[:, None, None], jnp.arange(self.key.shape[2])[None, None, :]
    scatter = lambda full, new: full.at[layer, rows, heads, slots[..., None]].set(new, mode="drop")
    (key, key_scale), (value, value_scale) = jax.tree.map(
        scatter, ((self.key, self.key_scale), (self.value, self.value_scale)), self.stored(new_key, new_value)
    )
    return self.replace(key=key, key_scale=key_scale, value=value, value_scale=value_scale)


@flax.struct.dataclass
class LayerCache:
  """The cache as one layer sees it during one call of the model (`DecoderLM.tokens_to_hidden`): every
  layer's arrays, which layer this is, and the new tokens. The layer updates its slice of the arrays and
  passes the whole cache on, so no layer's cache is ever sliced out, copied and stacked back."""

  cache: KVCache
  layer: jax.Array  # int32 []: the layer whose slice is read and written
  positions: jax.Array  # [batch, t] int32: the new tokens' absolute positions
  valid_lengths: jax.Array  # [batch] int32: how many of the t new tokens are real (the rest is right padding)
  window: int = flax.struct.field(pytree_node=False, default=0)  # the model's sliding window (0: none)

  def attend(self, query, key, value, kernel) -> tuple[jax.Array, "LayerCache"]:
    """The new tokens' attention output [batch, t, heads, head_dim] over what the cache keeps and themselves,
    and the cache with their keys and values stored. `kernel(query, keys, values, mask)` computes attention;
    "h2o" needs the attention weights, so it runs its own einsum path instead."""
    spec, cache = self.cache.spec, self.cache
    if spec.eviction == "h2o":
      out, cache = kv_eviction.h2o_attend(self, query, key, value)
      return out, self.replace(cache=cache)
    if spec.eviction == "none" or query.shape[1] == 1:
      # Write first, then read: a token can overwrite only a key that no query of this call may see
      # (itself at most a window ago), so the call reads the cache in place.
      cache = cache.write(self.layer, self.slots(), key, value)
      keys, values = cache.read(cache.layer_arrays(self.layer), query.dtype)
      key_positions = self.slot_positions(self.new_lengths())
    else:
      # A prompt longer than the window needs keys the cache will not keep: attend over the slots as they
      # were and the new keys (read back through the quantiser like every key), then keep what the policy keeps.
      old = cache.read(cache.layer_arrays(self.layer), query.dtype)
      new = cache.dequantized(cache.stored(key, value), query.dtype)
      keys, values = (jnp.concatenate(pair, axis=1) for pair in zip(old, new))
      key_positions = jnp.concatenate([self.slot_positions(cache.lengths), self.positions], axis=1)
      cache = cache.write(self.layer, self.slots(), key, value)
    mask = masks.combine(
        masks.cached_causal_mask(self.positions, key_positions, self.window, cache.prefix_lengths),
        kv_eviction.kept_by_policy(self.positions, key_positions, spec, cache.capacity),
    )
    return kernel(query, keys, values, mask), self.replace(cache=cache)

  def new_lengths(self) -> jax.Array:
    return self.cache.lengths + self.valid_lengths

  def slots(self) -> jax.Array:
    """[batch, t] the slot each new token goes to; `capacity` (dropped) for padding and tokens evicted at once."""
    capacity, spec = self.cache.capacity, self.cache.spec
    if spec.eviction == "none":
      kept = self.positions < self.new_lengths()[:, None]
      return jnp.where(kept, self.positions, capacity)
    return kv_eviction.ring_slots(self.positions, self.new_lengths(), capacity, spec.sinks)

  def slot_positions(self, lengths: jax.Array) -> jax.Array:
    """[batch|1, capacity] the position each slot holds once rows have seen `lengths` tokens (-1: none)."""
    if self.cache.spec.eviction == "none":
      return jnp.arange(self.cache.capacity)[None]  # stale slots past a row's length lie after its queries
    return kv_eviction.ring_slot_positions(lengths, self.cache.capacity, self.cache.spec.sinks)
