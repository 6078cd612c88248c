"""Decoder-only Transformer language model (GPT: Radford et al. 2018, 2019).

    tokens -> embed + positions -> N x [x + Attn(Norm(x)), x + FFN(Norm(x))] -> Norm -> logits

Pre-norm residual blocks as in GPT-2 (Radford et al. 2019, sec. 2.3). Variants are
chosen by the string fields of `DecoderLMConfig`; named presets live in `PRESETS`.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import attention as attention_lib
from decoders.layers import feed_forward, norms
from decoders.layers.embedding import LearnedPositions, TokenEmbedding

POSITIONS = ("learned",)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class DecoderLMConfig:
  vocab_size: int
  num_layers: int
  width: int
  num_heads: int
  mlp_dim: int
  max_len: int
  dropout_rate: float = 0.0
  positions: str = "learned"
  norm: str = "layernorm"
  activation: str = "gelu"
  attention: str = "xla"  # kernel: one of attention_lib.IMPLEMENTATIONS
  tie_embeddings: bool = True
  use_bias: bool = True
  dtype: str = "float32"  # compute dtype; parameters are always float32
  # The embedding table and the logits get `padded_vocab_size` rows, a multiple of this,
  # so the vocabulary splits evenly over a tensor-parallel mesh axis (and aligns with
  # hardware tiles); the padded logits are masked, so no padded id is ever predicted.
  vocab_multiple: int = 1

  def __post_init__(self):
    for field in ("vocab_size", "num_layers", "width", "num_heads", "mlp_dim", "max_len", "vocab_multiple"):
      if getattr(self, field) <= 0:
        raise ConfigError(f"model.{field}={getattr(self, field)} must be positive")
    if self.width % self.num_heads:
      raise ConfigError(f"model.width={self.width} is not divisible by model.num_heads={self.num_heads}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"model.dropout_rate={self.dropout_rate} must be in [0, 1)")
    choices = {
        "positions": POSITIONS,
        "norm": norms.NORMS,
        "activation": tuple(feed_forward.ACTIVATIONS),
        "attention": attention_lib.IMPLEMENTATIONS,
        "dtype": tuple(DTYPES),
    }
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise ConfigError(f"model.{field}={getattr(self, field)!r} is not one of {allowed}")

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def padded_vocab_size(self) -> int:
    return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

  def num_params(self, include_embeddings: bool = False) -> int:
    """Parameter count; without embeddings it is the N of Kaplan et al. 2020's 6N FLOPs/token."""
    per_layer = 4 * self.width * self.width + 2 * self.width * self.mlp_dim
    if self.use_bias:
      per_layer += 4 * self.width + self.mlp_dim + self.width
    per_layer += 4 * self.width  # two norms, scale and bias
    total = self.num_layers * per_layer + 2 * self.width
    if include_embeddings:
      total += self.padded_vocab_size * self.width + self.max_len * self.width
      if not self.tie_embeddings:
        total += self.padded_vocab_size * self.width
    return total

  def flops_per_token(self, context: int) -> float:
    """Training FLOPs per token: 6N for the weights plus 6 L T d for attention (Kaplan et al. 2020, table 1)."""
    weights = self.num_params() + self.padded_vocab_size * self.width  # the output projection is a matmul too
    return 6.0 * weights + 6.0 * self.num_layers * context * self.width


PRESETS = {
    # nanoGPT's character-level Shakespeare model, scaled to a 2-core CPU.
    "shakespeare_char": dict(num_layers=4, width=128, num_heads=4, mlp_dim=512, max_len=64),
    # GPT-2 small (Radford et al. 2019, table 2).
    "gpt2": dict(vocab_size=50257, num_layers=12, width=768, num_heads=12, mlp_dim=3072, max_len=1024),
}


def preset(name: str, **overrides) -> DecoderLMConfig:
  if name not in PRESETS:
    raise ConfigError(f"unknown decoder_lm preset {name!r}; expected one of {sorted(PRESETS)}")
  return DecoderLMConfig(**{**PRESETS[name], **overrides})


class DecoderBlock(nn.Module):
  config: DecoderLMConfig

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool):
    cfg = self.config
    dtype = DTYPES[cfg.dtype]
    residual_init = nn.initializers.normal(stddev=0.02 / (2 * cfg.num_layers) ** 0.5)  # GPT-2 sec. 2.3
    h = norms.make_norm(cfg.norm, "attention_norm", dtype)(x)
    h = attention_lib.MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        implementation=cfg.attention,
        use_bias=cfg.use_bias,
        dtype=dtype,
        output_init=residual_init,
        name="attention",
    )(h, mask, deterministic=deterministic)
    x = x + nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    h = norms.make_norm(cfg.norm, "ffn_norm", dtype)(x)
    h = feed_forward.FeedForward(
        hidden_dim=cfg.mlp_dim,
        activation=cfg.activation,
        use_bias=cfg.use_bias,
        dtype=dtype,
        output_init=residual_init,
        name="ffn",
    )(h, deterministic=deterministic)
    return x + nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)


class DecoderLM(nn.Module):
  """Maps tokens [batch, length] to next-token logits [batch, length, vocab] (float32)."""

  config: DecoderLMConfig

  def setup(self):
    cfg = self.config
    dtype = DTYPES[cfg.dtype]
    self.embed = TokenEmbedding(cfg.padded_vocab_size, cfg.width, dtype=dtype)
    self.positions = LearnedPositions(cfg.max_len, cfg.width, dtype=dtype)
    self.embed_dropout = nn.Dropout(cfg.dropout_rate)
    self.blocks = [DecoderBlock(cfg, name=f"block_{i}") for i in range(cfg.num_layers)]
    self.final_norm = norms.make_norm(cfg.norm, "final_norm", dtype)
    if not cfg.tie_embeddings:
      self.unembed = nn.Dense(cfg.padded_vocab_size, use_bias=False, dtype=dtype, name="unembed")

  def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
    """Logits [batch, length, padded_vocab_size]; those of padding ids are the float32 minimum."""
    length = tokens.shape[-1]
    if length > self.config.max_len:
      raise ConfigError(f"input length {length} exceeds model.max_len={self.config.max_len}")
    x = self.embed(tokens) + self.positions(jnp.arange(length))
    x = self.embed_dropout(x, deterministic=not train)
    mask = attention_lib.causal_mask(length)
    for block in self.blocks:
      x = block(x, mask, deterministic=not train)
    x = self.final_norm(x)
    logits = (self.embed.attend(x) if self.config.tie_embeddings else self.unembed(x)).astype(jnp.float32)
    if self.config.padded_vocab_size > self.config.vocab_size:
      # The float32 minimum rather than -inf: softmax gives it exactly 0 probability,
      # and a one-hot cross-entropy multiplies it by 0 without making a NaN.
      real = jnp.arange(self.config.padded_vocab_size) < self.config.vocab_size
      logits = jnp.where(real, logits, jnp.finfo(jnp.float32).min)
    return logits

  def next_token_logits(self, window: jax.Array, length: jax.Array) -> jax.Array:
    """Logits [batch, vocab] for the token after the first `length` tokens of `window`.

    The decoding seam: a sampler calls this on a fixed-size window so the whole
    generation compiles once. (A KV-cached `tokens_to_logits` comes with the caches.)
    """
    logits = self(window, train=False)
    return jax.lax.dynamic_index_in_dim(logits, length - 1, axis=1, keepdims=False)
