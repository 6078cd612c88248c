"""Speculative decoding against the target alone: greedy token for token, sampling in distribution (chi-square)."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from decoders.decoding import generate, strategies
from decoders.decoding import speculative as speculative_lib
from decoders.decoding.drafts import PromptLookup, early_exit_draft
from decoders.decoding.speculative import speculative_generate
from decoders.errors import ConfigError
from decoders.models import decoder_lm

VOCAB = 37
PROMPTS = [[5, 9, 2, 11, 5, 9], [7], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
MAX_NEW = 12


def tiny(preset="llama", vocab=VOCAB, num_layers=2, width=32, seed=0, scale=8.0, **overrides):
  """A tiny random model; `scale` spreads its logits (8: greedy choices well above rounding level)."""
  cfg = decoder_lm.preset(
      preset, vocab_size=vocab, num_layers=num_layers, width=width, num_heads=4, mlp_dim=2 * width, max_len=32,
      **overrides,
  )
  model = decoder_lm.DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * scale, params)


TARGET = tiny(num_kv_heads=2)
DRAFTS = {
    # Random weights; the early-exit draft's shape, so the two share one compiled program.
    "bad": tiny(num_layers=1, num_kv_heads=2, seed=5),
    "perfect": TARGET,
    "prompt_lookup": (PromptLookup(ngram=3), None),
    "early_exit": early_exit_draft(*TARGET, 1),
}


@functools.cache
def greedy_reference(eos_id):
  return generate(*TARGET, PROMPTS, strategy=strategies.Greedy(), max_new_tokens=MAX_NEW, eos_id=eos_id)


@pytest.mark.parametrize("gamma", [1, 3, 5])
@pytest.mark.parametrize("source", sorted(DRAFTS))
def test_greedy_output_is_the_targets_token_for_token(source, gamma):
  draft, draft_params = DRAFTS[source]
  free = greedy_reference(None)
  eos = free.rows()[0][4]  # ends the first row by its fifth token, others later or never
  for eos_id in (None, eos):
    out = speculative_generate(
        *TARGET, draft, draft_params, PROMPTS, gamma=gamma, max_new_tokens=MAX_NEW, eos_id=eos_id
    )
    reference = greedy_reference(eos_id)
    np.testing.assert_array_equal(out.tokens, reference.tokens)  # the fill after each row's end included
    np.testing.assert_array_equal(out.num_generated, reference.num_generated)
    assert (out.accepted <= out.proposed).all() and (out.proposed % gamma == 0).all()
  assert len(set(out.num_generated.tolist())) > 1  # with the EOS, rows end at different steps
  if source == "perfect":  # every draft accepted: γ + 1 tokens per target call
    assert out.acceptance_rate == 1.0 and (out.row_acceptance_rates == 1.0).all()
    assert out.target_calls == -(-int(out.num_generated.max()) // (gamma + 1))
  if source == "bad":
    assert out.acceptance_rate < 0.5 and out.target_calls > MAX_NEW // 2


def test_early_exit_draft_is_the_targets_first_layers_read_by_its_own_head():
  model, params = TARGET
  tokens = jnp.asarray([PROMPTS[2]])

  @jax.jit
  def early_exit_logits(params, tokens):  # the full model, read out after its first block
    _, state = model.apply({"params": params}, tokens, capture_intermediates=True, mutable=["intermediates"])
    after_first_block = state["intermediates"]["block_0"]["__call__"][0]
    return model.apply({"params": params}, after_first_block, method=decoder_lm.DecoderLM.logits)

  expected = early_exit_logits(params, tokens)
  draft, draft_params = early_exit_draft(model, params, 1)
  assert draft.config.num_layers == 1 and "block_1" not in draft_params
  logits = jax.jit(draft.apply)({"params": draft_params}, tokens)
  assert float(jnp.max(jnp.abs(logits - expected)) / jnp.max(jnp.abs(expected))) < 1e-5  # up to float32 rounding
  # Scanned parameters (one `layers` subtree with a leading layer axis) give the same draft, scanned.
  scanned = decoder_lm.DecoderLM(dataclasses.replace(model.config, scan_layers=True))
  scanned_draft, scanned_params = early_exit_draft(scanned, decoder_lm.stack_layers(params), 1)
  assert scanned_draft.config == dataclasses.replace(draft.config, scan_layers=True)
  jax.tree.map(np.testing.assert_array_equal, scanned_params, decoder_lm.stack_layers(draft_params))


def naive_prompt_lookup(sequence: list[int], gamma: int, ngram: int) -> list[int]:
  for n in range(ngram, 0, -1):
    for start in range(len(sequence) - n - 1, -1, -1):  # the most recent earlier occurrence first
      if len(sequence) >= n and sequence[start : start + n] == sequence[-n:]:
        copied = start + n
        return [sequence[copied + i % (len(sequence) - copied)] for i in range(gamma)]
  return [sequence[-1]] * gamma


def test_prompt_lookup_proposes_what_followed_the_latest_longest_match():
  rows = [[1, 2, 3, 4, 1, 2, 3], [1, 2, 5, 2, 5, 6, 2], [4, 4, 4], [7, 8, 9], [9], [3, 1, 3, 2, 3, 1, 3]]
  sequence = np.zeros((len(rows), 10), np.int32)
  for row, tokens in enumerate(rows):
    sequence[row, : len(tokens)] = tokens
  length = jnp.asarray([len(tokens) for tokens in rows])
  propose = functools.partial(PromptLookup(ngram=3).propose, None, (), gamma=5, pick=None, rng=None)
  proposed, q, _ = jax.jit(propose)(jnp.asarray(sequence), length)
  assert q is None  # a deterministic proposal
  assert proposed.tolist() == [naive_prompt_lookup(tokens, 5, 3) for tokens in rows]
  assert proposed.tolist()[0] == [4, 1, 2, 3, 4]


# The statistical test: a small vocabulary, so thousands of samples fill every cell of (first, second token).
SMALL_VOCAB, SAMPLES, PROMPT = 8, 4000, [3, 1, 4, 1, 5]
SMALL_TARGET = tiny(vocab=SMALL_VOCAB, num_kv_heads=2, seed=1, scale=2.0)
SMALL_DRAFT = tiny("gpt2", vocab=SMALL_VOCAB, num_layers=1, width=16, seed=2, scale=2.0)


def filtered_probabilities(logits: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
  """numpy softmax(logits / t) over the top_k largest (all of them without top_k)."""
  logits = logits.astype(np.float64) / temperature
  if top_k is not None:
    logits = np.where(logits >= np.sort(logits, axis=-1)[..., -top_k, None], logits, -np.inf)
  exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return exp / exp.sum(axis=-1, keepdims=True)


def two_token_distribution(model, params, prompt, temperature, top_k) -> np.ndarray:
  """[vocab, vocab]: P(first = a, second = b) from the model's full forward pass, by the chain rule."""
  continued = jnp.asarray([prompt + [token] for token in range(SMALL_VOCAB)])  # every first token, one pass
  logits = np.asarray(jax.jit(model.apply)({"params": params}, continued))
  first = filtered_probabilities(logits[0, len(prompt) - 1], temperature, top_k)
  second = filtered_probabilities(logits[:, len(prompt)], temperature, top_k)
  return first[:, None] * second


