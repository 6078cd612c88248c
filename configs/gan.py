"""DCGAN (Radford et al. 2016) on Fashion-MNIST through the one trainer (experiments/tasks/gan.py).

    python run.py --config=configs/gan.py --workdir=workdirs/dcgan                       # dcgan (the default)
    python run.py --config=configs/gan.py:dcgan,test --workdir=/tmp/tiny_gan             # seconds, for tests

The variant is "dcgan", then optionally ",test": a seconds-long run on scikit-learn's 8x8 digits. The generator's
upsampling is Odena et al. 2016's ablation: --config.model.upsampling=nearest (or bilinear, pixel_shuffle,
transposed) and --config.model.kernel_size=3 (or 4: a kernel the stride divides; 5, the paper's, it does not).
"""
import ml_collections

from configs import parse_variant

VARIANTS = ("dcgan",)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  name, test = parse_variant(variant, VARIANTS, "gan")
  config = ml_collections.ConfigDict()
  config.task = "gan"
  config.seed = 0
  config.init_from = ""  # the gan task starts from scratch only
  config.data = dict(name="fashion_mnist", data_dir="", batch_size=128, eval_batch_size=400)  # the paper's batch
  # 28x28: z -> 7x7x128 -> 14x14x64 -> 28x28x1, the paper's 64x64 generator (Fig. 1) two levels shorter.
  config.model = dict(
      latent_dim=100,
      generator_channels=(128, 64),
      discriminator_channels=(64, 128),
      upsampling="transposed",
      kernel_size=5,
      generator_norm="layer",
  )
  # Radford et al. 2016, sec. 4: Adam, learning rate 0.0002, β1 0.5, for both networks; no decay, no clipping
  # (clip_norm far above any gradient norm seen here).
  config.optimizer = dict(
      learning_rate=2e-4,
      schedule="constant",
      warmup_steps=0,
      final_lr_fraction=1.0,
      b1=0.5,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1e6,
  )
  config.train = dict(
      num_steps=3000,  # ~6 epochs of Fashion-MNIST
      log_every=50,
      eval_every=1000,
      eval_batches=4,
      checkpoint_every=1000,
      keep_checkpoints=2,
      profile_steps=0,  # > 0: trace that many steps with jax.profiler into <workdir>/profile
  )
  # After training, with an image_classifier run's workdir: the Fréchet distance of frechet_images generated images
  # to the test images, in that classifier's features ("": none).
  config.evaluation = dict(classifier_workdir="", frechet_images=2000)
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  if test:  # 8x8 digits: z -> 2x2 -> 4x4 -> 8x8
    config.data.update(name="sklearn_digits", batch_size=32, eval_batch_size=64)
    config.model.update(latent_dim=16, generator_channels=(32, 16), discriminator_channels=(16, 32))
    config.optimizer.learning_rate = 1e-3
    config.train.update(num_steps=40, log_every=10, eval_every=20, eval_batches=0, checkpoint_every=20)
    config.evaluation.frechet_images = 64
  return ml_collections.ConfigDict(config)
