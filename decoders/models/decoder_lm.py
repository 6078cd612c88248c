"""Decoder-only Transformer language model (GPT: Radford et al. 2018, 2019; LLaMA: Touvron et al. 2023).

    tokens -> embed (+ positions) -> N x block -> (Norm) -> logits
    pre-norm block (GPT-2, sec. 2.3):     x + Attn(Norm(x)),  then  x + FFN(Norm(x))
    post-norm block (Vaswani et al. 2017): Norm(x + Attn(x)), then  Norm(x + FFN(x))

Variants are chosen by the string fields of `DecoderLMConfig` (positions, norm,
activation, attention kernel) and a few sizes (KV heads for GQA/MQA, a sliding
window, a query/key head size apart from the value's); named presets live in `PRESETS`.

Prefix LM (Raffel et al. 2020, sec. 3.2.1, fig. 3 right): attention is fully visible over a
prefix (for translation the source, "translate English to German: ...") and causal after it.
Training needs no config field: `__call__(tokens, prefix_lengths=...)` masks so. Decoding with
`prefix_lm=True` takes each row's prompt as its prefix, so a prefill of the prompt and the steps
after it give the logits `__call__` gives with prefix_lengths = the prompts' lengths.

Scale: `dtype="bfloat16"` computes in bfloat16 while parameters (hence gradients and
optimizer state), norm statistics, softmax, logits and loss stay float32; `remat`
recomputes each block's activations in the backward pass instead of keeping them;
`scan_layers` runs the blocks as one `nn.scan`, so compile time stops growing with
depth. `BlockStack` is the one place the blocks are stacked.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import attention as attention_lib
from decoders.layers import feed_forward, kv_cache, masks, norms, quantization
from decoders.layers import positions as positions_lib
from decoders.layers.embedding import TOKEN_INIT_STDDEV, LearnedPositions, TokenEmbedding
from decoders.layers.partitioning import EMBED, LAYERS, VOCAB

POSITIONS = ("learned", "sinusoidal", "rope")
NORM_POSITIONS = ("pre", "post")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# What each block keeps for the backward pass (Chen et al. 2016), as jax.checkpoint policies.
# "full" keeps only the block's input. "save_dots" keeps the results of the matmuls without
# batch dimensions (the Q/K/V, output and feed-forward projections) and recomputes the cheap
# elementwise rest and the attention scores: those are batched over (batch, heads) and
# [batch, heads, T, T] large, so `checkpoint_dots`, which keeps them too, would save little
# memory at long context. "none" keeps everything (no jax.checkpoint at all).
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMATS = ("none", *REMAT_POLICIES)
# The parameter names of the layers: one subtree per block, or one scanned subtree.
BLOCK_PREFIX = "block_"
SCANNED_LAYERS = "layers"


@dataclasses.dataclass(frozen=True)
class DecoderLMConfig:
  vocab_size: int
  num_layers: int
  width: int
  num_heads: int
  mlp_dim: int
  max_len: int
  # Key/value heads: 0 = num_heads (multi-head); fewer = grouped-query (Ainslie et al. 2023); 1 = multi-query (Shazeer 2019).
  num_kv_heads: int = 0
  # The query/key head size d_k; 0: width / num_heads. The value heads keep width / num_heads (d_v), so the output
  # projection is unchanged: Vaswani et al. 2017, Table 3 (B) vary d_k alone. It sizes the Q and K projections,
  # the cache's keys and the logits' 1/sqrt(d_k).
  key_size: int = 0
  dropout_rate: float = 0.0
  positions: str = "learned"  # learned (GPT) | sinusoidal (Vaswani et al. 2017) | rope (Su et al. 2021)
  rope_base: float = 10_000.0
  sliding_window: int = 0  # 0: full causal attention; W: each token sees the last W tokens (Mistral)
  norm: str = "layernorm"
  norm_position: str = "pre"
  norm_epsilon: float = 1e-5
  activation: str = "gelu_tanh"  # one of feed_forward.ACTIVATIONS; swiglu and geglu are gated
  attention: str = "xla"  # kernel: one of attention_lib.IMPLEMENTATIONS
  tie_embeddings: bool = True
  use_bias: bool = True
  # Compute dtype. Parameters, and so gradients and optimizer state, are always float32, and so
  # are norm statistics, softmax, logits and loss (mixed precision, Micikevicius et al. 2018).
  dtype: str = "float32"
  # One of REMATS: what each block keeps for the backward pass. Pair it with scan_layers: in a
  # loop XLA may schedule every block's recomputation ahead of the backward pass and keep it all
  # alive (jax-ml/jax#20763). The train step's temporaries on the CPU (8 layers, width 128,
  # 16 x 256 tokens; `python -m experiments.bench compile`, BENCHMARKS.md): 827 MiB in a loop
  # with or without remat; 918 / 248 / 136 MiB with none / "save_dots" / "full" in a scan.
  remat: str = "none"
  # One nn.scan over the blocks instead of a Python loop: the step compiles one block, not
  # num_layers of them. The parameters are then one `layers` subtree with a leading
  # [num_layers] axis instead of block_0, block_1, ...; a checkpoint fits one layout only.
  scan_layers: bool = False
  # The embedding table and the logits get `padded_vocab_size` rows, a multiple of this,
  # so the vocabulary splits evenly over a tensor-parallel mesh axis (and aligns with
  # hardware tiles); the padded logits are masked, so no padded id is ever predicted.
  vocab_multiple: int = 1
  # One of quantization.WEIGHTS, a decoding choice: "int8" stores every matmul kernel (attention and
  # feed-forward projections, the output layer or tied embedding table) as int8 values with a float32
  # scale per output channel, so a batch-1 decoding step reads a quarter of float32's bytes. The
  # parameters come from quantization.quantize_params; int8 values have no gradient to train.
  weights: str = "float"
  # A decoding choice: the prompt is a fully visible prefix (Raffel et al. 2020, sec. 3.2.1), as in a model trained
  # with `DecoderLM.__call__(..., prefix_lengths=...)`; the cache keeps each row's prefix length (kv_cache.KVCache).
  prefix_lm: bool = False

  def __post_init__(self):
    for field in ("vocab_size", "num_layers", "width", "num_heads", "mlp_dim", "max_len", "vocab_multiple"):
      if getattr(self, field) <= 0:
        raise ConfigError(f"model.{field}={getattr(self, field)} must be positive")
    if self.width % self.num_heads:
      raise ConfigError(f"model.width={self.width} is not divisible by model.num_heads={self.num_heads}")
    if self.num_kv_heads < 0:
      raise ConfigError(f"model.num_kv_heads={self.num_kv_heads} must be >= 0 (0: as many as num_heads)")
    if self.num_kv_heads and self.num_heads % self.num_kv_heads:
      raise ConfigError(f"model.num_heads={self.num_heads} is not divisible by model.num_kv_heads={self.num_kv_heads}")
    if self.positions == "sinusoidal" and self.width % 2:
      raise ConfigError(f"model.positions='sinusoidal' needs an even width; model.width={self.width}")
    if self.key_size < 0:
      raise ConfigError(f"model.key_size={self.key_size} must be >= 0 (0: width / num_heads)")
    if self.positions == "rope" and self.key_dim % 2:  # it rotates the query's and key's dims in pairs
      if self.key_size:
        raise ConfigError(f"model.positions='rope' needs an even key size; model.key_size={self.key_size}")
      raise ConfigError(f"model.positions='rope' needs an even head dim; width/num_heads={self.head_dim}")
    if not 0 <= self.sliding_window <= self.max_len:
      raise ConfigError(f"model.sliding_window={self.sliding_window} must be in [0, model.max_len={self.max_len}]")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ConfigError(f"model.dropout_rate={self.dropout_rate} must be in [0, 1)")
    for field in ("rope_base", "norm_epsilon"):
      if not getattr(self, field) > 0:
        raise ConfigError(f"model.{field}={getattr(self, field)} must be positive")
    choices = {
        "positions": POSITIONS,
        "norm": norms.NORMS,
        "norm_position": NORM_POSITIONS,
        "activation": tuple(feed_forward.ACTIVATIONS),
        "attention": attention_lib.IMPLEMENTATIONS,
        "dtype": tuple(DTYPES),
        "remat": REMATS,
        "weights": quantization.WEIGHTS,
    }
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise ConfigError(f"model.{field}={getattr(self, field)!r} is not one of {allowed}")

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def key_dim(self) -> int:
    """The query/key head size d_k: `key_size`, or width / num_heads."""
    return self.key_size or self.head_dim

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def padded_vocab_size(self) -> int:
    return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

  def num_params(self, include_embeddings: bool = False) -> int:
    """Parameter count; without embeddings it is the N of Kaplan et al. 2020's 6N FLOPs/token."""
    ffn_inputs = 2 if self.activation in feed_forward.GATED else 1
    per_layer = self.attention_params() + (ffn_inputs + 1) * self.width * self.mlp_dim
    if self.use_bias:
      per_layer += ffn_inputs * self.mlp_dim + self.width
    norm_size = 2 * self.width if self.norm == "layernorm" else self.width  # scale (and bias)
    total = self.num_layers * (per_layer + 2 * norm_size) + (norm_size if self.norm_position == "pre" else 0)
    if include_embeddings:
      total += self.padded_vocab_size * self.width * (1 if self.tie_embeddings else 2)
      total += self.max_len * self.width if self.positions == "learned" else 0
    return total

  def attention_params(self) -> int:
    """One attention sublayer's parameters: the query and key projections to heads of key_dim, the value projection
    to heads of head_dim, and the output projection from num_heads x head_dim = width back to width."""
    projected = self.num_heads * self.key_dim + self.kv_heads * (self.key_dim + self.head_dim)
    return self.width * (projected + self.width) + (projected + self.width if self.use_bias else 0)

  def kv_cache_bytes_per_token(self, bytes_per_value: int | None = None) -> int:
    """Bytes one token adds to a key/value cache: a key (of key_dim) and a value (of head_dim) per layer and KV head.

    This is what GQA and MQA shrink (Ainslie et al. 2023; Shazeer 2019), and a smaller key
    size shrinks the keys' half. By default the cache holds the compute dtype.
    """
    if bytes_per_value is None:
      bytes_per_value = jnp.dtype(DTYPES[self.dtype]).itemsize
    return self.num_layers * self.kv_heads * (self.key_dim + self.head_dim) * bytes_per_value

  def flops_per_token(self, context: int) -> float:
    """Training FLOPs per token: 6N for the weights plus 6 L T d for attention (Kaplan et al. 2020, table 1).

    T is the number of keys a query sees: the context, or the sliding window if shorter. Of the 6 L T d, half is
    q k^T and half the weighted sum of values, so a separate key size counts 3 L T (h d_k + h d_v).
    These are model FLOPs: the forward pass that `remat` recomputes is not counted, so
    model-FLOPs utilisation measures useful work whatever the policy (Chowdhery et al.
    2022, appendix B).
    """
    weights = self.num_params() + self.padded_vocab_size * self.width  # the output projection is a matmul too
    keys = min(context, self.sliding_window) if self.sliding_window else context
    attention_width = self.num_heads * (self.key_dim + self.head_dim)  # = 2 d without a separate key size
    return 6.0 * weights + 3.0 * self.num_layers * keys * attention_width


