"""The GPT-2 architecture (learned positions, pre-LayerNorm, tanh-GELU MLP, biases, tied
embeddings) at the size of the default char-level Shakespeare model.

    python run.py --config=configs/gpt2.py --workdir=workdirs/gpt2
    python run.py --config=configs/gpt2.py:test --workdir=/tmp/tiny_gpt2   # seconds, for tests

The `gpt2` preset's own sizes are GPT-2 small's (124 M parameters); here they are
scaled to the 10-minute CPU budget, as in configs/shakespeare_char.py.
"""
import ml_collections

from configs import shakespeare_char


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = shakespeare_char.get_config(variant)
  config.model.preset = "gpt2"
  return config
