"""DCGAN (Radford et al. 2016): a convolutional generator trained against a convolutional discriminator.

    generator      z [b, latent_dim] -> dense -> reshape to h/2^L x w/2^L x generator_channels[0] -> norm -> ReLU
                   -> [upsample x2 -> norm -> ReLU] x (L - 1) -> upsample x2 to the image's channels -> sigmoid
    discriminator  image -> [5x5 conv stride 2 -> LeakyReLU(0.2)] x len(discriminator_channels) -> flatten -> logit

L = len(generator_channels). The generator is an image decoder like the autoencoder's (decoders/models/autoencoder.py):
it upsamples with the block `upsampling` names (decoders/layers/upsampling.py), its convolutions `kernel_size` wide,
so Odena et al. 2016's checkerboard ablation runs on it unchanged.

Radford et al.'s architecture guidelines (sec. 3) and where this follows them:
  - strided convolutions instead of pooling in the discriminator, upsampling ones in the generator: followed;
  - no fully connected hidden layers: followed (one dense projection of z, one dense logit, as the paper's);
  - ReLU in the generator, LeakyReLU (slope 0.2) in the discriminator: followed;
  - Tanh on the generator's output: a sigmoid instead, because the images here lie in [0, 1], not [-1, 1];
    sigmoid(x) = (1 + tanh(x / 2)) / 2 is the same bounded output rescaled;
  - batch normalisation in both networks: departed from. Flax's BatchNorm keeps running statistics in a mutable
    `batch_stats` collection, which the one trainer's state does not carry (experiments/trainer.py: parameters and
    optimizer states only), and with batch statistics each sample would depend on the others in its batch (what
    Salimans et al. 2016, sec. 3.4, built virtual batch normalisation to avoid). The generator normalises each
    example on its own instead (`generator_norm="layer"`: layer normalisation over a feature map's height, width
    and channels, Ba et al. 2016 — group normalisation with one group, Wu & He 2018, sec. 3.1); the discriminator
    has no normalisation, so its verdict on an image never depends on the rest of the batch and real and generated
    images may share one pass.
Weights start from the layers' LeCun-normal initialisation, not the paper's N(0, 0.02) (sec. 4): the upsampling
block, shared with the autoencoder, owns its initialisation (ICNR for pixel shuffle, which Odena's comparison needs).

Latents are uniform in [-1, 1] (sec. 4: "a 100 dimensional uniform distribution Z"). The losses are Goodfellow et
al. 2014's on the discriminator's logits: the discriminator minimises -log D(x) - log(1 - D(G(z))) (eq. 1), the
generator the non-saturating -log D(G(z)) (sec. 3).
"""
import dataclasses
import math

import flax.linen as nn
import jax

from decoders.errors import ConfigError
from decoders.layers import upsampling
from decoders.layers.partitioning import CONV_IN, CONV_OUT, EMBED, with_axes

GENERATOR_NORMS = ("layer", "none")
DISCRIMINATOR_KERNEL = 5  # Radford et al. 2016, Fig. 1: 5x5 kernels
LEAKY_SLOPE = 0.2  # Radford et al. 2016, sec. 4


def _check_widths(name: str, value) -> None:
  if not isinstance(value, tuple) or not value or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
                                                      for v in value):
    raise ConfigError(f"model.{name}={value!r} must be a non-empty tuple of positive integers")


@dataclasses.dataclass(frozen=True)
class DCGANConfig:
  image_shape: tuple[int, int, int] = (28, 28, 1)  # height, width, channels
  latent_dim: int = 100  # Radford et al. 2016, sec. 4
  generator_channels: tuple[int, ...] = (128, 64)  # the generator's feature maps, coarsest first; one doubling each
  discriminator_channels: tuple[int, ...] = (64, 128)  # one stride-2 convolution each
  upsampling: str = "transposed"  # the generator's upsampling block, one of upsampling.METHODS
  kernel_size: int = 5  # the width of the generator's upsampling convolutions (Radford et al. 2016, Fig. 1)
  generator_norm: str = "layer"  # one of GENERATOR_NORMS

  def __post_init__(self):
    shape = tuple(self.image_shape)
    if len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in shape):
      raise ConfigError(f"image_shape={self.image_shape!r} must be (height, width, channels) of positive integers")
    if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
      raise ConfigError(f"model.latent_dim={self.latent_dim!r} must be a positive integer")
    _check_widths("generator_channels", self.generator_channels)
    _check_widths("discriminator_channels", self.discriminator_channels)
    upsampling.check_method(self.upsampling)
    if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int) or self.kernel_size <= 0:
      raise ConfigError(f"model.kernel_size={self.kernel_size!r} must be a positive integer")
    if self.generator_norm not in GENERATOR_NORMS:
      raise ConfigError(f"model.generator_norm={self.generator_norm!r} is not one of {GENERATOR_NORMS}")
    factor = 2 ** len(self.generator_channels)
    height, width, _ = shape
    if height % factor or width % factor:
      raise ConfigError(
          f"images of {height}x{width} cannot be reached by doubling len(model.generator_channels)="
          f"{len(self.generator_channels)} times: height and width must be divisible by {factor}"
      )

  @property
  def start_shape(self) -> tuple[int, int, int]:
    """The feature map the generator's dense projection of z is reshaped to."""
    height, width, _ = self.image_shape
    factor = 2 ** len(self.generator_channels)
    return height // factor, width // factor, self.generator_channels[0]


