"""Convolutional autoencoder (Hinton & Salakhutdinov 2006; Masci et al. 2011).

    image -> [conv stride 2] x N -> dense latent -> dense -> [transposed conv stride 2] x N -> image

The decoder half mirrors the encoder with transposed convolutions, each doubling
the resolution. Image side must be divisible by 2**len(channels).
"""
import dataclasses

import flax.linen as nn
import jax

from decoders.errors import ConfigError
from decoders.layers.partitioning import CONV_IN, CONV_OUT, EMBED, with_axes


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  image_size: int
  image_channels: int = 1
  channels: tuple[int, ...] = (16, 32)
  latent_dim: int = 16

  def __post_init__(self):
    if not self.channels or any(not isinstance(c, int) or c <= 0 for c in self.channels):
      raise ConfigError(f"model.channels={self.channels!r} must be a non-empty tuple of positive integers")
    factor = 2 ** len(self.channels)
    if self.image_size % factor:
      raise ConfigError(
          f"model.image_size={self.image_size} is not divisible by 2**len(model.channels)={factor}"
      )
    if self.latent_dim <= 0:
      raise ConfigError(f"model.latent_dim={self.latent_dim} must be positive")


def _conv(features: int, transpose: bool, name: str) -> nn.Module:
  layer = nn.ConvTranspose if transpose else nn.Conv
  return layer(
      features,
      (3, 3),
      strides=(2, 2),
      padding="SAME",
      kernel_init=with_axes(nn.initializers.lecun_normal(), None, None, CONV_IN, CONV_OUT),
      bias_init=with_axes(nn.initializers.zeros, CONV_OUT),
      name=name,
  )


def _dense(features: int, name: str) -> nn.Module:
  return nn.Dense(
      features,
      kernel_init=with_axes(nn.initializers.lecun_normal(), None, EMBED),
      bias_init=with_axes(nn.initializers.zeros, EMBED),
      name=name,
  )


class Encoder(nn.Module):
  config: AutoencoderConfig

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images
    for i, features in enumerate(self.config.channels):
      x = nn.gelu(_conv(features, False, f"conv_{i}")(x))
    return _dense(self.config.latent_dim, "to_latent")(x.reshape(x.shape[0], -1))


class Decoder(nn.Module):
  """Latent [batch, latent_dim] -> image logits [batch, H, W, C] (a sigmoid gives intensities)."""

  config: AutoencoderConfig

  @nn.compact
  def __call__(self, latent: jax.Array) -> jax.Array:
    cfg = self.config
    side = cfg.image_size // 2 ** len(cfg.channels)
    x = _dense(side * side * cfg.channels[-1], "from_latent")(latent)
    x = nn.gelu(x).reshape(latent.shape[0], side, side, cfg.channels[-1])
    widths = list(reversed(cfg.channels[:-1])) + [cfg.image_channels]
    for i, features in enumerate(widths):
      x = _conv(features, True, f"deconv_{i}")(x)
      if i < len(widths) - 1:
        x = nn.gelu(x)
    return x


class Autoencoder(nn.Module):
  config: AutoencoderConfig

  def setup(self):
    self.encoder = Encoder(self.config)
    self.decoder = Decoder(self.config)

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.decoder(self.encoder(images))
