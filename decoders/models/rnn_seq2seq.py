"""RNN encoder-decoder translation (Cho et al. 2014; Sutskever et al. 2014; Bahdanau et al. 2015; Luong et al. 2015).

    source (reversed: Sutskever et al. sec. 3.3) -> embed -> N x RNN (bidirectional: Bahdanau sec. 3.2) -> h_1..h_S
    c   = tanh(V [->h_S; <-h_1])           the fixed-length summary (Cho et al. 2014, appendix A.1.1)
    s_0 = tanh(V' c), one per layer         the decoder's initial state (Cho A.1.2; Bahdanau A.2.2 likewise)
    each target step t (Luong et al. 2015, sec. 3):
      x_t  = [E y_{t-1}; h~_{t-1} with input feeding (sec. 3.3); c without attention]
      h_t  = N x RNN(x_t)
      c_t  = sum_j a_tj h_j, a_t = align(h_t, h_1..h_S) (sec. 3.1; scores: decoders/layers/alignment.py); or c
      h~_t = tanh(W_c [c_t; h_t])  (eq. 5),   p(y_t | y_<t, x) = softmax(W_s h~_t)  (eq. 6)

Without attention the decoder sees the source only through c, fed at every step as in Cho et al.
(eq. 1 of sec. 2.2: h_t = f(h_{t-1}, y_{t-1}, c)), not only as the initial state (Sutskever et al.).
Every attention kind scores the current state h_t (Luong's order); Bahdanau et al. score the previous
one and feed c_t into the recurrence, which input feeding approximates: the "bahdanau2015" preset is
their encoder and score in Luong's decoder. The LSTM's memory cell starts at 0; only h comes from c.
Dropout sits on the non-recurrent connections only (Zaremba et al. 2014, sec. 3). The decoder is one
`nn.scan` over target positions; `teacher_forcing` adds scheduled sampling (Bengio et al. 2015).

Decoding follows the seam of decoders/decoding: `decoding_cache` encodes once and holds the recurrent
state (`RNNDecodingCache`); `tokens_to_logits` continues it by t tokens per row.
"""
import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import alignment, kv_cache, quantization, recurrent
from decoders.layers.embedding import TokenEmbedding
from decoders.layers.partitioning import EMBED, MLP, VOCAB
from decoders.models.decoder_lm import DTYPES

ATTENTIONS = ("none", *alignment.SCORES)
UNPROJECTED = ("dot", "scaled_dot")  # scores that compare decoder and encoder states directly


@dataclasses.dataclass(frozen=True)
class RNNSeq2SeqConfig:
  vocab_size: int  # one vocabulary for source and target (a shared SentencePiece model)
  cell: str = "gru"  # one of recurrent.CELLS
  num_layers: int = 1  # in the encoder and in the decoder
  width: int = 256  # hidden units per layer and direction
  embed_dim: int = 256
  bidirectional_encoder: bool = False
  attention: str = "none"  # one of ATTENTIONS; "none": the fixed context of Cho et al. 2014
  input_feeding: bool = False  # feed h~_{t-1} into step t (Luong et al. 2015, sec. 3.3)
  reverse_source: bool = False  # read each source sentence backwards (Sutskever et al. 2014, sec. 3.3)
  dropout_rate: float = 0.0
  max_len: int = 128  # the longest source, and the longest decoder sequence (prompt + generated)
  tie_embeddings: bool = False  # one table for the source, the target and the output layer (Press & Wolf 2017)
  dtype: str = "float32"  # compute dtype; parameters, recurrent states, softmax and logits stay float32

  def __post_init__(self):
    for field in ("vocab_size", "num_layers", "width", "embed_dim", "max_len"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"model.{field}={value!r} must be a positive integer")
    for field in ("bidirectional_encoder", "input_feeding", "reverse_source", "tie_embeddings"):
      if not isinstance(getattr(self, field), bool):
        raise ConfigError(f"model.{field}={getattr(self, field)!r} must be True or False")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"model.dropout_rate={self.dropout_rate} must be in [0, 1)")
    for field, allowed in {"cell": recurrent.CELLS, "attention": ATTENTIONS, "dtype": tuple(DTYPES)}.items():
      if getattr(self, field) not in allowed:
        raise ConfigError(f"model.{field}={getattr(self, field)!r} is not one of {allowed}")
    if self.attention in UNPROJECTED and self.bidirectional_encoder:
      raise ConfigError(
          f"model.attention={self.attention!r} compares the decoder state (width) with encoder states of 2 x width: "
          "use a projecting score (general, additive, concat) or bidirectional_encoder=False"
      )


