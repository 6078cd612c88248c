"""Weight-only int8 (decoders/layers/quantization.py): the rounding bound, the blocked matmul, and whole models.

The int8 model must compute exactly what the float model computes on the dequantised weights
q * s (float32 rounding aside); against the original float weights its logits differ by the
quantisation error, which the tolerance below states for weights of a realistic scale.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.layers import quantization
from decoders.models import decoder_lm

VOCAB = 37
# Four times the 0.02 init: weights of std 0.08 (~0.45 / sqrt(width)), logits of magnitude ~10-60,
# so attention and the norms amplify the rounding as in a trained model rather than hide it.
WEIGHT_SCALE = 4.0
# What int8 may change: the root-mean-square logit error as a fraction of the logits' root mean
# square (measured 0.02-0.05 on these models), and the share of positions whose greedy token may
# change (measured at most 0.055).
LOGIT_TOLERANCE = 0.08
GREEDY_AGREEMENT = 0.9
SHAPES = {
    "gpt2": {},  # learned positions, LayerNorm, GELU, biases, a tied (so quantised) embedding table
    "llama": dict(num_kv_heads=2),  # RoPE, RMSNorm, SwiGLU, GQA, no biases, an untied output layer
}


def tiny_config(preset, scan_layers=False, **overrides):
  return decoder_lm.preset(
      preset, vocab_size=VOCAB, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=32, scan_layers=scan_layers,
      **SHAPES[preset], **overrides,
  )


@functools.cache  # shared by the tests of one shape
def float_and_int8(preset, scan_layers=False):
  """(float model, its params at WEIGHT_SCALE, int8 model, quantize_params of those params)."""
  float_model = decoder_lm.DecoderLM(tiny_config(preset, scan_layers))
  int8_model = decoder_lm.DecoderLM(tiny_config(preset, scan_layers, weights="int8"))
  params = jax.jit(float_model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  params = jax.tree.map(lambda x: x * WEIGHT_SCALE, nn.unbox(params))
  quantized = jax.jit(quantization.quantize_params, static_argnums=1)(params, int8_model.config)
  return float_model, params, int8_model, quantized


def forward(model, params, tokens):
  return jax.jit(model.apply)({"params": params}, tokens)


def boxed_int8_init(model):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])


def dequantize(params, boxed):
  """The float weights q * s that int8 `params` stand for, broadcast by the logical axis names of the int8 init."""

  def walk(tree, names):
    if not isinstance(tree, dict):
      return tree
    if "scale" in tree and ("kernel" in tree or "embedding" in tree):
      key = "kernel" if "kernel" in tree else "embedding"
      kernel_axes, scale_axes = names[key].names, names["scale"].names
      shape = [size if axis in scale_axes else 1 for axis, size in zip(kernel_axes, tree[key].shape)]
      return {**tree, key: tree[key].astype(np.float32) * np.reshape(tree["scale"], shape)}
    return {name: walk(subtree, names[name]) for name, subtree in tree.items()}

  return walk(params, boxed)


def relative_error(ours, reference):
  return float(jnp.max(jnp.abs(ours - reference)) / jnp.max(jnp.abs(reference)))


def relative_rms_error(ours, reference):
  return float(jnp.sqrt(jnp.mean((ours - reference) ** 2) / jnp.mean(reference**2)))


def test_rounding_error_is_at_most_half_a_scale_step_per_element():
  kernel = np.random.default_rng(0).normal(size=(24, 3, 5)).astype(np.float32)
  kernel[:, 1, 2] = 0.0  # an all-zero output channel
  values, scale = quantization.quantize(kernel, (0,))
  assert values.dtype == jnp.int8 and scale.dtype == jnp.float32 and scale.shape == (3, 5)
  error = np.abs(kernel - np.asarray(values, np.float32) * np.asarray(scale))
  assert np.all(error <= np.asarray(scale) / 2 * (1 + 1e-6) + 1e-12)
  np.testing.assert_allclose(scale, np.abs(kernel).max(axis=0) / 127, rtol=1e-6)
  assert np.all(np.abs(np.asarray(values)).max(axis=0)[scale > 0] == 127)  # the absmax element uses the full range
  assert np.all(np.asarray(values)[:, 1, 2] == 0) and scale[1, 2] == 0


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("n", [1, 40])
def test_blocked_matmul_equals_the_dequantised_product(monkeypatch, n, transposed):
  monkeypatch.setattr(quantization, "BLOCK_BYTES", 1024)  # many blocks, the last one overlapping
  rng = np.random.default_rng(1)
  kernel = rng.normal(size=(n, 16) if transposed else (16, n)).astype(np.float32)
  values, scale = quantization.quantize(kernel, (1,) if transposed else (0,))
  dequantized = np.asarray(values, np.float32) * (np.asarray(scale)[:, None] if transposed else np.asarray(scale))
  x = rng.normal(size=(2, 3, 16)).astype(np.float32)
  expected = x @ (dequantized.T if transposed else dequantized)
  ours = quantization.int8_matmul(jnp.asarray(x), values, scale, jnp.float32, transposed=transposed)
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_quantized_float_params_have_the_int8_models_tree(preset, scan_layers):
  float_model, params, int8_model, quantized = float_and_int8(preset, scan_layers)
  expected = nn.unbox(boxed_int8_init(int8_model))
  assert jax.tree.structure(quantized) == jax.tree.structure(expected)
  for ours, theirs in zip(jax.tree.leaves(quantized), jax.tree.leaves(expected)):
    assert (ours.shape, ours.dtype) == (theirs.shape, theirs.dtype)
  int8_leaves = [x for x in jax.tree.leaves(quantized) if x.dtype == jnp.int8]
  # q, k, v, out, the feed-forward kernels (3 gated, 2 plain) per layer, and the output layer or tied table.
  per_layer = 4 + (3 if int8_model.config.activation == "swiglu" else 2)
  assert len(int8_leaves) == (1 if scan_layers else 2) * per_layer + 1


def test_int8_kernels_and_scales_keep_their_logical_axes():
  boxed = boxed_int8_init(decoder_lm.DecoderLM(tiny_config("gpt2", scan_layers=True, weights="int8")))
  attention, ffn = boxed["layers"]["attention"], boxed["layers"]["ffn"]
  assert attention["query"]["kernel"].names == ("layers", "embed", "heads", "kv")
  assert attention["query"]["scale"].names == ("layers", "heads", "kv")
  assert attention["out"]["kernel"].names == ("layers", "heads", "kv", "embed")
  assert attention["out"]["scale"].names == ("layers", "embed")
  assert ffn["wo"]["scale"].names == ("layers", "embed")
  assert boxed["embed"]["embedding"].names == ("vocab", "embed") and boxed["embed"]["scale"].names == ("vocab",)


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_int8_logits_are_the_dequantised_models_and_close_to_the_float_models(preset, scan_layers):
  float_model, params, int8_model, quantized = float_and_int8(preset, scan_layers)
  tokens = jax.random.randint(jax.random.key(1), (4, 32), 0, VOCAB)
  float_logits = forward(float_model, params, tokens)
  int8_logits = forward(int8_model, quantized, tokens)
  dequantized = dequantize(quantized, boxed_int8_init(int8_model))
  dequantized_logits = forward(float_model, dequantized, tokens)
  assert relative_error(int8_logits, dequantized_logits) < 1e-5
  assert relative_rms_error(int8_logits, float_logits) < LOGIT_TOLERANCE
  agreement = float(jnp.mean(jnp.argmax(int8_logits, -1) == jnp.argmax(float_logits, -1)))
  assert agreement >= GREEDY_AGREEMENT


@pytest.mark.parametrize("preset, scan_layers", [("gpt2", False), ("llama", True)])
def test_int8_cached_decoding_equals_its_full_forward_pass(preset, scan_layers):
  _, _, model, params = float_and_int8(preset, scan_layers)
  tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, VOCAB)
  full = forward(model, params, tokens)
  step = jax.jit(lambda *args: model.apply({"params": params}, *args, method=model.tokens_to_logits))
  logits, cache = step(tokens[:, :8], decoder_lm.init_cache(model.config, 2, 16))
  assert relative_error(logits, full[:, :8]) < 1e-5
  for position in range(8, 12):
    logits, cache = step(tokens[:, position : position + 1], cache)
    assert relative_error(logits[:, 0], full[:, position]) < 1e-5


def test_an_unknown_weights_value_is_a_config_error():
  with pytest.raises(ConfigError, match=r"model.weights='int4' is not one of \('float', 'int8'\)"):
    tiny_config("gpt2", weights="int4")