def sample_latents(rng: jax.Array, batch_size: int, latent_dim: int) -> jax.Array:
  """z ~ U[-1, 1]^latent_dim, [batch_size, latent_dim] (Radford et al. 2016, sec. 4)."""
  return jax.random.uniform(rng, (batch_size, latent_dim), minval=-1.0, maxval=1.0)


def discriminator_losses(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """-log D(x) - log(1 - D(G(z))) per pair [b], with D = sigmoid(logit) (Goodfellow et al. 2014, eq. 1, negated):
  softplus(-real) + softplus(fake), exact for logits of any size."""
  return jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)


def generator_losses(fake_logits: jax.Array) -> jax.Array:
  """-log D(G(z)) per sample [b] = softplus(-logit): the non-saturating generator loss (Goodfellow et al. 2014,
  sec. 3), whose gradient is strong exactly where log(1 - D(G(z)))'s vanishes, when D rejects the samples."""
  return jax.nn.softplus(-fake_logits)


def _dense(features: int, out_axis: str | None, name: str) -> nn.Dense:
  return nn.Dense(
      features, kernel_init=with_axes(nn.initializers.lecun_normal(), None, out_axis),
      bias_init=with_axes(nn.initializers.zeros, out_axis), name=name,
  )


class Generator(nn.Module):
  """Latents [b, latent_dim] -> images [b, h, w, c] with pixels in (0, 1)."""

  config: DCGANConfig

  def _norm_and_relu(self, x: jax.Array, name: str) -> jax.Array:
    if self.config.generator_norm == "layer":  # per example: see the module docstring
      x = nn.GroupNorm(
          num_groups=1, scale_init=with_axes(nn.initializers.ones, CONV_OUT),
          bias_init=with_axes(nn.initializers.zeros, CONV_OUT), name=name,
      )(x)
    return nn.relu(x)

  @nn.compact
  def __call__(self, latents: jax.Array) -> jax.Array:
    cfg = self.config
    if latents.ndim != 2 or latents.shape[-1] != cfg.latent_dim:
      raise ConfigError(
          f"latents of shape {tuple(latents.shape)} do not fit a generator of latent_dim={cfg.latent_dim}"
      )
    x = _dense(math.prod(cfg.start_shape), EMBED, "project")(latents).reshape(latents.shape[0], *cfg.start_shape)
    x = self._norm_and_relu(x, "project_norm")
    widths = (*cfg.generator_channels[1:], cfg.image_shape[-1])
    for level, features in enumerate(widths):
      x = upsampling.Upsample(features, cfg.upsampling, 2, cfg.kernel_size, name=f"up_{level}")(x)
      if level < len(widths) - 1:
        x = self._norm_and_relu(x, f"norm_{level}")
    return jax.nn.sigmoid(x)


class Discriminator(nn.Module):
  """Images [b, h, w, c] -> logits [b] of "real" (D(x) = sigmoid(logit))."""

  config: DCGANConfig

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    cfg = self.config
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(cfg.image_shape):
      raise ConfigError(f"images of shape {tuple(images.shape)} do not fit a discriminator of "
                        f"image_shape={cfg.image_shape}")
    x = images
    for level, features in enumerate(cfg.discriminator_channels):
      x = nn.Conv(
          features, (DISCRIMINATOR_KERNEL, DISCRIMINATOR_KERNEL), strides=(2, 2), padding="SAME",
          kernel_init=with_axes(nn.initializers.lecun_normal(), None, None, CONV_IN, CONV_OUT),
          bias_init=with_axes(nn.initializers.zeros, CONV_OUT), name=f"conv_{level}",
      )(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
    return _dense(1, None, "logit")(x.reshape(x.shape[0], -1))[:, 0]


class DCGAN(nn.Module):
  """The pair; its parameters sit under "generator" and "discriminator", one optimizer's group each."""

  config: DCGANConfig

  def setup(self):
    self.generator = Generator(self.config)
    self.discriminator = Discriminator(self.config)

  def generate(self, latents: jax.Array) -> jax.Array:
    return self.generator(latents)

  def discriminate(self, images: jax.Array) -> jax.Array:
    return self.discriminator(images)

  def __call__(self, latents: jax.Array) -> jax.Array:
    """D's logits [b] of G's images of `latents`: one pass through both (what `init` traces)."""
    return self.discriminate(self.generate(latents))
