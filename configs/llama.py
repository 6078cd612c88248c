"""The LLaMA architecture (RoPE, RMSNorm, SwiGLU, no biases, separate output embedding;
Touvron et al. 2023) at the size of the default char-level Shakespeare model.

    python run.py --config=configs/llama.py --workdir=workdirs/llama
    python run.py --config=configs/llama.py:test --workdir=/tmp/tiny_llama   # seconds, for tests

The `llama` preset's own sizes are LLaMA-2-7B's; here they are scaled down.
"""
import ml_collections

from configs import shakespeare_char


def swiglu_width(gelu_width: int) -> int:
  """SwiGLU has three matrices where a GELU MLP has two: 2/3 of the width keeps the parameter
  count (Shazeer 2020, sec. 2; LLaMA's 8/3 d), rounded to a multiple of 8 for the tensor axis."""
  return round(gelu_width * 2 / 3 / 8) * 8


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = shakespeare_char.get_config(variant)
  config.model.preset = "llama"
  config.model.mlp_dim = swiglu_width(config.model.mlp_dim)
  return config
