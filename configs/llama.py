"""The LLaMA architecture (RoPE, RMSNorm, SwiGLU, no biases, separate output embedding;
Touvron et al. 2023) at the size of the default char-level Shakespeare model.

    python run.py --config=configs/llama.py --workdir=workdirs/llama
    python run.py --config=configs/llama.py:test --workdir=/tmp/tiny_llama   # seconds, for tests
    python run.py --config=configs/llama.py:published --mode=inspect         # LLaMA-2-7B: 6.74 B parameters

The `llama` preset's own sizes are LLaMA-2-7B's; here they are scaled down. The variants
`published` (LLaMA-2-7B), `llama-3-8b` and `smollm2-135m` (a small model of the same
architecture) have the released models' shapes, vocabulary and context, for --mode=inspect.
"""
import ml_collections

from configs import gpt2, shakespeare_char

# Variant -> (preset, the context the model was trained at): LLaMA-2 (Touvron et al. 2023b,
# table 1), LLaMA-3 (Llama Team 2024, table 3), SmolLM2 (its released 8,192-token context).
PUBLISHED = {"published": ("llama", 4096), "llama-3-8b": ("llama-3-8b", 8192), "smollm2-135m": ("smollm2-135m", 8192)}


def swiglu_width(gelu_width: int) -> int:
  """SwiGLU has three matrices where a GELU MLP has two: 2/3 of the width keeps the parameter
  count (Shazeer 2020, sec. 2; LLaMA's 8/3 d), rounded to a multiple of 8 for the tensor axis."""
  return round(gelu_width * 2 / 3 / 8) * 8


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant in PUBLISHED:
    return gpt2.published_config(*PUBLISHED[variant])
  if variant not in ("", "test"):
    raise ValueError(f"unknown variant {variant!r} of llama; expected one of {['', 'test', *PUBLISHED]}")
  config = shakespeare_char.get_config(variant)
  config.model.preset = "llama"
  config.model.mlp_dim = swiglu_width(config.model.mlp_dim)
  return config
