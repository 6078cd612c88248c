"""Autoencoders of Fashion-MNIST: convolutional, MLP, denoising, and the VAE (experiments/tasks/autoencoder.py).

    python run.py --config=configs/autoencoder.py --workdir=workdirs/autoencoder_conv               # conv (default)
    python run.py --config=configs/autoencoder.py:mlp --workdir=workdirs/autoencoder_mlp
    python run.py --config=configs/autoencoder.py:denoising --workdir=workdirs/autoencoder_denoising
    python run.py --config=configs/autoencoder.py:vae --workdir=workdirs/vae
    python run.py --config=configs/autoencoder.py:kl_vae --workdir=workdirs/kl_vae      # latent diffusion's autoencoder
    python run.py --config=configs/autoencoder.py:conv,test --workdir=/tmp/tiny_ae                  # seconds, for tests

The variant names the model, then optionally ",test": a seconds-long run on scikit-learn's 8x8 digits. Any field
can be overridden: --config.model.upsampling=pixel_shuffle (or nearest, bilinear), --config.model.kernel_size=4,
--config.objective.corruption=gaussian --config.objective.corruption_level=0.3, --config.model.likelihood=gaussian,
--config.data.classes='(0,)' (a one-class anomaly detector: the final evaluation adds the AUROC against the other
classes), --config.evaluation.corruption_levels='(0.25,0.5)' (the PSNR from inputs masked that much).
"""
import ml_collections

from configs import parse_variant

VARIANTS = ("conv", "mlp", "denoising", "vae", "kl_vae")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  name, test = parse_variant(variant, VARIANTS, "autoencoder")
  config = ml_collections.ConfigDict()
  config.task = "autoencoder"
  config.seed = 0
  config.init_from = ""  # the autoencoder task starts from scratch only
  # classes: the labels to train on, () for all; one class makes a one-class anomaly detector (data.classes=(0,)).
  config.data = dict(name="fashion_mnist", data_dir="", batch_size=128, eval_batch_size=400, classes=())
  conv = dict(architecture="conv", channels=(32, 64), upsampling="transposed", kernel_size=3)
  if name == "mlp":
    config.model = dict(kind="autoencoder", architecture="mlp", hidden_sizes=(512, 256), latent_dim=32)
  elif name == "vae":
    config.model = dict(kind="vae", **conv, latent_dim=16)
  elif name == "kl_vae":  # Rombach et al. 2022, sec. 3: a spatial latent, 28x28 -> 7x7x4 (f = 4)
    config.model = dict(kind="vae", **conv, latent_channels=4)
  else:
    config.model = dict(kind="autoencoder", **conv, latent_dim=32)
  config.model.likelihood = "bernoulli"
  config.objective = dict(corruption="none")
  if name == "denoising":  # Vincent et al. 2008: a quarter of the pixels masked out
    config.objective.update(corruption="mask", corruption_level=0.25)
  elif name == "vae":  # β = 1: the ELBO itself; K = 100 importance samples for the reported log-likelihood
    config.objective.update(beta=1.0, importance_samples=100)
  elif name == "kl_vae":  # "KL-reg" (Rombach et al. 2022, sec. 3): a small β only nudges q(z|x) towards N(0, I)
    config.objective.update(beta=1e-3, importance_samples=10)
  # After training: PSNR from inputs with each level of this corruption; a VAE's prior samples' Fréchet distance in
  # the features of the image_classifier run in classifier_workdir ("": none).
  config.evaluation = dict(corruption="mask", corruption_levels=(), classifier_workdir="", frechet_images=2000)
  if name == "denoising":
    config.evaluation.corruption_levels = (0.1, 0.25, 0.5, 0.75)
  config.optimizer = dict(
      learning_rate=2e-3,
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
      num_steps=4000,
      log_every=50,
      eval_every=1000,
      eval_batches=4,
      checkpoint_every=1000,
      keep_checkpoints=2,
      profile_steps=0,  # > 0: trace that many steps with jax.profiler into <workdir>/profile
  )
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  if test:
    config.data.update(name="sklearn_digits", batch_size=32, eval_batch_size=64)
    if name == "mlp":
      config.model.update(hidden_sizes=(64,), latent_dim=16)
    else:  # 8x8 digits: two levels to a 2x2 bottleneck
      config.model.channels = (16, 32)
      if name != "kl_vae":  # a 2x2x4 spatial latent has no latent_dim
        config.model.latent_dim = 16 if name != "vae" else 8
    if name in ("vae", "kl_vae"):
      config.objective.importance_samples = 8
    config.evaluation.frechet_images = 64
    config.optimizer.update(learning_rate=3e-3, warmup_steps=50, final_lr_fraction=0.1)
    config.train.update(num_steps=60, log_every=10, eval_every=30, eval_batches=0, checkpoint_every=30)
  return ml_collections.ConfigDict(config)
