"""decoding.filters against the Hugging Face `transformers` logits processors of the same names (run on torch)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from decoders.decoding import filters
from decoders.errors import ConfigError

VOCAB = 50


def _normal(seed):
  return np.random.default_rng(seed).normal(size=(4, VOCAB)).astype(np.float32) * 3


def _ties(seed):
  """Few distinct values, so most tokens share their logit with others, at every cut-off."""
  return np.random.default_rng(seed).integers(-3, 4, size=(4, VOCAB)).astype(np.float32)


def _edges(seed):
  rows = np.random.default_rng(seed).normal(size=(4, VOCAB)).astype(np.float32)
  rows[0] = 1.5  # all equal
  rows[1, 7] = 60.0  # one token holds all the mass
  rows[2, ::2] = -np.inf  # an earlier filter removed half
  rows[3] = -np.inf  # an earlier filter kept a single token
  rows[3, 11] = 0.3
  return rows


CASES = [(make, seed) for make in (_normal, _ties, _edges) for seed in range(3)]
CASE_IDS = [f"{make.__name__[1:]}-{seed}" for make, seed in CASES]

WARPERS = {  # filter -> (transformers class, values to try)
    "temperature": (transformers.TemperatureLogitsWarper, [0.3, 1.0, 2.5]),
    "top_k": (transformers.TopKLogitsWarper, [1, 3, 17, VOCAB, 80]),
    "top_p": (transformers.TopPLogitsWarper, [0.05, 0.3, 0.7, 0.9, 0.99, 1.0]),
    "min_p": (transformers.MinPLogitsWarper, [0.0, 0.01, 0.1, 0.5, 1.0]),
    "typical": (transformers.TypicalLogitsWarper, [0.05, 0.2, 0.5, 0.9, 0.99, 1.0]),
}


def _transformers(processor, logits, input_ids=None):
  ids = np.zeros((logits.shape[0], 1)) if input_ids is None else input_ids
  scores = processor(torch.as_tensor(np.asarray(ids), dtype=torch.long), torch.tensor(np.array(logits)))
  return scores.numpy()


def _transformers_generate(name, value, logits):
  """What `generate()` does with the setting: it adds no top-p or typical processor for 1.0."""
  if name in ("top_p", "typical") and value == 1.0:
    return logits.copy()
  return _transformers(WARPERS[name][0](value), logits)


def _assert_same_filtering(ours, theirs):
  ours = np.asarray(ours)
  assert ours.dtype == np.float32 and not np.isnan(ours).any()
  kept = np.isfinite(theirs)
  np.testing.assert_array_equal(np.isfinite(ours), kept)
  assert (ours[~kept] == -np.inf).all()
  np.testing.assert_allclose(ours[kept], theirs[kept], rtol=1e-6, atol=0)


def _assert_keeps_one_per_row(ours):
  assert np.isfinite(np.asarray(ours)).any(axis=-1).all()


@pytest.mark.parametrize("make,seed", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("name", ["temperature", "top_k", "min_p", "typical"])
def test_matches_transformers(name, make, seed):
  logits = make(seed)
  for value in WARPERS[name][1]:
    ours = getattr(filters, name)(jnp.asarray(logits), value)
    _assert_same_filtering(ours, _transformers_generate(name, value, logits))
    _assert_keeps_one_per_row(ours)


@pytest.mark.parametrize("make,seed", CASES, ids=CASE_IDS)
def test_top_p_matches_transformers_and_keeps_ties_with_the_last_kept_token(make, seed):
  logits = make(seed)
  for p in WARPERS["top_p"][1]:
    ours = np.asarray(filters.top_p(jnp.asarray(logits), p))
    theirs = _transformers_generate("top_p", p, logits)
    # transformers keeps an arbitrary part of the tokens tied with its least probable kept one; we keep them all.
    least_kept = np.where(np.isfinite(theirs), theirs, np.inf).min(axis=-1, keepdims=True)
    _assert_same_filtering(ours, np.where(logits >= least_kept, logits, -np.inf))
    _assert_keeps_one_per_row(ours)
    if make is _normal:  # no ties: exactly the processor's set
      _assert_same_filtering(ours, theirs)


def test_top_p_keeps_the_whole_tie_at_the_cut_off():
  logits = np.log(np.array([[0.4, 0.2, 0.2, 0.2]], np.float32))
  # 0.4 + one 0.2 reach p = 0.5; the other tokens of 0.2 are just as probable, so they stay too.
  np.testing.assert_array_equal(np.isfinite(filters.top_p(jnp.asarray(logits), 0.5)), [[True, True, True, True]])
  np.testing.assert_array_equal(np.isfinite(filters.top_p(jnp.asarray(logits), 0.3)), [[True, False, False, False]])


def test_cut_offs_landing_exactly_on_the_boundary():
  ids = np.zeros((1, 1))
  # Probabilities 1/4, 1/4, 1/2 (exact in float32): cumulative 1/4, 1/2 are both <= 1 - p, so both go.
  logits = np.log(np.array([[1.0, 1.0, 2.0]], np.float32))
  theirs = _transformers(transformers.TopPLogitsWarper(0.5), logits, ids)
  np.testing.assert_array_equal(np.isfinite(theirs), [[False, False, True]])
  _assert_same_filtering(filters.top_p(jnp.asarray(logits), 0.5), theirs)
  # Probabilities 1/2, 1/4, 1/8, 1/8: the 1/4 and 1/2 tokens are the most typical and hold exactly mass 3/4.
  logits = np.array([[3, 2, 1, 1, -np.inf]], np.float32) * np.float32(np.log(2))
  theirs = _transformers(transformers.TypicalLogitsWarper(0.75), logits, ids)
  np.testing.assert_array_equal(np.isfinite(theirs), [[True, True, False, False, False]])
  _assert_same_filtering(filters.typical(jnp.asarray(logits), 0.75), theirs)


def test_top_k_keeps_ties_at_the_kth_value():
  logits = jnp.array([[3.0, 1.0, 2.0, 2.0, 2.0, 0.0]])
  np.testing.assert_array_equal(np.isfinite(filters.top_k(logits, 2)), [[True, False, True, True, True, False]])
  np.testing.assert_array_equal(filters.top_k(logits, 100), logits)


def test_ones_that_keep_everything_at_their_limit():
  logits = jnp.asarray(_edges(0))
  for kept_all in (filters.top_k(logits, VOCAB + 1), filters.top_p(logits, 1.0), filters.min_p(logits, 0.0),
                   filters.typical(logits, 1.0), filters.temperature(logits, 1.0)):
    np.testing.assert_array_equal(kept_all, logits)


def test_limits_that_generate_treats_as_off_keep_even_negligible_tokens():
  logits = np.array([[200.0, 0.0, 1.0, 2.0]], np.float32)  # the last three have probability exp(-198): 0 in float32
  theirs = _transformers(transformers.TopPLogitsWarper(1.0), logits)
  np.testing.assert_array_equal(np.isfinite(theirs), [[True, False, False, False]])  # the bare processor drops them
  np.testing.assert_array_equal(filters.top_p(jnp.asarray(logits), 1.0), logits)
  with pytest.raises(ValueError):  # transformers refuses typical_p = 1; generate() reads it as "off"
    transformers.TypicalLogitsWarper(1.0)
  np.testing.assert_array_equal(filters.typical(jnp.asarray(logits), 1.0), logits)


def test_apply_filters_composes_in_generate_order():
  assert filters.FILTERS == ("temperature", "top_k", "top_p", "min_p", "typical")
  settings = {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "min_p": 0.05, "typical": 0.9}
  for seed in range(3):
    logits = _normal(seed)
    processors = transformers.LogitsProcessorList(WARPERS[name][0](settings[name]) for name in filters.FILTERS)
    _assert_same_filtering(filters.apply_filters(jnp.asarray(logits), **settings), _transformers(processors, logits))
    # Order matters: top-k after top-p would not give the same set, so check the partial chain too.
    partial = transformers.LogitsProcessorList([transformers.TopKLogitsWarper(5), transformers.TopPLogitsWarper(0.5)])
    _assert_same_filtering(filters.apply_filters(jnp.asarray(logits), top_k=5, top_p=0.5),
                           _transformers(partial, logits))
  np.testing.assert_array_equal(filters.apply_filters(jnp.asarray(logits)), logits)


def _previous_tokens(seed, vocab=VOCAB):
  return np.random.default_rng(seed).integers(0, vocab, size=(4, 12)).astype(np.int32)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(seed, penalty):
  logits = _normal(seed)
  logits[:, :5] = 0.0  # zero is neither divided nor multiplied away
  previous = _previous_tokens(seed, vocab=VOCAB + 10)  # ids past the vocabulary are ignored, as transformers does
  ours = filters.repetition_penalty(jnp.asarray(logits), jnp.asarray(previous), penalty)
  theirs = _transformers(transformers.RepetitionPenaltyLogitsProcessor(penalty), logits, previous)
  _assert_same_filtering(ours, theirs)
  assert not np.array_equal(np.asarray(ours), logits)


def test_repetition_penalty_ignores_masked_positions():
  logits, previous = _normal(0), _previous_tokens(0)
  mask = np.arange(12)[None, :] < np.array([[12], [5], [1], [0]])
  ours = filters.repetition_penalty(jnp.asarray(logits), jnp.asarray(previous), 1.7, jnp.asarray(mask))
  processor = transformers.RepetitionPenaltyLogitsProcessor(1.7)
  for row in range(4):
    theirs = _transformers(processor, logits[row : row + 1], previous[row : row + 1, mask[row]])
    _assert_same_filtering(ours[row : row + 1], theirs)
  np.testing.assert_array_equal(ours[3], logits[3])


def test_repetition_penalty_ignores_ids_outside_the_vocabulary():
  logits = jnp.asarray(_normal(1))
  with_padding = jnp.array([[-2, -1, 3, VOCAB, VOCAB + 7]] * 4)
  np.testing.assert_array_equal(filters.repetition_penalty(logits, with_padding, 2.0),
                                filters.repetition_penalty(logits, jnp.array([[3]] * 4), 2.0))


def _repetitive_tokens(seed, length=20):
  return np.random.default_rng(seed).integers(0, 3, size=(4, length)).astype(np.int32)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_matches_transformers(seed, n):
  logits, previous = _normal(seed), _repetitive_tokens(seed)
  ours = filters.no_repeat_ngram(jnp.asarray(logits), jnp.asarray(previous), n)
  theirs = _transformers(transformers.NoRepeatNGramLogitsProcessor(n), logits, previous)
  _assert_same_filtering(ours, theirs)
  assert np.isinf(theirs).any()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_respects_row_lengths(n):
  logits, previous, lengths = _normal(5), _repetitive_tokens(5), np.array([20, 13, 2, 0])
  ours = filters.no_repeat_ngram(jnp.asarray(logits), jnp.asarray(previous), n, jnp.asarray(lengths))
  processor = transformers.NoRepeatNGramLogitsProcessor(n)
  for row, length in enumerate(lengths):
    theirs = _transformers(processor, logits[row : row + 1], previous[row : row + 1, :length])
    _assert_same_filtering(ours[row : row + 1], theirs)


def test_no_repeat_ngram_by_hand():
  logits = jnp.zeros((1, 6))
  banned = np.isinf(filters.no_repeat_ngram(logits, jnp.array([[1, 2, 3, 1, 2]]), 3))
  np.testing.assert_array_equal(banned, [[False, False, False, True, False, False]])  # 1 2 -> 3 was seen
  np.testing.assert_array_equal(filters.no_repeat_ngram(logits, jnp.array([[1, 2]]), 3), logits)  # too short


def test_leading_axes_are_batch_axes():
  logits = jnp.asarray(np.concatenate([_normal(0), _ties(1), _edges(2)]).reshape(2, 6, VOCAB))
  previous = jnp.asarray(np.concatenate([_repetitive_tokens(s) for s in range(3)]).reshape(2, 6, 20))
  for name, value in [("temperature", 0.5), ("top_k", 4), ("top_p", 0.8), ("min_p", 0.1), ("typical", 0.7)]:
    function = getattr(filters, name)
    np.testing.assert_array_equal(function(logits, value), function(logits.reshape(12, VOCAB), value).reshape(2, 6, -1))
  for function, value in [(filters.repetition_penalty, 1.5), (filters.no_repeat_ngram, 2)]:
    flat = function(logits.reshape(12, VOCAB), previous.reshape(12, 20), value)
    np.testing.assert_array_equal(function(logits, previous, value), flat.reshape(2, 6, -1))


def test_each_filter_runs_under_jit_with_static_parameters():
  logits, previous = jnp.asarray(_edges(1)), jnp.asarray(_repetitive_tokens(1))
  for name, value in [("temperature", 0.5), ("top_k", 4), ("top_p", 0.8), ("min_p", 0.1), ("typical", 0.7)]:
    function = getattr(filters, name)
    np.testing.assert_array_equal(jax.jit(function, static_argnums=1)(logits, value), function(logits, value))
  for function, value in [(filters.repetition_penalty, 1.5), (filters.no_repeat_ngram, 2)]:
    jitted = jax.jit(function, static_argnums=2)
    np.testing.assert_array_equal(jitted(logits, previous, value), function(logits, previous, value))
  jitted = jax.jit(functools.partial(filters.no_repeat_ngram, n=3))
  np.testing.assert_array_equal(jitted(logits, previous, length=jnp.array([20, 9, 3, 0])),
                                filters.no_repeat_ngram(logits, previous, 3, jnp.array([20, 9, 3, 0])))
  jitted = jax.jit(functools.partial(filters.apply_filters, top_k=10, top_p=0.9, temperature=0.8))
  np.testing.assert_array_equal(jitted(logits), filters.apply_filters(logits, top_k=10, top_p=0.9, temperature=0.8))


BAD_ARGUMENTS = [
    (lambda x, ids: filters.temperature(x, 0), "t=0"),
    (lambda x, ids: filters.temperature(x, -1), "t=-1"),
    (lambda x, ids: filters.top_k(x, 0), "k=0"),
    (lambda x, ids: filters.top_k(x, 2.5), "k=2.5"),
    (lambda x, ids: filters.top_p(x, 0), "p=0"),
    (lambda x, ids: filters.top_p(x, 1.5), "p=1.5"),
    (lambda x, ids: filters.min_p(x, -0.1), "p=-0.1"),
    (lambda x, ids: filters.min_p(x, 1.5), "p=1.5"),
    (lambda x, ids: filters.typical(x, 0), "mass=0"),
    (lambda x, ids: filters.typical(x, 1.2), "mass=1.2"),
    (lambda x, ids: filters.repetition_penalty(x, ids, 0), "penalty=0"),
    (lambda x, ids: filters.no_repeat_ngram(x, ids, 0), "n=0"),
    (lambda x, ids: filters.no_repeat_ngram(x, ids[:2], 2), "previous_tokens of shape"),
    (lambda x, ids: filters.apply_filters(x, top_p=2.0), "p=2.0"),
]


@pytest.mark.parametrize("call,named", BAD_ARGUMENTS, ids=[named for _, named in BAD_ARGUMENTS])
def test_impossible_arguments_raise_a_one_line_config_error(call, named):
  with pytest.raises(ConfigError, match=named) as error:
    call(jnp.zeros((4, VOCAB)), jnp.zeros((4, 3), jnp.int32))
  assert "\n" not in str(error.value) and isinstance(error.value, ValueError)
