"""Encoder-decoder: cached decoding against the full forward pass, padding, a numpy encoder layer, alignments,
gradients, parameter counts (the published shapes' included), bad configurations, and generate() on it."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.decoding import Beam, Contrastive, generate, strategies
from decoders.errors import ConfigError
from decoders.layers.kv_cache import CacheSpec
from decoders.models import encoder_decoder

VOCAB, BOS, EOS = 37, 2, 3
SIZES = dict(vocab_size=VOCAB, num_encoder_layers=1, num_decoder_layers=2, width=32, num_heads=4, mlp_dim=64,
             max_len=32)
RELATIVE = dict(relative_buckets=8, relative_max_distance=16)  # sequences here reach the logarithmic buckets
# One tiny model per family: (preset, overrides).
VARIANTS = {
    "transformer": ("transformer-small", {}),
    "transformer pre-norm": ("transformer-small", dict(norm_position="pre")),
    "t5": ("t5-small", RELATIVE),
    "t5 v1.1, grouped-query": ("t5-v1_1-base", dict(RELATIVE, num_kv_heads=2)),
    "bart, padded vocabulary": ("bart-base", dict(vocab_multiple=8)),
    # Queries and keys of 4 per head, values of width / heads = 8 (Vaswani et al. 2017, Table 3 (B)).
    "transformer, key size 4": ("transformer-small", dict(key_size=4)),
}
SOURCE_LENGTHS = np.array([7, 10], np.int32)  # rows of different lengths, right-padded with garbage


def config(variant: str) -> encoder_decoder.EncoderDecoderConfig:
  name, overrides = VARIANTS[variant]
  return encoder_decoder.preset(name, **SIZES, **overrides)


@functools.cache
def tiny(variant: str):
  model = encoder_decoder.EncoderDecoder(config(variant))
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32)))
  return model, jax.tree.map(lambda x: x * 4.0, params["params"])  # logits and greedy choices well above rounding level


@functools.cache
def method(model, name: str, *static, **static_keywords):
  """model.<name> with its parameters first, jitted once per test session; `static` leading arguments (a batch, a
  capacity, a CacheSpec) and `static_keywords` (a layer) bound."""
  apply = functools.partial(model.apply, method=name, **static_keywords)
  return jax.jit(lambda params, *args, **kwargs: apply({"params": params}, *static, *args, **kwargs))


def tokens(shape, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


def assert_close(ours, reference, tolerance=1e-5):
  """Equal up to float32 rounding (the cache sums over its capacity, the full pass over the sequence)."""
  assert float(jnp.max(jnp.abs(ours - reference)) / jnp.max(jnp.abs(reference))) < tolerance


# Cached decoding, padding


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_decoding_equals_the_full_forward_pass_at_every_step(variant):
  model, params = tiny(variant)
  source, target = tokens((2, 10), 0), tokens((2, 20), 1)
  full = method(model, "__call__")(params, source, target, encoder_lengths=SOURCE_LENGTHS)
  prompt_lengths = jnp.array([3, 6])  # each row's prompt is right-padded too
  prompt = jnp.where(jnp.arange(8)[None] < prompt_lengths[:, None], target[:, :8], 5)
  cache = method(model, "decoding_cache", 2, 32, CacheSpec())(params, source, SOURCE_LENGTHS)
  step = method(model, "tokens_to_logits")
  logits, cache = step(params, prompt, cache, prompt_lengths)
  for row in range(2):
    assert_close(logits[row, : prompt_lengths[row]], full[row, : prompt_lengths[row]])
  for i in range(10):
    logits, cache = step(params, target[np.arange(2), prompt_lengths + i][:, None], cache)
    assert_close(logits[:, 0], full[np.arange(2), prompt_lengths + i])
  np.testing.assert_array_equal(cache.lengths, prompt_lengths + 10)


def test_an_int8_decoder_cache_stays_close_to_the_float_one():
  model, params = tiny("t5")
  source, target = tokens((2, 10), 2), tokens((2, 20), 3)
  full = method(model, "__call__")(params, source, target, encoder_lengths=SOURCE_LENGTHS)
  cache = method(model, "decoding_cache", 2, 32, CacheSpec(quantization="int8"))(params, source, SOURCE_LENGTHS)
  assert cache.self_attention.key.dtype == jnp.int8
  logits, _ = method(model, "tokens_to_logits")(params, target, cache)
  assert_close(logits, full, tolerance=0.05)


def test_a_key_size_sizes_the_cross_attention_keys_and_the_decoder_cache():
  model, params = tiny("transformer, key size 4")
  source, target = tokens((2, 10), 4), tokens((2, 20), 5)
  full = method(model, "__call__")(params, source, target, encoder_lengths=SOURCE_LENGTHS)
  cache = method(model, "decoding_cache", 2, 32, CacheSpec(quantization="int4"))(params, source, SOURCE_LENGTHS)
  assert cache.cross_key.shape == (2, 2, 4, 10, 4) and cache.cross_value.shape == (2, 2, 4, 10, 8)  # head-major
  assert cache.self_attention.key.shape[-1] == 2 and cache.self_attention.value.shape[-1] == 4  # two per byte
  logits, _ = method(model, "tokens_to_logits")(params, target, cache)
  assert_close(logits, full, tolerance=0.25)  # int4 (tests/decoders/layers/test_kv_cache.py: QUANTISED)


@pytest.mark.parametrize("variant", ["transformer", "t5", "bart, padded vocabulary"])  # each kind of positions
def test_a_padded_source_row_equals_that_row_alone(variant):
  model, params = tiny(variant)
  forward = method(model, "__call__")
  source, target = tokens((2, 10), 4), tokens((2, 20), 5)
  padded = forward(params, source, target, encoder_lengths=SOURCE_LENGTHS)
  garbage = np.where(np.arange(10)[None] < SOURCE_LENGTHS[:, None], source, (source + 1) % VOCAB)
  assert_close(forward(params, garbage, target, encoder_lengths=SOURCE_LENGTHS), padded)
  alone = forward(params, source[:1, : SOURCE_LENGTHS[0]], target[:1])
  assert_close(padded[:1], alone)


# The blocks against a numpy transcription of Vaswani et al. 2017


def _layer_norm(x, norm):
  centred = x - x.mean(-1, keepdims=True)
  return centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5) * norm["scale"] + norm["bias"]


def _numpy_encoder_layer(params, source, valid, norm_position):
  """One encoder layer, sec. 3.1-3.5: sqrt(d)-scaled embeddings plus sinusoids, attention (eq. 1) over real keys,
  ReLU feed-forward (eq. 2), each sublayer in a residual with its LayerNorm after (post) or before (pre) it."""
  width = params["embed"]["embedding"].shape[1]
  pairs = np.arange(0, width, 2) / width
  angles = np.arange(source.shape[1])[:, None] / 10_000.0**pairs
  sinusoid = np.stack([np.sin(angles), np.cos(angles)], -1).reshape(source.shape[1], width)
  x = params["embed"]["embedding"][source] * math.sqrt(width) + sinusoid
  block = params["encoder"]["block_0"]

  def attention(h):
    a = block["attention"]
    q, k, v = (np.einsum("btd,dhk->bthk", h, a[n]["kernel"]) + a[n]["bias"] for n in ("query", "key", "value"))
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(q.shape[-1])
    logits = np.where(valid[:, None, None, :], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqs,bshk,hkd->bqd", weights, v, a["out"]["kernel"]) + a["out"]["bias"]

  def ffn(h):
    f = block["ffn"]
    return np.maximum(h @ f["wi"]["kernel"] + f["wi"]["bias"], 0) @ f["wo"]["kernel"] + f["wo"]["bias"]

  for norm_name, sublayer in (("attention_norm", attention), ("ffn_norm", ffn)):
    if norm_position == "post":
      x = _layer_norm(x + sublayer(x), block[norm_name])
    else:
      x = x + sublayer(_layer_norm(x, block[norm_name]))
  return x if norm_position == "post" else _layer_norm(x, params["encoder"]["final_norm"])


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_an_encoder_layer_matches_a_numpy_transcription_of_the_paper(norm_position):
  cfg = encoder_decoder.preset("transformer-small", **{**SIZES, "num_encoder_layers": 1}, norm_position=norm_position)
  model = encoder_decoder.EncoderDecoder(cfg)
  params = nn.unbox(model.init(jax.random.key(1), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32))["params"])
  assert ("final_norm" in params["encoder"]) == (norm_position == "pre")  # a post-norm stack already ends in a norm
  source = tokens((2, 10), 6)
  ours = method(model, "encode")(params, source, SOURCE_LENGTHS)
  valid = np.arange(10)[None] < SOURCE_LENGTHS[:, None]
  reference = _numpy_encoder_layer(jax.tree.map(np.asarray, params), source, valid, norm_position)
  np.testing.assert_allclose(np.asarray(ours), reference, rtol=1e-4, atol=1e-4)


# Alignments, gradients


def test_alignments_are_distributions_over_the_real_source_tokens():
  model, params = tiny("transformer")
  source, target = tokens((2, 10), 7), tokens((2, 6), 8)
  weights = {layer: method(model, "alignments", layer=layer)(params, source, target, encoder_lengths=SOURCE_LENGTHS)
             for layer in (0, -1)}
  assert weights[-1].shape == (2, 4, 6, 10)  # [batch, heads, target, source]
  for layer_weights in weights.values():
    np.testing.assert_allclose(layer_weights.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(layer_weights[0, :, :, SOURCE_LENGTHS[0] :], 0.0)
  assert not np.allclose(weights[0], weights[-1])
  alone = method(model, "alignments")(params, source[:1, : SOURCE_LENGTHS[0]], target[:1])
  np.testing.assert_allclose(weights[-1][:1, :, :, : SOURCE_LENGTHS[0]], alone, atol=1e-6)


# Between them every kind of parameter: post- and pre-norm, gated and untied, relative bias, learned positions.
@pytest.mark.parametrize("variant", ["transformer pre-norm", "t5 v1.1, grouped-query", "bart, padded vocabulary"])
def test_gradients_reach_every_parameter_and_are_finite(variant):
  model, params = tiny(variant)
  source, target = tokens((2, 10), 9), tokens((2, 7), 10)

  def loss(params):
    logits = model.apply({"params": params}, source, target[:, :-1], encoder_lengths=SOURCE_LENGTHS, train=True,
                         rngs={"dropout": jax.random.key(0)})
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), target[:, 1:, None], axis=-1))

  for path, grad in jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(loss))(params)):
    assert np.all(np.isfinite(grad)) and np.any(grad != 0), jax.tree_util.keystr(path)


# Parameter counts


def _count(cfg) -> int:
  model = encoder_decoder.EncoderDecoder(cfg)
  tokens = jnp.zeros((1, 4), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(shapes["params"])))


# Hugging Face's T5ForConditionalGeneration and BartForConditionalGeneration of these shapes (transformers 5.23, on
# the meta device). BART's position tables have 2 rows more (its offset), and its final_logits_bias is a buffer there.
PUBLISHED = {
    "t5-small": 60_506_624,
    "t5-v1_1-base": 247_577_856,  # untied: 222,903,552 with the output tied, plus 32,128 x 768
    "bart-base": 139_420_416 - 2 * 2 * 768 + 50_265,
}


@pytest.mark.parametrize("name", sorted(encoder_decoder.PRESETS))
def test_num_params_counts_what_init_makes_and_the_published_shapes_match(name):
  cfg = encoder_decoder.preset(name)
  assert cfg.num_params(include_embeddings=True) == _count(cfg)
  if name in PUBLISHED:
    assert _count(cfg) == PUBLISHED[name]
  if name == "transformer-base":  # Vaswani et al. 2017, table 3: 65 M with a vocabulary of "about 37,000"
    assert abs(_count(cfg) / 65e6 - 1) < 0.05


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_num_params_of_each_variant(variant):
  assert config(variant).num_params(include_embeddings=True) == _count(config(variant))


# Bad configurations and calls


@pytest.mark.parametrize("override, pattern", [
    (dict(num_encoder_layers=0), "num_encoder_layers=0 must be positive"),
    (dict(positions="rope"), "positions='rope' is not one of"),
    (dict(width=33, num_heads=3), "positions='sinusoidal' needs an even width"),
    (dict(positions="relative", relative_buckets=2), "relative_buckets=2 must be at least 4"),
    (dict(positions="relative", relative_buckets=8, relative_max_distance=4), "relative_max_distance=4 must exceed"),
    (dict(sliding_window=4), "sliding_window=4 is not supported"),
    (dict(scan_layers=True), "scan_layers=True is not supported"),
    (dict(remat="full"), "remat='full' is not supported"),
    (dict(weights="int8"), "weights='int8' is not supported"),
    (dict(width=30), "width=30 is not divisible by model.num_heads=4"),
    (dict(key_size=-2), "model.key_size=-2 must be >= 0"),
    (dict(num_layers=3), "model.num_layers is not a field"),
])
def test_a_bad_configuration_is_named(override, pattern):
  with pytest.raises(ConfigError, match=pattern):
    encoder_decoder.preset("transformer-small", **{**SIZES, **override})


def test_an_unknown_preset_is_named():
  with pytest.raises(ConfigError, match="unknown encoder_decoder preset 'transformer-huge'"):
    encoder_decoder.preset("transformer-huge")


@pytest.mark.parametrize("call, pattern", [
    (lambda m, p: m.apply(p, 2, 8, CacheSpec(), None, method="decoding_cache"), "pass encoder_tokens"),
    (lambda m, p: m.apply(p, 1, 8, CacheSpec(eviction="window"), jnp.ones((1, 4), jnp.int32), method="decoding_cache"),
     "eviction='window'"),
    (lambda m, p: m.apply(p, 1, 40, CacheSpec(), jnp.ones((1, 4), jnp.int32), method="decoding_cache"),
     "40 positions exceeds model.max_len=32"),
    (lambda m, p: m.apply(p, 1, 8, CacheSpec(), jnp.ones((1, 33), jnp.int32), method="decoding_cache"),
     "source length 33 exceeds model.max_len=32"),
    (lambda m, p: m.apply(p, jnp.ones((1, 4), jnp.int32), jnp.ones((1, 33), jnp.int32)), "target length 33 exceeds"),
    (lambda m, p: m.apply(p, jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32), layer=2, method="alignments"),
     "layer=2 is not one of the decoder's 2 layers"),
])
def test_a_bad_call_is_named(call, pattern):
  model, params = tiny("transformer")
  with pytest.raises(ConfigError, match=pattern):
    call(model, {"params": params})


# generate() on the encoder-decoder


SOURCES = [[5, 9, 11, 4, 7, 20, 13], [8, 6, 30, 12, 9, 14, 22, 17, 10, 25]]  # SOURCE_LENGTHS long
PADDED_SOURCES = np.array([row + [0] * (10 - len(row)) for row in SOURCES], np.int32)


def _full_forward_greedy(model, params, steps: int) -> np.ndarray:
  """Greedy decoding of SOURCES without a cache: the whole target so far through the model for every token (one
  fixed-size buffer of 20, so one compilation; causal attention keeps the zeros after it out of its logits)."""
  forward = method(model, "__call__")
  target = np.zeros((2, 20), np.int32)
  target[:, 0] = BOS
  for i in range(steps):
    logits = forward(params, PADDED_SOURCES, target, encoder_lengths=SOURCE_LENGTHS)
    target[:, i + 1] = np.argmax(logits[:, i, :VOCAB], axis=-1)
  return target[:, 1 : steps + 1]


def test_generate_greedy_equals_greedy_over_the_full_forward_pass():
  model, params = tiny("t5")
  out = generate(model, params, [[BOS], [BOS]], strategy=strategies.Greedy(), max_new_tokens=8,
                 encoder_tokens=SOURCES)
  np.testing.assert_array_equal(out.tokens, _full_forward_greedy(model, params, 8))
  contrastive = generate(model, params, [[BOS], [BOS]], strategy=Contrastive(k=4, alpha=0.0), max_new_tokens=8,
                         encoder_tokens=SOURCES)  # alpha 0: no penalty, greedy through tokens_to_hidden
  np.testing.assert_array_equal(contrastive.tokens, out.tokens)


def test_beam_search_scores_its_hypotheses_as_the_full_forward_pass_does():
  """Its hypotheses come from caches reordered by select_rows at every step; the full pass scores them afresh."""
  model, params = tiny("bart, padded vocabulary")
  out = generate(model, params, [[BOS], [BOS]], strategy=Beam(3, num_returned=3), max_new_tokens=8, eos_id=EOS,
                 encoder_tokens=SOURCES)
  hypotheses = out.nbest_tokens.reshape(6, 8)
  inputs = np.concatenate([np.full((6, 1), BOS, np.int32), hypotheses[:, :-1]], axis=1)
  logits = method(model, "__call__")(
      params, np.repeat(PADDED_SOURCES, 3, axis=0), inputs, encoder_lengths=np.repeat(SOURCE_LENGTHS, 3)
  )
  log_probs = np.take_along_axis(jax.nn.log_softmax(logits[..., :VOCAB]), hypotheses[..., None], axis=-1)[..., 0]
  lengths = out.nbest_lengths.reshape(6)
  expected = [log_probs[i, : lengths[i]].sum() / lengths[i] for i in range(6)]  # length_penalty 1: the mean
  np.testing.assert_allclose(out.scores.reshape(6), expected, rtol=1e-4)
