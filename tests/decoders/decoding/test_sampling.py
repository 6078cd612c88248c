"""The generation loop, driven by a fake model (as flax lm1b's temperature_sampler_test) and by a real one."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decoders
from decoders.decoding import sampling, strategies
from decoders.models import decoder_lm

VOCAB = 7


def ramp_logits(window, length):
  """A fake model that puts all its mass on (last token + 1) % VOCAB."""
  last = jax.lax.dynamic_index_in_dim(window, length - 1, axis=1, keepdims=False)
  return jax.nn.one_hot((last + 1) % VOCAB, VOCAB) * 1e4  # so large that even sampling is greedy


@functools.partial(jax.jit, static_argnames=("num_new", "window", "strategy"))
def generate_ramp(prompt, num_new, window, strategy=strategies.Greedy(), seed=0):
  return sampling.generate(ramp_logits, prompt, num_new, strategy, jax.random.key(seed), window)


@pytest.mark.parametrize(
    "prompt_len, num_new, window",
    [(3, 5, 16), (2, 14, 4), (4, 6, 4), (1, 3, 1)],  # fits the window; slides; prompt fills it; window of 1
)
def test_greedy_continues_the_ramp_and_keeps_the_prompt(prompt_len, num_new, window):
  prompt = np.array([[3, 1, 4, 1][:prompt_len], [0, 6, 2, 5][:prompt_len]], np.int32)
  out = np.asarray(generate_ramp(prompt, num_new, window))
  assert out.shape == (2, prompt_len + num_new)
  np.testing.assert_array_equal(out[:, :prompt_len], prompt)
  ramp = (prompt[:, -1:] + np.arange(1, num_new + 1)) % VOCAB
  np.testing.assert_array_equal(out[:, prompt_len:], ramp)


def test_sampling_at_a_temperature_follows_a_one_hot_model_too():
  prompt = np.array([[5]], np.int32)
  out = np.asarray(generate_ramp(prompt, 6, 3, strategy=strategies.Sample(temperature=1.0), seed=3))
  np.testing.assert_array_equal(out, [[5, 6, 0, 1, 2, 3, 4]])


def test_sliding_window_shows_the_model_the_last_window_tokens():
  """With the context full, the model sees exactly the `window` most recent tokens."""
  seen = []

  def recording_logits(window_tokens, length):
    jax.debug.callback(lambda w, n: seen.append((np.asarray(w).copy(), int(n))), window_tokens, length)
    return ramp_logits(window_tokens, length)

  prompt = np.array([[0, 1]], np.int32)
  out = np.asarray(sampling.generate(recording_logits, prompt, 4, strategies.Greedy(), jax.random.key(0), 3))
  np.testing.assert_array_equal(out, [[0, 1, 2, 3, 4, 5]])
  contexts = [w[0, :n].tolist() for w, n in seen]
  assert contexts == [[0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_greedy_is_argmax_without_a_history():
  """The window loop passes no history: Greedy must not need one unless a history filter is set."""
  logits = np.random.default_rng(0).normal(size=(4, 11)).astype(np.float32)
  tokens = strategies.Greedy()(logits, jax.random.key(0))
  np.testing.assert_array_equal(tokens, logits.argmax(-1))
  assert tokens.dtype == jnp.int32


def test_a_history_filter_in_the_window_loop_is_named():
  """The window loop keeps no History, so a repetition penalty there fails at trace time with a way out."""
  with pytest.raises(decoders.ConfigError, match="need the tokens so far: use decoding.generate"):
    generate_ramp(np.zeros((1, 2), np.int32), 1, 4, strategy=strategies.Greedy(repetition_penalty=1.2))


def test_prompt_longer_than_the_window_is_rejected():
  with pytest.raises(decoders.ConfigError, match="context of 2"):
    generate_ramp(np.zeros((1, 3), np.int32), 1, 2)


@pytest.mark.parametrize("t", [-1.0, 0.0])
def test_sample_rejects_a_temperature_of_0_or_below(t):
  """Greedy decoding is `Greedy`: a zero or negative temperature is a mistake, named when the strategy is made."""
  with pytest.raises(decoders.ConfigError, match=f"temperature: t={t} must be > 0"):
    strategies.Sample(temperature=t)


def test_greedy_generation_with_a_real_lm_equals_a_loop_of_full_forward_passes():
  config = decoder_lm.DecoderLMConfig(vocab_size=11, num_layers=1, width=16, num_heads=2, mlp_dim=32, max_len=4)
  model = decoder_lm.DecoderLM(config)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  prompt = np.array([[1, 2, 3]], np.int32)

  def next_token_logits(window, length):
    return model.apply({"params": params}, window, length, method=decoder_lm.DecoderLM.next_token_logits)

  generated = jax.jit(
      lambda p: sampling.generate(next_token_logits, p, 5, strategies.Greedy(), jax.random.key(0), 4)
  )(prompt)

  forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
  tokens = prompt
  for _ in range(5):  # the naive reference: rerun the model on the last max_len tokens
    logits = forward(np.pad(tokens[:, -4:], ((0, 0), (0, 4 - min(tokens.shape[1], 4)))))
    position = min(tokens.shape[1], 4) - 1
    tokens = np.concatenate([tokens, np.argmax(logits[:, position], -1)[:, None].astype(np.int32)], axis=1)
  np.testing.assert_array_equal(generated, tokens)
