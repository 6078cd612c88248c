"""The prefix LM (Raffel et al. 2020, sec. 3.2.1, fig. 3 right) against independent references: hand-written masks,
the causal model, and the model's own full forward pass under `prefix_lengths` for every cached path (prefill then
steps, a rewound cache, quantised and evicting caches, greedy and beam search through `generate`, speculative
decoding)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.decoding import Beam, Greedy, generate, speculative_generate
from decoders.errors import ConfigError
from decoders.layers import masks
from decoders.layers.kv_cache import CacheSpec
from decoders.models import decoder_lm

VOCAB, LENGTH = 37, 24
PROMPT_LENGTHS = (5, 11)  # rows of different lengths, right-padded in the prefill
SHAPES = {"gpt2": {}, "llama": dict(num_kv_heads=2)}  # learned positions and MHA; RoPE and GQA
EXACT = 3e-5  # float32 rounding: the cache sums over its slots, the full pass over the sequence, in other orders


def tiny(preset: str = "llama", scan_layers: bool = False, seed: int = 0, scale: float = 8.0, **overrides):
  """A 2-layer prefix LM, its weights `scale` times their initial size: greedy choices and prefix effects then
  stand well above rounding (8), or a quantised cache's error stays small (2)."""
  sizes = dict(vocab_size=VOCAB, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=32, scan_layers=scan_layers)
  cfg = decoder_lm.preset(preset, **{**sizes, **SHAPES[preset], "prefix_lm": True, **overrides})
  model = decoder_lm.DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * scale, params)


def assert_close(ours, reference, tolerance: float = EXACT):
  """max |ours - reference| / max |reference| below `tolerance`."""
  assert float(jnp.max(jnp.abs(ours - reference)) / jnp.max(jnp.abs(reference))) < tolerance


def sequences_and_prompts():
  """Tokens [2, LENGTH], the prompts' lengths [2] and the prompts right-padded with garbage [2, longest]."""
  tokens = jax.random.randint(jax.random.key(1), (2, LENGTH), 0, VOCAB)
  lengths = jnp.array(PROMPT_LENGTHS)
  longest = max(PROMPT_LENGTHS)
  prompts = jnp.where(jnp.arange(longest)[None] < lengths[:, None], tokens[:, :longest], 3)
  return tokens, lengths, prompts


def cached_matches_full_pass(model, params, spec: CacheSpec = CacheSpec(), capacity: int = 32, tolerance=EXACT):
  """Asserts a prefill of the prompts then one token per step gives `__call__`'s logits (prefix = the prompts)."""
  tokens, lengths, prompts = sequences_and_prompts()
  full = model.apply({"params": params}, tokens, prefix_lengths=lengths)
  step = jax.jit(lambda *args: model.apply({"params": params}, *args, method=model.tokens_to_logits))
  logits, cache = step(prompts, decoder_lm.init_cache(model.config, 2, capacity, spec), lengths)
  for row, length in enumerate(PROMPT_LENGTHS):
    assert_close(logits[row, :length], full[row, :length], tolerance)
  rows = jnp.arange(2)
  for offset in range(LENGTH - max(PROMPT_LENGTHS)):
    logits, cache = step(tokens[rows, lengths + offset][:, None], cache)
    assert_close(logits[:, 0], full[rows, lengths + offset], tolerance)
  np.testing.assert_array_equal(cache.prefix_lengths, lengths)
  return full


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_cached_decoding_equals_the_full_pass_with_the_prompts_as_prefixes(preset, scan_layers):
  model, params = tiny(preset, scan_layers)
  full = cached_matches_full_pass(model, params)
  # Not the causal model: every position of the shorter prompt but its last sees a later token.
  causal = model.apply({"params": params}, sequences_and_prompts()[0])
  assert float(jnp.min(jnp.max(jnp.abs(causal[0, :4] - full[0, :4]), axis=-1))) > 1e-2


def test_a_prefix_of_zero_tokens_is_the_causal_model():
  for overrides in ({}, dict(sliding_window=4)):
    model, params = tiny(prefix_lm=False, **overrides)  # training needs no config field
    tokens = sequences_and_prompts()[0]
    causal = model.apply({"params": params}, tokens)
    for prefix in (jnp.zeros(2, jnp.int32), None):
      np.testing.assert_array_equal(model.apply({"params": params}, tokens, prefix_lengths=prefix), causal)


def test_a_prefix_token_sees_later_prefix_tokens_and_a_later_token_sees_no_future():
  model, params = tiny(prefix_lm=False)
  tokens = sequences_and_prompts()[0]
  forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens, prefix_lengths=jnp.array([6, 6])))
  before = forward(tokens)
  changed_in_prefix = forward(tokens.at[:, 5].set((tokens[:, 5] + 1) % VOCAB))  # the prefix's last token
  assert float(jnp.min(jnp.max(jnp.abs(changed_in_prefix[:, 0] - before[:, 0]), axis=-1))) > 1e-2  # position 0 sees it
  changed_after = forward(tokens.at[:, 10].set((tokens[:, 10] + 1) % VOCAB))
  np.testing.assert_array_equal(changed_after[:, :10], before[:, :10])  # nothing before position 10 sees it
  assert float(jnp.min(jnp.max(jnp.abs(changed_after[:, 10] - before[:, 10]), axis=-1))) > 1e-2


