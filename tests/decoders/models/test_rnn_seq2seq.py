"""RNN encoder-decoder: cached decoding == the full forward pass for every attention kind, padding and source
reversal, scheduled sampling, gradients, config errors, decoding through generate(), and a copy task it learns."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from decoders.decoding import Beam, Contrastive, Greedy, generate
from decoders.errors import ConfigError
from decoders.layers import kv_cache, recurrent
from decoders.models import rnn_seq2seq
from decoders.models.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig

VOCAB, BOS, EOS = 37, 2, 3
SIZES = dict(vocab_size=VOCAB, width=32, embed_dim=16, max_len=32)
# One config per attention kind, each with a different mix of the other options.
CONFIGS = {
    kind: RNNSeq2SeqConfig(**{**SIZES, **options}, attention=kind)
    for kind, options in {
        "none": dict(cell="gru", num_layers=2, reverse_source=True),
        "additive": dict(cell="gru", bidirectional_encoder=True, input_feeding=True),
        "dot": dict(cell="lstm", input_feeding=True),
        "general": dict(cell="lstm", num_layers=2, input_feeding=True, reverse_source=True, dropout_rate=0.1),
        "concat": dict(cell="gru", bidirectional_encoder=True, tie_embeddings=True),  # embed_dim < width: projected
        "scaled_dot": dict(cell="lstm", tie_embeddings=True, embed_dim=32),
    }.items()
}
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
BATCH, SOURCE, TARGET = 3, 7, 6
SOURCE_LENGTHS = np.array([7, 4, 2], np.int32)
PROMPT_LENGTHS = np.array([3, 1, 2], np.int32)


def _batch(seed):
  """Sources right-padded with junk past their lengths, and decoder inputs [bos] + target."""
  rng = np.random.default_rng(seed)
  sources = rng.integers(4, VOCAB, (BATCH, SOURCE)).astype(np.int32)
  targets = rng.integers(4, VOCAB, (BATCH, TARGET)).astype(np.int32)
  targets[:, 0] = BOS
  return sources, targets


@functools.cache
def _params(kind):
  """Initial parameters of CONFIGS[kind], made once per session (a fresh init compiles again)."""
  sources, targets = _batch(0)
  model = RNNSeq2Seq(CONFIGS[kind])
  return nn.unbox(jax.jit(model.init)(jax.random.key(0), sources, targets, encoder_lengths=SOURCE_LENGTHS)["params"])


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, sources, targets, source_lengths):
  return model.apply({"params": params}, sources, targets, encoder_lengths=source_lengths)


@functools.partial(jax.jit, static_argnums=0)
def _logits_and_gradients(model, params, sources, targets):
  def loss(p):
    logits = model.apply({"params": p}, sources, targets, encoder_lengths=SOURCE_LENGTHS)
    labels = jnp.roll(targets, -1, axis=1)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

  return jax.grad(loss, has_aux=True)(params)[::-1]


@functools.partial(jax.jit, static_argnums=0)
def _decode_stepwise(model, params, sources, targets, order):
  """Prefill right-padded prompts of PROMPT_LENGTHS, reorder the rows by `order` (select_rows), then feed each row
  its next target token for TARGET - 1 steps: (prefill logits, positions [steps, b], logits [steps, b, vocab]).
  (tokens_to_hidden and unembed_hidden: contrastive search in the generate() test.)"""
  apply = lambda method, *args: model.apply({"params": params}, *args, method=method)
  cache = apply("decoding_cache", BATCH, TARGET, kv_cache.CacheSpec(), sources, SOURCE_LENGTHS)
  prompts = jnp.where(jnp.arange(TARGET)[None] < PROMPT_LENGTHS[:, None], targets, 0)
  prefill, cache = apply("tokens_to_logits", prompts, cache, PROMPT_LENGTHS)
  cache, targets = cache.select_rows(order), targets[order]

  def step(cache, _):
    position = cache.lengths
    token = targets[jnp.arange(BATCH), jnp.minimum(position, TARGET - 1)][:, None]
    logits, cache = apply("tokens_to_logits", token, cache)
    return cache, (position, logits[:, 0])

  _, (positions, logits) = jax.lax.scan(step, cache, None, length=TARGET - 1)
  return prefill, positions, logits


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request):
  """(config, params, teacher-forced logits, gradients of a loss) of one attention kind."""
  config, params = CONFIGS[request.param], _params(request.param)
  sources, targets = _batch(1)
  logits, gradients = _logits_and_gradients(RNNSeq2Seq(config), params, sources, targets)
  return config, params, logits, gradients


def test_cached_decoding_equals_the_teacher_forced_forward_pass(case):
  config, params, full, _ = case
  sources, targets = _batch(1)
  order = np.array([2, 0, 1])
  prefill, positions, logits = _decode_stepwise(RNNSeq2Seq(config), params, sources, targets, order)
  assert full.shape == (BATCH, TARGET, VOCAB) and full.dtype == jnp.float32
  assert np.std(np.asarray(full)) > 1e-3  # logits that vary, or the comparisons below prove little
  for row, length in enumerate(PROMPT_LENGTHS):
    np.testing.assert_allclose(prefill[row, :length], full[row, :length], **TOLERANCE)
  checked = 0
  for step_positions, step_logits in zip(np.asarray(positions), np.asarray(logits)):
    for row, position in enumerate(step_positions):
      if position < TARGET:
        np.testing.assert_allclose(step_logits[row], full[order[row], position], **TOLERANCE)
        checked += 1
  assert checked == BATCH * TARGET - PROMPT_LENGTHS.sum()


def test_gradients_reach_every_parameter_and_are_finite(case):
  _, _, _, gradients = case
  for path, gradient in jax.tree_util.tree_leaves_with_path(gradients):
    assert np.all(np.isfinite(gradient)), jax.tree_util.keystr(path)
    assert np.any(gradient != 0), jax.tree_util.keystr(path)


def test_a_source_row_reads_only_its_valid_tokens():
  config = CONFIGS["additive"]  # bidirectional: the backward direction must start at each row's last real token
  params, model = _params("additive"), RNNSeq2Seq(config)
  sources, targets = _batch(2)
  logits = _forward(model, params, sources, targets, SOURCE_LENGTHS)
  junk = np.where(np.arange(SOURCE)[None] < SOURCE_LENGTHS[:, None], sources, (sources + 5) % VOCAB)
  np.testing.assert_allclose(_forward(model, params, junk, targets, SOURCE_LENGTHS), logits, **TOLERANCE)
  alone = _forward(model, params, sources[1:2, : SOURCE_LENGTHS[1]], targets[1:2], None)
  np.testing.assert_allclose(alone[0], logits[1], **TOLERANCE)


def test_reverse_source_reverses_each_rows_valid_tokens_and_alignments_come_back_in_source_order():
  config = CONFIGS["general"]
  params = _params("general")
  forwards = dataclasses.replace(config, reverse_source=False)  # the same parameters read the source as given
  sources, targets = _batch(3)
  reversed_sources = np.asarray(recurrent.reverse_valid(sources, SOURCE_LENGTHS))
  np.testing.assert_allclose(
      _forward(RNNSeq2Seq(config), params, sources, targets, SOURCE_LENGTHS),
      _forward(RNNSeq2Seq(forwards), params, reversed_sources, targets, SOURCE_LENGTHS),
      **TOLERANCE,
  )
  align = lambda c, s: RNNSeq2Seq(c).apply(
      {"params": params}, s, targets, encoder_lengths=SOURCE_LENGTHS, method="alignments"
  )
  weights = np.asarray(align(config, sources))
  assert weights.shape == (BATCH, TARGET, SOURCE)
  np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-6)
  padding = np.arange(SOURCE)[None, None] >= SOURCE_LENGTHS[:, None, None]
  np.testing.assert_array_equal(np.broadcast_to(padding, weights.shape) * weights, 0.0)
  # Weight j belongs to source token j: the forward reader of the reversed source puts it at length - 1 - j.
  expected = recurrent.reverse_valid(np.asarray(align(forwards, reversed_sources)).swapaxes(1, 2), SOURCE_LENGTHS)
  np.testing.assert_allclose(weights, np.asarray(expected).swapaxes(1, 2), **TOLERANCE)


def test_alignments_need_attention():
  sources, targets = _batch(0)
  with pytest.raises(ConfigError, match="attention='none' has no alignments"):
    jax.eval_shape(lambda: RNNSeq2Seq(CONFIGS["none"]).init(jax.random.key(0), sources, targets, method="alignments"))


@functools.partial(jax.jit, static_argnums=0)
def _scheduled(model, params, sources, targets, teacher_forcing, rng):
  """Logits and the gradients of a loss under scheduled sampling with a traced probability `teacher_forcing`."""

  def loss(p):
    logits = model.apply(
        {"params": p}, sources, targets, encoder_lengths=SOURCE_LENGTHS, teacher_forcing=teacher_forcing,
        rngs={"sampling": rng},
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.roll(targets, -1, axis=1)).mean(), logits

  return jax.grad(loss, has_aux=True)(params)[::-1]


def test_scheduled_sampling_feeds_the_models_own_samples():
  config = CONFIGS["additive"]
  params, model = _params("additive"), RNNSeq2Seq(config)
  sources, targets = _batch(4)
  gold = _forward(model, params, sources, targets, SOURCE_LENGTHS)
  key = jax.random.key(7)
  scheduled = lambda p, t=targets, k=key: _scheduled(model, params, sources, t, jnp.float32(p), k)[0]
  np.testing.assert_allclose(scheduled(1.0), gold, **TOLERANCE)  # always the gold token: teacher forcing
  sampled = scheduled(0.0)
  np.testing.assert_allclose(sampled[:, 0], gold[:, 0], **TOLERANCE)  # the first step always reads [bos]
  assert not np.allclose(sampled[:, 1:], gold[:, 1:], atol=1e-3)
  # With p = 0 every later input is a sample: the gold tokens after [bos] are never read ...
  other_targets = targets.copy()
  other_targets[:, 1:] = (targets[:, 1:] + 1) % VOCAB
  np.testing.assert_array_equal(scheduled(0.0, other_targets), sampled)
  # ... and the samples are a function of the rng alone.
  np.testing.assert_array_equal(scheduled(0.0), sampled)
  assert not np.allclose(scheduled(0.0, k=jax.random.key(8))[:, 1:], sampled[:, 1:], atol=1e-3)
  gradients, _ = _scheduled(model, params, sources, targets, jnp.float32(0.5), key)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(gradients))


def test_bfloat16_computes_in_bfloat16_and_returns_float32_logits():
  config = CONFIGS["general"]
  params = _params("general")
  sources, targets = _batch(5)
  half = _forward(RNNSeq2Seq(dataclasses.replace(config, dtype="bfloat16")), params, sources, targets, SOURCE_LENGTHS)
  assert half.dtype == jnp.float32
  full = _forward(RNNSeq2Seq(config), params, sources, targets, SOURCE_LENGTHS)
  np.testing.assert_allclose(half, full, atol=0.05)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("vocab_size", 0, "model.vocab_size=0 must be a positive integer"),
        ("width", 2.5, "model.width=2.5 must be a positive integer"),
        ("num_layers", True, "model.num_layers=True must be a positive integer"),
        ("cell", "rnn", "model.cell='rnn' is not one of"),
        ("attention", "location", "model.attention='location' is not one of"),
        ("dtype", "float16", "model.dtype='float16' is not one of"),
        ("dropout_rate", 1.0, r"model.dropout_rate=1.0 must be in \[0, 1\)"),
        ("input_feeding", "yes", "model.input_feeding='yes' must be True or False"),
    ],
)
def test_bad_config_values_are_refused_naming_the_field(field, value, message):
  with pytest.raises(ConfigError, match=message):
    RNNSeq2SeqConfig(**{**SIZES, field: value})


def test_impossible_combinations_and_presets_are_refused():
  with pytest.raises(ConfigError, match="model.attention='dot' compares the decoder state"):
    RNNSeq2SeqConfig(**SIZES, attention="dot", bidirectional_encoder=True)
  with pytest.raises(ConfigError, match="unknown rnn_seq2seq preset 'rnnsearch'"):
    rnn_seq2seq.preset("rnnsearch", vocab_size=VOCAB)
  with pytest.raises(ConfigError, match="needs vocab_size"):
    rnn_seq2seq.preset("cho2014")


@pytest.mark.parametrize("name", sorted(rnn_seq2seq.PRESETS))
def test_presets_build(name):
  config = rnn_seq2seq.preset(name, vocab_size=VOCAB)
  sources, targets = _batch(0)
  shapes = jax.eval_shape(RNNSeq2Seq(config).init, jax.random.key(0), sources, targets)["params"]
  assert ("alignment" in shapes) == (config.attention != "none")
  assert ("backward_0" in shapes["encoder"]) == config.bidirectional_encoder


def test_inputs_the_model_cannot_take_are_refused_before_compiling():
  config = CONFIGS["dot"]
  params, model = _params("dot"), RNNSeq2Seq(config)
  long_source = np.full((1, config.max_len + 1), 5, np.int32)
  with pytest.raises(ConfigError, match="source length 33 exceeds model.max_len=32"):
    jax.eval_shape(lambda: model.apply({"params": params}, long_source, np.full((1, 2), BOS, np.int32)))
  with pytest.raises(ConfigError, match="source length 33 exceeds model.max_len=32"):
    generate(model, params, [[BOS]], strategy=Greedy(), max_new_tokens=2, encoder_tokens=long_source.tolist())
  cache = lambda *args: jax.eval_shape(lambda: model.apply({"params": params}, *args, method="decoding_cache"))
  with pytest.raises(ConfigError, match="decoder length 33 exceeds model.max_len=32"):
    cache(1, 33, kv_cache.CacheSpec(), long_source[:, :4], None)
  with pytest.raises(ConfigError, match="fixed-size state, not a key/value cache"):
    cache(1, 8, kv_cache.CacheSpec(quantization="int8"), long_source[:, :4], None)
  with pytest.raises(ConfigError, match="needs encoder_tokens"):
    cache(1, 8, kv_cache.CacheSpec(), None, None)


GENERATION_SOURCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
NEW_TOKENS = 5


def _greedy_by_forward_passes(model, params):
  """Greedy decoding by re-running the teacher-forced forward pass on the tokens so far: the reference."""
  width = max(map(len, GENERATION_SOURCES))
  sources = np.array([s + [0] * (width - len(s)) for s in GENERATION_SOURCES], np.int32)
  lengths = np.array([len(s) for s in GENERATION_SOURCES], np.int32)
  tokens = np.zeros((len(sources), NEW_TOKENS + 1), np.int32)
  tokens[:, 0] = BOS
  for step in range(NEW_TOKENS):  # the decoder is causal: later (still 0) inputs do not change step's logits
    logits = _forward(model, params, sources, tokens, lengths)
    tokens[:, step + 1] = np.argmax(logits[:, step], axis=-1)
  return tokens[:, 1:], (sources, lengths)


def test_generate_greedy_beam_and_contrastive_search_decode_the_model():
  config = CONFIGS["general"]
  params, model = _params("general"), RNNSeq2Seq(config)
  expected, (sources, lengths) = _greedy_by_forward_passes(model, params)
  prompts = [[BOS]] * len(GENERATION_SOURCES)
  decode = lambda strategy, **kw: generate(
      model, params, prompts, strategy=strategy, max_new_tokens=NEW_TOKENS, encoder_tokens=GENERATION_SOURCES, **kw
  )
  np.testing.assert_array_equal(decode(Greedy()).tokens, expected)
  np.testing.assert_array_equal(decode(Contrastive(k=3, alpha=0.0)).tokens, expected)  # alpha 0: greedy
  # Every beam hypothesis' score is its log-likelihood under the forward pass over its length (length_penalty 1).
  out = decode(Beam(3, num_returned=3), eos_id=EOS)
  for row, hypotheses in enumerate(out.nbest()):
    for hypothesis, score in hypotheses:
      tokens = np.array([[BOS, *hypothesis] + [0] * (NEW_TOKENS - len(hypothesis))], np.int32)
      log_probs = jax.nn.log_softmax(_forward(model, params, sources[row : row + 1], tokens, lengths[row : row + 1])[0])
      likelihood = sum(float(log_probs[t, token]) for t, token in enumerate(hypothesis))
      np.testing.assert_allclose(score, likelihood / len(hypothesis), rtol=1e-4)


def test_it_learns_to_copy_five_token_sequences():
  config = RNNSeq2SeqConfig(vocab_size=12, width=32, embed_dim=16, max_len=8, attention="additive", input_feeding=True)
  model = RNNSeq2Seq(config)
  rng = np.random.default_rng(0)
  sources = rng.integers(4, 12, (256, 5)).astype(np.int32)
  decoder_inputs = np.concatenate([np.full((256, 1), BOS, np.int32), sources], axis=1)
  labels = np.concatenate([sources, np.full((256, 1), EOS, np.int32)], axis=1)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), sources[:2], decoder_inputs[:2])["params"])
  optimizer = optax.adam(1e-2)

  @jax.jit
  def train_step(params, opt_state, batch):
    def loss(p):
      logits = model.apply({"params": p}, batch[0], batch[1])
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch[2]).mean()

    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value

  opt_state = optimizer.init(params)
  for step in range(300):
    rows = slice(32 * (step % 8), 32 * (step % 8 + 1))
    params, opt_state, loss = train_step(params, opt_state, (sources[rows], decoder_inputs[rows], labels[rows]))
  held_out = rng.integers(4, 12, (64, 5)).astype(np.int32)
  out = generate(model, params, [[BOS]] * 64, strategy=Greedy(), max_new_tokens=6, encoder_tokens=held_out.tolist())
  assert float(loss) < 0.05
  assert np.mean(out.tokens[:, :5] == held_out) > 0.95 and np.all(out.tokens[:, 5] == EOS)