# CPU sizes of the papers' models; the comments give the published sizes.
PRESETS = {
    # Cho et al. 2014 (appendix A.1): a GRU encoder-decoder with a fixed context; 1000 units, 100-dim embeddings.
    "cho2014": dict(cell="gru", num_layers=1, width=256, embed_dim=128, attention="none"),
    # Sutskever et al. 2014 (sec. 3.4): 4 LSTM layers of 1000 cells, 1000-dim embeddings, reversed source.
    "sutskever2014": dict(cell="lstm", num_layers=2, width=256, embed_dim=256, reverse_source=True),
    # Bahdanau et al. 2015 (RNNsearch, appendix A.2): a bidirectional GRU encoder, 1000 units per direction,
    # 620-dim embeddings, additive score with 1000 hidden units.
    "bahdanau2015": dict(
        cell="gru", num_layers=1, width=256, embed_dim=128, bidirectional_encoder=True, attention="additive",
        input_feeding=True,
    ),
    # Luong et al. 2015 (sec. 4.1): 4 LSTM layers of 1000 cells, 1000-dim embeddings, dropout 0.2, reversed
    # source, input feeding. "general" is the score of their local attention; this model attends globally,
    # where they found "dot" as good (sec. 5.4).
    "luong2015": dict(
        cell="lstm", num_layers=2, width=256, embed_dim=256, attention="general", input_feeding=True,
        reverse_source=True, dropout_rate=0.2,
    ),
}


def preset(name: str, **overrides) -> RNNSeq2SeqConfig:
  """The named preset with `overrides` of any field; `vocab_size` (the data's vocabulary) is required."""
  if name not in PRESETS:
    raise ConfigError(f"unknown rnn_seq2seq preset {name!r}; expected one of {sorted(PRESETS)}")
  if "vocab_size" not in overrides:
    raise ConfigError(f"rnn_seq2seq preset {name!r} needs vocab_size=... (the data's vocabulary)")
  return RNNSeq2SeqConfig(**{**PRESETS[name], **overrides})


@flax.struct.dataclass
class RNNDecodingCache:
  """What a decoding step needs, every array batch-first: the encoder's outputs and the decoder's state."""

  states: tuple  # per decoder layer, the cell's float32 carry: GRU h [b, width], LSTM (c, h)
  attentional: jax.Array  # [b, width]: h~ of the last step (input feeding reads it; 0 before the first)
  lengths: jax.Array  # [b] int32: target tokens each row has read
  # Without attention: Cho et al.'s fixed context c [b, width], read at every step; the rest is None.
  context: jax.Array | None = None
  # With attention: the encoder outputs [b, src, width (x2 bidirectional)], keys and values of the attention,
  # the score's key side computed once (alignment.project_keys), and the real source positions [b, src].
  memory: jax.Array | None = None
  projected_memory: jax.Array | None = None
  memory_mask: jax.Array | None = None

  def select_rows(self, rows: jax.Array) -> "RNNDecodingCache":
    """The cache of rows `rows` (indices into the batch, repeats allowed): beam search reorders with it."""
    return jax.tree.map(lambda x: jnp.take(x, rows, axis=0), self)


def _dense(features, axes, name, dtype, use_bias=True, float32_output=False):
  return quantization.dense(
      "float", features, axes, use_bias=use_bias, dtype=dtype, kernel_init=nn.initializers.lecun_normal(), name=name,
      float32_output=float32_output,
  )