# The two architectures the presets below are made of; a preset adds its sizes.
GPT2 = dict(positions="learned", norm="layernorm", activation="gelu_tanh", use_bias=True, tie_embeddings=True)
LLAMA = dict(positions="rope", norm="rmsnorm", activation="swiglu", use_bias=False, tie_embeddings=False)

# Published shapes: num_params(include_embeddings=True) gives each model's published count
# (tests/decoders/models/test_presets.py). The family names are their first member.
PRESETS = {
    # nanoGPT's character-level Shakespeare model, scaled to a 2-core CPU.
    "shakespeare_char": dict(GPT2, num_layers=4, width=128, num_heads=4, mlp_dim=512, max_len=64),
    # GPT-2 small and medium (Radford et al. 2019, table 2 lists them as 117 M and 345 M; the
    # released weights count 124 M and 355 M).
    "gpt2": dict(GPT2, vocab_size=50257, num_layers=12, width=768, num_heads=12, mlp_dim=3072, max_len=1024),
    "gpt2-medium": dict(GPT2, vocab_size=50257, num_layers=24, width=1024, num_heads=16, mlp_dim=4096, max_len=1024),
    # LLaMA-2-7B (Touvron et al. 2023b, table 1): 6.74 B.
    "llama": dict(LLAMA, vocab_size=32000, num_layers=32, width=4096, num_heads=32, mlp_dim=11008, max_len=4096),
    # Mistral-7B (Jiang et al. 2023, table 1): 8 KV heads, a 4,096-token window: 7.24 B.
    "mistral": dict(
        LLAMA, vocab_size=32000, num_layers=32, width=4096, num_heads=32, num_kv_heads=8, mlp_dim=14336,
        max_len=32768, sliding_window=4096,
    ),
    # LLaMA-3-8B (Llama Team 2024, table 3): 128 K vocabulary, 8 KV heads, RoPE base 500,000: 8.03 B.
    "llama-3-8b": dict(
        LLAMA, vocab_size=128256, num_layers=32, width=4096, num_heads=32, num_kv_heads=8, mlp_dim=14336,
        max_len=8192, rope_base=500_000.0,
    ),
    # SmolLM2-135M (Allal et al. 2025): a deep, narrow LLaMA with 3 KV heads and tied embeddings: 135 M.
    "smollm2-135m": dict(
        LLAMA, vocab_size=49152, num_layers=30, width=576, num_heads=9, num_kv_heads=3, mlp_dim=1536,
        max_len=8192, rope_base=100_000.0, tie_embeddings=True,
    ),
}


