"""BART imported from Hugging Face `transformers` 5.23 (PyTorch 2.13, CPU): logits, greedy and beam search against it.

Tiny random reference models written with `save_pretrained` (weights drawn with std 0.3, as in test_hf_parity.py, so
that greedy choices are clear), one with BART-base's unscaled embeddings and one with scaled embeddings (mBART's).
Learned positions with their offset of 2, `layernorm_embedding` and a random `final_logits_bias` are in both.
Decoding starts from BART's decoder start token, eos (2), on both sides; the reference's forced BOS and forced EOS
(BART's generation defaults) are switched off, since `generate` forces neither.
"""
import pytest
import torch
import transformers

from decoders import interop
from decoders.errors import WeightsError
from tests.decoders.interop.test_hf_t5 import (
    VOCAB, assert_beam_search_matches, assert_greedy_matches, loaded, logits_error,
)

BOS, PAD, EOS = 0, 1, 2
SIZES = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
             decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
             init_std=0.3, bos_token_id=BOS, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=EOS)
# Per reference: its config, and the token whose rows EOS copies (below).
REFERENCES = {
    "bart": (dict(), 22),
    "bart, scaled embeddings": (dict(scale_embedding=True), 6),
}


def build(overrides: dict, eos_like: int | None = None) -> transformers.BartForConditionalGeneration:
  """A random reference model. With `eos_like`, EOS's embedding is that often-predicted token's, 5 % longer, and so
  is its logits bias: some hypotheses then end, at different steps."""
  torch.manual_seed(0)
  model = transformers.BartForConditionalGeneration(transformers.BartConfig(**SIZES, **overrides))
  model.eval().generation_config.update(forced_bos_token_id=None, forced_eos_token_id=None)
  with torch.no_grad():
    model.final_logits_bias.normal_(0.0, 0.5)
    if eos_like is not None:
      model.final_logits_bias[0, EOS] = model.final_logits_bias[0, eos_like]
      model.model.shared.weight[EOS] = model.model.shared.weight[eos_like] * 1.05
  return model


@pytest.fixture(scope="module", params=sorted(REFERENCES))
def reference(request, tmp_path_factory):
  return loaded(build(*REFERENCES[request.param]), tmp_path_factory.mktemp("bart"))


def test_logits_match_the_reference(reference):
  assert logits_error(*reference, pad=PAD) < 1e-4


def test_the_checkpoint_gives_the_model_its_options(reference):
  reference_model, model, _ = reference
  cfg = model.config
  assert cfg.scale_embeddings == reference_model.config.scale_embedding and cfg.stack.tie_embeddings
  assert cfg.embedding_norm and cfg.final_logits_bias and cfg.positions == "learned" and cfg.max_len == 32


def test_untied_bart_is_refused_for_its_three_token_tables(tmp_path):
  """transformers >= 5 ties nothing when tie_word_embeddings is false: encoder, decoder and output each get a table."""
  build(dict(tie_word_embeddings=False)).save_pretrained(tmp_path)
  with pytest.raises(WeightsError, match=r"tie_word_embeddings=false and model\.decoder\.embed_tokens\.weight"):
    interop.load_hf_checkpoint(str(tmp_path))


def test_greedy_decoding_matches_the_reference(reference):
  assert_greedy_matches(*reference, start=EOS, pad=PAD, eos=EOS)


def test_beam_search_matches_the_reference(reference):
  assert_beam_search_matches(*reference, start=EOS, pad=PAD, eos=EOS)
