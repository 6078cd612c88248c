"""Transformer encoder-decoder (Vaswani et al. 2017) and its T5 (Raffel et al. 2020) and BART (Lewis et al. 2020) kin.

    source -> embed (+ positions) -> N x [self-attention, FFN]                          -> (Norm) = memory
    target -> embed (+ positions) -> M x [causal self-attention, cross-attention, FFN]  -> (Norm) -> logits

Each sublayer sits in a residual connection with its norm after it (Vaswani et al., sec. 3.1; BART) or before it
(T5; Xiong et al. 2020 on why pre-norm trains without warm-up). Cross-attention's queries come from the decoder, its
keys and values from the memory (sec. 3.2.3); the source's padding is hidden from every query of the encoder and of
every cross-attention. One token table serves source, target and (tied) output (sec. 3.4).

`EncoderDecoderConfig` holds a DecoderLMConfig for the sizes and block options both stacks share and adds what a
decoder-only model lacks: two depths, T5's relative position bias, the three families' embedding and output details.
T5 leaves attention's 1/sqrt(d) out (its query initialisation absorbs it); this model keeps it, and hf_t5.py
multiplies imported query kernels by sqrt(d) instead: the same function.

Decoding (decoders.decoding.generate, beam search included) goes through the seam of decoders/decoding/seam.py:
`decoding_cache` runs the encoder once and projects every decoder layer's cross-attention keys and values once; each
`tokens_to_logits` then runs the decoder alone over the new tokens, its own keys and values in a kv_cache.KVCache.

The blocks are not decoder_lm.BlockStack's, which have no cross-attention and pass no attention bias (T5's), so its
`scan_layers` and `remat` are refused here, as are a sliding window and int8 weights.
"""
import dataclasses
import functools
import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import attention as attention_lib
from decoders.layers import feed_forward, kv_cache, masks, norms, quantization
from decoders.layers import positions as positions_lib
from decoders.layers.embedding import TOKEN_INIT_STDDEV, LearnedPositions, TokenEmbedding
from decoders.layers.partitioning import EMBED, VOCAB, with_axes
from decoders.models import decoder_lm
from decoders.models.decoder_lm import DTYPES, DecoderLMConfig

