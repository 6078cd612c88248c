"""T5 imported from Hugging Face `transformers` 5.23 (PyTorch 2.13, CPU): logits, greedy and beam search against it.

Each reference model is tiny, with random weights, and written with `save_pretrained`. T5 v1.0 ties its output to
the token table and scales the decoder's output by d_model^-1/2; T5 v1.1 has a gated feed-forward and an output
of its own, unscaled. transformers >= 5 ties every T5 it builds from a config, so the untied one gets its own
`lm_head` by hand, as a T5 v1.1 checkpoint has. Its gate is SiLU here; v1.1's own "gated-gelu" (transformers'
tanh approximation of GELU) has a test of its own. Decoding starts from T5's decoder start token, pad (0), on
both sides, and ends at eos (1).
"""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from decoders import interop
from decoders.decoding import Beam, generate, strategies

VOCAB, PAD, EOS = 37, 0, 1
SIZES = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
             relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=PAD, eos_token_id=EOS)
# Per reference: its config, and the token whose output row EOS copies, a little longer (below).
REFERENCES = {
    "t5": (dict(), 5),  # ReLU, tied and scaled output
    "t5 v1.1 style": (dict(feed_forward_proj="gated-silu", tie_word_embeddings=False), 6),  # gated, untied, unscaled
}
# Rows of different lengths, right-padded: the reference hides the padding with its attention mask.
SOURCES = [[5, 9, 11, 4, 7, 20], [8, 6, 30, 12, 9, 14, 22, 17, 10]]
NEW_TOKENS = 10


def relative_error(ours, reference) -> float:
  return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


def padded(sources, pad: int = PAD) -> tuple[np.ndarray, np.ndarray]:
  tokens = np.full((len(sources), max(map(len, sources))), pad, np.int64)
  for row, source in enumerate(sources):
    tokens[row, : len(source)] = source
  return tokens, np.array([len(source) for source in sources])


def build(overrides: dict, eos_like: int | None = None, seed: int = 0) -> transformers.T5ForConditionalGeneration:
  """A random reference model. Its layers' weights are doubled, so that they rather than the input token's embedding
  (which the residual stream carries to a tied output) decide the next token. With `eos_like`, EOS's output row is
  that often-predicted token's, 5 % longer: some hypotheses then end, at different steps."""
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**SIZES, **overrides)).eval()
  if overrides.get("tie_word_embeddings") is False:
    model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, SIZES["d_model"]))
  with torch.no_grad():
    for name, weight in model.named_parameters():
      if name.endswith(("q.weight", "k.weight", "v.weight", "o.weight", "wi.weight", "wi_0.weight", "wi_1.weight",
                        "wo.weight")):
        weight *= 2.0
    if eos_like is not None:
      output = model.shared if model.config.scale_decoder_outputs else model.lm_head
      output.weight[EOS] = output.weight[eos_like] * 1.05
  return model


@pytest.fixture(scope="module", params=sorted(REFERENCES))
def reference(request, tmp_path_factory):
  return loaded(build(*REFERENCES[request.param]), tmp_path_factory.mktemp("t5"))


def loaded(reference_model, directory) -> tuple:
  """(reference model, our model, our params): the reference saved to `directory` by save_pretrained, and read back."""
  reference_model.save_pretrained(directory)
  return (reference_model, *interop.load_hf_checkpoint(str(directory)))


def reference_logits(model, targets, pad: int = PAD) -> np.ndarray:
  """The reference's logits of `targets` [2, t] over SOURCES."""
  tokens, lengths = padded(SOURCES, pad)
  mask = np.arange(tokens.shape[1])[None] < lengths[:, None]
  with torch.no_grad():
    return model(input_ids=torch.as_tensor(tokens), attention_mask=torch.as_tensor(mask.astype(np.int64)),
                 decoder_input_ids=torch.as_tensor(targets, dtype=torch.long)).logits.numpy()


def logits_error(reference_model, model, params, pad: int = PAD) -> float:
  """Our logits' relative error against the reference's, of random targets over SOURCES."""
  targets = np.random.default_rng(0).integers(0, VOCAB, (2, 12))
  tokens, lengths = padded(SOURCES, pad)
  ours = model.apply({"params": params}, jnp.asarray(tokens, jnp.int32), jnp.asarray(targets, jnp.int32),
                     encoder_lengths=jnp.asarray(lengths))
  assert ours.shape == (2, 12, VOCAB)
  return relative_error(ours, reference_logits(reference_model, targets, pad))


def test_logits_match_the_reference(reference):
  assert logits_error(*reference) < 1e-4


