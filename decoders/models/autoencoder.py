"""Autoencoders whose decoder mirrors the encoder: MLP (Hinton & Salakhutdinov 2006) or convolutional (Masci et al.
2011), and the pixel likelihoods their reconstructions are scored with.

    mlp   image -> flatten -> [dense + gelu] x N -> dense latent -> [dense + gelu] x N (reversed) -> dense -> image
    conv  image -> [3x3 conv stride 2 + gelu] x N -> dense latent -> dense -> [upsample x2] x N -> image
    conv, latent_channels > 0: a spatial latent, no dense bottleneck (Rombach et al. 2022, sec. 3: downsampling by
          f = 2^N to latents [h/f, w/f, c]): image -> [3x3 conv stride 2 + gelu] x N -> 3x3 conv to c channels
          -> 3x3 conv + gelu -> [upsample x2] x N -> image; `latent_dim` is then unused

The convolutional decoder undoes the encoder level by level with the upsampling block `upsampling` names
(decoders/layers/upsampling.py: transposed convolution, nearest/bilinear resize + convolution, pixel shuffle), its
convolutions `kernel_size` wide: the two knobs of Odena et al. 2016's checkerboard ablation. The encoder's
convolutions stay 3x3, so that ablation changes the decoder alone.

The decoder outputs one number per pixel and channel, read by `likelihood`:
    bernoulli  logits: log p(x|z) = sum x log sigmoid(l) + (1 - x) log sigmoid(-l), the binary cross-entropy with
               intensities in [0, 1] as targets (Kingma & Welling 2013, appendix C.1)
    gaussian   means, under one learned variance shared by every pixel (a "calibrated decoder"; Rybkin et al.
               2021, sec. 3): log p(x|z) = sum -½ (log 2πσ² + (x - μ)² / σ²)
Both in nats per image, so losses and bounds compare with the papers'.

The denoising autoencoder is this model trained on corrupted inputs (decoders/layers/corruption.py); the VAE
(decoders/models/vae.py) reuses these encoder and decoder bodies with a two-headed encoder.
"""
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import upsampling
from decoders.layers.partitioning import CONV_IN, CONV_OUT, EMBED, with_axes

ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")
# The fields each architecture reads; a config setting another's is refused (experiments/tasks/autoencoder.py).
ARCHITECTURE_FIELDS = {"mlp": ("hidden_sizes",), "conv": ("channels", "upsampling", "kernel_size", "latent_channels")}


