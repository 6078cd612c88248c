"""The StreamingLLM benchmark's token-by-token scoring against full forward passes, on a tiny LLaMA-style model."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.models import decoder_lm
from experiments.bench import streaming_llm

LENGTH, CACHE, SINKS = 40, 8, 2


@pytest.fixture(scope="module")
def setup():
  config = decoder_lm.preset(
      "llama", vocab_size=37, num_layers=2, width=32, num_heads=4, num_kv_heads=2, mlp_dim=64, max_len=64
  )
  model = decoder_lm.DecoderLM(config)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = jax.tree.map(lambda x: x * 4.0, params)  # sharper attention, so what a cache drops shows in the NLL
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, LENGTH)).astype(np.int32)
  specs = streaming_llm.cache_specs(LENGTH, CACHE, SINKS)
  nlls = {name: streaming_llm.token_nlls(model, params, tokens, *spec) for name, spec in specs.items()}
  return config, params, tokens, nlls


def full_forward_nlls(config, params, tokens):
  """[batch, length - 1] the cross-entropy of each next token from one full forward pass of `config`'s model."""
  logits = decoder_lm.DecoderLM(config).apply({"params": params}, jnp.asarray(tokens))
  log_probs = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  return -np.take_along_axis(np.asarray(log_probs), tokens[:, 1:, None], axis=-1)[..., 0]


def test_the_dense_cache_scores_what_the_full_forward_pass_does(setup):
  config, params, tokens, nlls = setup
  assert nlls["dense"].shape == (2, LENGTH - 1)
  np.testing.assert_allclose(nlls["dense"], full_forward_nlls(config, params, tokens), atol=1e-4)


def test_the_window_cache_scores_what_a_sliding_window_model_does(setup):
  config, params, tokens, nlls = setup
  windowed = dataclasses.replace(config, sliding_window=CACHE)
  np.testing.assert_allclose(nlls["window"], full_forward_nlls(windowed, params, tokens), atol=1e-4)
  assert np.abs(nlls["window"] - nlls["dense"])[:, CACHE:].max() > 1e-3  # the window does drop something


def test_every_cache_agrees_with_dense_until_it_is_full_and_sinks_differ_from_window_after(setup):
  _, _, _, nlls = setup
  for name in ("window", "sinks", "h2o"):
    np.testing.assert_allclose(nlls[name][:, :CACHE], nlls["dense"][:, :CACHE], atol=1e-4, err_msg=name)
  assert np.abs(nlls["sinks"] - nlls["window"])[:, CACHE:].max() > 1e-3


def test_the_report_has_a_row_per_block_then_cache_full_and_overall(setup):
  _, _, _, nlls = setup
  lines = streaming_llm.table(nlls, CACHE)
  assert lines[0] == "| query positions | dense | window | sinks | h2o |"
  labels = [line.split(" | ")[0] for line in lines[2:]]
  blocks = ["| [0, 8)", "| [8, 16)", "| [16, 24)", "| [24, 32)", "| [32, 39)"]
  assert labels == [*blocks, "| cache full: [8, 39)", "| all [0, 39)"]
  first_block = [float(cell) for cell in lines[2].strip("| ").split(" | ")[1:]]
  assert max(first_block) / min(first_block) - 1 < 1e-4  # every cache holds the whole first block
  verdict = streaming_llm.verdict(nlls, CACHE)
  assert verdict.startswith("ours, once the cache is full: perplexity relative to dense: window ")


def test_segments_are_evenly_spaced_and_bad_flags_fail_before_compiling():
  np.testing.assert_array_equal(streaming_llm.segments(list(range(20)), 2, 3), [[0, 1, 2], [10, 11, 12]])
  with pytest.raises(ConfigError, match="--tokens=11"):
    streaming_llm.segments(list(range(20)), 2, 11)
  for tokens, cache, sinks, flag in ((100, 8, 2, "--tokens"), (40, 40, 2, "--cache"), (40, 8, 8, "--sinks")):
    with pytest.raises(ConfigError, match=flag):
      streaming_llm.check_flags(tokens, cache, sinks, max_len=64)
