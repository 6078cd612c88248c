"""Contrastive search against a naive reference: full forward passes of every candidate continuation, the
score of Su et al. 2022 (eq. 5) computed in numpy."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.decoding import Contrastive, Greedy, generate
from decoders.errors import ConfigError
from tests.decoders.decoding.test_generation import VOCAB, tiny

PROMPTS = [[5, 9, 2, 11, 3, 8], [7, 1]]  # of different lengths: prefilled together


@functools.partial(jax.jit, static_argnums=0)
def logits_and_hidden(model, params, tokens):
  """The full forward pass (no cache): logits and final hidden states, [rows, max_len, ...]."""
  capture = lambda _, method: method == "final_hidden"
  logits, state = model.apply({"params": params}, tokens, capture_intermediates=capture, mutable=["intermediates"])
  return logits[..., :VOCAB], state["intermediates"]["final_hidden"][0]


def reference_contrastive(model, params, prompt: list[int], steps: int, k: int, alpha: float):
  """(tokens, their log-probabilities): each step scores the k most probable tokens by eq. 5, each candidate's
  hidden state from a full forward pass of the sequence with it appended."""
  sequence, log_probs = list(prompt), []
  for _ in range(steps):
    length = len(sequence)
    buffer = np.zeros((1, model.config.max_len), np.int32)  # one fixed size: causal, so the zeros after do not matter
    buffer[0, :length] = sequence
    logits, hidden = map(np.asarray, logits_and_hidden(model, params, jnp.asarray(buffer)))
    probabilities = np.asarray(jax.nn.softmax(logits[0, length - 1]))
    candidates = np.argsort(-probabilities, kind="stable")[:k]
    continued = np.repeat(buffer, len(candidates), axis=0)
    continued[:, length] = candidates
    candidate_hidden = np.asarray(logits_and_hidden(model, params, jnp.asarray(continued))[1])[:, length]
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    degeneration = np.max(unit(candidate_hidden) @ unit(hidden[0, :length]).T, axis=-1)
    choice = candidates[np.argmax((1 - alpha) * probabilities[candidates] - alpha * degeneration)]
    log_probs.append(float(jax.nn.log_softmax(logits[0, length - 1])[choice]))
    sequence.append(int(choice))
  return sequence[len(prompt):], log_probs


@pytest.mark.parametrize("k, alpha, steps", [(4, 0.6, 8), (VOCAB + 13, 0.4, 3)])  # k beyond the vocabulary: all of it
def test_contrastive_search_equals_the_reference(k, alpha, steps):
  model, params = tiny("gpt2")
  params = jax.tree.map(lambda x: x / 4, params)  # flatter, so the degeneration penalty changes choices
  out = generate(model, params, PROMPTS, strategy=Contrastive(k, alpha), max_new_tokens=steps)
  greedy = generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=steps)
  for row, prompt in enumerate(PROMPTS):
    tokens, log_probs = reference_contrastive(model, params, prompt, steps, min(k, VOCAB), alpha)
    assert out.rows()[row] == tokens
    np.testing.assert_allclose(out.log_probs[row], log_probs, rtol=1e-4, atol=1e-5)
  assert out.rows() != greedy.rows()  # the penalty changed something, so the comparison above could fail


def test_alpha_0_is_greedy_and_an_ended_row_keeps_its_eos():
  model, params = tiny("llama")
  free = generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=10).rows()
  eos = free[1][1]
  greedy = generate(model, params, PROMPTS, strategy=Greedy(), max_new_tokens=10, eos_id=eos)
  out = generate(model, params, PROMPTS, strategy=Contrastive(5, 0.0), max_new_tokens=10, eos_id=eos)
  assert out.rows() == greedy.rows()
  np.testing.assert_array_equal(out.tokens, greedy.tokens)  # the EOS after a row's end
  np.testing.assert_array_equal(out.num_generated, greedy.num_generated)
  assert out.num_generated[1] == 2 and out.num_generated.max() > 2


@pytest.mark.parametrize("settings, match", [
    (dict(k=0), "k=0"), (dict(k=2.0), "k=2.0"), (dict(alpha=1.5), "alpha=1.5"), (dict(alpha=-0.1), "alpha=-0.1"),
])
def test_a_bad_contrastive_setting_is_named_when_the_strategy_is_made(settings, match):
  with pytest.raises(ConfigError, match=match):
    Contrastive(**settings)