def test_the_output_is_tied_and_scaled_as_the_checkpoint_says(reference):
  reference_model, model, _ = reference
  assert model.config.stack.tie_embeddings == reference_model.config.scale_decoder_outputs == model.config.scale_output
  assert model.config.stack.activation == ("relu" if model.config.stack.tie_embeddings else "swiglu")


def test_gated_gelu_is_transformers_tanh_approximation(tmp_path):
  """T5 v1.1's "gated-gelu" runs gelu_new, the tanh approximation of GELU: ours (geglu_tanh) agrees with it, and the
  exact GELU would not (the approximation's ~2.5e-4 relative is what the tolerance must see)."""
  # A deeper decoder too (transformers' generate() cannot run one: its cache is sized by the encoder's depth).
  reference = build(dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_decoder_layers=3))
  reference_model, model, params = loaded(reference, tmp_path)
  assert (model.config.num_encoder_layers, model.config.num_decoder_layers) == (2, 3)
  assert model.config.stack.activation == "geglu_tanh"
  assert logits_error(reference_model, model, params) < 1e-4
  for stack in (reference_model.encoder, reference_model.decoder):
    for block in stack.block:
      block.layer[-1].DenseReluDense.act = transformers.activations.GELUActivation()  # exact
  assert logits_error(reference_model, model, params) > 1e-4


def reference_generation(model, num_beams: int, start: int, pad: int, eos: int) -> tuple[list[list[int]], np.ndarray]:
  """The reference's `num_beams` best continuations of SOURCES, each through its EOS, best first, with their scores
  (beam search) or each step's logits [2, steps, vocab] (greedy), decoding from `start`."""
  tokens, lengths = padded(SOURCES, pad)
  config = transformers.GenerationConfig(
      max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=num_beams, num_return_sequences=num_beams,
      length_penalty=1.0, early_stopping=False, decoder_start_token_id=start, pad_token_id=pad, eos_token_id=eos,
      output_scores=True, return_dict_in_generate=True,
  )
  mask = torch.as_tensor((np.arange(tokens.shape[1])[None] < lengths[:, None]).astype(np.int64))
  with torch.no_grad():
    out = model.generate(input_ids=torch.as_tensor(tokens), attention_mask=mask, generation_config=config)
  rows = []
  for sequence in out.sequences[:, 1:].tolist():  # after the start token
    rows.append(sequence[: sequence.index(eos) + 1] if eos in sequence else sequence)
  scores = out.sequences_scores.numpy() if num_beams > 1 else torch.stack(out.scores, 1).numpy()
  return rows, scores


def assert_greedy_matches(reference_model, model, params, start: int = PAD, pad: int = PAD, eos: int = EOS):
  expected, step_logits = reference_generation(reference_model, 1, start, pad, eos)
  for row, tokens in enumerate(expected):  # the reference's choices are clear, up to each row's end
    top2 = np.sort(step_logits[row, : len(tokens)], axis=-1)[:, -2:]
    margins = (top2[:, 1] - top2[:, 0]) / np.max(np.abs(step_logits[row, : len(tokens)]), axis=-1)
    assert np.min(margins) > 1e-3, f"row {row}: a top-1/top-2 margin of {np.min(margins):.1e} is too close to call"
  out = generate(model, params, [[start]] * 2, strategy=strategies.Greedy(), max_new_tokens=NEW_TOKENS,
                 eos_id=eos, encoder_tokens=SOURCES)
  assert out.rows() == expected
  assert any(tokens[-1] == eos for tokens in expected) and any(len(tokens) == NEW_TOKENS for tokens in expected)


def assert_beam_search_matches(reference_model, model, params, start: int = PAD, pad: int = PAD, eos: int = EOS):
  """Beam(early_stopping="heuristic") is transformers' early_stopping=False; both return all 3 beams with scores."""
  expected, scores = reference_generation(reference_model, 3, start, pad, eos)
  out = generate(model, params, [[start]] * 2, strategy=Beam(3, num_returned=3, early_stopping="heuristic"),
                 max_new_tokens=NEW_TOKENS, eos_id=eos, encoder_tokens=SOURCES)
  assert [tokens for row in out.nbest() for tokens, _ in row] == expected
  assert any(eos in tokens for tokens in expected), "no hypothesis ended: the test would not see EOS handling"
  np.testing.assert_allclose(out.scores.reshape(-1), scores, rtol=1e-4)


def test_greedy_decoding_matches_the_reference(reference):
  assert_greedy_matches(*reference)


def test_beam_search_matches_the_reference(reference):
  assert_beam_search_matches(*reference)
