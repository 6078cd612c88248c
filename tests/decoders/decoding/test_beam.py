"""Beam search against Hugging Face `transformers`' beam search on the same weights, greedy decoding, and the
model's own full forward pass (the log-probabilities and length-normalised scores it reports)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from decoders import interop
from decoders.decoding import Beam, Greedy, generate
from decoders.errors import ConfigError
from tests.decoders.decoding.test_generation import VOCAB, tiny

PROMPTS = [[5, 9, 2, 11, 3], [7, 1], [30, 20, 10]]  # of different lengths: prefilled together, then expanded
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(transformers LLaMA with GQA, our load of its weights); std 0.3 weights keep beam choices above rounding."""
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
      max_position_embeddings=32, vocab_size=VOCAB, bos_token_id=None, eos_token_id=None, pad_token_id=None,
      initializer_range=0.3,
  )
  hf_model = transformers.AutoModelForCausalLM.from_config(config).eval()
  directory = tmp_path_factory.mktemp("llama")
  hf_model.save_pretrained(directory)
  return hf_model, *interop.load_hf_checkpoint(str(directory))


EARLY_STOPPING = {"heuristic": False, "exact": "never", "first": True}  # ours -> transformers' `early_stopping`


# EOS ids the beams of this seeded model reach early; each case asserts that some hypothesis ended before the limit.
@pytest.mark.parametrize("length_penalty, early_stopping, eos", [
    (1.0, "heuristic", None), (1.0, "heuristic", 30), (0.5, "exact", 36), (-1.0, "first", 30), (0.0, "heuristic", 32),
])
def test_the_n_best_equal_transformers_beam_search(reference, length_penalty, early_stopping, eos):
  hf_model, model, params = reference
  strategy = Beam(4, length_penalty=length_penalty, num_returned=3, early_stopping=early_stopping)
  out = generate(model, params, PROMPTS, strategy=strategy, max_new_tokens=NEW_TOKENS, eos_id=eos)
  settings = dict(length_penalty=length_penalty, early_stopping=EARLY_STOPPING[early_stopping])
  if eos is not None:
    settings.update(eos_token_id=eos, pad_token_id=eos)
  for row, prompt in enumerate(PROMPTS):  # one prompt at a time: transformers would left-pad a batch
    with torch.no_grad():
      theirs = hf_model.generate(
          torch.tensor([prompt]), num_beams=4, do_sample=False, max_new_tokens=NEW_TOKENS, num_return_sequences=3,
          output_scores=True, return_dict_in_generate=True, **settings,
      )
    sequences = theirs.sequences[:, len(prompt):].numpy()
    for (tokens, score), sequence, their_score in zip(out.nbest()[row], sequences, theirs.sequences_scores.numpy()):
      assert tokens == sequence[: len(tokens)].tolist() and (sequence[len(tokens):] == eos).all()
      assert score == pytest.approx(their_score, rel=1e-5, abs=1e-6)
  assert (eos is None) == (out.nbest_lengths == NEW_TOKENS).all()


@functools.partial(jax.jit, static_argnums=0)
def full_forward(model, params, tokens):
  return model.apply({"params": params}, tokens)


def log_likelihoods(model, params, prompt: list[int], continuation: list[int]) -> np.ndarray:
  """log p of each continuation token from one full forward pass (no cache) over a fixed-size buffer: one
  compilation, and causal attention keeps the zeros after the sequence out of its logits."""
  buffer = np.zeros((1, model.config.max_len), np.int32)
  buffer[0, : len(prompt) + len(continuation)] = prompt + continuation
  logits = full_forward(model, params, jnp.asarray(buffer))[0, : len(prompt) + len(continuation), :VOCAB]
  log_probs = jax.nn.log_softmax(logits)[len(prompt) - 1 : -1]
  return np.asarray(log_probs[jnp.arange(len(continuation)), jnp.asarray(continuation)])


