"""Latent diffusion on Fashion-MNIST (experiments/tasks/latent_diffusion.py): a class-conditional DDPM in the 7x7x4
latent space of a KL-regularised VAE, sampled by DDIM with classifier-free guidance. Train the VAE first:

    python run.py --config=configs/autoencoder.py:kl_vae --workdir=workdirs/kl_vae
    python run.py --config=configs/latent_diffusion.py --workdir=workdirs/latent_diffusion
    python run.py --config=configs/latent_diffusion.py --workdir=workdirs/latent_diffusion --mode=sample
    python run.py --config=configs/autoencoder.py:kl_vae,test --workdir=/tmp/tiny_kl_vae     # seconds, for tests,
    python run.py --config=configs/latent_diffusion.py:test --workdir=/tmp/tiny_ldm          # the VAE's workdir first

--mode=sample takes --config.sample.sampler=ddpm, --config.sample.steps=10, --config.sample.guidance=3, ...

The 28x28 images become 7x7 latents (f = 4, in the range 4-16 that Rombach et al. 2022, sec. 4.1, find balances
detail and cost). 7 is odd: the denoiser zero-pads them to 8x8 for its 3-level U-Net (8 -> 4 -> 2) and crops its
output back to 7x7 (diffusion.latent_unet_config), so the diffusion itself runs on the latents as they are.
The ",test" variant reads the 8x8 digits through a tiny kl_vae (2x2x4 latents; a 2-level U-Net needs no padding).
"""
import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in ("", "test"):
    raise ValueError(f"unknown variant {variant!r} of latent_diffusion; expected '' or 'test'")
  config = ml_collections.ConfigDict()
  config.task = "latent_diffusion"
  config.seed = 0
  config.init_from = ""  # the denoiser starts from scratch; the VAE comes from data.autoencoder_workdir
  config.data = dict(
      name="fashion_mnist", data_dir="", batch_size=128, eval_batch_size=400, autoencoder_workdir="workdirs/kl_vae"
  )
  # Ho et al. 2020's U-Net shape scaled to 8x8 latents: widths 64-128-128, GroupNorm, time + class conditioning.
  config.model = dict(
      base_width=64,
      channel_multipliers=(1, 2, 2),
      convs_per_level=2,
      skips=True,
      upsampling="transposed",
      upsampling_kernel=2,
      norm="group",
      norm_groups=8,
      dropout=0.1,  # Ho et al. 2020, appendix B (CIFAR10)
      embedding_dim=128,
  )
  config.diffusion = dict(timesteps=1000, schedule="linear", beta_start=1e-4, beta_end=0.02)  # Ho et al., sec. 4
  config.objective = dict(p_uncond=0.1)  # Ho & Salimans 2022: 0.1 and 0.2 did better than 0.5
  config.sample = dict(sampler="ddim", steps=50, eta=0.0, guidance=1.0, num_images=20)
  # After training, with an image_classifier run's workdir: the Fréchet distance of frechet_images samples to the
  # test images, as `sample` draws them and with each of ddim_steps DDIM steps.
  config.evaluation = dict(classifier_workdir="", frechet_images=2000, ddim_steps=())
  config.optimizer = dict(
      learning_rate=5e-4,
      schedule="cosine",
      warmup_steps=500,
      final_lr_fraction=0.1,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1.0,  # as Ho et al. 2020's code
  )
  config.train = dict(
      num_steps=20000,
      log_every=100,
      eval_every=2000,
      eval_batches=4,
      checkpoint_every=2000,
      keep_checkpoints=2,
      profile_steps=0,
  )
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  if variant == "test":
    config.data.update(name="sklearn_digits", batch_size=32, eval_batch_size=64, autoencoder_workdir="/tmp/tiny_kl_vae")
    config.model.update(base_width=8, channel_multipliers=(1, 2), convs_per_level=1, norm_groups=4, embedding_dim=16)
    config.diffusion.update(timesteps=100, beta_start=1e-3, beta_end=0.2)  # Ho et al.'s β x 1000/T: as small an ᾱ_T
    config.sample.update(steps=10, num_images=10)
    config.evaluation.frechet_images = 64
    config.optimizer.update(learning_rate=2e-3, warmup_steps=5)
    config.train.update(num_steps=30, log_every=5, eval_every=15, eval_batches=0, checkpoint_every=15)
  return ml_collections.ConfigDict(config)
