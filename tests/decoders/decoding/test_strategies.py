"""History-aware strategies (repetition penalty, n-gram blocking) against a cache-free reference loop and
against Hugging Face `transformers`' processors applied in its `generate()` order."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from decoders.decoding import Greedy, History, Sample, generate, sampling
from decoders.errors import ConfigError
from tests.decoders.decoding.test_generation import tiny

PROMPTS = [[5, 9, 2, 11], [7], [1, 2, 3, 4, 5, 6, 7, 8, 9]]


def naive_penalties(logits: np.ndarray, sequence: list[int], penalty=None, ngram=None) -> np.ndarray:
  """Keskar et al. 2019's penalty on every token seen, then Paulus et al. 2018's n-gram ban, by hand (HF semantics)."""
  logits = logits.copy()
  if penalty is not None:
    for token in set(sequence):
      logits[token] = logits[token] / penalty if logits[token] > 0 else logits[token] * penalty
  if ngram is not None and len(sequence) >= ngram:
    suffix = sequence[len(sequence) - ngram + 1 :]
    for start in range(len(sequence) - ngram + 1):
      if sequence[start : start + ngram - 1] == suffix:
        logits[sequence[start + ngram - 1]] = -np.inf
  return logits


def reference_greedy(model, params, prompt: list[int], steps: int, penalty=None, ngram=None) -> list[int]:
  """Greedy without a cache or padding: a full forward pass per token, the penalties on the exact sequence so far."""
  forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
  buffer = np.zeros((1, model.config.max_len), np.int32)
  buffer[0, : len(prompt)] = prompt
  for length in range(len(prompt), len(prompt) + steps):
    logits = np.asarray(forward(buffer)[0, length - 1])
    buffer[0, length] = np.argmax(naive_penalties(logits, buffer[0, :length].tolist(), penalty, ngram))
  return buffer[0, len(prompt) : len(prompt) + steps].tolist()


@pytest.mark.parametrize("penalty, ngram", [(1.5, None), (None, 2), (1.3, 3)])
def test_greedy_with_history_filters_equals_a_reference_loop(penalty, ngram):
  model, params = tiny("llama")
  out = generate(model, params, PROMPTS, strategy=Greedy(penalty, ngram), max_new_tokens=12)
  plain = generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=12)
  for row, prompt in enumerate(PROMPTS):
    assert out.rows()[row] == reference_greedy(model, params, prompt, 12, penalty, ngram)
  assert out.rows() != plain.rows()  # the filters changed something, so the comparison above could fail
  for row, prompt in enumerate(PROMPTS):  # and with neither set, Greedy is the reference's plain argmax
    assert plain.rows()[row] == reference_greedy(model, params, prompt, 12)


def repeated_trigrams(sequence: list[int]) -> int:
  trigrams = [tuple(sequence[i : i + 3]) for i in range(len(sequence) - 2)]
  return len(trigrams) - len(set(trigrams))


def test_no_repeat_3_never_repeats_a_trigram_greedy_or_sampled():
  model, params = tiny("gpt2")
  prompts = [[5, 9, 2, 11], [7], [3, 3, 4]]
  plain = generate(model, params, prompts, strategy=Greedy(), max_new_tokens=24)
  assert any(repeated_trigrams(p + row) for p, row in zip(prompts, plain.rows()))  # the model does repeat itself
  greedy = generate(model, params, prompts, strategy=Greedy(no_repeat_ngram=3), max_new_tokens=24)
  sampled = generate(model, params, prompts * 3, strategy=Sample(temperature=2.0, no_repeat_ngram=3), max_new_tokens=24,
                     rng=jax.random.key(4))
  for prompt, row in zip(prompts * 4, greedy.rows() + sampled.rows()):
    assert len(row) == 24 and repeated_trigrams(prompt + row) == 0


def test_sample_with_top_k_1_and_a_penalty_is_greedy_with_it():
  model, params = tiny("mistral")
  greedy = generate(model, params, PROMPTS, strategy=Greedy(repetition_penalty=2.0), max_new_tokens=10)
  sampled = generate(model, params, PROMPTS, strategy=Sample(top_k=1, repetition_penalty=2.0), max_new_tokens=10,
                     rng=jax.random.key(7))
  assert sampled.rows() == greedy.rows()


def test_a_row_that_ended_keeps_its_eos_while_others_go_on():
  model, params = tiny("llama")
  strategy = Greedy(repetition_penalty=1.5)
  free = generate(model, params, PROMPTS, strategy=strategy, max_new_tokens=10).rows()
  eos = free[0][1]
  out = generate(model, params, PROMPTS, strategy=strategy, max_new_tokens=10, eos_id=eos)
  for row in range(3):
    end = free[row].index(eos) + 1 if eos in free[row] else 10
    assert out.rows()[row] == free[row][:end] and (out.tokens[row, end:] == eos).all()
  assert out.num_generated[0] == 2 and out.num_generated.max() == 10


def test_processors_run_in_transformers_generate_order_and_ignore_padding():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 30)).astype(np.float32) * 3
  tokens = rng.integers(0, 4, size=(2, 16)).astype(np.int32)  # few ids, so bigrams repeat
  lengths = np.array([16, 9])
  tokens[1, 9:] = np.arange(7)  # padding: it must not count as seen
  strategy = Sample(temperature=0.7, top_k=6, top_p=0.8, repetition_penalty=1.3, no_repeat_ngram=2)
  ours = np.asarray(strategy.processed(jnp.asarray(logits), History(jnp.asarray(tokens), jnp.asarray(lengths))))
  reference = transformers.LogitsProcessorList([
      transformers.RepetitionPenaltyLogitsProcessor(1.3), transformers.NoRepeatNGramLogitsProcessor(2),
      transformers.TemperatureLogitsWarper(0.7), transformers.TopKLogitsWarper(6), transformers.TopPLogitsWarper(0.8),
  ])
  for row in range(2):
    ids = torch.as_tensor(tokens[row : row + 1, : lengths[row]], dtype=torch.long)
    theirs = reference(ids, torch.tensor(logits[row : row + 1])).numpy()[0]
    np.testing.assert_array_equal(np.isinf(ours[row]), np.isinf(theirs))
    np.testing.assert_allclose(ours[row][~np.isinf(theirs)], theirs[~np.isinf(theirs)], rtol=1e-6)
    assert np.isinf(theirs).sum() >= 30 - 6  # top-k after the penalties left at most 6


@pytest.mark.parametrize("make, match", [
    (lambda: Greedy(repetition_penalty=0.0), "penalty=0.0"),
    (lambda: Greedy(no_repeat_ngram=0), "n=0"),
    (lambda: Sample(no_repeat_ngram=2.5), "n=2.5"),
    (lambda: Sample(temperature=0.0, repetition_penalty=1.2), "t=0"),
])
def test_a_bad_history_setting_is_named_when_the_strategy_is_made(make, match):
  with pytest.raises(ConfigError, match=match):
    make()


def test_a_history_strategy_without_the_history_is_named():
  window_logits = lambda window, length: jnp.zeros((window.shape[0], 5))
  with pytest.raises(ConfigError, match="need the tokens so far"):
    sampling.generate(window_logits, jnp.ones((1, 2), jnp.int32), 3, Greedy(no_repeat_ngram=2), jax.random.key(0), 4)
