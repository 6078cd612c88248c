"""The cache calculator against the bytes our cache pytrees allocate, for every kind of cache."""
import pytest

from decoders.layers.kv_cache import CacheSpec
from decoders.models import decoder_lm
from experiments.bench import cache_memory

SPECS = [
    CacheSpec(), CacheSpec(quantization="int8"), CacheSpec(quantization="int4"), CacheSpec(eviction="window"),
    CacheSpec(eviction="sinks", sinks=2), CacheSpec(eviction="h2o", recent=3), CacheSpec("int8", "h2o", recent=3),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # multi-head, grouped-query, multi-query
def test_the_formula_counts_every_byte_a_real_cache_allocates(spec, kv_heads):
  config = decoder_lm.preset("llama", vocab_size=37, num_layers=3, width=32, num_heads=4, num_kv_heads=kv_heads, mlp_dim=64, max_len=64)
  cache = decoder_lm.init_cache(config, batch=2, capacity=12, spec=spec)
  assert cache_memory.cache_bytes(3, kv_heads, 8, 2, 12, 4, spec.quantization, spec.eviction) == cache.nbytes()


def test_the_seeds_llama_2_claim_is_its_full_context_at_16_bit():
  llama = decoder_lm.preset("llama")
  assert cache_memory.cache_bytes(llama.num_layers, llama.kv_heads, llama.head_dim, 1, 4096, 2) == 2**31 + 4
