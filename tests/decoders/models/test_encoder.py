"""Encoder: bidirectional where the decoder is causal, padding hidden, parameter counts (BERT-base's included)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decoders
from decoders.models import encoder

SIZES = dict(vocab_size=13, num_layers=2, width=16, num_heads=2, mlp_dim=32, max_len=8)
# 13 tokens padded to 16 rows; two token types. One config, so the behaviour tests compile once per shape.
CONFIG = encoder.preset("shakespeare_char", **SIZES, vocab_multiple=8, type_vocab_size=2)
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _init(config):
  tokens = jnp.zeros((1, config.stack.max_len), jnp.int32)
  return nn.unbox(jax.jit(encoder.Encoder(config).init)(jax.random.key(0), tokens)["params"])


@jax.jit
def _forward(params, tokens, valid=None, token_types=None):
  return encoder.Encoder(CONFIG).apply({"params": params}, tokens, valid=valid, token_types=token_types)


@pytest.fixture(scope="module")
def params():
  return _init(CONFIG)


def _tokens(seed, length=CONFIG.stack.max_len):
  return np.random.default_rng(seed).integers(0, CONFIG.stack.vocab_size, (2, length)).astype(np.int32)


def test_logits_cover_every_position_and_the_padded_vocabulary_is_never_predicted(params):
  logits = _forward(params, _tokens(0, length=5))
  assert logits.shape == (2, 5, 16) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(jax.nn.softmax(logits)[..., 13:], 0.0)


def test_the_first_position_sees_a_later_token(params):
  # The decoder's blocks, given a bidirectional mask: the opposite of
  # test_decoder_lm.py's test_changing_a_future_token_leaves_earlier_logits_unchanged.
  tokens = _tokens(1)
  changed = tokens.copy()
  changed[:, -1] = (changed[:, -1] + 1) % CONFIG.stack.vocab_size
  assert not np.allclose(_forward(params, tokens)[:, 0], _forward(params, changed)[:, 0], **TOLERANCE)


def test_padding_keys_are_ignored(params):
  tokens = _tokens(2)
  valid = np.ones_like(tokens, dtype=bool)
  valid[:, 5:] = False
  changed = tokens.copy()
  changed[:, 5:] = (changed[:, 5:] + 3) % CONFIG.stack.vocab_size
  padded, changed_padding = _forward(params, tokens, valid), _forward(params, changed, valid)
  np.testing.assert_allclose(padded[:, :5], changed_padding[:, :5], **TOLERANCE)
  # ... and the real positions see exactly what the five real tokens alone give.
  np.testing.assert_allclose(padded[:, :5], _forward(params, tokens[:, :5]), **TOLERANCE)


def test_token_types_default_to_type_zero(params):
  tokens = _tokens(3)
  default = _forward(params, tokens)
  np.testing.assert_allclose(default, _forward(params, tokens, token_types=np.zeros_like(tokens)), **TOLERANCE)
  assert not np.allclose(default, _forward(params, tokens, token_types=np.ones_like(tokens)))


VARIANTS = {
    "bert": dict(),
    "token types": dict(type_vocab_size=2),
    "pre-norm, rope, untied, no biases": dict(norm_position="pre", positions="rope", tie_embeddings=False, use_bias=False),
    "rmsnorm, swiglu, gqa": dict(norm="rmsnorm", activation="swiglu", num_heads=4, num_kv_heads=2),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_num_params_counts_the_parameters_the_model_has(variant):
  config = encoder.preset("shakespeare_char", **{**SIZES, **VARIANTS[variant]})
  params = jax.eval_shape(lambda: _init(config))
  assert sum(x.size for x in jax.tree.leaves(params)) == config.num_params(include_embeddings=True)


# Hugging Face's BertModel for bert-base-uncased and bert-large-uncased, its pooler included.
BERT_MODEL = {"bert-base": 109_482_240, "bert-large": 335_141_888}


@pytest.mark.parametrize("name", sorted(BERT_MODEL))
def test_bert_presets_have_the_published_parameter_count(name):
  """We match Hugging Face's BertForMaskedLM (109,514,298 for bert-base-uncased), not BertModel (109,482,240).

  We build what masked-LM training uses: BertModel less its pooler (a width x width tanh layer
  that serves next-sentence prediction, which we do not train), plus the masked-LM head (a width
  x width dense layer, its LayerNorm and a bias per token). Token types are built (2 rows).
  """
  config = encoder.preset(name)
  width, vocab = config.stack.width, config.stack.vocab_size
  pooler = width * width + width
  mlm_head = width * width + width + 2 * width + vocab
  assert config.num_params(include_embeddings=True) == BERT_MODEL[name] - pooler + mlm_head


def test_a_sliding_window_is_refused_naming_the_key():
  with pytest.raises(decoders.ConfigError, match=r"model\.sliding_window=4"):
    encoder.preset("shakespeare_char", vocab_size=13, sliding_window=4)


def test_an_unknown_preset_is_refused():
  with pytest.raises(decoders.ConfigError, match="'bert-huge'"):
    encoder.preset("bert-huge")