def preset(name: str, **overrides) -> DecoderLMConfig:
  if name not in PRESETS:
    raise ConfigError(f"unknown decoder_lm preset {name!r}; expected one of {sorted(PRESETS)}")
  return DecoderLMConfig(**{**PRESETS[name], **overrides})


class DecoderBlock(nn.Module):
  config: DecoderLMConfig

  # `deterministic` may be passed by position: nn.remat can only hold a positional argument static.
  # With `cache` (a kv_cache.LayerCache naming this layer) it returns (x, the cache updated).
  @nn.compact
  def __call__(self, x, mask, positions, deterministic: bool, cache=None):
    cfg = self.config
    dtype = DTYPES[cfg.dtype]
    residual_init = nn.initializers.normal(stddev=0.02 / (2 * cfg.num_layers) ** 0.5)  # GPT-2 sec. 2.3
    attention = attention_lib.MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        num_kv_heads=cfg.num_kv_heads,
        key_dim=cfg.key_dim,
        rope_base=cfg.rope_base if cfg.positions == "rope" else 0.0,
        implementation=cfg.attention,
        use_bias=cfg.use_bias,
        dtype=dtype,
        output_init=residual_init,
        weights=cfg.weights,
        name="attention",
    )
    ffn = feed_forward.FeedForward(
        hidden_dim=cfg.mlp_dim,
        activation=cfg.activation,
        use_bias=cfg.use_bias,
        dtype=dtype,
        output_init=residual_init,
        weights=cfg.weights,
        name="ffn",
    )
    new_cache = None

    def attend(h):
      nonlocal new_cache
      out = attention(h, mask, deterministic=deterministic, positions=positions, cache=cache)
      if cache is not None:
        out, new_cache = out
      return out

    sublayers = (("attention_norm", attend), ("ffn_norm", lambda h: ffn(h, deterministic=deterministic)))
    for norm_name, sublayer in sublayers:
      norm = norms.make_norm(cfg.norm, norm_name, dtype, cfg.norm_epsilon)
      if cfg.norm_position == "pre":
        x = x + nn.Dropout(cfg.dropout_rate)(sublayer(norm(x)), deterministic=deterministic)
      else:
        x = norm(x + nn.Dropout(cfg.dropout_rate)(sublayer(x), deterministic=deterministic))
    return x if cache is None else (x, new_cache)


