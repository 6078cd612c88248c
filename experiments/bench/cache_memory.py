"""Key/value cache memory at a context length, for any preset shape: a calculator, checked against our caches.

    python -m experiments.bench cache_memory [--context=4096] [--batch=1] [--window=1024] [--record]

For each preset (the real LLaMA-2-7B, Mistral-7B, LLaMA-3-8B and SmolLM2-135M shapes, at 16-bit
values), the bytes of a cache holding `--context` tokens: multi-head (a KV head per query head),
the preset's grouped-query heads, multi-query (one KV head), int8 and int4 values, a sliding-window
ring of `--window` slots and StreamingLLM's 4 sinks + the rest of the window. `cache_bytes`
is the formula; the "allocated" column is `KVCache.nbytes()` of the pytree `decoder_lm.init_cache`
builds for the same settings, traced with jax.eval_shape (so a 7 B model's cache is never allocated);
the two must agree to the byte. Nothing here is timed: the numbers are exact.
"""
from absl import flags

_CONTEXT = flags.DEFINE_integer("context", 4096, "Tokens the cache holds (the seeds' claim is at 16-bit, batch 1).")
_BATCH = flags.DEFINE_integer("batch", 1, "Rows of the cache.")
_WINDOW = flags.DEFINE_integer("window", 1024, "Slots of the sliding-window and the sinks caches.")

PRESETS = ("llama", "mistral", "llama-3-8b", "smollm2-135m")
SINKS = 4  # attention sinks of the StreamingLLM cache (Xiao et al. 2023 keep 4)
SEEDS_CLAIM_BYTES = 2e9  # "about 2 GB of KV cache for LLaMA 2 7B at 16-bit, batch 1"


def cache_bytes(num_layers, kv_heads, head_dim, batch, slots, bytes_per_value, quantization="none", eviction="none"):
  """Bytes of a cache of `slots` positions per row: a key and a value per layer, row, slot and KV head.

  Quantised values are 1 byte (int8) or half a byte (int4) each, plus a float32 scale per key
  and per value vector; H2O adds each slot's position (int32) and accumulated attention
  (float32) per KV head; every cache keeps one int32 length per row.
  """
  vectors = 2 * num_layers * batch * slots * kv_heads  # key and value vectors
  per_vector = {"none": head_dim * bytes_per_value, "int8": head_dim + 4, "int4": head_dim // 2 + 4}[quantization]
  bookkeeping = (vectors // 2) * 8 if eviction == "h2o" else 0
  return vectors * per_vector + bookkeeping + 4 * batch


def _variants(config, context: int, window: int, sinks: int):
  """(name, config overrides, slots, CacheSpec) of each cache the table compares."""
  from decoders.layers.kv_cache import CacheSpec

  heads, kv = config.num_heads, config.kv_heads
  yield f"multi-head ({heads} KV heads)", dict(num_kv_heads=heads), context, CacheSpec()
  if 1 < kv < heads:
    yield f"grouped-query ({kv} KV heads)", {}, context, CacheSpec()
  yield "multi-query (1 KV head)", dict(num_kv_heads=1), context, CacheSpec()
  yield f"{kv} KV heads, int8", {}, context, CacheSpec(quantization="int8")
  yield f"{kv} KV heads, int4", {}, context, CacheSpec(quantization="int4")
  yield f"{kv} KV heads, window {window}", {}, window, CacheSpec(eviction="window")
  yield f"{kv} KV heads, {sinks} sinks + {window - sinks}", {}, window, CacheSpec(eviction="sinks", sinks=sinks)


def _gib(n: int) -> str:
  return f"{n / 2**30:,.3f} GiB"


def run() -> list[str]:
  import dataclasses

  import jax

  from decoders.models import decoder_lm

  context, batch, window, sinks = _CONTEXT.value, _BATCH.value, _WINDOW.value, SINKS
  lines = [
      f"{context:,}-token context, batch {batch}, 16-bit (bfloat16) values unless quantised",
      "| model | cache | calculator | allocated (pytree) | bytes/token | agree |",
      "| --- | --- | --- | --- | --- | --- |",
  ]
  for name in PRESETS:
    preset = decoder_lm.preset(name, dtype="bfloat16", max_len=max(context, decoder_lm.PRESETS[name]["max_len"]))
    for label, overrides, slots, spec in _variants(preset, context, window, sinks):
      config = dataclasses.replace(preset, **overrides)
      formula = cache_bytes(
          config.num_layers, config.kv_heads, config.head_dim, batch, slots, 2, spec.quantization, spec.eviction
      )
      allocated = jax.eval_shape(lambda c=config, s=slots, p=spec: decoder_lm.init_cache(c, batch, s, p)).nbytes()
      lines.append(
          f"| {name} | {label} | {_gib(formula)} | {_gib(allocated)} | {formula / context:,.0f} | "
          f"{'yes' if formula == allocated else 'NO'} |"
      )
  llama = decoder_lm.preset("llama", dtype="bfloat16")
  per_token = cache_bytes(llama.num_layers, llama.kv_heads, llama.head_dim, 1, 1, 2) - 4
  lines.append(
      f"seeds: ~2 GB for LLaMA 2 7B at 16-bit, batch 1. One token costs {per_token:,} bytes "
      f"(2 x 32 layers x 4,096 x 2 bytes), so 2 GB holds {SEEDS_CLAIM_BYTES / per_token:,.0f} tokens "
      f"and 2 GiB {2**31 / per_token:,.0f}: the claim is LLaMA 2's full 4,096-token context."
  )
  return lines

