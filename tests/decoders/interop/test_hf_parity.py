"""Our port against the reference: Hugging Face `transformers` 5.23 on PyTorch 2.13 (CPU).

Each reference model is small, built from a config with random weights and written
with `save_pretrained`. Its weights are drawn with std 0.3 (`initializer_range`; HF's
default is 0.02): at 0.02 the logits of a random model differ by ~1e-4, so greedy
choices would hang on float rounding. The greedy test checks that premise: the
smallest top-1/top-2 margin along its path is asserted to be far above the tolerance.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from decoders import interop
from decoders.decoding import sampling, strategies
from decoders.models import decoder_lm

INIT_STD = 0.3
VOCAB, PROMPT_LEN, NEW_TOKENS = 97, 8, 24
SIZES = dict(vocab_size=VOCAB, bos_token_id=None, eos_token_id=None, pad_token_id=None, initializer_range=INIT_STD)
REFERENCES = {
    "gpt2": lambda: transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, **SIZES),
    # GQA (4 query heads share 2 KV heads), separate output embedding, RoPE base as LLaMA-3's.
    "llama": lambda: transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 500_000.0},
        rms_norm_eps=1e-5, **SIZES,
    ),
    # MQA, tied embeddings, and a window (8) shorter than the 32-token greedy sequence.
    "mistral": lambda: transformers.MistralConfig(
        num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=1,
        max_position_embeddings=64, sliding_window=8, tie_word_embeddings=True, **SIZES,
    ),
}


def relative_error(ours, reference) -> float:
  return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


def reference_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()


@pytest.fixture(scope="module", params=sorted(REFERENCES))
def reference(request, tmp_path_factory):
  """(model_type, reference model, the folder it saved itself to)."""
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(REFERENCES[request.param]()).eval()
  directory = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(directory)
  return request.param, model, str(directory)


def tokens(length: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, VOCAB, (2, length)).astype(np.int32)


def test_logits_match_the_reference(reference):
  model_type, reference_model, directory = reference
  model, params = interop.load_hf_checkpoint(directory)
  inputs = tokens(40)
  ours = model.apply({"params": params}, jnp.asarray(inputs))
  assert ours.shape == (2, 40, VOCAB)
  assert relative_error(ours, reference_logits(reference_model, inputs)) < 1e-4, model_type


def test_greedy_continuation_matches_the_reference(reference):
  model_type, reference_model, directory = reference
  model, params = interop.load_hf_checkpoint(directory)
  prompt = tokens(PROMPT_LEN, seed=1)[:1]
  sequence, margins = prompt, []
  for _ in range(NEW_TOKENS):  # the reference's greedy loop: argmax of a full forward pass
    last = reference_logits(reference_model, sequence)[0, -1]
    top2 = np.sort(last)[-2:]
    margins.append((top2[1] - top2[0]) / np.max(np.abs(last)))
    sequence = np.concatenate([sequence, [[np.argmax(last)]]], axis=1)

  def next_token_logits(window, length):
    return model.apply({"params": params}, window, length, method=decoder_lm.DecoderLM.next_token_logits)

  ours = sampling.generate(
      next_token_logits, jnp.asarray(prompt), NEW_TOKENS, strategies.Greedy(), jax.random.key(0),
      window=model.config.max_len,
  )
  assert min(margins) > 1e-3, f"{model_type}: a top-1/top-2 margin of {min(margins):.1e} is too close to call"
  np.testing.assert_array_equal(np.asarray(ours), sequence, err_msg=model_type)


def test_export_loads_in_transformers_with_the_same_logits(reference, tmp_path):
  model_type, reference_model, directory = reference
  model, params = interop.load_hf_checkpoint(directory)
  interop.save_hf_checkpoint(model, params, str(tmp_path))
  exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert exported.config.model_type == model_type
  inputs = tokens(40, seed=2)
  np.testing.assert_allclose(reference_logits(exported, inputs), reference_logits(reference_model, inputs), rtol=0, atol=0)
  # And back: the same parameters, bit for bit.
  _, reloaded = interop.load_hf_checkpoint(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, reloaded, params)


def test_a_sharded_folder_loads(tmp_path):
  torch.manual_seed(0)
  reference_model = transformers.AutoModelForCausalLM.from_config(REFERENCES["llama"]()).eval()
  reference_model.save_pretrained(tmp_path, max_shard_size="40KB")
  assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
  model, params = interop.load_hf_checkpoint(str(tmp_path))
  inputs = tokens(16)
  ours = model.apply({"params": params}, jnp.asarray(inputs))
  assert relative_error(ours, reference_logits(reference_model, inputs)) < 1e-4


@pytest.mark.parametrize("preset", ["shakespeare_char", "llama"])
def test_a_model_trained_here_leaves_for_transformers(preset, tmp_path):
  """Our own initialisation, padded vocabulary and scanned layers: exported logits equal ours on the real ids."""
  cfg = decoder_lm.preset(
      preset, vocab_size=61, vocab_multiple=8, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=32,
      scan_layers=True, **({"num_kv_heads": 2} if preset == "llama" else {}),
  )
  model = decoder_lm.DecoderLM(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  params = jax.tree.map(lambda x: x * 10.0, params)  # logits well above rounding level, as above
  interop.save_hf_checkpoint(model, params, str(tmp_path))
  exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  inputs = np.random.default_rng(0).integers(0, 61, (2, 20)).astype(np.int32)
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(inputs)))[..., :61]
  assert relative_error(ours, reference_logits(exported, inputs)) < 1e-4
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["vocab_size"] == 61 and config["model_type"] == ("gpt2" if preset == "shakespeare_char" else "llama")


def test_a_bfloat16_checkpoint_loads_as_its_float32_values(tmp_path):
  """Most released checkpoints are bfloat16: each weight arrives as the float32 number it stands for."""
  torch.manual_seed(0)
  reference_model = transformers.AutoModelForCausalLM.from_config(REFERENCES["llama"]()).to(torch.bfloat16)
  reference_model.save_pretrained(tmp_path)
  _, params = interop.load_hf_checkpoint(str(tmp_path))
  up_proj = reference_model.state_dict()["model.layers.1.mlp.up_proj.weight"].float().numpy()
  np.testing.assert_array_equal(params["block_1"]["ffn"]["wi"]["kernel"], up_proj.T)
  assert params["block_1"]["ffn"]["wi"]["kernel"].dtype == jnp.float32
