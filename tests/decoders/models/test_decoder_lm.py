"""DecoderLM: kernel equivalence, causality, the decoding seam, mixed precision and config validation."""
import collections
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decoders
from decoders import losses
from decoders.models import decoder_lm

CONFIG = decoder_lm.DecoderLMConfig(vocab_size=13, num_layers=2, width=16, num_heads=2, mlp_dim=32, max_len=8)
# Float32 forward passes that differ only in operation order (kernel choice, window padding).
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _forward(config):
  """A jitted forward pass: one compile instead of one per operation."""
  return jax.jit(lambda params, tokens: decoder_lm.DecoderLM(config).apply({"params": params}, tokens))


@jax.jit
def _next_token_logits(params, window, length):
  return decoder_lm.DecoderLM(CONFIG).apply({"params": params}, window, length, method=decoder_lm.DecoderLM.next_token_logits)


@pytest.fixture(scope="module")
def model_and_params():
  model = decoder_lm.DecoderLM(CONFIG)
  tokens = jnp.zeros((1, CONFIG.max_len), jnp.int32)
  return _forward(CONFIG), jax.jit(model.init)(jax.random.key(0), tokens)["params"]


def _tokens(seed, length=CONFIG.max_len):
  return np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (2, length)).astype(np.int32)


def test_xla_and_einsum_attention_give_the_same_logits(model_and_params):
  forward, params = model_and_params
  tokens = _tokens(1)
  xla = forward(params, tokens)
  einsum = _forward(dataclasses.replace(CONFIG, attention="einsum"))(params, tokens)
  assert xla.shape == (2, CONFIG.max_len, CONFIG.vocab_size)
  np.testing.assert_allclose(xla, einsum, **TOLERANCE)


def test_changing_a_future_token_leaves_earlier_logits_unchanged(model_and_params):
  forward, params = model_and_params
  tokens = _tokens(2)
  changed_at = 5
  altered = tokens.copy()
  altered[:, changed_at] = (tokens[:, changed_at] + 1) % CONFIG.vocab_size
  before, after = forward(params, tokens), forward(params, altered)
  np.testing.assert_allclose(before[:, :changed_at], after[:, :changed_at], **TOLERANCE)
  assert not np.allclose(before[:, changed_at:], after[:, changed_at:], **TOLERANCE)


@pytest.mark.parametrize("length", [1, 4, CONFIG.max_len])
def test_next_token_logits_match_the_full_forward_pass(model_and_params, length):
  forward, params = model_and_params
  tokens = _tokens(3)
  full = forward(params, tokens)
  # What follows `length` in the window is whatever the sampler's buffer holds: it must not matter.
  window = tokens.copy()
  window[:, length:] = 0
  seam = _next_token_logits(params, window, length)
  np.testing.assert_allclose(seam, full[:, length - 1], **TOLERANCE)


def test_width_not_divisible_by_heads_raises_config_error_naming_the_fields():
  with pytest.raises(decoders.ConfigError, match=r"model\.width=30 .*model\.num_heads=4"):
    dataclasses.replace(CONFIG, width=30, num_heads=4)


@pytest.mark.parametrize(
    "field, value", [("attention", "flash"), ("num_layers", 0), ("dropout_rate", 1.0), ("norm", "batchnorm")]
)
def test_impossible_values_raise_config_error_naming_the_field(field, value):
  with pytest.raises(decoders.ConfigError, match=rf"model\.{field}="):
    dataclasses.replace(CONFIG, **{field: value})


def test_input_longer_than_max_len_is_rejected(model_and_params):
  forward, params = model_and_params
  with pytest.raises(decoders.ConfigError, match="max_len"):
    forward(params, _tokens(4, CONFIG.max_len + 1))


def test_a_padded_vocabulary_is_never_predicted_and_changes_nothing_real():
  padded = dataclasses.replace(CONFIG, vocab_multiple=8)  # 13 tokens -> a 16-row table
  assert padded.padded_vocab_size == 16
  params = nn.unbox(decoder_lm.DecoderLM(padded).init(jax.random.key(0), jnp.zeros((1, padded.max_len), jnp.int32))["params"])
  forward, tokens = _forward(padded), _tokens(3)

  logits = forward(params, tokens)

  assert logits.shape == (*tokens.shape, 16)
  probabilities = jax.nn.softmax(logits, axis=-1)
  np.testing.assert_array_equal(probabilities[..., 13:], 0.0)
  total, count = losses.cross_entropy(logits, jnp.asarray(tokens))
  assert np.isfinite(total) and count == tokens.size
  # The padding rows of the (tied) table reach only the masked logits.
  table = params["embed"]["embedding"]
  moved = {**params, "embed": {"embedding": table.at[13:].set(5.0)}}
  np.testing.assert_array_equal(forward(moved, tokens), logits)