POSITIONS = ("learned", "sinusoidal", "relative")
# DecoderLMConfig's options that the blocks here do not implement, and the value they must keep.
UNSUPPORTED = {"sliding_window": 0, "scan_layers": False, "remat": "none", "weights": "float"}


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig:
  # What both stacks share: the vocabulary (source and target), width, heads and their key size, feed-forward, max_len
  # (the longest source and the longest decoder sequence), norm, activation, dropout, biases, output tying, attention
  # kernel, dtype. Its num_layers and positions are not read: the fields below give them (DecoderLMConfig knows no
  # relative bias).
  stack: DecoderLMConfig
  num_encoder_layers: int
  num_decoder_layers: int
  # learned (BART) | sinusoidal (Vaswani et al. 2017, sec. 3.5) | relative (T5's bias, Raffel et al. 2020, sec. 2.1)
  positions: str = "sinusoidal"
  relative_buckets: int = 32  # "relative": buckets of key - query offsets, a bias per bucket and head ...
  relative_max_distance: int = 128  # ... logarithmically wider up to this offset, which every longer one shares
  # Embeddings times sqrt(width) (Vaswani et al., sec. 3.4), the table drawn with stddev width^-1/2 as in
  # tensor2tensor: tokens and the sinusoid then both enter at unit scale.
  scale_embeddings: bool = False
  scale_output: bool = False  # T5 (Mesh TensorFlow): the decoder's output times width^-1/2 before the output layer
  embedding_norm: bool = False  # BART's layernorm_embedding: a norm over each stack's summed embeddings
  final_logits_bias: bool = False  # BART: a bias per vocabulary entry added to the logits

  def __post_init__(self):
    for field in ("num_encoder_layers", "num_decoder_layers"):
      if getattr(self, field) <= 0:
        raise ConfigError(f"model.{field}={getattr(self, field)} must be positive")
    if self.positions not in POSITIONS:
      raise ConfigError(f"model.positions={self.positions!r} is not one of {POSITIONS}")
    if self.positions == "sinusoidal" and self.width % 2:
      raise ConfigError(f"model.positions='sinusoidal' needs an even width; model.width={self.width}")
    # Each half of the encoder's buckets has buckets // 4 exact distances, the decoder's buckets // 2, the rest are
    # logarithmic up to max_distance (positions.relative_position_bucket).
    if self.positions == "relative" and self.relative_buckets < 4:
      raise ConfigError(f"model.relative_buckets={self.relative_buckets} must be at least 4")
    if self.positions == "relative" and self.relative_max_distance <= self.relative_buckets // 2:
      raise ConfigError(f"model.relative_max_distance={self.relative_max_distance} must exceed relative_buckets // 2")
    for field, kept in UNSUPPORTED.items():
      if getattr(self.stack, field) != kept:
        raise ConfigError(f"model.{field}={getattr(self.stack, field)!r} is not supported by the encoder-decoder")

  @property
  def vocab_size(self) -> int:
    return self.stack.vocab_size

  @property
  def max_len(self) -> int:
    return self.stack.max_len

  @property
  def width(self) -> int:
    return self.stack.width

  def num_params(self, include_embeddings: bool = False) -> int:
    """Parameter count; without the token and position tables and the logits bias, the N of 6N FLOPs/token."""
    s = self.stack
    # Both stacks' self-attention, feed-forward and their two norms, as a decoder-only stack that deep counts them
    # (post-norm: without its final norm).
    blocks = dataclasses.replace(s, num_layers=self.num_encoder_layers + self.num_decoder_layers, norm_position="post")
    cross_attention = s.attention_params()  # queries and keys of key_dim, as the self-attention's
    norm = 2 * s.width if s.norm == "layernorm" else s.width
    per_stack = norm * (self.embedding_norm + (s.norm_position == "pre"))
    per_stack += self.relative_buckets * s.num_heads if self.positions == "relative" else 0
    total = blocks.num_params() + self.num_decoder_layers * (cross_attention + norm) + 2 * per_stack
    if include_embeddings:
      total += s.padded_vocab_size * s.width * (1 if s.tie_embeddings else 2)
      total += 2 * s.max_len * s.width if self.positions == "learned" else 0
      total += s.padded_vocab_size if self.final_logits_bias else 0
    return total


# The architectures the presets below are made of; a preset adds its sizes.
VASWANI = dict(
    positions="sinusoidal", norm="layernorm", norm_position="post", activation="relu", use_bias=True,
    tie_embeddings=True, scale_embeddings=True, dropout_rate=0.1,
)
# T5 (Raffel et al. 2020, sec. 2.1): pre-norm RMSNorm without biases, relative bias (32 buckets, distance 128), ReLU,
# an output tied to the scaled decoder output. T5 v1.1 (the released checkpoints' notes): gated GELU, untied, unscaled.
T5 = dict(
    positions="relative", norm="rmsnorm", norm_position="pre", norm_epsilon=1e-6, activation="relu", use_bias=False,
    tie_embeddings=True, scale_output=True, dropout_rate=0.1,
)
T5_V1_1 = dict(T5, activation="geglu_tanh", tie_embeddings=False, scale_output=False)
# BART (Lewis et al. 2020, sec. 2.1): post-norm with GELU and learned positions, a norm over the embeddings.
BART = dict(
    positions="learned", norm="layernorm", norm_position="post", activation="gelu", use_bias=True,
    tie_embeddings=True, embedding_norm=True, final_logits_bias=True, dropout_rate=0.1,
)