def chi_square_p_value(observed: np.ndarray, probabilities: np.ndarray) -> float:
  """Goodness of fit of counts to probabilities (0 if a count falls where the probability is 0); cells expecting
  fewer than 5 counts are pooled into one, as the chi-square approximation needs."""
  observed, probabilities = observed.ravel(), probabilities.ravel() / probabilities.sum()
  if observed[probabilities == 0].sum() > 0:
    return 0.0
  observed, expected = observed[probabilities > 0], probabilities[probabilities > 0] * observed.sum()
  small = expected < 5
  if small.any():
    observed = np.append(observed[~small], observed[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
  return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize(
    "source, strategy, gamma",
    [
        ("model", strategies.Sample(temperature=1.0), 2),
        ("model", strategies.Sample(temperature=1.0, top_k=5), 1),
        ("prompt_lookup", strategies.Sample(temperature=1.0), 2),
    ],
)
def test_sampling_preserves_the_targets_distribution_of_the_first_two_tokens(source, strategy, gamma):
  draft, draft_params = SMALL_DRAFT if source == "model" else (PromptLookup(ngram=2), None)
  out = speculative_generate(*SMALL_TARGET, draft, draft_params, [PROMPT] * SAMPLES, gamma=gamma, max_new_tokens=2,
                             strategy=strategy, rng=jax.random.key(7))
  observed = np.zeros((SMALL_VOCAB, SMALL_VOCAB))
  np.add.at(observed, (out.tokens[:, 0], out.tokens[:, 1]), 1)
  top_k = getattr(strategy, "top_k", None)
  target = two_token_distribution(*SMALL_TARGET, PROMPT, strategy.temperature, top_k)
  assert chi_square_p_value(observed, target) > 1e-3
  assert 0.05 < out.acceptance_rate < 0.95  # both branches, accepted drafts and corrections, are exercised
  if source == "model":  # the test has power: the same samples reject the draft's own distribution
    draft_distribution = two_token_distribution(*SMALL_DRAFT, PROMPT, strategy.temperature, top_k)
    assert chi_square_p_value(observed, draft_distribution) < 1e-6


def test_a_second_call_with_the_same_shapes_does_not_compile_again():
  draft, draft_params = SMALL_DRAFT
  call = functools.partial(speculative_generate, *SMALL_TARGET, draft, draft_params, gamma=2, max_new_tokens=2,
                           strategy=strategies.Sample(temperature=1.0))  # as the statistical test: compiled by then
  call([PROMPT] * SAMPLES, rng=jax.random.key(1))
  compiled = speculative_lib._speculate._cache_size()
  other_prompts = [[(token + row) % SMALL_VOCAB for token in PROMPT] for row in range(SAMPLES)]
  call(other_prompts, rng=jax.random.key(2), eos_id=3)  # other prompts, rng and EOS: the same program
  assert speculative_lib._speculate._cache_size() == compiled


@pytest.mark.parametrize(
    "draft, draft_params, settings, match",
    [
        (*DRAFTS["bad"], dict(gamma=0), "gamma=0 must be an integer >= 1"),
        (*DRAFTS["bad"], dict(gamma=2.0), "gamma=2.0 must be an integer >= 1"),
        (*tiny("gpt2", vocab=40, num_layers=1, width=16), {}, "draft vocab_size=40 differs from the target's .*=37"),
        (DRAFTS["bad"][0], None, {}, "a DecoderLM draft needs its draft_params"),
        ("draft", None, {}, "draft must be a DecoderLM or a PromptLookup, not str"),
        (*DRAFTS["bad"], dict(gamma=20), r"\+ gamma=20 exceeds the target's max_len=32"),
        (*DRAFTS["bad"], dict(eos_id=VOCAB), "eos_id=37 is outside the target's vocabulary"),
        (*DRAFTS["bad"], dict(strategy=strategies.Sample(repetition_penalty=1.2)), "not support repetition_penalty"),
    ],
)
def test_bad_input_is_named_in_one_line_before_compiling(draft, draft_params, settings, match):
  compiled = speculative_lib._speculate._cache_size()
  with pytest.raises(ConfigError, match=match) as error:
    speculative_generate(*TARGET, draft, draft_params, PROMPTS, **{"gamma": 2, "max_new_tokens": MAX_NEW, **settings})
  assert "\n" not in str(error.value)
  assert speculative_lib._speculate._cache_size() == compiled


@pytest.mark.parametrize("make, match", [
    (lambda: PromptLookup(ngram=0), "need 1 <= min_ngram=1 <= ngram=0"),
    (lambda: early_exit_draft(*TARGET, 3), r"num_layers=3 must be an integer in \[1, 2\]"),
])
def test_bad_draft_settings_are_named(make, match):
  with pytest.raises(ConfigError, match=match):
    make()
