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