def _sizes(vocab_size: int, layers: int, width: int, num_heads: int, mlp_dim: int, max_len: int) -> dict:
  """A preset's sizes, with as many encoder as decoder layers."""
  return dict(vocab_size=vocab_size, num_encoder_layers=layers, num_decoder_layers=layers, width=width,
              num_heads=num_heads, mlp_dim=mlp_dim, max_len=max_len)


# The published shapes' num_params(include_embeddings=True) is checked in tests/decoders/models/test_encoder_decoder.py.
PRESETS = {
    # Vaswani et al. 2017, table 3 "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1, 65 M parameters with the
    # shared ~37,000-token BPE vocabulary of WMT 2014 en-de (sec. 5.1); tensor2tensor's max_length of 256.
    "transformer-base": dict(VASWANI, **_sizes(37000, layers=6, width=512, num_heads=8, mlp_dim=2048, max_len=256)),
    # The base architecture at a CPU size, for the en->de reproductions (a shared 8,000-piece SentencePiece vocabulary).
    "transformer-small": dict(VASWANI, **_sizes(8000, layers=3, width=256, num_heads=4, mlp_dim=1024, max_len=128)),
    # T5-small (Raffel et al. 2020, sec. 3.7; 60 M): the 32,128-entry SentencePiece vocabulary, 512 tokens.
    "t5-small": dict(T5, **_sizes(32128, layers=6, width=512, num_heads=8, mlp_dim=2048, max_len=512)),
    # T5 v1.1 base (248 M); v1.1 small's 6 heads of 64 do not divide its width of 512, which this model requires.
    "t5-v1_1-base": dict(T5_V1_1, **_sizes(32128, layers=12, width=768, num_heads=12, mlp_dim=2048, max_len=512)),
    # BART-base (Lewis et al. 2020, sec. 2.1: 6 + 6 layers, width 768; 139 M), 50,265 BPE tokens, 1,024 positions.
    "bart-base": dict(BART, **_sizes(50265, layers=6, width=768, num_heads=12, mlp_dim=3072, max_len=1024)),
}
_OWN_FIELDS = {field.name for field in dataclasses.fields(EncoderDecoderConfig)} - {"stack"}
# prefix_lm is a decoder-only model's: an encoder-decoder's source is its encoder's.
_STACK_FIELDS = {field.name for field in dataclasses.fields(DecoderLMConfig)} - {"num_layers", "positions", "prefix_lm"}
OVERRIDABLE = frozenset(_OWN_FIELDS | _STACK_FIELDS)  # the fields `preset` takes


def preset(name: str, **overrides) -> EncoderDecoderConfig:
  """The named preset with `overrides` of any field of `EncoderDecoderConfig` or `DecoderLMConfig` (pre-norm
  Vaswani: preset("transformer-base", norm_position="pre"))."""
  if name not in PRESETS:
    raise ConfigError(f"unknown encoder_decoder preset {name!r}; expected one of {sorted(PRESETS)}")
  fields = {**PRESETS[name], **overrides}
  unknown = sorted(set(fields) - OVERRIDABLE)
  if unknown:
    raise ConfigError(f"model.{unknown[0]} is not a field of the encoder-decoder")
  own = {key: value for key, value in fields.items() if key in _OWN_FIELDS}
  # The stack's num_layers is not read (the two depths are): 1 lets EncoderDecoderConfig name a bad depth itself.
  stack = DecoderLMConfig(num_layers=1, **{k: v for k, v in fields.items() if k not in own})
  return EncoderDecoderConfig(stack, **own)


def source_valid(tokens: jax.Array, lengths: jax.Array | None) -> jax.Array:
  """[batch, length] bool: true for the first `lengths` [batch] tokens of each row (all of them without lengths)."""
  if lengths is None:
    return jnp.ones(tokens.shape[:2], jnp.bool_)
  return jnp.arange(tokens.shape[1])[None] < jnp.asarray(lengths)[:, None]