VARIANTS = {
    "gpt2-like": dict(),
    "llama-like": dict(positions="rope", norm="rmsnorm", activation="swiglu", use_bias=False, tie_embeddings=False),
    "gqa": dict(num_heads=4, num_kv_heads=2, positions="rope"),
    "mqa": dict(num_heads=4, num_kv_heads=1),
    "mistral-like": dict(num_heads=4, num_kv_heads=2, positions="rope", sliding_window=3, norm="rmsnorm", activation="swiglu"),
    "post-norm sinusoidal": dict(norm_position="post", positions="sinusoidal", activation="relu"),
    "geglu": dict(activation="geglu", norm="rmsnorm", use_bias=False),
    # Queries and keys of their own size (Vaswani et al. 2017, Table 3 (B)): smaller and larger than width / heads.
    "key size 2": dict(key_size=2),
    "key size 6 gqa": dict(num_heads=4, num_kv_heads=2, key_size=6, positions="rope"),
}


def _init(config):
  return nn.unbox(decoder_lm.DecoderLM(config).init(jax.random.key(0), jnp.zeros((1, config.max_len), jnp.int32))["params"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_num_params_counts_the_parameters_the_model_has(variant):
  config = dataclasses.replace(CONFIG, **VARIANTS[variant])
  params = jax.eval_shape(lambda: _init(config))
  assert sum(x.size for x in jax.tree.leaves(params)) == config.num_params(include_embeddings=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_is_causal(variant):
  config = dataclasses.replace(CONFIG, **VARIANTS[variant])
  forward, params, tokens = _forward(config), _init(config), _tokens(4)
  changed = tokens.copy()
  changed[:, 5] = (changed[:, 5] + 1) % CONFIG.vocab_size
  before, after = forward(params, tokens), forward(params, changed)
  np.testing.assert_array_equal(before[:, :5], after[:, :5])
  assert not np.allclose(before[:, 5:], after[:, 5:])


def test_a_sliding_window_sees_only_the_last_w_tokens():
  # One layer, so the receptive field is exactly the window (more layers widen it by W - 1 each).
  config = dataclasses.replace(CONFIG, num_layers=1, sliding_window=3)
  forward, params, tokens = _forward(config), _init(config), _tokens(5)
  changed = tokens.copy()
  changed[:, 1] = (changed[:, 1] + 1) % CONFIG.vocab_size
  before, after = forward(params, tokens), forward(params, changed)
  assert not np.allclose(before[:, 1:4], after[:, 1:4])  # positions 1, 2, 3 see token 1
  np.testing.assert_array_equal(before[:, 4:], after[:, 4:])  # position 4 sees 2, 3, 4 only


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_absolute_positions_enter_at_the_scale_of_the_tokens(positions):
  # Unscaled unit-amplitude sinusoids on 0.02-scale embeddings left the token identity a
  # fiftieth of the input, and the ablation's sinusoidal runs learned only unigram statistics.
  config = dataclasses.replace(CONFIG, positions=positions)
  params, model = _init(config), decoder_lm.DecoderLM(config)
  tokens = _tokens(0)
  inputs = model.apply({"params": params}, tokens, jnp.arange(tokens.shape[1])[None], method=decoder_lm.DecoderLM.embed_inputs)
  token_part = model.apply({"params": params}, tokens, method=lambda m, t: m.embed(t))
  ratio = float(jnp.std(inputs - token_part) / jnp.std(token_part))
  assert 0.3 < ratio < 3.0, ratio


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_heads=4, num_kv_heads=3), "model.num_heads=4 is not divisible by model.num_kv_heads=3"),
        (dict(num_kv_heads=-1), "model.num_kv_heads=-1 must be >= 0"),
        (dict(num_heads=2, width=18, positions="rope"), "needs an even head dim; width/num_heads=9"),
        (dict(key_size=-1), "model.key_size=-1 must be >= 0"),
        (dict(key_size=3, positions="rope"), "needs an even key size; model.key_size=3"),
        (dict(sliding_window=9), "model.sliding_window=9 must be in [0, model.max_len=8]"),
        (dict(width=15, num_heads=1, positions="sinusoidal"), "needs an even width; model.width=15"),
        (dict(norm_position="sandwich"), "model.norm_position='sandwich'"),
    ],
)
def test_impossible_combinations_are_named(overrides, message):
  with pytest.raises(decoders.ConfigError) as raised:
    dataclasses.replace(CONFIG, **overrides)
  assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_key_size_sizes_queries_keys_and_the_cache_and_only_them():
  config = dataclasses.replace(CONFIG, num_heads=4, num_kv_heads=2, key_size=6)  # width / heads = 4
  assert (config.key_dim, config.head_dim) == (6, 4) and dataclasses.replace(CONFIG, key_size=0).key_dim == 8
  attention = jax.eval_shape(lambda: _init(config))["block_0"]["attention"]
  shapes = {name: attention[name]["kernel"].shape for name in ("query", "key", "value", "out")}
  assert shapes == {"query": (16, 4, 6), "key": (16, 2, 6), "value": (16, 2, 4), "out": (4, 4, 16)}
  # Per token: a key of 6 and a value of 4 per layer and KV head.
  assert config.kv_cache_bytes_per_token(2) == 2 * 2 * (6 + 4) * 2
  cache = decoder_lm.init_cache(config, 1, 5)
  assert cache.key.shape == (2, 1, 2, 5, 6) and cache.value.shape == (2, 1, 2, 5, 4)  # head-major
  assert cache.nbytes() == 5 * config.kv_cache_bytes_per_token(4) + 4  # float32, and the row's length
  # Training FLOPs: 6N for the weights, and 3 L T per query/key and per value dim of every head (q k^T, then v).
  context = 32
  expected = 6 * (config.num_params() + config.padded_vocab_size * 16) + 3 * 2 * context * 4 * (6 + 4)
  assert config.flops_per_token(context) == expected
  assert CONFIG.flops_per_token(context) == 6 * (CONFIG.num_params() + CONFIG.padded_vocab_size * 16) + 6 * 2 * context * 16