def _positive_ints(value) -> bool:
  return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  image_shape: tuple[int, int, int] = (28, 28, 1)  # height, width, channels
  architecture: str = "conv"  # one of ARCHITECTURES
  hidden_sizes: tuple[int, ...] = (512, 256)  # mlp: the encoder's hidden widths; the decoder's are reversed
  channels: tuple[int, ...] = (16, 32)  # conv: the width of each stride-2 level (N levels divide the size by 2^N)
  upsampling: str = "transposed"  # conv: the decoder's upsampling block, one of upsampling.METHODS
  kernel_size: int = 3  # conv: the width of the decoder's upsampling convolutions
  latent_dim: int = 16
  latent_channels: int = 0  # conv: > 0 makes the latent spatial, [h/2^N, w/2^N, latent_channels]; 0: latent_dim wide
  likelihood: str = "bernoulli"  # one of LIKELIHOODS

  def __post_init__(self):
    if len(self.image_shape) != 3 or not _positive_ints(tuple(self.image_shape)):
      raise ConfigError(f"image_shape={self.image_shape!r} must be (height, width, channels) of positive integers")
    if self.architecture not in ARCHITECTURES:
      raise ConfigError(f"model.architecture={self.architecture!r} is not one of {ARCHITECTURES}")
    if self.likelihood not in LIKELIHOODS:
      raise ConfigError(f"model.likelihood={self.likelihood!r} is not one of {LIKELIHOODS}")
    if not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
      raise ConfigError(f"model.latent_dim={self.latent_dim!r} must be a positive integer")
    if isinstance(self.latent_channels, bool) or not isinstance(self.latent_channels, int) or self.latent_channels < 0:
      raise ConfigError(f"model.latent_channels={self.latent_channels!r} must be an integer >= 0 (0: a vector latent)")
    if self.architecture == "mlp" and self.latent_channels:
      raise ConfigError(f"model.latent_channels={self.latent_channels} needs model.architecture='conv': a spatial "
                        "latent is a convolutional feature map")
    if self.architecture == "mlp":
      if not _positive_ints(self.hidden_sizes):
        raise ConfigError(f"model.hidden_sizes={self.hidden_sizes!r} must be a tuple of positive integers")
      return
    if not self.channels or not _positive_ints(self.channels):
      raise ConfigError(f"model.channels={self.channels!r} must be a non-empty tuple of positive integers")
    upsampling.check_method(self.upsampling)
    if not isinstance(self.kernel_size, int) or self.kernel_size <= 0:
      raise ConfigError(f"model.kernel_size={self.kernel_size!r} must be a positive integer")
    factor = 2 ** len(self.channels)
    height, width, _ = self.image_shape
    if height % factor or width % factor:
      raise ConfigError(
          f"images of {height}x{width} cannot be halved len(model.channels)={len(self.channels)} times: "
          f"height and width must be divisible by {factor}"
      )

  @property
  def bottleneck_shape(self) -> tuple[int, int, int]:
    """conv: the feature map the encoder flattens and the decoder starts from."""
    height, width, _ = self.image_shape
    factor = 2 ** len(self.channels)
    return height // factor, width // factor, self.channels[-1]

  @property
  def latent_shape(self) -> tuple[int, ...]:
    """One latent's shape: [h/2^N, w/2^N, latent_channels] if spatial, else [latent_dim]."""
    return (*self.bottleneck_shape[:2], self.latent_channels) if self.latent_channels else (self.latent_dim,)


def _dense(features: int, name: str) -> nn.Module:
  return nn.Dense(
      features,
      kernel_init=with_axes(nn.initializers.lecun_normal(), None, EMBED),
      bias_init=with_axes(nn.initializers.zeros, EMBED),
      name=name,
  )


def _conv3x3(features: int, name: str, stride: int = 1) -> nn.Module:
  return nn.Conv(
      features,
      (3, 3),
      strides=(stride, stride),
      padding="SAME",
      kernel_init=with_axes(nn.initializers.lecun_normal(), None, None, CONV_IN, CONV_OUT),
      bias_init=with_axes(nn.initializers.zeros, CONV_OUT),
      name=name,
  )


class Encoder(nn.Module):
  """Images [b, h, w, c] -> [b, head_features] (default: the latent, latent_dim wide); a spatial latent's encoder
  gives [b, h/2^N, w/2^N, head_features] (default latent_channels)."""

  config: AutoencoderConfig
  head_features: int | None = None  # the VAE's encoder outputs a mean and a log-variance: twice the latent's width

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    cfg = self.config
    if tuple(images.shape[1:]) != tuple(cfg.image_shape):
      raise ConfigError(f"images of shape {tuple(images.shape[1:])} do not fit a model of image_shape={cfg.image_shape}")
    x = images
    if cfg.architecture == "conv":
      for i, features in enumerate(cfg.channels):
        x = nn.gelu(_conv3x3(features, f"conv_{i}", stride=2)(x))
    if cfg.latent_channels:  # the last level's map is the latent (Rombach et al. 2022, sec. 3)
      return _conv3x3(self.head_features or cfg.latent_channels, "to_latent")(x)
    x = x.reshape(x.shape[0], -1)
    if cfg.architecture == "mlp":
      for i, features in enumerate(cfg.hidden_sizes):
        x = nn.gelu(_dense(features, f"hidden_{i}")(x))
    return _dense(self.head_features or cfg.latent_dim, "to_latent")(x)