@flax.struct.dataclass
class EncoderDecoderCache:
  """What decoding steps need: the decoder's own keys and values, and its source, encoded and projected once."""

  self_attention: kv_cache.KVCache  # [decoder layers, batch, kv_heads, capacity, key_dim | head_dim], per CacheSpec
  # Head-major, as the self-attention cache (kv_cache.KVCache): position-major keys would be copied into this order
  # by every layer on every step. `memory_of` swaps them back for the attention, inside whose matmuls the swap cancels.
  cross_key: jax.Array  # [decoder layers, batch, kv_heads, source, key_dim]: each layer's projection of the memory
  cross_value: jax.Array  # [decoder layers, batch, kv_heads, source, head_dim]
  encoder_valid: jax.Array  # [batch, source] bool: the source's real tokens

  @property
  def lengths(self) -> jax.Array:
    return self.self_attention.lengths

  def memory_of(self, layer: int) -> tuple[jax.Array, jax.Array]:
    """Decoder layer `layer`'s cross-attention keys [batch, source, kv_heads, key_dim] and values [..., head_dim]."""
    return jnp.swapaxes(self.cross_key[layer], 1, 2), jnp.swapaxes(self.cross_value[layer], 1, 2)

  def select_rows(self, rows: jax.Array) -> "EncoderDecoderCache":
    """The cache of rows `rows` [new_batch] (beam search: reorder and expand hypotheses), sources included."""
    take = functools.partial(jnp.take, indices=rows, axis=1)
    return EncoderDecoderCache(
        self.self_attention.select_rows(rows), take(self.cross_key), take(self.cross_value), self.encoder_valid[rows]
    )


@flax.struct.dataclass
class AlignmentProbe:
  """Stands where a key/value cache would in MultiHeadAttention (its `attend` seam) to keep a cross-attention's weights
  softmax(q k^T / sqrt(d_k)) [batch, heads, q, source] under the source's padding `mask` [batch, 1, 1, source]."""

  mask: jax.Array
  weights: jax.Array | None = None

  def attend(self, query, key, value, kernel):
    group = query.shape[-2] // key.shape[-2]  # grouped-query attention: query head n * group + g reads key head n
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, jnp.repeat(key, group, axis=-2)).astype(jnp.float32)
    logits = jnp.where(self.mask, logits / math.sqrt(query.shape[-1]), jnp.finfo(jnp.float32).min)
    return kernel(query, key, value, self.mask), self.replace(weights=jax.nn.softmax(logits, axis=-1))


def _with_cache(attention: nn.Module, cache, *args, **kwargs) -> tuple:
  """(output, cache) of a MultiHeadAttention call, given a cache (or an AlignmentProbe) or None."""
  if cache is None:
    return attention(*args, **kwargs), None
  return attention(*args, cache=cache, **kwargs)