class RNNSeq2Seq(nn.Module):
  """(encoder_tokens [b, src], decoder_tokens [b, tgt]) -> next-token logits [b, tgt, vocab] float32."""

  config: RNNSeq2SeqConfig

  def setup(self):
    cfg = self.config
    dtype = DTYPES[cfg.dtype]
    # Tables of scale embed_dim^-1/2, looked up times sqrt(embed_dim) (Vaswani et al. 2017, sec. 3.4): the cells
    # read unit-variance inputs, which their LeCun-normal kernels turn into unit-variance gates, and a tied output
    # layer (the same table) gives logits of unit scale rather than sqrt(embed_dim).
    init = nn.initializers.normal(stddev=cfg.embed_dim**-0.5)
    self.embed = TokenEmbedding(cfg.vocab_size, cfg.embed_dim, dtype=dtype, init=init)  # the target's, or shared
    if not cfg.tie_embeddings:
      self.source_embed = TokenEmbedding(cfg.vocab_size, cfg.embed_dim, dtype=dtype, init=init)
    self.encoder = recurrent.RecurrentEncoder(
        cfg.cell, cfg.width, cfg.num_layers, cfg.bidirectional_encoder, cfg.dropout_rate, dtype
    )
    self.summary = _dense(cfg.width, (EMBED, MLP), "summary", dtype)  # V
    self.bridge = _dense((cfg.num_layers, cfg.width), (EMBED, None, MLP), "bridge", dtype)  # V'
    self.decoder_cells = [
        recurrent.make_cell(cfg.cell, cfg.width, dtype, f"decoder_{layer}") for layer in range(cfg.num_layers)
    ]
    if cfg.attention != "none":
      self.alignment = alignment.make(cfg.attention, cfg.width, dtype, name="alignment")
    self.attentional_layer = _dense(cfg.width, (EMBED, MLP), "attentional", dtype, use_bias=False)  # W_c
    if not cfg.tie_embeddings:
      self.unembed = _dense(cfg.vocab_size, (EMBED, VOCAB), "unembed", dtype, use_bias=False, float32_output=True)
    elif cfg.embed_dim != cfg.width:  # the tied table reads embed_dim features: project h~ down to them first
      self.output_projection = _dense(cfg.embed_dim, (MLP, EMBED), "output_projection", dtype, use_bias=False)
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def __call__(self, encoder_tokens, decoder_tokens, *, encoder_lengths=None, train=False, teacher_forcing=None):
    """Logits [b, tgt, vocab] (float32) of each next target token, reading gold `decoder_tokens` ([bos] + target).

    `teacher_forcing` None feeds the gold previous token at every step; a probability p (a float or a
    traced scalar) is scheduled sampling (Bengio et al. 2015, sec. 2.4): after the first step each row
    feeds, with probability 1 - p, a token sampled from the model's own previous output distribution
    instead (no gradient through the sample; the rng stream is "sampling").
    """
    self._check_length("decoder", decoder_tokens.shape[1])
    cache = self._encode(encoder_tokens, encoder_lengths, train)
    hidden, _, logits, _ = self._decode(decoder_tokens, cache, train=train, teacher_forcing=teacher_forcing)
    return self.unembed_hidden(hidden) if logits is None else logits

  def alignments(self, encoder_tokens, decoder_tokens, *, encoder_lengths=None) -> jax.Array:
    """Attention weights [b, tgt, src] of a teacher-forced pass, source positions in input order (Bahdanau Fig. 3)."""
    if self.config.attention == "none":
      raise ConfigError("model.attention='none' has no alignments: the decoder reads a fixed context")
    self._check_length("decoder", decoder_tokens.shape[1])
    cache = self._encode(encoder_tokens, encoder_lengths, train=False)
    _, weights, _, _ = self._decode(decoder_tokens, cache)
    if self.config.reverse_source:  # the encoder read each row backwards: put the weights back in source order
      weights = recurrent.reverse_valid(weights.swapaxes(1, 2), cache.memory_mask.sum(axis=1)).swapaxes(1, 2)
    return weights

  def decoding_cache(self, batch, capacity, spec=kv_cache.CacheSpec(), encoder_tokens=None, encoder_lengths=None):
    """The state before any target token: `encoder_tokens` [batch, src] (valid up to `encoder_lengths`) encoded once.

    `capacity` (the longest decoder sequence to come) sizes nothing: it is only checked against max_len.
    """
    if spec != kv_cache.CacheSpec():
      raise ConfigError(f"an RNN decoder keeps a fixed-size state, not a key/value cache: {spec} does not apply")
    if encoder_tokens is None:
      raise ConfigError("an encoder-decoder needs encoder_tokens (the source) to decode")
    if encoder_tokens.shape[0] != batch:
      raise ConfigError(f"encoder_tokens has {encoder_tokens.shape[0]} rows for a batch of {batch}")
    self._check_length("decoder", capacity)
    return self._encode(encoder_tokens, encoder_lengths, train=False)

  def tokens_to_logits(self, tokens, cache, valid_lengths=None):
    """Logits [b, t, vocab] of `tokens` [b, t] read after what `cache` has read, and the cache after them.

    Row b reads its first `valid_lengths[b]` tokens (default t); its state ignores the rest.
    """
    hidden, cache = self.tokens_to_hidden(tokens, cache, valid_lengths)
    return self.unembed_hidden(hidden), cache

  def tokens_to_hidden(self, tokens, cache, valid_lengths=None):
    """As `tokens_to_logits`, but the attentional vectors h~ [b, t, width] (contrastive search compares them)."""
    hidden, _, _, cache = self._decode(tokens, cache, valid_lengths=valid_lengths)
    return hidden, cache

  def unembed_hidden(self, hidden):
    """h~ [..., width] -> float32 logits [..., vocab] (Luong et al. 2015, eq. 6)."""
    cfg = self.config
    if not cfg.tie_embeddings:
      return self.unembed(hidden)
    if cfg.embed_dim != cfg.width:
      hidden = self.output_projection(hidden)
    return self.embed.attend(hidden)

  def _embed(self, table: TokenEmbedding, tokens: jax.Array) -> jax.Array:
    return table(tokens) * jnp.sqrt(self.config.embed_dim).astype(table.dtype)

  def _check_length(self, what: str, length: int):
    if length > self.config.max_len:
      raise ConfigError(f"{what} length {length} exceeds model.max_len={self.config.max_len}")

  def _encode(self, tokens, lengths, train: bool) -> RNNDecodingCache:
    """The source encoded, and the decoder's state before its first token."""
    cfg, dtype = self.config, DTYPES[self.config.dtype]
    batch, length = tokens.shape
    self._check_length("source", length)
    lengths = jnp.full((batch,), length, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    if cfg.reverse_source:
      tokens = recurrent.reverse_valid(tokens, lengths)
    x = self._embed(self.embed if cfg.tie_embeddings else self.source_embed, tokens)
    x = self.dropout(x, deterministic=not train)
    memory, summary = self.encoder(x, lengths, deterministic=not train)
    context = jnp.tanh(self.summary(summary))  # Cho et al. 2014, A.1.1: c = tanh(V h_N)
    initial = jnp.tanh(self.bridge(context))  # A.1.2: h'_0 = tanh(V' c), here one per layer
    states = tuple(cell.carry_with_hidden(initial[:, i]) for i, cell in enumerate(self.decoder_cells))
    attentional, no_tokens = jnp.zeros((batch, cfg.width), dtype), jnp.zeros((batch,), jnp.int32)
    start = dict(states=states, attentional=attentional, lengths=no_tokens)
    if cfg.attention == "none":
      return RNNDecodingCache(**start, context=context)
    mask = jnp.arange(length)[None] < lengths[:, None]
    projected = self.alignment.project_keys(memory)  # once per source, not once per target token
    return RNNDecodingCache(**start, memory=memory, projected_memory=projected, memory_mask=mask)

  def _decode(self, tokens, cache: RNNDecodingCache, *, valid_lengths=None, train=False, teacher_forcing=None):
    """One scan over `tokens` [b, t]: (h~ [b, t, width] after dropout, weights [b, t, src] or None, logits
    [b, t, vocab] under scheduled sampling or None, the cache after the rows' valid tokens)."""
    batch, length = tokens.shape
    sampling = None
    if teacher_forcing is not None:
      sampling = (self.make_rng("sampling"), jnp.asarray(teacher_forcing, jnp.float32))

    def body(model, carry, inputs, shared):
      return model.decoder_step(carry, inputs, shared, train)

    scan = nn.scan(
        body,
        variable_broadcast="params",
        split_rngs={"params": False, "dropout": True},
        in_axes=(0, nn.broadcast),
        out_axes=0,
    )
    carry = (cache.states, cache.attentional, jnp.zeros((batch,), jnp.int32))
    steps = (tokens.T, jnp.arange(length, dtype=jnp.int32))
    (states, attentional, _), outputs = scan(self, carry, steps, (cache, valid_lengths, sampling))
    hidden, weights, logits = jax.tree.map(lambda x: x.swapaxes(0, 1), outputs)
    added = jnp.full((batch,), length, jnp.int32) if valid_lengths is None else jnp.asarray(valid_lengths, jnp.int32)
    cache = cache.replace(states=states, attentional=attentional, lengths=cache.lengths + added)
    return hidden, weights, logits, cache

  def decoder_step(self, carry, inputs, shared, train: bool):
    """One target position for every row: the body of `_decode`'s scan."""
    cfg = self.config
    states, attentional, sample = carry
    token, time = inputs
    cache, valid_lengths, sampling = shared
    deterministic = not train
    if sampling is not None:  # Bengio et al. 2015: with probability 1 - p, read the model's own previous sample
      rng, teacher_forcing = sampling
      coin = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(rng, time), 0), token.shape)
      token = jnp.where((time > 0) & (coin >= teacher_forcing), sample, token)
    x = [self._embed(self.embed, token)]
    if cfg.input_feeding:
      x.append(attentional)
    if cfg.attention == "none":
      x.append(cache.context)
    x = jnp.concatenate(x, axis=-1)
    new_states = []
    for cell, state in zip(self.decoder_cells, states):
      state, x = cell(state, self.dropout(x, deterministic=deterministic))
      new_states.append(state)
    if cfg.attention == "none":
      context, weights = cache.context, None
    else:
      context, weights = self.alignment(x, cache.memory, cache.memory_mask, cache.projected_memory)
    new_attentional = jnp.tanh(self.attentional_layer(jnp.concatenate([context.astype(x.dtype), x], axis=-1)))
    hidden = self.dropout(new_attentional, deterministic=deterministic)
    logits = None
    if sampling is not None:
      logits = self.unembed_hidden(hidden)
      sample_rng = jax.random.fold_in(jax.random.fold_in(rng, time), 1)
      sample = jax.random.categorical(sample_rng, jax.lax.stop_gradient(logits))
    new_carry = (tuple(new_states), new_attentional, sample)
    if valid_lengths is not None:  # rows past their valid length keep their state
      new_carry = recurrent.advance_rows(time < valid_lengths, new_carry, carry)
    return new_carry, (hidden, weights, logits)
