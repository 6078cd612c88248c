"""The LM task's sampler never draws an id its tokenizer cannot decode."""
import jax
import jax.numpy as jnp
import numpy as np

from decoders.models import decoder_lm
from experiments.tasks import language_model


def test_a_model_vocabulary_beyond_the_data_never_samples_the_extra_rows():
  # model.vocab_size=64 (say, a benchmark's size) over data with 5 ids: ids 5..63 decode to nothing.
  config = decoder_lm.preset("shakespeare_char", vocab_size=64, num_layers=1, width=16, num_heads=2, mlp_dim=32, max_len=16)
  model = decoder_lm.DecoderLM(config)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
  prompt = jnp.zeros((1, 3), jnp.int32)
  tokens = language_model._generate(model, params, prompt, 12, 2.0, jax.random.key(1), 16, 5)
  assert np.asarray(tokens).max() < 5
  unrestricted = language_model._generate(model, params, prompt, 12, 2.0, jax.random.key(1), 16, 64)
  assert np.asarray(unrestricted).max() >= 5  # the restriction is what keeps them out
