"""U-Net (Ronneberger et al. 2015): a contracting path, an expanding path, and skip connections between them.

    level 0 ─ convs ──────────────────── concat ─ convs ─ 1x1 conv ─> [b, h, w, out_channels]
              └ max-pool 2x2                 ↑ upsample
      level 1 ─ convs ───────── concat ─ convs
                └ max-pool        ↑ upsample
          level 2 (bottom) ─ convs ─ dropout

Each level's width is `base_width * channel_multipliers[level]`; the paper's network is base 64, multipliers
(1, 2, 4, 8, 16) and two 3x3 convolutions per level (Fig. 1). The expanding path concatenates the contracting
path's features of the same resolution, which carry the fine localisation that pooling threw away (sec. 2);
`skips=False` leaves them out, the ablation that shows what they recover.

The same network is the denoiser of latent diffusion (Ho et al. 2020, appendix B; Rombach et al. 2022): a
`conditioning` vector per image (a `timestep_embedding` passed through an MLP, plus a class embedding) is
projected to each level's width and added to its features after the level's first convolution, as Ho et al.'s
residual blocks add the time embedding.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.layers import upsampling
from decoders.layers.partitioning import CONV_IN, CONV_OUT, EMBED, with_axes
from decoders.layers.positions import sinusoidal

NORMS = ("none", "group")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  image_height: int
  image_width: int
  image_channels: int = 1
  out_channels: int = 2  # the classes of a segmentation; the image's channels for a denoiser
  base_width: int = 16
  channel_multipliers: tuple[int, ...] = (1, 2, 4, 8)  # one level each: depth = their count
  convs_per_level: int = 2
  skips: bool = True
  upsampling: str = "transposed"  # one of decoders.layers.upsampling.METHODS
  upsampling_kernel: int = 2  # the paper's 2x2 "up-convolution"
  norm: str = "none"  # "none" (the paper) or "group" (GroupNorm, Wu & He 2018)
  norm_groups: int = 8
  dropout: float = 0.0  # at the end of the contracting path (sec. 3.1)
  conditioning_dim: int = 0  # width of the per-image conditioning vector; 0: the network takes none

  def __post_init__(self):
    for name in ("image_height", "image_width", "image_channels", "out_channels"):
      _check_positive(name, getattr(self, name), prefix="")
    for name in ("base_width", "convs_per_level", "upsampling_kernel", "norm_groups"):
      _check_positive(name, getattr(self, name))
    multipliers = self.channel_multipliers
    if not multipliers or any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in multipliers):
      raise ConfigError(f"model.channel_multipliers={multipliers!r} must be a non-empty tuple of positive integers")
    factor = 2 ** (len(multipliers) - 1)
    for name in ("image_height", "image_width"):
      size = getattr(self, name)
      if size % factor:
        raise ConfigError(
            f"{name}={size} is not divisible by {factor} = 2**(depth - 1), the downsampling of a U-Net with "
            f"{len(multipliers)} levels (model.channel_multipliers)"
        )
    upsampling.check_method(self.upsampling)
    if self.norm not in NORMS:
      raise ConfigError(f"model.norm={self.norm!r} is not one of {NORMS}")
    if self.norm == "group":
      for level, width in enumerate(self.widths):
        if width % self.norm_groups:
          raise ConfigError(
              f"model.norm_groups={self.norm_groups} does not divide level {level}'s width {width} "
              "(model.base_width x model.channel_multipliers)"
          )
    if not 0.0 <= self.dropout < 1.0:
      raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
    if self.conditioning_dim < 0:
      raise ConfigError(f"model.conditioning_dim={self.conditioning_dim} must be >= 0 (0: no conditioning)")

  @property
  def widths(self) -> tuple[int, ...]:
    """The channels of each level, top (full resolution) to bottom."""
    return tuple(self.base_width * m for m in self.channel_multipliers)


def _check_positive(name: str, value, prefix: str = "model.") -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{prefix}{name}={value!r} must be a positive integer")


def timestep_embedding(timesteps: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """[b, dim] sinusoids of diffusion timesteps [b] (Ho et al. 2020, sec. 4: the Transformer's position encoding).

  Ho et al. lay the sines and cosines out as two halves, Vaswani et al. interleave them; a learned projection
  follows either way, so this reuses the interleaved `sinusoidal`.
  """
  return sinusoidal(timesteps, dim, max_timescale=max_period)


def _conv(features: int, kernel: int, name: str) -> nn.Conv:
  # He initialisation, as the paper's sec. 3: "a Gaussian distribution with a standard deviation of sqrt(2/N)".
  return nn.Conv(
      features, (kernel, kernel), padding="SAME",
      kernel_init=with_axes(nn.initializers.he_normal(), None, None, CONV_IN, CONV_OUT),
      bias_init=with_axes(nn.initializers.zeros, CONV_OUT), name=name,
  )


class ConvBlock(nn.Module):
  """`convs_per_level` x (3x3 conv -> norm -> ReLU); the projected conditioning joins after the first conv.

  The paper's convolutions are unpadded, so each shrinks the map by 2 pixels and the skip must be cropped to
  fit (Fig. 1), and a tile's output is smaller than its input. Padding SAME keeps every map at its level's
  size: output = input size, nothing is cropped, and any image divisible by 2**(depth - 1) fits.
  """

  config: UNetConfig
  width: int

  @nn.compact
  def __call__(self, x: jax.Array, conditioning: jax.Array | None) -> jax.Array:
    cfg = self.config
    for index in range(cfg.convs_per_level):
      x = _conv(self.width, 3, f"conv_{index}")(x)
      if index == 0 and conditioning is not None:
        # Ho et al. 2020's residual block: h += Dense(nonlinearity(temb))[:, None, None, :].
        projection = nn.Dense(
            self.width, kernel_init=with_axes(nn.initializers.lecun_normal(), EMBED, CONV_OUT),
            bias_init=with_axes(nn.initializers.zeros, CONV_OUT), name="conditioning",
        )
        x = x + projection(nn.silu(conditioning))[:, None, None, :]
      if cfg.norm == "group":
        x = nn.GroupNorm(
            num_groups=cfg.norm_groups, scale_init=with_axes(nn.initializers.ones, CONV_OUT),
            bias_init=with_axes(nn.initializers.zeros, CONV_OUT), name=f"norm_{index}",
        )(x)
      x = nn.relu(x)
    return x


def _check_inputs(cfg: UNetConfig, images: jax.Array, conditioning: jax.Array | None) -> None:
  """One-line ConfigErrors at trace time, before XLA compiles anything."""
  expected = (cfg.image_height, cfg.image_width, cfg.image_channels)
  if images.ndim != 4 or tuple(images.shape[1:]) != expected:
    shape = ", ".join(map(str, expected))
    raise ConfigError(f"images of shape {tuple(images.shape)} do not fit the U-Net's [batch, {shape}]")
  if conditioning is None:
    if cfg.conditioning_dim:
      dim = cfg.conditioning_dim
      raise ConfigError(f"model.conditioning_dim={dim} needs conditioning [batch, {dim}]")
    return
  if not cfg.conditioning_dim:
    raise ConfigError("conditioning was passed to a U-Net with model.conditioning_dim=0, which takes none")
  if conditioning.shape != (images.shape[0], cfg.conditioning_dim):
    raise ConfigError(
        f"conditioning of shape {tuple(conditioning.shape)} is not [batch={images.shape[0]}, "
        f"model.conditioning_dim={cfg.conditioning_dim}]"
    )


class UNet(nn.Module):
  """images [b, h, w, image_channels] (and conditioning [b, conditioning_dim]) -> logits [b, h, w, out_channels]."""

  config: UNetConfig

  @nn.compact
  def __call__(self, images: jax.Array, conditioning: jax.Array | None = None, train: bool = False) -> jax.Array:
    cfg = self.config
    _check_inputs(cfg, images, conditioning)
    widths = cfg.widths
    bottom = len(widths) - 1
    skips, x = [], images
    for level, width in enumerate(widths):  # contracting path
      x = ConvBlock(cfg, width, name=f"down_{level}")(x, conditioning)
      if level < bottom:
        skips.append(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
    for level in reversed(range(bottom)):  # expanding path
      x = upsampling.Upsample(widths[level], cfg.upsampling, 2, cfg.upsampling_kernel, name=f"upsample_{level}")(x)
      if cfg.skips:
        x = jnp.concatenate([skips[level], x], axis=-1)  # Fig. 1's "copy and crop", nothing to crop here
      x = ConvBlock(cfg, widths[level], name=f"up_{level}")(x, conditioning)
    return _conv(cfg.out_channels, 1, "to_outputs")(x)
