"""llama.cpp's GGUF files as our models: `load_gguf(path) -> (model, params, tokenizer)`.

A GGUF file is read as the Hugging Face LLaMA checkpoint it was converted from: its
metadata becomes a config.json dict, each tensor is dequantised (quants.py) and renamed,
and the HF LLaMA rules (hf_llama.py) do the rest, with all their checks. One thing must
be undone on the way: llama.cpp's converter permutes the rows of Q and K so that its
RoPE can rotate adjacent pairs (2i, 2i + 1); HF's and ours rotate i with i + head_dim/2.
"""
from collections.abc import Iterator, Mapping

import numpy as np

from decoders.errors import WeightsError
from decoders.interop import hf
from decoders.interop.bpe_tokenizer import BPETokenizer
from decoders.interop.gguf_file import GGUFFile, read_gguf
from decoders.models import decoder_lm

ARCHITECTURES = ("llama",)  # Mistral's GGUF files say "llama" too: the window is a runtime setting there
# GGUF tensor name -> Hugging Face LLaMA name ({i}: the layer).
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(gguf_name: str, source: str) -> str:
  if gguf_name in GLOBAL_NAMES:
    return GLOBAL_NAMES[gguf_name]
  block, _, rest = gguf_name.partition(".")
  layer, _, name = rest.partition(".")
  if block == "blk" and layer.isdigit() and name in LAYER_NAMES:
    return f"model.layers.{layer}.{LAYER_NAMES[name]}"
  raise WeightsError(f"{source}: tensor {gguf_name} has no place in a LLaMA model")


def unpermute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
  """Undoes llama.cpp's `permute` of a Q or K weight [heads * head_dim, width] (convert_hf_to_gguf.py).

  Within each head, llama.cpp stores row 2j, 2j + 1 = HF rows j, j + head_dim/2; this puts them back.
  """
  rows, width = weight.shape
  return weight.reshape(heads, rows // heads // 2, 2, width).swapaxes(1, 2).reshape(rows, width)


def hf_config(metadata: Mapping, tensor_names, source: str) -> dict:
  """The config.json of the HF model the file was converted from."""
  arch = metadata.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise WeightsError(f"{source}: general.architecture={arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}")

  def get(key, default=None):
    value = metadata.get(f"{arch}.{key}", default)
    if value is None:
      raise WeightsError(f"{source}: metadata has no {arch}.{key}")
    return value

  def real(key, default=None):  # a float32 in the file: 1e-5, not 9.99999974e-06
    return float(str(np.float32(get(key, default))))

  heads, width = int(get("attention.head_count")), int(get("embedding_length"))
  rope_dims = int(get("rope.dimension_count", width // heads))
  if rope_dims != width // heads:
    raise WeightsError(f"{source}: RoPE on {rope_dims} of {width // heads} head dimensions is not supported")
  tokens = metadata.get("tokenizer.ggml.tokens")
  return {
      "model_type": "llama",
      "vocab_size": int(get("vocab_size", len(tokens) if tokens is not None else None)),
      "hidden_size": width,
      "intermediate_size": int(get("feed_forward_length")),
      "num_hidden_layers": int(get("block_count")),
      "num_attention_heads": heads,
      "num_key_value_heads": int(get("attention.head_count_kv", heads)),
      "max_position_embeddings": int(get("context_length")),
      "rms_norm_eps": real("attention.layer_norm_rms_epsilon"),
      "rope_theta": real("rope.freq_base", 10_000.0),
      "tie_word_embeddings": "output.weight" not in tensor_names,  # llama.cpp then reuses token_embd
  }


class DequantisedTensors(Mapping):
  """The file's tensors by HF name, each dequantised (and Q/K un-permuted) only when looked up."""

  def __init__(self, file: GGUFFile, config: dict):
    self._file = file
    self._by_hf_name = {hf_name(name, file.path): name for name in file.tensors}
    self._heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}

  def __getitem__(self, name: str) -> np.ndarray:
    tensor = self._file.read_tensor(self._by_hf_name[name])
    projection = name.split(".")[-2]
    return unpermute_rope_rows(tensor, self._heads[projection]) if projection in self._heads else tensor

  def __iter__(self) -> Iterator[str]:
    return iter(self._by_hf_name)

  def __len__(self) -> int:
    return len(self._by_hf_name)


def load_gguf(path: str) -> tuple[decoder_lm.DecoderLM, dict, BPETokenizer]:
  """(model, float32 params, tokenizer) of a GGUF file; the tokenizer is the BPE one stored in the file."""
  file = read_gguf(path)
  config = hf_config(file.metadata, file.tensors, path)
  tokenizer = BPETokenizer.from_gguf_metadata(file.metadata, path)
  if tokenizer.vocab_size > config["vocab_size"]:
    raise WeightsError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens, the model {config['vocab_size']}")
  model, params = hf.from_tensors(config, DequantisedTensors(file, config), path)
  return model, params, tokenizer
