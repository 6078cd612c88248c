"""Greedy decoding of 1,000 new tokens with and without the key/value cache, as a ratio.

    python -m experiments.bench kv_cache [--new_tokens=1000] [--record]

The model is configs/gpt2_bench.py's shape (6 layers, width 384, 6 heads, vocabulary
8,192) with 1,056 learned positions, so its context holds the 32-token prompt and every
new token; weights are random (speed does not depend on them), float32, batch 1.
  with cache:    decoders.decoding.generate: one prefill, then one token per while_loop step
  without cache: decoding/sampling.py's loop, which runs the whole fixed-size window (here all
                 1,056 positions) through the model for every token: the same compiled-loop
                 form, but each token costs a full forward pass instead of one position's.
Each is compiled first (compile time reported apart) and then timed; the two outputs
must be the same tokens.
"""
import time

from absl import flags

from configs import gpt2_bench

_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 1000, "Tokens to generate after the 32-token prompt.")

PROMPT_TOKENS = 32


def _seconds(function) -> tuple[float, object]:
  start = time.perf_counter()
  result = function()
  return time.perf_counter() - start, result


def run() -> list[str]:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  from decoders.decoding import generation, sampling, strategies
  from decoders.models import decoder_lm

  new_tokens = _NEW_TOKENS.value
  total = PROMPT_TOKENS + new_tokens
  config = decoder_lm.preset(
      "gpt2", vocab_size=gpt2_bench.VOCAB_SIZE, num_layers=6, width=384, num_heads=6, mlp_dim=1536, max_len=total
  )
  model = decoder_lm.DecoderLM(config)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, PROMPT_TOKENS)).astype(np.int32)
  greedy = strategies.Greedy()

  def cached():
    return generation.generate(model, params, prompt.tolist(), strategy=greedy, max_new_tokens=new_tokens)

  @jax.jit
  def uncached_loop(params, prompt):
    def next_token_logits(window, length):
      return model.apply({"params": params}, window, length, method=decoder_lm.DecoderLM.next_token_logits)

    return sampling.generate(next_token_logits, prompt, new_tokens, greedy, jax.random.key(0), total)

  def uncached():
    return jax.block_until_ready(uncached_loop(params, prompt))

  # The first call of each compiles (and runs); the second is timed on its own.
  first_cached, _ = _seconds(cached)
  with_cache, out = _seconds(cached)
  first_uncached, _ = _seconds(uncached)
  without_cache, reference = _seconds(uncached)
  same = out.rows()[0] == np.asarray(reference)[0, PROMPT_TOKENS:].tolist()
  return [
      f"model: gpt2_bench shape, {config.num_params(include_embeddings=True):,} parameters, float32, batch 1; "
      f"{PROMPT_TOKENS}-token prompt, {new_tokens} new tokens (greedy)",
      "| | seconds | tokens/s | first call (compile + run) |",
      "| --- | --- | --- | --- |",
      f"| with KV cache | {with_cache:.2f} | {new_tokens / with_cache:,.0f} | {first_cached:.2f} s |",
      f"| without cache | {without_cache:.2f} | {new_tokens / without_cache:,.0f} | {first_uncached:.2f} s |",
      f"speedup of the cache: {without_cache / with_cache:.1f}x; the same tokens: {'yes' if same else 'NO'}",
  ]