def operand_dtypes(jaxpr) -> dict[str, set[tuple[str, ...]]]:
  """primitive name -> the operand dtypes it is applied to, over `jaxpr` and every jaxpr nested in it."""
  found = collections.defaultdict(set)
  for eqn in jaxpr.eqns:
    found[eqn.primitive.name].add(tuple(np.dtype(v.aval.dtype).name for v in eqn.invars if hasattr(v.aval, "dtype")))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr (jit, scan, checkpoint) holds its Jaxpr
        if hasattr(sub, "eqns"):
          for name, dtypes in operand_dtypes(sub).items():
            found[name] |= dtypes
  return found


@pytest.mark.parametrize("variant", ["gpt2-like", "llama-like"])  # tied and untied output layers
def test_bfloat16_multiplies_in_bfloat16_and_reduces_in_float32(variant):
  config = dataclasses.replace(CONFIG, dtype="bfloat16", **VARIANTS[variant])
  params = jax.eval_shape(lambda: _init(config))
  tokens = jax.ShapeDtypeStruct((2, config.max_len), jnp.int32)

  traced = jax.make_jaxpr(lambda p, t: decoder_lm.DecoderLM(config).apply({"params": p}, t))(params, tokens)

  assert {x.dtype.name for x in jax.tree.leaves(params)} == {"float32"}  # parameters stay float32
  found = operand_dtypes(traced.jaxpr)
  assert found["dot_general"] == {("bfloat16", "bfloat16")}  # every matmul, the logits' included
  # Norm statistics, softmax and its max, and the gathers from the float32 tables.
  for primitive in ("reduce_sum", "reduce_max", "exp", "rsqrt"):
    assert found[primitive] == {("float32",)}, primitive
  assert traced.out_avals[0].dtype == jnp.float32


def test_the_bfloat16_loss_is_the_float32_loss_to_bfloat16_precision(model_and_params):
  forward, params = model_and_params
  tokens = _tokens(8, CONFIG.max_len + 1)
  inputs, targets = tokens[:, :-1], jnp.asarray(tokens[:, 1:])
  float32_loss = losses.cross_entropy(forward(params, inputs), targets)[0] / targets.size
  bfloat16_logits = _forward(dataclasses.replace(CONFIG, dtype="bfloat16"))(params, inputs)
  bfloat16_loss = losses.cross_entropy(bfloat16_logits, targets)[0] / targets.size
  assert bfloat16_logits.dtype == jnp.float32
  # bfloat16 keeps 8 significant bits (2^-9 = 2e-3 relative rounding); through two blocks of this
  # freshly initialised model the loss moves by 2e-5 relative. Bounded at 1e-3, half a rounding:
  # this guards the model's numbers (an overflowing mask value, a NaN); which dtype each
  # operation runs in is the business of the test above.
  np.testing.assert_allclose(bfloat16_loss, float32_loss, rtol=1e-3)
  assert bfloat16_loss != float32_loss  # bfloat16 really was used
