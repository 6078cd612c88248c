"""The `sample` config section -> a strategy, and the LM task's sampler: cached when it fits, sliding when not."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import shakespeare_char
from decoders import decoding
from decoders.errors import ConfigError
from decoders.interop.bpe_tokenizer import BPETokenizer
from decoders.models import decoder_lm
from experiments.tasks import text_sampling
from tests.decoders.interop.test_bpe_tokenizer import tiny_metadata


def section(**overrides) -> ml_collections.ConfigDict:
  sample = shakespeare_char.get_config("test").sample
  sample.update(overrides)
  return sample


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(temperature=0.0), decoding.Greedy()),
        (dict(temperature=0.0, no_repeat_ngram=3), decoding.Greedy(no_repeat_ngram=3)),
        (dict(temperature=0.7, top_k=40, top_p=0.9), decoding.Sample(temperature=0.7, top_k=40, top_p=0.9)),
        (dict(min_p=0.1, typical=0.5, repetition_penalty=1.3), decoding.Sample(0.8, min_p=0.1, typical=0.5, repetition_penalty=1.3)),
        (dict(strategy="beam", beam_width=3, length_penalty=0.5), decoding.Beam(width=3, length_penalty=0.5)),
        (dict(strategy="contrastive", contrastive_k=5, contrastive_alpha=0.4), decoding.Contrastive(k=5, alpha=0.4)),
    ],
)
def test_each_setting_becomes_its_strategy(overrides, expected):
  sample = section(**overrides)
  text_sampling.check(sample)
  assert text_sampling.strategy(sample) == expected


def test_a_filter_the_strategy_ignores_is_an_error():
  with pytest.raises(ConfigError, match=r"sample.top_p=0.9 applies to sample.strategy='sample' only, not 'beam'"):
    text_sampling.check(section(strategy="beam", top_p=0.9))
  with pytest.raises(ConfigError, match="sample.top_k=5 has no effect with temperature=0"):
    text_sampling.strategy(section(temperature=0.0, top_k=5))


class FiveIds:
  """A tokenizer of 5 ids, fewer than the model's 64 rows (a benchmark's model.vocab_size)."""

  vocab_size = 5

  def decode(self, tokens):
    return "".join("abcde"[t] for t in tokens)


def tiny_model(max_len: int):
  config = decoder_lm.preset("shakespeare_char", vocab_size=64, num_layers=1, width=16, num_heads=2, mlp_dim=32, max_len=max_len)
  model = decoder_lm.DecoderLM(config)
  return model, nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])


@pytest.mark.parametrize("max_len", [32, 16])  # 3 + 20 tokens fit in 32 (cached); in 16 the window slides
def test_only_the_tokenizers_ids_are_sampled_cached_or_sliding(max_len):
  model, params = tiny_model(max_len)
  prompts = [np.array([0, 1, 2], np.int32), np.array([3], np.int32)][: 2 if max_len == 32 else 1]
  out = text_sampling.generate_texts(model, params, FiveIds(), prompts, section(temperature=2.0, num_tokens=20), jax.random.key(1))
  assert [len(text) for text in out.texts] == [len(p) + 20 for p in prompts]  # every id decoded to a letter
  assert out.new_tokens == 20 * len(prompts) and "tokens/s" in out.speed()


def test_the_cached_sampler_is_decoding_generate():
  model, params = tiny_model(32)
  prompts = [np.array([0, 1, 2], np.int32)]
  out = text_sampling.generate_texts(model, params, FiveIds(), prompts, section(temperature=0.0, num_tokens=8), jax.random.key(1))
  restricted = decoder_lm.DecoderLM(decoder_lm.preset(
      "shakespeare_char", vocab_size=5, vocab_multiple=64, num_layers=1, width=16, num_heads=2, mlp_dim=32, max_len=32
  ))
  expected = decoding.generate(restricted, params, [[0, 1, 2]], strategy=decoding.Greedy(), max_new_tokens=8).rows()[0]
  assert out.texts[0] == FiveIds().decode([0, 1, 2, *expected])


def test_past_max_len_only_plain_sampling_slides_on():
  model, params = tiny_model(16)
  with pytest.raises(ConfigError, match="exceeds model.max_len=16: past it only strategy='sample'"):
    text_sampling.generate_texts(
        model, params, FiveIds(), [np.array([0, 1], np.int32)], section(strategy="beam", num_tokens=20), jax.random.key(1)
    )


@pytest.mark.parametrize("max_len", [32, 16])  # streamed token by token; past max_len, the rest at the end
def test_a_streamed_text_is_the_text_returned(max_len):
  model, params = tiny_model(max_len)
  pieces = []
  out = text_sampling.generate_texts(
      model, params, FiveIds(), [np.array([0, 1, 2], np.int32)], section(num_tokens=20), jax.random.key(1), pieces.append
  )
  assert out.streamed and "".join(pieces) == out.texts[0]
  assert len(pieces) == (21 if max_len == 32 else 2)  # the prompt, then each token (or the whole rest)


class CountingBPE:
  """The byte-level test vocabulary of tests/decoders/interop, recording how many tokens each decode reads."""

  def __init__(self):
    self.inner = BPETokenizer.from_gguf_metadata(tiny_metadata(), "tiny.gguf")
    self.lengths = []

  def decode(self, tokens):
    self.lengths.append(len(tokens))
    return self.inner.decode(tokens)


def test_a_text_streams_whole_characters_reading_a_bounded_number_of_tokens_per_step():
  tokenizer = CountingBPE()
  # "ab", then " ab" "c" and "é" split into its two bytes ("Ã" "©") or whole, 50 times: 200 new tokens.
  new = [6, 3, 10, 11] * 25 + [4, 12, 9, 5] * 25
  pieces = []
  stream = text_sampling.TextStream(tokenizer, np.array([5], np.int32), pieces.append)
  for token in new:
    stream(np.array([token]), np.array([False]))
  stream(np.array([1]), np.array([True]))  # a row that has ended adds nothing

  assert "".join(pieces) == stream.shown == tokenizer.inner.decode([5, *new])
  assert "\ufffd" not in stream.shown  # a half character is never written
  assert pieces[1:4] == [" ab", "c", "é"]  # "Ã" waited for "©"
  assert max(tokenizer.lengths[1:]) <= text_sampling.TextStream.CONTEXT + 2  # not the whole text so far
