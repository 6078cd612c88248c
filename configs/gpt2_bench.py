"""The GPT-2 architecture at the size the speed benchmark compares with Hugging Face's GPT-2:
6 layers, width 384, 6 heads, MLP 1536, a 8,192-token vocabulary, 8 sequences of 256 tokens.

    python -m experiments.bench hf_gpt2 --record      # this config's step beside transformers' GPT2LMHeadModel
    python run.py --config=configs/gpt2_bench.py --workdir=workdirs/gpt2_bench
    python run.py --config=configs/gpt2_bench.py:test --workdir=/tmp/tiny_gpt2_bench   # seconds, for tests

It trains on the character-level plays like configs/gpt2.py: the model has 8,192 token
rows (`model.vocab_size`), of which the data uses the first 82, so that a step costs what
it costs with a sub-word vocabulary of that size.
"""
import ml_collections

from configs import gpt2

VOCAB_SIZE = 8192
CONTEXT = 256


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in ("", "test"):
    raise ValueError(f"unknown variant {variant!r} of gpt2_bench; expected '' or 'test'")
  config = gpt2.get_config(variant)
  config.model.vocab_size = VOCAB_SIZE
  # The blockwise kernel skips the keys the causal mask hides: on the 2-core AVX-512 CPU a train
  # step took 689 ms with it and 983 ms with "xla" (and experiments/bench/attention.py: 0.64x).
  config.model.attention = "chunked"
  if variant == "test":  # the tiny model of configs/gpt2.py:test, with the benchmark's vocabulary and kernel
    return config
  config.model.update(num_layers=6, width=384, num_heads=6, mlp_dim=1536, max_len=CONTEXT, dropout_rate=0.0)
  config.data.update(context_length=CONTEXT, batch_size=8)
  config.optimizer.learning_rate = 1e-3  # a wider model than configs/gpt2.py's: a smaller step
  return config
