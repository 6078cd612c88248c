"""The GPT-2 architecture (learned positions, pre-LayerNorm, tanh-GELU MLP, biases, tied
embeddings) at the size of the default char-level Shakespeare model.

    python run.py --config=configs/gpt2.py --workdir=workdirs/gpt2
    python run.py --config=configs/gpt2.py:test --workdir=/tmp/tiny_gpt2   # seconds, for tests
    python run.py --config=configs/gpt2.py:published --mode=inspect        # GPT-2 small: 124 M parameters

The `gpt2` preset's own sizes are GPT-2 small's (124 M parameters); here they are
scaled to the 10-minute CPU budget, as in configs/shakespeare_char.py. The variants
`published` (small) and `medium` (355 M) have the released models' shapes, vocabulary
and context, for --mode=inspect.
"""
import dataclasses

import ml_collections

from configs import shakespeare_char

# Variant -> (preset, the context the model was trained at) (Radford et al. 2019, sec. 2.3).
PUBLISHED = {"published": ("gpt2", 1024), "medium": ("gpt2-medium", 1024)}


def published_config(preset: str, context_length: int) -> ml_collections.ConfigDict:
  """The default config with the model at `preset`'s published shape and vocabulary (also for llama.py, mistral.py).

  Every field of the model is in `config.model`, so any of them can be overridden. Meant
  for --mode=inspect: training such a model needs far more than this machine has.
  """
  from decoders.models import decoder_lm  # here, not above: it imports JAX, which parsing the other variants does not need

  config = shakespeare_char.get_config()
  config.model = dict(preset=preset, **dataclasses.asdict(decoder_lm.preset(preset)))
  config.data.context_length = context_length
  return config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant in PUBLISHED:
    return published_config(*PUBLISHED[variant])
  if variant not in ("", "test"):
    raise ValueError(f"unknown variant {variant!r} of gpt2; expected one of {['', 'test', *PUBLISHED]}")
  config = shakespeare_char.get_config(variant)
  config.model.preset = "gpt2"
  return config
