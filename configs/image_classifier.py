"""A small CNN classifier of Fashion-MNIST or MNIST (experiments/tasks/image_classifier.py): the feature space of the
Fréchet distance between real and generated images (experiments/image_eval.py), as no Inception weights can be had
offline.

    python run.py --config=configs/image_classifier.py --workdir=workdirs/classifier_fashion_mnist  # the default
    python run.py --config=configs/image_classifier.py:mnist --workdir=workdirs/classifier_mnist
    python run.py --config=configs/image_classifier.py:test --workdir=/tmp/tiny_classifier         # seconds, for tests

The variant names the data set ("fashion_mnist", the default, or "mnist"), then optionally ",test": a seconds-long
run on scikit-learn's 8x8 digits. 3,000 steps of 128 images (6.4 epochs of Fashion-MNIST) reach 92 % test
accuracy.
"""
import ml_collections

from configs import parse_variant

DATASETS = ("fashion_mnist", "mnist")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  name, test = parse_variant(variant, DATASETS, "image_classifier")
  config = ml_collections.ConfigDict()
  config.task = "image_classifier"
  config.seed = 0
  config.init_from = ""  # the classifier starts from scratch only
  config.data = dict(name=name, data_dir="", batch_size=128, eval_batch_size=400)
  config.model = dict(channels=(32, 64), feature_dim=128)
  config.optimizer = dict(
      learning_rate=1e-3,
      schedule="cosine",
      warmup_steps=100,
      final_lr_fraction=0.05,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=1e-4,
      clip_norm=1.0,
  )
  config.train = dict(
      num_steps=3000,
      log_every=50,
      eval_every=1000,
      eval_batches=4,
      checkpoint_every=1000,
      keep_checkpoints=2,
      profile_steps=0,
  )
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  if test:
    config.data.update(name="sklearn_digits", batch_size=32, eval_batch_size=64)
    config.model.update(channels=(8, 16), feature_dim=16)  # 8x8 digits pooled to 2x2
    config.optimizer.update(learning_rate=3e-3, warmup_steps=5, final_lr_fraction=0.1)
    config.train.update(num_steps=30, log_every=10, eval_every=15, eval_batches=0, checkpoint_every=15)
  return ml_collections.ConfigDict(config)
