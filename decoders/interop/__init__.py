"""Pretrained weights in and out: Hugging Face folders (safetensors) and llama.cpp's GGUF files.

    model, params = load_hf_checkpoint(directory)             # gpt2 | llama | mistral
    save_hf_checkpoint(model, params, directory)              # transformers loads it back
    model, params, tokenizer = load_gguf(path)                # LLaMA-style GGUF, dequantised

Nothing here imports torch or transformers, unpickles or runs code from a file. The GGUF
tokenizer needs the `tokenizers` and `jinja2` packages, imported only by `load_gguf`.
"""
from decoders.interop.hf import load_hf_checkpoint, save_hf_checkpoint


def load_gguf(path: str):
  """(model, params, tokenizer) of a GGUF file: see decoders/interop/gguf.py."""
  from decoders.interop import gguf  # here, not above: it needs tokenizers and jinja2

  return gguf.load_gguf(path)


__all__ = ["load_gguf", "load_hf_checkpoint", "save_hf_checkpoint"]