class EncoderDecoderBlock(nn.Module):
  """Self-attention, then (in the decoder) cross-attention over the memory, then the feed-forward network."""

  config: EncoderDecoderConfig
  num_layers: int  # the stack's depth, for GPT-2's scaled initialisation of the residual projections
  is_decoder: bool  # with cross-attention

  def setup(self):
    cfg = self.config.stack
    dtype = DTYPES[cfg.dtype]
    residual_init = nn.initializers.normal(stddev=0.02 / (2 * self.num_layers) ** 0.5)  # GPT-2 sec. 2.3
    attention = functools.partial(
        attention_lib.MultiHeadAttention, num_heads=cfg.num_heads, head_dim=cfg.head_dim, num_kv_heads=cfg.num_kv_heads,
        key_dim=cfg.key_dim, implementation=cfg.attention, use_bias=cfg.use_bias, dtype=dtype,
        output_init=residual_init,
    )
    norm = functools.partial(norms.make_norm, cfg.norm, dtype=dtype, epsilon=cfg.norm_epsilon)
    self.attention, self.attention_norm = attention(name="attention"), norm("attention_norm")
    if self.is_decoder:
      self.cross_attention, self.cross_attention_norm = attention(name="cross_attention"), norm("cross_attention_norm")
    self.ffn = feed_forward.FeedForward(
        cfg.mlp_dim, cfg.activation, use_bias=cfg.use_bias, dtype=dtype, output_init=residual_init, name="ffn"
    )
    self.ffn_norm = norm("ffn_norm")
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def __call__(self, x, mask, bias, *, deterministic: bool, cache=None, memory=None, memory_mask=None, probe=None):
    """x [b, t, width] after the block, `cache` (a kv_cache.LayerCache, or None) with its keys and values, and `probe`
    (an AlignmentProbe, or None) holding its cross-attention weights. `memory` is the encoder's output [b, s, width]
    or this layer's projection of it (`project_memory`); `mask` and `bias` are the self-attention's."""

    def attend(h):
      nonlocal cache
      out, cache = _with_cache(self.attention, cache, h, mask, deterministic=deterministic, bias=bias)
      return out

    def attend_memory(h):  # a probe, like a cache, masks by itself
      nonlocal probe
      out, probe = _with_cache(self.cross_attention, probe, h, memory_mask if probe is None else None,
                               deterministic=deterministic, source=memory)
      return out

    sublayers = [(self.attention_norm, attend)]
    if self.is_decoder:
      sublayers.append((self.cross_attention_norm, attend_memory))
    sublayers.append((self.ffn_norm, lambda h: self.ffn(h, deterministic=deterministic)))
    for norm, sublayer in sublayers:
      if self.config.stack.norm_position == "pre":
        x = x + self.dropout(sublayer(norm(x)), deterministic=deterministic)
      else:
        x = norm(x + self.dropout(sublayer(x), deterministic=deterministic))
    return x, cache, probe

  def project_memory(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
    """This layer's cross-attention keys [b, s, kv_heads, key_dim] and values [b, s, kv_heads, head_dim] of the
    encoder's output."""
    return self.cross_attention(None, None, deterministic=True, source=memory)


class TransformerStack(nn.Module):
  """The encoder, or the decoder: positions, embedding norm, blocks and final norm around the shared token table."""

  config: EncoderDecoderConfig
  is_decoder: bool

  def setup(self):
    cfg, stack = self.config, self.config.stack
    dtype = DTYPES[stack.dtype]
    num_layers = cfg.num_decoder_layers if self.is_decoder else cfg.num_encoder_layers
    if cfg.positions == "learned":
      self.learned_positions = LearnedPositions(stack.max_len, stack.width, dtype=dtype, name="positions")
    if cfg.positions == "relative":  # bidirectional buckets for the encoder, causal ones for the decoder
      self.relative_bias = positions_lib.RelativePositionBias(
          stack.num_heads, cfg.relative_buckets, cfg.relative_max_distance, not self.is_decoder, dtype
      )
    norm = functools.partial(norms.make_norm, stack.norm, dtype=dtype, epsilon=stack.norm_epsilon)
    if cfg.embedding_norm:
      self.embed_norm = norm("embed_norm")
    self.embed_dropout = nn.Dropout(stack.dropout_rate)
    block = functools.partial(EncoderDecoderBlock, cfg, num_layers, self.is_decoder)
    self.blocks = [block(name=f"{decoder_lm.BLOCK_PREFIX}{i}") for i in range(num_layers)]
    if stack.norm_position == "pre":  # a post-norm stack already ends in a norm
      self.final_norm = norm("final_norm")

  def inputs(self, embeddings: jax.Array, positions: jax.Array, deterministic: bool) -> jax.Array:
    """The first block's input: token embeddings [b, t, width] at `positions` [b|1, t] with the position signal."""
    cfg = self.config
    if cfg.scale_embeddings:  # Vaswani et al., sec. 3.4
      embeddings = embeddings * jnp.asarray(math.sqrt(cfg.width), embeddings.dtype)
    if cfg.scale_embeddings and cfg.positions == "sinusoidal":  # both at unit scale (see scale_embeddings)
      x = embeddings + positions_lib.sinusoidal(positions, cfg.width).astype(embeddings.dtype)
    else:  # decoder_lm's signal: a learned table, or a sinusoid at the unscaled table's scale; none for "relative"
      learned = self.learned_positions if cfg.positions == "learned" else None
      x = decoder_lm.add_positions(embeddings, positions, cfg, learned)
    if cfg.embedding_norm:
      x = self.embed_norm(x)
    return self.embed_dropout(x, deterministic=deterministic)

  def self_attention_bias(self, positions: jax.Array, num_keys: int) -> jax.Array | None:
    """T5's relative bias [b|1, heads, t, num_keys] of queries at `positions` [b|1, t] over keys 0..num_keys-1."""
    if self.config.positions != "relative":
      return None
    if not self.is_decoder:  # the encoder sees its whole source at once, from position 0
      return self.relative_bias(num_keys, num_keys)
    # A causal bias depends only on how far back a key lies (a later key shares distance 0's bucket and is masked):
    # queries 0..n-1 over key 0 give the bias of every distance 0..n-1, which each row's queries then gather.
    by_distance = self.relative_bias(num_keys, 1)[0, :, :, 0]  # [heads, distance]
    distance = jnp.clip(positions[..., None] - jnp.arange(num_keys), 0, num_keys - 1)  # [b|1, t, keys]
    return jnp.moveaxis(by_distance[:, distance], 0, 1)

  def final(self, x: jax.Array) -> jax.Array:
    return self.final_norm(x) if self.config.stack.norm_position == "pre" else x

  def encode(self, embeddings: jax.Array, valid: jax.Array, deterministic: bool) -> jax.Array:
    """The memory [b, s, width] of source embeddings whose real tokens are `valid` [b, s]."""
    positions = jnp.arange(embeddings.shape[1])[None]
    x = self.inputs(embeddings, positions, deterministic)
    mask, bias = masks.padding_mask(valid), self.self_attention_bias(positions, embeddings.shape[1])
    for block in self.blocks:
      x, _, _ = block(x, mask, bias, deterministic=deterministic)
    return self.final(x)

  def decode(self, embeddings, memory, memory_mask, deterministic: bool, alignment_layer: int | None = None):
    """The final hidden states [b, t, width] of target embeddings over the memory, all positions at once (teacher
    forcing); with `alignment_layer`, that layer's cross-attention weights [b, heads, t, s] instead."""
    positions = jnp.arange(embeddings.shape[1])[None]
    x = self.inputs(embeddings, positions, deterministic)
    mask, bias = masks.causal_mask(embeddings.shape[1]), self.self_attention_bias(positions, embeddings.shape[1])
    for i, block in enumerate(self.blocks):
      probe = AlignmentProbe(memory_mask) if i == alignment_layer else None
      x, _, probe = block(x, mask, bias, deterministic=deterministic, memory=memory, memory_mask=memory_mask,
                          probe=probe)
      if probe is not None:
        return probe.weights
    return self.final(x)

  def decode_cached(self, embeddings, layer_cache: kv_cache.LayerCache, cache: EncoderDecoderCache):
    """As `decode` for new tokens after what `layer_cache` holds (their positions are its), and the cache updated."""
    x = self.inputs(embeddings, layer_cache.positions, deterministic=True)
    bias = self.self_attention_bias(layer_cache.positions, layer_cache.cache.capacity)
    memory_mask = masks.padding_mask(cache.encoder_valid)
    for i, block in enumerate(self.blocks):
      layer_cache, memory = layer_cache.replace(layer=i), cache.memory_of(i)
      x, layer_cache, _ = block(x, None, bias, deterministic=True, cache=layer_cache, memory=memory,
                                memory_mask=memory_mask)
    return self.final(x), layer_cache

  def project_memory(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every layer's cross-attention keys and values of the memory, stacked head-major (EncoderDecoderCache):
    [layers, b, kv_heads, s, key_dim] and [layers, b, kv_heads, s, head_dim]."""
    keys, values = zip(*(block.project_memory(memory) for block in self.blocks))
    return jnp.swapaxes(jnp.stack(keys), 2, 3), jnp.swapaxes(jnp.stack(values), 2, 3)


class EncoderDecoder(nn.Module):
  """Maps a source [batch, source] and decoder input [batch, target] to logits [batch, target, padded_vocab_size]."""

  config: EncoderDecoderConfig

  def setup(self):
    cfg, stack = self.config, self.config.stack
    dtype = DTYPES[stack.dtype]
    stddev = stack.width**-0.5 if cfg.scale_embeddings else TOKEN_INIT_STDDEV
    self.embed = TokenEmbedding(stack.padded_vocab_size, stack.width, dtype=dtype, init=nn.initializers.normal(stddev))
    self.encoder = TransformerStack(cfg, is_decoder=False)
    self.decoder = TransformerStack(cfg, is_decoder=True)
    if not stack.tie_embeddings:
      self.unembed = quantization.dense(
          "float", stack.padded_vocab_size, (EMBED, VOCAB), use_bias=False, dtype=dtype,
          kernel_init=nn.initializers.lecun_normal(), name="unembed", float32_output=True,
      )
    if cfg.final_logits_bias:
      zeros = with_axes(nn.initializers.zeros, VOCAB)
      self.logits_bias = self.param("final_logits_bias", zeros, (stack.padded_vocab_size,))

  def __call__(self, encoder_tokens, decoder_tokens, *, encoder_lengths=None, train: bool = False) -> jax.Array:
    """Float32 logits [batch, target, padded_vocab_size] of `decoder_tokens` (teacher forcing) given right-padded
    `encoder_tokens` whose rows are real up to `encoder_lengths` [batch] (default: all); padded ids get the minimum."""
    memory = self.encode(encoder_tokens, encoder_lengths, train)
    return self.decode(decoder_tokens, memory, encoder_lengths, train)

  def encode(self, encoder_tokens, encoder_lengths=None, train: bool = False) -> jax.Array:
    """The encoder's output [batch, source, width], the memory every cross-attention reads."""
    self._check_length(encoder_tokens, "source")
    valid = source_valid(encoder_tokens, encoder_lengths)
    return self.encoder.encode(self.embed(encoder_tokens), valid, deterministic=not train)

  def decode(self, decoder_tokens, memory, encoder_lengths=None, train: bool = False) -> jax.Array:
    """Logits [batch, target, padded_vocab_size] of `decoder_tokens` over `memory` (from `encode`)."""
    self._check_length(decoder_tokens, "target")
    memory_mask = masks.padding_mask(source_valid(memory, encoder_lengths))
    hidden = self.decoder.decode(self.embed(decoder_tokens), memory, memory_mask, deterministic=not train)
    return self.unembed_hidden(hidden)

  def alignments(self, encoder_tokens, decoder_tokens, *, encoder_lengths=None, layer: int = -1) -> jax.Array:
    """Decoder layer `layer`'s cross-attention weights [batch, heads, target, source] (teacher forcing): each target
    position's distribution over the source (the alignment pictures of Bahdanau et al. 2015, fig. 3)."""
    depth = self.config.num_decoder_layers
    if not -depth <= layer < depth:
      raise ConfigError(f"alignments: layer={layer} is not one of the decoder's {depth} layers")
    memory = self.encode(encoder_tokens, encoder_lengths)
    memory_mask = masks.padding_mask(source_valid(memory, encoder_lengths))
    return self.decoder.decode(self.embed(decoder_tokens), memory, memory_mask, True, alignment_layer=layer % depth)

  def unembed_hidden(self, hidden: jax.Array) -> jax.Array:
    """The decoder's final hidden states [..., width] -> float32 logits [..., padded_vocab], padded rows masked."""
    cfg = self.config
    if cfg.scale_output:
      hidden = hidden * jnp.asarray(cfg.width**-0.5, hidden.dtype)
    logits = self.embed.attend(hidden) if cfg.stack.tie_embeddings else self.unembed(hidden)
    if cfg.final_logits_bias:
      logits = logits + self.logits_bias
    return decoder_lm.mask_vocab_padding(logits, cfg.stack)

  def decoding_cache(
      self, batch: int, capacity: int, spec: kv_cache.CacheSpec = kv_cache.CacheSpec(), encoder_tokens=None,
      encoder_lengths=None,
  ) -> EncoderDecoderCache:
    """The decoding seam's cache (decoders/decoding/seam.py): `encoder_tokens` [batch, source] (right-padded, real up
    to `encoder_lengths`) encoded once and projected once per decoder layer, and an empty self-attention cache of
    `capacity` positions stored as `spec` says."""
    cfg = self.config
    if encoder_tokens is None:
      raise ConfigError("an encoder-decoder decodes a source: pass encoder_tokens, one source per prompt")
    if spec.eviction != "none":
      raise ConfigError(f"cache eviction={spec.eviction!r}: an encoder-decoder keeps every target position")
    if encoder_tokens.shape[0] != batch:
      raise ConfigError(f"{encoder_tokens.shape[0]} sources for a batch of {batch}")
    if capacity > cfg.max_len:
      raise ConfigError(f"a cache of {capacity} positions exceeds model.max_len={cfg.max_len}")
    keys, values = self.decoder.project_memory(self.encode(encoder_tokens, encoder_lengths))
    decoder_stack = dataclasses.replace(cfg.stack, num_layers=cfg.num_decoder_layers)
    empty = decoder_lm.init_cache(decoder_stack, batch, capacity, spec)
    return EncoderDecoderCache(empty, keys, values, source_valid(encoder_tokens, encoder_lengths))

  def tokens_to_logits(self, tokens, cache: EncoderDecoderCache, valid_lengths=None):
    """Logits [batch, t, padded_vocab] of decoder `tokens` [batch, t] that follow what `cache` holds, and the cache
    after them (it counts `valid_lengths` [batch] more tokens per row, default t): the decoding seam."""
    hidden, cache = self.tokens_to_hidden(tokens, cache, valid_lengths)
    return self.unembed_hidden(hidden), cache

  def tokens_to_hidden(self, tokens, cache: EncoderDecoderCache, valid_lengths=None):
    """As `tokens_to_logits`, but the decoder's final hidden states [batch, t, width] (contrastive search)."""
    self_attention, length = cache.self_attention, tokens.shape[-1]
    if length > self_attention.capacity:
      raise ConfigError(f"{length} tokens do not fit a decoder cache of capacity {self_attention.capacity}")
    positions = self_attention.lengths[:, None] + jnp.arange(length)[None]
    added = jnp.full_like(positions[:, 0], length) if valid_lengths is None else jnp.asarray(valid_lengths, jnp.int32)
    layer_cache = kv_cache.LayerCache(self_attention, jnp.int32(0), positions, added)
    hidden, layer_cache = self.decoder.decode_cached(self.embed(tokens), layer_cache, cache)
    self_attention = layer_cache.cache.replace(lengths=self_attention.lengths + added)
    return hidden, cache.replace(self_attention=self_attention)

  def _check_length(self, tokens: jax.Array, what: str):
    if tokens.shape[-1] > self.config.max_len:
      raise ConfigError(f"{what} length {tokens.shape[-1]} exceeds model.max_len={self.config.max_len}")