def test_width_1_is_greedy_with_and_without_eos():
  model, params = tiny("llama")
  greedy = generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=NEW_TOKENS)
  beam = generate(model, params, PROMPTS, strategy=Beam(1), max_new_tokens=NEW_TOKENS)
  assert beam.rows() == greedy.rows()
  eos = greedy.rows()[0][2]
  greedy = generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=NEW_TOKENS, eos_id=eos)
  beam = generate(model, params, PROMPTS, strategy=Beam(1, length_penalty=0.0), max_new_tokens=NEW_TOKENS, eos_id=eos)
  assert beam.rows() == greedy.rows() and min(map(len, beam.rows())) == 3
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)  # after its end each row emits the EOS
  np.testing.assert_allclose(beam.log_probs, greedy.log_probs, rtol=1e-5, atol=1e-6)


def test_beam_finds_a_likelihood_at_least_greedys_and_reports_it_as_the_model_does():
  model, params = tiny("gpt2")
  params = jax.tree.map(lambda x: x / 4, params)  # flatter, so that beams and greedy part ways
  prompts = np.random.default_rng(0).integers(0, VOCAB, (6, 4)).tolist()
  greedy = generate(model, params, prompts, strategy=Greedy(), max_new_tokens=NEW_TOKENS)
  strategy = Beam(4, length_penalty=0.0, num_returned=4)
  beam = generate(model, params, prompts, strategy=strategy, max_new_tokens=NEW_TOKENS)
  for row, prompt in enumerate(prompts):
    greedy_likelihood = log_likelihoods(model, params, prompt, greedy.rows()[row]).sum()
    best = log_likelihoods(model, params, prompt, beam.rows()[row])
    np.testing.assert_allclose(beam.log_probs[row], best, rtol=1e-4, atol=1e-5)
    assert best.sum() >= greedy_likelihood - 1e-5 and beam.scores[row, 0] == pytest.approx(best.sum(), rel=1e-5)
  assert beam.rows() != greedy.rows()  # so the comparison above could fail


@pytest.mark.parametrize("normalization, lp", [
    ("hf", lambda length: length**0.7), ("wu", lambda length: ((5 + length) / 6) ** 0.7),  # Wu et al. 2016, eq. 14
])
def test_scores_are_the_likelihood_over_the_length_penalty_best_first(normalization, lp):
  model, params = tiny("llama")
  eos = generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=NEW_TOKENS).rows()[0][1]
  strategy = Beam(4, length_penalty=0.7, length_normalization=normalization, num_returned=4)
  out = generate(model, params, PROMPTS, strategy=strategy, max_new_tokens=NEW_TOKENS, eos_id=eos)
  for row, prompt in enumerate(PROMPTS):
    scores = [score for _, score in out.nbest()[row]]
    assert scores == sorted(scores, reverse=True)
    for tokens, score in out.nbest()[row]:
      assert score == pytest.approx(log_likelihoods(model, params, prompt, tokens).sum() / lp(len(tokens)), rel=1e-4)
      assert eos not in tokens[:-1] and (tokens[-1] == eos or len(tokens) == NEW_TOKENS)
  # A prompt whose hypotheses ended keeps emitting the EOS after them, while other prompts' beams went on.
  ended = out.nbest_tokens[np.arange(NEW_TOKENS)[None, None] >= out.nbest_lengths[..., None]]
  assert ended.size > 0 and (ended == eos).all() and out.nbest_lengths.max() == NEW_TOKENS


@pytest.mark.parametrize("make, match", [
    (lambda: Beam(0), "width=0"),
    (lambda: Beam(2, num_returned=3), "num_returned=3"),
    (lambda: Beam(2, length_normalization="gnmt"), "length_normalization='gnmt'"),
    (lambda: Beam(2, early_stopping=True), "early_stopping=True"),
])
def test_a_bad_beam_setting_is_named_when_the_strategy_is_made(make, match):
  with pytest.raises(ConfigError, match=match):
    make()


def test_a_width_beyond_the_vocabulary_is_named_before_compiling():
  model, params = tiny("gpt2")
  with pytest.raises(ConfigError, match=f"beam width={VOCAB + 1} exceeds the model's vocabulary of {VOCAB}"):
    generate(model, params, [[1, 2]], strategy=Beam(VOCAB + 1), max_new_tokens=4)
