"""DecoderLM: kernel equivalence, causality, the decoding seam and config validation."""
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
    "field, value", [("attention", "flash"), ("num_layers", 0), ("dropout_rate", 1.0), ("norm", "rmsnorm")]
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