def _scan_step(block: nn.Module, x, mask, positions, deterministic: bool):
  """One block in the form nn.scan runs: (carry, broadcast inputs) -> (carry, no per-layer output)."""
  return block(x, mask, positions, deterministic), None


def _cached_scan_step(block: nn.Module, carry, mask, positions, deterministic: bool, layer):
  """As `_scan_step`, carrying the whole key/value cache beside x: layer `layer` updates its slice in place.
  Scanning per-layer caches in and out instead would copy all of it at every decoding step."""
  x, cache = carry
  return block(x, mask, positions, deterministic, cache.replace(layer=layer)), None


class BlockStack(nn.Module):
  """`config.num_layers` DecoderBlocks applied in turn, each rematerialised as `config.remat` says.

  A Python loop makes blocks `block_0`, `block_1`, ...; `config.scan_layers` makes them
  one nn.scan whose parameters `layers` have a leading [num_layers] axis, named
  LAYERS so that no mesh axis splits it. The stack is the same for any mask: an
  encoder passes a bidirectional one. A caller that wants the blocks in its own
  parameter tree, with no `BlockStack_0` level, shares its scope (`nn.share_scope`).
  """

  config: DecoderLMConfig

  @nn.compact
  def __call__(self, x, mask, positions, *, deterministic: bool, cache=None):
    """x after every block; with `cache` (a kv_cache.LayerCache over all layers), (x, the cache updated)."""
    cfg = self.config
    block = DecoderBlock
    if cfg.remat != "none":
      # Argument 4 counting the module, `deterministic`, is static: it picks Python branches
      # (dropout or not). prevent_cse keeps XLA from merging the recomputation back into the
      # forward pass; inside a scan the loop already does, and it would only cost (jax.checkpoint docs).
      block = nn.remat(
          DecoderBlock, policy=REMAT_POLICIES[cfg.remat], static_argnums=(4,), prevent_cse=not cfg.scan_layers
      )
    if not cfg.scan_layers:
      if cache is None:
        for i in range(cfg.num_layers):
          x = block(cfg, name=f"{BLOCK_PREFIX}{i}")(x, mask, positions, deterministic)
        return x
      for i in range(cfg.num_layers):
        x, cache = block(cfg, name=f"{BLOCK_PREFIX}{i}")(x, mask, positions, deterministic, cache.replace(layer=i))
      return x, cache
    # mask, positions, deterministic are the same for every layer; a cache is carried, its layer index scanned.
    broadcast = (nn.broadcast, nn.broadcast, nn.broadcast)
    scan = functools.partial(
        nn.scan,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},  # each layer its own initialisation and dropout
        length=cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: LAYERS},
    )
    if cache is None:
      x, _ = scan(_scan_step, in_axes=broadcast)(block(cfg, name=SCANNED_LAYERS), x, mask, positions, deterministic)
      return x
    cached_scan = scan(_cached_scan_step, in_axes=(*broadcast, 0))
    layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
    (x, cache), _ = cached_scan(block(cfg, name=SCANNED_LAYERS), (x, cache), mask, positions, deterministic, layers)
    return x, cache