class Decoder(nn.Module):
  """Latents [b, *latent_shape] -> one output per pixel and channel [b, h, w, c]: logits or means (`likelihood`)."""

  config: AutoencoderConfig

  @nn.compact
  def __call__(self, latents: jax.Array) -> jax.Array:
    cfg = self.config
    if cfg.latent_channels:
      if tuple(latents.shape[1:]) != cfg.latent_shape:
        raise ConfigError(
            f"latents of shape {tuple(latents.shape[1:])} do not fit a decoder of latent shape {cfg.latent_shape}"
        )
    elif latents.shape[-1] != cfg.latent_dim:
      raise ConfigError(f"latents of width {latents.shape[-1]} do not fit a decoder of latent_dim={cfg.latent_dim}")
    if cfg.architecture == "mlp":
      x = latents
      for i, features in enumerate(reversed(cfg.hidden_sizes)):
        x = nn.gelu(_dense(features, f"hidden_{i}")(x))
      return _dense(math.prod(cfg.image_shape), "to_pixels")(x).reshape(latents.shape[0], *cfg.image_shape)
    if cfg.latent_channels:
      x = nn.gelu(_conv3x3(cfg.channels[-1], "from_latent")(latents))
    else:
      x = nn.gelu(_dense(math.prod(cfg.bottleneck_shape), "from_latent")(latents))
      x = x.reshape(latents.shape[0], *cfg.bottleneck_shape)
    widths = [*reversed(cfg.channels[:-1]), cfg.image_shape[-1]]  # the encoder's levels in reverse, then the image
    for i, features in enumerate(widths):
      x = upsampling.Upsample(features, cfg.upsampling, 2, cfg.kernel_size, name=f"up_{i}")(x)
      if i < len(widths) - 1:
        x = nn.gelu(x)
    return x


def bernoulli_log_likelihood(images: jax.Array, logits: jax.Array) -> jax.Array:
  """log p(images | logits) per image [b], in nats: minus the binary cross-entropy summed over pixels."""
  per_pixel = images * jax.nn.log_sigmoid(logits) + (1.0 - images) * jax.nn.log_sigmoid(-logits)
  return per_pixel.reshape(per_pixel.shape[0], -1).sum(axis=-1)


def gaussian_log_likelihood(images: jax.Array, means: jax.Array, log_variance: jax.Array) -> jax.Array:
  """log N(images; means, exp(log_variance)) per image [b], in nats, summed over pixels."""
  per_pixel = -0.5 * (jnp.log(2 * jnp.pi) + log_variance + jnp.square(images - means) * jnp.exp(-log_variance))
  return per_pixel.reshape(per_pixel.shape[0], -1).sum(axis=-1)


def pixel_means(likelihood: str, outputs: jax.Array) -> jax.Array:
  """The image the decoder's outputs stand for: E[x | z] under `likelihood`."""
  return jax.nn.sigmoid(outputs) if likelihood == "bernoulli" else outputs


class PixelLikelihood(nn.Module):
  """log p(images | decoder outputs) per image [b], in nats; the gaussian one owns its learned log-variance."""

  kind: str  # one of LIKELIHOODS

  @nn.compact
  def __call__(self, images: jax.Array, outputs: jax.Array) -> jax.Array:
    if self.kind == "bernoulli":
      return bernoulli_log_likelihood(images, outputs)
    # σ² = 1 at the start: broad, so early gradients are those of the squared error (Rybkin et al. 2021).
    log_variance = self.param("log_variance", with_axes(nn.initializers.zeros), ())
    return gaussian_log_likelihood(images, outputs, log_variance)


class Autoencoder(nn.Module):
  config: AutoencoderConfig

  def setup(self):
    self.encoder = Encoder(self.config)
    self.decoder = Decoder(self.config)
    self.likelihood = PixelLikelihood(self.config.likelihood)

  def encode(self, images: jax.Array) -> jax.Array:
    return self.encoder(images)

  def decode(self, latents: jax.Array) -> jax.Array:
    return self.decoder(latents)

  def __call__(self, inputs: jax.Array, targets: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(decoder outputs [b, h, w, c], log p(targets | outputs) [b]) for `inputs`; `targets` default to the inputs
    (a denoising autoencoder reads corrupted inputs and scores the clean targets)."""
    outputs = self.decode(self.encode(inputs))
    return outputs, self.likelihood(inputs if targets is None else targets, outputs)
