"""Each preset with a published shape has that model's published parameter count (Hugging Face model cards)."""
import pytest

from decoders.models import decoder_lm

PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "llama": 6_738_415_616,  # LLaMA-2-7B
    "mistral": 7_241_732_096,  # Mistral-7B v0.1
    "llama-3-8b": 8_030_261_248,
    "smollm2-135m": 134_515_008,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_a_preset_has_its_published_parameter_count(name):
  assert decoder_lm.preset(name).num_params(include_embeddings=True) == PUBLISHED[name]


def test_every_preset_with_a_vocabulary_is_checked():
  assert {name for name, fields in decoder_lm.PRESETS.items() if "vocab_size" in fields} == set(PUBLISHED)


def test_kv_cache_bytes_per_token_shrink_with_grouped_query_heads():
  # LLaMA-2-7B in float16: 2 (K, V) x 32 layers x 4096 = 512 KiB per token, the figure
  # usually quoted; Mistral-7B's 8 KV heads cut it 4x (Ainslie et al. 2023).
  assert decoder_lm.preset("llama").kv_cache_bytes_per_token(2) == 512 * 1024
  assert decoder_lm.preset("mistral").kv_cache_bytes_per_token(2) == 128 * 1024
  assert decoder_lm.preset("gpt2").kv_cache_bytes_per_token() == 2 * 12 * 768 * 4  # float32 by default