def stack_layers(params: dict) -> dict:
  """The parameters of a looped stack (`block_0`, `block_1`, ...) as those of a scanned one (`layers`)."""
  rest = {name: value for name, value in params.items() if not name.startswith(BLOCK_PREFIX)}
  blocks = [params[f"{BLOCK_PREFIX}{i}"] for i in range(len(params) - len(rest))]
  return {**rest, SCANNED_LAYERS: jax.tree.map(lambda *layers: jnp.stack(layers), *blocks)}


def unstack_layers(params: dict) -> dict:
  """The inverse of `stack_layers`: `layers` split along its leading axis into `block_0`, `block_1`, ..."""
  rest = {name: value for name, value in params.items() if name != SCANNED_LAYERS}
  num_layers = jax.tree.leaves(params[SCANNED_LAYERS])[0].shape[0]
  blocks = {f"{BLOCK_PREFIX}{i}": jax.tree.map(lambda x, i=i: x[i], params[SCANNED_LAYERS]) for i in range(num_layers)}
  return {**rest, **blocks}


def add_positions(x: jax.Array, positions: jax.Array, config: DecoderLMConfig, learned=None) -> jax.Array:
  """x plus the absolute position signal `config.positions` asks for; RoPE adds none (it rotates q and k).

  `learned` is the model's LearnedPositions table when config.positions is "learned".
  """
  if config.positions == "learned":
    return x + learned(positions)
  if config.positions == "sinusoidal":
    # Vaswani et al. (sec. 3.4) multiply embeddings of scale d^-1/2 by sqrt(d), so tokens and the
    # unit-amplitude sinusoid enter at the same scale. Our table keeps GPT-2's 0.02 (it is also the
    # output layer), so the sinusoid comes down to that scale instead: the same ratio. Unscaled,
    # position swamps the token and the model learns little more than unigram statistics.
    return x + TOKEN_INIT_STDDEV * positions_lib.sinusoidal(positions, config.width).astype(x.dtype)
  return x


def init_cache(
    config: DecoderLMConfig, batch: int, capacity: int, spec: kv_cache.CacheSpec = kv_cache.CacheSpec()
) -> kv_cache.KVCache:
  """An empty cache of `capacity` slots for `batch` rows, sized by the KV heads (keys of key_dim), stored and evicting
  as `spec` says (by default: the compute dtype, slot = position, so it holds up to `capacity` tokens)."""
  return kv_cache.KVCache.zeros(
      config.num_layers, batch, capacity, config.kv_heads, config.head_dim, DTYPES[config.dtype], spec,
      config.prefix_lm, key_dim=config.key_dim,
  )


