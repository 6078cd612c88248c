"""The beam-search benchmark on a tiny model: its rows, and beam finding at least greedy's log-likelihood."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.models import decoder_lm
from experiments.bench import beam


def test_beam_search_is_compared_with_greedy_on_the_same_prompts():
  config = decoder_lm.preset("llama", vocab_size=37, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=48)
  model = decoder_lm.DecoderLM(config)
  params = jax.tree.map(lambda x: 4 * x, nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]))
  prompts = beam.prompts_from(list(range(37)) * 4, 2)
  assert [len(p) for p in prompts] == [beam.PROMPT_TOKENS] * 2
  results = beam.compare(model, params, prompts, width=3, new_tokens=6)
  assert results["beam"][2] >= results["greedy"][2] - 1e-4  # no length penalty: beam maximises the same sum
  lines = beam.report(results, 3, 6, 2)
  assert lines[3].startswith("| greedy |") and lines[4].startswith("| beam (width 3) |")
  assert "x greedy (target <= 2x)" in lines[-1]
