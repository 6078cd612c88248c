"""Fine-tunes SmolLM2-135M-Instruct on the Shakespeare plays, from its GGUF weights, with the one trainer.

    python run.py --config=configs/smollm2_shakespeare.py --workdir=workdirs/smollm2_shakespeare   # ~25 min here
    python run.py --config=configs/smollm2_shakespeare.py --mode=eval    # the weights before fine-tuning
    python -m experiments.reproduce smollm2_shakespeare                  # before and after, beside `make run`'s model

The weights come from init_from (configs/smollm2.py); the optimizer starts fresh and the
run checkpoints and resumes like any other. bfloat16 compute and full rematerialisation
(recompute each block in the backward pass) keep a 135 M model's step within this
CPU's memory; 300 steps of 8 x 128 tokens (~1 M characters, a fifth of the training
plays) fit the 30-minute budget. Losses are per token of SmolLM2's tokenizer and per
character, so they compare with the character-level model of `make run`.
"""
import ml_collections

from configs import smollm2


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in ("", "test"):
    raise ValueError(f"unknown variant {variant!r} of smollm2_shakespeare; expected '' or 'test'")
  config = smollm2.get_config(variant)
  config.model.update(dtype="bfloat16", remat="full")
  config.data.update(context_length=128, batch_size=8, eval_batch_size=8)
  # A small peak rate and no weight decay: adapt the pretrained weights, do not pull them to zero.
  config.optimizer.update(learning_rate=1e-4, warmup_steps=20, weight_decay=0.0, final_lr_fraction=0.1)
  config.train.update(num_steps=300, log_every=10, eval_every=100, eval_batches=4, checkpoint_every=100)
  config.train.keep_checkpoints = 1  # 1.6 GB each: parameters and two Adam moments in float32
  config.sample.update(prompt="ROMEO:\n", num_tokens=64, temperature=0.8)
  if variant == "test":
    config.data.update(context_length=16, batch_size=8)
    config.train.update(num_steps=2, log_every=1, eval_every=1, eval_batches=1, checkpoint_every=1)
    config.sample.num_tokens = 3
  return ml_collections.ConfigDict(config)