def mask_vocab_padding(logits: jax.Array, config: DecoderLMConfig) -> jax.Array:
  """Float32 logits with the padded vocabulary rows (past `config.vocab_size`) at the float32 minimum.

  The minimum rather than -inf: softmax gives it exactly 0 probability, and a one-hot
  cross-entropy multiplies it by 0 without making a NaN.
  """
  if config.padded_vocab_size == config.vocab_size:
    return logits
  real = jnp.arange(config.padded_vocab_size) < config.vocab_size
  return jnp.where(real, logits, jnp.finfo(jnp.float32).min)


class DecoderLM(nn.Module):
  """Maps tokens [batch, length] to next-token logits [batch, length, padded_vocab_size] (float32)."""

  config: DecoderLMConfig

  def setup(self):
    cfg = self.config
    dtype = DTYPES[cfg.dtype]
    # An untied table is only looked up (one row per token), so only a tied one is quantised.
    self.embed = TokenEmbedding(
        cfg.padded_vocab_size, cfg.width, dtype=dtype, weights=cfg.weights if cfg.tie_embeddings else "float"
    )
    if cfg.positions == "learned":
      self.learned_positions = LearnedPositions(cfg.max_len, cfg.width, dtype=dtype, name="positions")
    self.embed_dropout = nn.Dropout(cfg.dropout_rate)
    self.blocks = BlockStack(cfg)
    # The stack adds no level to the parameter tree: its blocks are params/block_0, ... (or
    # params/layers), beside params/embed.
    nn.share_scope(self, self.blocks)
    if cfg.norm_position == "pre":  # a post-norm stack already ends in a norm
      self.final_norm = norms.make_norm(cfg.norm, "final_norm", dtype, cfg.norm_epsilon)
    if not cfg.tie_embeddings:
      self.unembed = quantization.dense(
          cfg.weights,
          cfg.padded_vocab_size,
          (EMBED, VOCAB),
          use_bias=False,
          dtype=dtype,
          kernel_init=nn.initializers.lecun_normal(),  # flax's default init
          name="unembed",
          float32_output=True,  # compute-dtype inputs, float32 products: logits are never rounded to bfloat16
      )

  def __call__(
      self, tokens: jax.Array, *, train: bool = False, positions: jax.Array | None = None,
      segment_ids: jax.Array | None = None, prefix_lengths: jax.Array | None = None,
  ) -> jax.Array:
    """Logits [batch, length, padded_vocab_size]; those of padding ids are the float32 minimum.

    For packed rows (several documents in one row), `segment_ids` [batch, length]
    (1, 2, ... per document, 0 for padding) keep attention within each document and
    `positions` [batch, length] restart at 0 for each; by default one document per row.
    With `prefix_lengths` [batch], each row's first tokens see each other both ways (a prefix LM,
    masks.prefix_lm_mask; a packed row's prefix is its first tokens, cut to its first document's).
    """
    cfg = self.config
    length = tokens.shape[-1]
    if length > cfg.max_len:
      raise ConfigError(f"input length {length} exceeds model.max_len={cfg.max_len}")
    if prefix_lengths is not None and jnp.shape(prefix_lengths) != tokens.shape[:1]:
      raise ConfigError(f"prefix_lengths of shape {jnp.shape(prefix_lengths)} must be [batch]: {tokens.shape[:1]}")
    positions = jnp.arange(length)[None] if positions is None else positions
    x = self.embed_inputs(tokens, positions)
    x = self.embed_dropout(x, deterministic=not train)
    if prefix_lengths is not None:
      causal = masks.prefix_lm_mask(length, prefix_lengths, cfg.sliding_window)
    elif cfg.sliding_window:
      causal = masks.sliding_window_mask(length, cfg.sliding_window)
    else:
      causal = masks.causal_mask(length)
    mask = masks.combine(causal, None if segment_ids is None else masks.segment_mask(segment_ids))
    x = self.blocks(x, mask, positions, deterministic=not train)
    return self.logits(x)

  def logits(self, x: jax.Array) -> jax.Array:
    """The last block's output -> float32 logits, padded vocabulary rows masked."""
    return self.unembed_hidden(self.final_hidden(x))

  def final_hidden(self, x: jax.Array) -> jax.Array:
    """The last block's output after the final norm (pre-norm stacks): the state the unembedding reads."""
    return self.final_norm(x) if self.config.norm_position == "pre" else x

  def unembed_hidden(self, hidden: jax.Array) -> jax.Array:
    """`final_hidden`'s output [..., width] -> float32 logits [..., padded_vocab], padded rows masked."""
    cfg = self.config
    logits = self.embed.attend(hidden) if cfg.tie_embeddings else self.unembed(hidden)  # float32 either way
    return mask_vocab_padding(logits, cfg)

  def embed_inputs(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
    """The first block's input [batch, length, width]: token embeddings plus absolute positions, if any."""
    learned = self.learned_positions if self.config.positions == "learned" else None
    return add_positions(self.embed(tokens), positions, self.config, learned)

  def decoding_cache(
      self, batch: int, capacity: int, spec: kv_cache.CacheSpec = kv_cache.CacheSpec(), encoder_tokens=None,
      encoder_lengths=None,
  ) -> kv_cache.KVCache:
    """The decoding seam's empty cache (`init_cache`; decoders.decoding.generate). An encoder-decoder's would hold
    its encoded source; a decoder-only model reads its condition from the prompt instead."""
    del encoder_lengths
    if encoder_tokens is not None:
      raise ConfigError("a decoder-only model takes no encoder_tokens: put the source in the prompt")
    return init_cache(self.config, batch, capacity, spec)

  def tokens_to_logits(
      self, tokens: jax.Array, cache: kv_cache.KVCache, valid_lengths: jax.Array | None = None
  ) -> tuple[jax.Array, kv_cache.KVCache]:
    """Logits [batch, t, padded_vocab] of `tokens` [batch, t] that follow what `cache` holds, and the cache after them.

    The decoding seam: a prefill passes the (right-padded) prompts with their `valid_lengths`
    [batch], then each step passes one token per row. Row b's tokens sit at positions
    cache.lengths[b], ... and see every cached position before them (or the last
    `sliding_window`, or what an evicting cache keeps: kv_cache.CacheSpec); the cache then
    counts `valid_lengths` more tokens (default t). With `prefix_lm`, the first tokens a row is
    given (its prompt) also see each other.
    """
    hidden, cache = self.tokens_to_hidden(tokens, cache, valid_lengths)
    return self.unembed_hidden(hidden), cache

  def tokens_to_hidden(
      self, tokens: jax.Array, cache: kv_cache.KVCache, valid_lengths: jax.Array | None = None
  ) -> tuple[jax.Array, kv_cache.KVCache]:
    """As `tokens_to_logits`, but the final hidden states [batch, t, width] (`final_hidden`) instead of
    logits: contrastive search compares them, and `unembed_hidden` turns them into logits."""
    cfg, length = self.config, tokens.shape[-1]
    if cache.capacity > cfg.max_len:
      raise ConfigError(f"a cache of {cache.capacity} positions exceeds model.max_len={cfg.max_len}")
    if cache.spec.eviction == "none" and length > cache.capacity:
      raise ConfigError(f"{length} tokens do not fit a cache of capacity {cache.capacity} that does not evict")
    # An evicting cache holds positions past its capacity; they must stay below model.max_len (a learned
    # table has no row there: jnp.take then gives NaN, so the logits show it).
    positions = cache.lengths[:, None] + jnp.arange(length)[None]
    x = self.embed_inputs(tokens, positions)
    added = jnp.full_like(cache.lengths, length) if valid_lengths is None else jnp.asarray(valid_lengths, jnp.int32)
    cache = cache.with_prefixes(added)
    layer_cache = kv_cache.LayerCache(cache, jnp.int32(0), positions, added, window=cfg.sliding_window)
    x, layer_cache = self.blocks(x, None, positions, deterministic=True, cache=layer_cache)
    cache = layer_cache.cache
    return self.final_hidden(x), cache.replace(lengths=cache.lengths + added)

  def next_token_logits(self, window: jax.Array, length: jax.Array) -> jax.Array:
    """Logits [batch, vocab] for the token after the first `length` tokens of `window`.

    The cache-free decoding seam: a sampler calls this on a fixed-size window so the
    whole generation compiles once; `tokens_to_logits` is the cached one.
    """
    if self.config.prefix_lm:
      raise ConfigError("model.prefix_lm=True: next_token_logits cannot tell the prompt; decode with generate")
    logits = self(window, train=False)
    return jax.lax.dynamic_index_in_dim(logits, length - 1, axis=1, keepdims=False)