def test_prefix_masks_against_hand_written_ones():
  rows = lambda *rows: np.array([[c == "1" for c in row] for row in rows])
  windowed = np.asarray(masks.prefix_lm_mask(5, np.array([3]), window=2))[0, 0]
  np.testing.assert_array_equal(windowed, rows("111..", "111..", ".11..", "..11.", "...11"))
  for window in (0, 2):
    full = np.asarray(masks.prefix_lm_mask(6, np.array([0, 2, 4]), window))
    # Queries 3..5 over a cache's slots 0..7 (slots 6 and 7 stale, one slot empty: -1) give the same rows.
    keys = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, -1, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7]])
    cached = np.asarray(masks.cached_causal_mask(np.tile(np.arange(3, 6), (3, 1)), keys, window, np.array([0, 2, 4])))
    expected = np.pad(full[:, :, 3:], ((0, 0), (0, 0), (0, 0), (0, 2)))
    expected[1, :, :, 2] = False  # the empty slot
    np.testing.assert_array_equal(cached, expected)


@pytest.mark.parametrize("spec, capacity, scale, tolerance", [
    (CacheSpec(), 32, 8.0, EXACT),  # window 4 shorter than both prompts: the full cache, the window in the mask
    (CacheSpec(eviction="window"), 4, 8.0, EXACT),  # Mistral's rolling buffer: exact, as long as the model's window
    # Absmax int8 values: close, as tests/decoders/layers/test_kv_cache.py measures them (here <= 0.005).
    (CacheSpec(quantization="int8"), 32, 2.0, 0.02),
])
def test_a_sliding_window_prefix_lm_decodes_with_full_windowed_and_quantised_caches(spec, capacity, scale, tolerance):
  model, params = tiny(sliding_window=4, scale=scale)
  cached_matches_full_pass(model, params, spec, capacity, tolerance)


def test_a_rewound_row_keeps_its_prefix_so_re_fed_and_drafted_tokens_stay_causal():
  # As speculative decoding verifies: rewind to before the last prompt token (to 0 for a 1-token prompt), then feed
  # it and three more tokens in one call. A rule "a call on an empty row is a prefix" would make them all a prefix.
  model, params = tiny()
  tokens, prefix = sequences_and_prompts()[0], jnp.array([1, 3])
  full = model.apply({"params": params}, tokens, prefix_lengths=prefix)
  step = jax.jit(lambda *args: model.apply({"params": params}, *args, method=model.tokens_to_logits))
  _, cache = step(tokens[:, :3], decoder_lm.init_cache(model.config, 2, 32), prefix)
  cache = cache.rewind(prefix - 1)
  fed = jnp.stack([tokens[row, start : start + 4] for row, start in enumerate([0, 2])])
  logits, cache = step(fed, cache)
  for row, start in enumerate([0, 2]):
    assert_close(logits[row], full[row, start : start + 4])
  np.testing.assert_array_equal(cache.prefix_lengths, prefix)


def full_forward_greedy(model, params, prompts: list[list[int]], steps: int) -> list[list[int]]:
  """Greedy without a cache: every sequence through `__call__` with its prompt as the prefix, once per token (one
  fixed-size buffer: what follows a sequence comes after its prefix, so causal attention keeps it out)."""
  forward = jax.jit(lambda tokens, prefix: model.apply({"params": params}, tokens, prefix_lengths=prefix))
  continuations = []
  for prompt in prompts:
    buffer = np.zeros((1, len(prompt) + steps), np.int32)
    buffer[0, : len(prompt)] = prompt
    for position in range(len(prompt), len(prompt) + steps):
      logits = forward(buffer, np.array([len(prompt)]))
      buffer[0, position] = int(jnp.argmax(logits[0, position - 1, :VOCAB]))
    continuations.append(buffer[0, len(prompt) :].tolist())
  return continuations


PROMPTS, NEW_TOKENS = [[5, 9, 2, 30, 7], [11], [4, 4, 8]], 6


def test_greedy_generate_and_speculative_decoding_continue_as_the_full_pass_does():
  model, params = tiny("gpt2")
  expected = full_forward_greedy(model, params, PROMPTS, NEW_TOKENS)
  assert generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=NEW_TOKENS).rows() == expected
  draft, draft_params = tiny("gpt2", seed=1)  # another prefix LM, so the target rejects some drafts
  out = speculative_generate(model, params, draft, draft_params, PROMPTS, gamma=3, max_new_tokens=NEW_TOKENS)
  assert out.rows() == expected and out.accepted.sum() < out.proposed.sum()


def test_beam_search_scores_its_hypotheses_as_the_full_pass_does():
  model, params = tiny()
  out = generate(model, params, PROMPTS, strategy=Beam(3, length_penalty=0.0, num_returned=3), max_new_tokens=4)
  forward = lambda tokens, prefix: model.apply({"params": params}, tokens, prefix_lengths=prefix)
  score = jax.jit(lambda tokens, prefix: jax.nn.log_softmax(forward(tokens, prefix)))
  for prompt, hypotheses in zip(PROMPTS, out.nbest()):
    for tokens, beam_score in hypotheses:
      log_probs = score(jnp.array([prompt + tokens]), jnp.array([len(prompt)]))[0]
      expected = sum(float(log_probs[len(prompt) - 1 + i, token]) for i, token in enumerate(tokens))
      assert beam_score == pytest.approx(expected, abs=1e-3)


def test_what_a_prefix_lm_cannot_do_is_a_config_error():
  model, params = tiny()
  with pytest.raises(ConfigError, match="h2o"):
    generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=2, cache=CacheSpec(eviction="h2o", recent=2),
             cache_capacity=6)
  with pytest.raises(ConfigError, match="next_token_logits"):
    model.apply({"params": params}, jnp.zeros((1, 8), jnp.int32), 3, method=model.next_token_logits)
  with pytest.raises(ConfigError, match="prefix_lengths"):
    model.apply({"params": params}, jnp.zeros((2, 8), jnp.int32), prefix_lengths=jnp.array([3]))
