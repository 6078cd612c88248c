"""Convolutional autoencoder on scikit-learn's 8x8 digits: the trainer's second, non-token task.

    python run.py --config=configs/digits_autoencoder.py --workdir=workdirs/digits_autoencoder
    python run.py --config=configs/digits_autoencoder.py:test --workdir=/tmp/tiny_ae
"""
import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "autoencoder"
  config.seed = 0
  config.init_from = ""  # the autoencoder task starts from scratch only
  config.data = dict(name="sklearn_digits", data_dir="", batch_size=64, eval_batch_size=64)
  config.model = dict(channels=(16, 32), latent_dim=16)
  config.optimizer = dict(
      learning_rate=3e-3,
      schedule="cosine",
      warmup_steps=50,
      final_lr_fraction=0.1,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=1e-4,
      clip_norm=1.0,
  )
  config.train = dict(
      num_steps=2000,
      log_every=50,
      eval_every=500,
      eval_batches=0,
      checkpoint_every=500,
      keep_checkpoints=2,
      profile_steps=0,  # > 0: trace that many steps with jax.profiler into <workdir>/profile
  )
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  if variant == "test":
    config.data.batch_size = 32
    config.train.update(num_steps=60, log_every=10, eval_every=30, checkpoint_every=30)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of digits_autoencoder; expected '' or 'test'")
  return ml_collections.ConfigDict(config)
