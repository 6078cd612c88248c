"""Bidirectional Transformer encoder with a masked-LM head (BERT: Devlin et al. 2019).

    tokens -> embed + positions (+ token types) -> Norm -> N x block -> (Norm) -> head -> logits
    head (google-research/bert run_pretraining.py, get_masked_lm_output):
        Norm(act(W h + b)) E^T + output_bias      (E: the tied token embedding)

The blocks are the decoder's own stack (`decoder_lm.BlockStack`: loop or scan, remat): an encoder differs from a
decoder-only LM only in its mask (every token sees every real token, `masks.padding_mask`,
instead of `masks.causal_mask`) and in what sits around the stack. So the stack is described
by a `DecoderLMConfig` and `EncoderConfig` holds one, adding only what lies outside it (token
types). Holding rather than subclassing keeps the decoder-only parts of that config (a
sliding window, a KV cache's size) from reading as features of an encoder; the one that
would change the blocks, `sliding_window`, is refused. BERT's architecture (sec. 3, "Model
Architecture"; appendix A.2) is the post-norm block of Vaswani et al. 2017 with LayerNorm,
GELU and learned positions: `BERT`, which the presets below are made of.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import feed_forward, masks, norms
from decoders.layers.embedding import LearnedPositions, TokenEmbedding
from decoders.layers.partitioning import EMBED, VOCAB, with_axes
from decoders.models import decoder_lm
from decoders.models.decoder_lm import DTYPES, DecoderLMConfig


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  stack: DecoderLMConfig  # the embedding and block sizes, as for a decoder; sliding_window must be 0
  # BERT's segment embeddings (sec. 3, "Input/Output Representations": sentence A or B); 0: none.
  type_vocab_size: int = 0

  def __post_init__(self):
    if self.stack.sliding_window:
      raise ConfigError(
          f"model.sliding_window={self.stack.sliding_window}: an encoder attends to the whole input; set it to 0"
      )
    if self.type_vocab_size < 0:
      raise ConfigError(f"model.type_vocab_size={self.type_vocab_size} must be >= 0 (0: no token types)")

  def num_params(self, include_embeddings: bool = False) -> int:
    """Parameter count; without the embedding tables and the output bias it is the N of 6N FLOPs/token.

    N is the stack's, the norm over the summed embeddings and the head's dense layer and norm.
    """
    cfg = self.stack
    norm_size = 2 * cfg.width if cfg.norm == "layernorm" else cfg.width
    head = cfg.width * cfg.width + (cfg.width if cfg.use_bias else 0) + norm_size
    total = cfg.num_params() + norm_size + head
    if include_embeddings:
      # The token and position tables as DecoderLMConfig counts them, the token types, the output bias.
      total += cfg.num_params(include_embeddings=True) - cfg.num_params()
      total += self.type_vocab_size * cfg.width + (cfg.padded_vocab_size if cfg.use_bias else 0)
    return total

  def flops_per_token(self, context: int) -> float:
    """Training FLOPs per token: the stack's 6N + 6 L T d (Kaplan et al. 2020, table 1), plus 6x the parameters around it.

    Every position gets logits, so the output projection counts for every token (BERT's
    own code gathers the masked 15 % first; the projection is then ~7x cheaper).
    """
    return self.stack.flops_per_token(context) + 6.0 * (self.num_params() - self.stack.num_params())


# BERT (Devlin et al. 2019): post-norm LayerNorm blocks (epsilon 1e-12 in the released code),
# exact GELU (appendix A.2; the released TF code used its tanh approximation, the Hugging Face
# port the exact one), learned positions, biases, tied input and output embeddings.
BERT = dict(
    positions="learned", norm="layernorm", norm_position="post", norm_epsilon=1e-12, activation="gelu",
    use_bias=True, tie_embeddings=True,
)

# num_params(include_embeddings=True) of a published shape is that of Hugging Face's
# BertForMaskedLM: BertModel less its pooler, plus the masked-LM head
# (tests/decoders/models/test_encoder.py).
PRESETS = {
    # The decoder's character-level Shakespeare size (decoder_lm.PRESETS), bidirectional; one token type.
    "shakespeare_char": dict(BERT, num_layers=4, width=128, num_heads=4, mlp_dim=512, max_len=64),
    # BERT-base and BERT-large (sec. 3: 110 M and 340 M), WordPiece vocabulary of 30,522, 512 positions.
    "bert-base": dict(
        BERT, vocab_size=30522, num_layers=12, width=768, num_heads=12, mlp_dim=3072, max_len=512, type_vocab_size=2
    ),
    "bert-large": dict(
        BERT, vocab_size=30522, num_layers=24, width=1024, num_heads=16, mlp_dim=4096, max_len=512, type_vocab_size=2
    ),
}


def preset(name: str, **overrides) -> EncoderConfig:
  """The named preset with `overrides` of any field of `DecoderLMConfig` or `EncoderConfig`."""
  if name not in PRESETS:
    raise ConfigError(f"unknown encoder preset {name!r}; expected one of {sorted(PRESETS)}")
  fields = {**PRESETS[name], **overrides}
  type_vocab_size = fields.pop("type_vocab_size", 0)
  return EncoderConfig(DecoderLMConfig(**fields), type_vocab_size)


class Encoder(nn.Module):
  """Maps tokens [batch, length] to logits over the vocabulary at every position."""

  config: EncoderConfig

  def setup(self):
    cfg = self.config.stack
    dtype = DTYPES[cfg.dtype]
    init = nn.initializers.normal(stddev=0.02)  # BERT's initializer_range
    self.embed = TokenEmbedding(cfg.padded_vocab_size, cfg.width, dtype=dtype)
    if cfg.positions == "learned":
      self.learned_positions = LearnedPositions(cfg.max_len, cfg.width, dtype=dtype, name="positions")
    if self.config.type_vocab_size:
      # Not a TokenEmbedding: its few rows are not a vocabulary to split over mesh.tensor.
      self.token_types = self.param("token_types", with_axes(init, None, EMBED), (self.config.type_vocab_size, cfg.width))
    # The summed embeddings are normalised before the first block (released code:
    # modeling.py, embedding_postprocessor): a post-norm block never normalises its input.
    self.embed_norm = norms.make_norm(cfg.norm, "embed_norm", dtype, cfg.norm_epsilon)
    self.embed_dropout = nn.Dropout(cfg.dropout_rate)
    self.blocks = decoder_lm.BlockStack(cfg)  # the decoder's stack: loop or scan, remat
    nn.share_scope(self, self.blocks)  # params/block_0, ... beside params/embed, as in DecoderLM
    if cfg.norm_position == "pre":  # a post-norm stack already ends in a norm
      self.final_norm = norms.make_norm(cfg.norm, "final_norm", dtype, cfg.norm_epsilon)
    self.head_dense = nn.Dense(
        cfg.width,
        use_bias=cfg.use_bias,
        dtype=dtype,
        kernel_init=with_axes(init, EMBED, None),  # EMBED twice would shard both dimensions over mesh.fsdp
        bias_init=with_axes(nn.initializers.zeros, None),
        name="head_dense",
    )
    self.head_norm = norms.make_norm(cfg.norm, "head_norm", dtype, cfg.norm_epsilon)
    if not cfg.tie_embeddings:
      self.unembed = nn.Dense(
          cfg.padded_vocab_size, use_bias=False, dtype=dtype, kernel_init=with_axes(init, EMBED, VOCAB), name="unembed"
      )
    if cfg.use_bias:  # "an output-only bias for each token" (released code, get_masked_lm_output)
      self.output_bias = self.param("output_bias", with_axes(nn.initializers.zeros, VOCAB), (cfg.padded_vocab_size,))

  def __call__(
      self, tokens: jax.Array, *, train: bool = False, valid: jax.Array | None = None, token_types: jax.Array | None = None
  ) -> jax.Array:
    """Logits [batch, length, padded_vocab_size] (float32); those of padding ids are the float32 minimum.

    `valid` [batch, length] is true for real tokens: padding keys are hidden from every
    query (by default every token is real). `token_types` [batch, length] are BERT's
    sentence A/B ids, by default all 0.
    """
    cfg = self.config.stack
    length = tokens.shape[-1]
    if length > cfg.max_len:
      raise ConfigError(f"input length {length} exceeds model.max_len={cfg.max_len}")
    positions = jnp.arange(length)[None]
    learned = self.learned_positions if cfg.positions == "learned" else None
    x = decoder_lm.add_positions(self.embed(tokens), positions, cfg, learned)
    if self.config.type_vocab_size:
      types = jnp.zeros_like(tokens) if token_types is None else token_types
      x = x + jnp.take(jnp.asarray(self.token_types, x.dtype), types, axis=0)
    x = self.embed_dropout(self.embed_norm(x), deterministic=not train)
    mask = None if valid is None else masks.padding_mask(valid)  # None: every key is visible
    x = self.blocks(x, mask, positions, deterministic=not train)
    if cfg.norm_position == "pre":
      x = self.final_norm(x)
    # Gated activations (SwiGLU, GeGLU) name their nonlinearity; the head applies it ungated.
    x = self.head_norm(feed_forward.ACTIVATIONS[cfg.activation](self.head_dense(x)))
    logits = self.embed.attend(x) if cfg.tie_embeddings else self.unembed(x)
    if cfg.use_bias:
      logits = logits + jnp.asarray(self.output_bias, logits.dtype)
    return decoder_lm.mask_vocab_padding(logits.astype(jnp.float32), cfg)
