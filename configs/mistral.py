"""The Mistral architecture (LLaMA's, with grouped-query attention and a sliding window;
Jiang et al. 2023) at the size of the default char-level Shakespeare model.

    python run.py --config=configs/mistral.py --workdir=workdirs/mistral
    python run.py --config=configs/mistral.py:test --workdir=/tmp/tiny_mistral   # seconds, for tests
    python run.py --config=configs/mistral.py:published --mode=inspect           # Mistral-7B: 7.24 B parameters

The `mistral` preset's own sizes are Mistral-7B's (32 query heads sharing 8 KV heads, a
4,096-token window); here half as many KV heads as query heads and a window of half the
context. The variant `published` has Mistral-7B's shape, vocabulary and context, for --mode=inspect.
"""
import ml_collections

from configs import gpt2, llama

# Variant -> (preset, the context the model was trained at) (Jiang et al. 2023, table 1).
PUBLISHED = {"published": ("mistral", 8192)}


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant in PUBLISHED:
    return gpt2.published_config(*PUBLISHED[variant])
  if variant not in ("", "test"):
    raise ValueError(f"unknown variant {variant!r} of mistral; expected one of {['', 'test', *PUBLISHED]}")
  config = llama.get_config(variant)
  config.model.preset = "mistral"
  config.model.num_kv_heads = config.model.num_heads // 2
  config.model.sliding_window = config.data.context_length // 2
  return config
