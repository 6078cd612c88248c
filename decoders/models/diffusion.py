"""Denoising diffusion (Ho et al. 2020) and its samplers, over any denoiser ε_θ(x_t, t, labels) -> ε.

    forward process   q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I),  ᾱ_t = Π_{s<=t} (1 - β_s)      Ho et al., eq. 4
    β schedule        "linear": β_1..β_T evenly from 1e-4 to 0.02 (Ho et al., sec. 4); "cosine": ᾱ_t = f(t) / f(0),
                      f(t) = cos²((t/T + s) / (1 + s) · π/2), s = 0.008, β_t clipped at 0.999 (Nichol & Dhariwal
                      2021, eq. 17)
    loss              L_simple = || ε - ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, t) ||², t ~ U{1..T}    Ho et al., eq. 14
    DDPM sampler      x_{t-1} = (x_t - β_t / sqrt(1 - ᾱ_t) ε_θ) / sqrt(α_t) + σ_t z, σ_t² = β̃_t or β_t,
                      β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), no noise at t = 1        Ho et al., Algorithm 2 and sec. 3.2
    DDIM sampler      x_{t'} = sqrt(ᾱ_{t'}) x̂_0 + sqrt(1 - ᾱ_{t'} - σ²) ε_θ + σ z over a sub-sequence t > t' of the T
                      steps, x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε_θ) / sqrt(ᾱ_t),
                      σ = η sqrt((1 - ᾱ_{t'}) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_{t'})       Song et al. 2021, eq. 12 and 16
    guidance          the label is dropped to a null label with probability p_uncond in training; sampling uses
                      ε̃ = (1 + w) ε_θ(x, c) - w ε_θ(x, ∅)                          Ho & Salimans 2022, eq. 6

DDIM with η = 0 is deterministic given x_T; with η = 1 and all T steps it is the DDPM sampler with σ_t² = β̃_t
(the posterior variance, Song et al. sec. 4.1), the two formulas agreeing sample by sample under the same noise.
Each sampler is one `jax.lax.scan` over its timesteps: one compiled loop, the denoiser traced once.

Timesteps are 0-based indices here: index i is the paper's step t = i + 1, and the denoiser sees i.

`LatentDenoiser` is the ε_θ of latent diffusion (Rombach et al. 2022, sec. 3.2): decoders/models/unet.py's U-Net
over autoencoder latents, conditioned on a timestep embedding passed through an MLP (Ho et al., appendix B) plus a
class embedding with one extra row for the null label.
"""
import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from decoders.errors import ConfigError
from decoders.layers.partitioning import EMBED, with_axes
from decoders.models.unet import UNet, UNetConfig, timestep_embedding

SCHEDULES = ("linear", "cosine")
DDPM_VARIANCES = ("posterior", "beta")  # σ_t² = β̃_t or β_t (Ho et al. 2020, sec. 3.2: both work as well)
COSINE_OFFSET = 0.008  # s of Nichol & Dhariwal 2021, eq. 17
MAX_BETA = 0.999  # their clipping, against a singularity at t = T

# ε_θ(x_t [b, ...], timesteps int [b], labels int [b] or None) -> ε [b, ...]
Denoiser = Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  timesteps: int = 1000  # T
  schedule: str = "linear"  # one of SCHEDULES
  beta_start: float = 1e-4  # linear: β_1
  beta_end: float = 0.02  # linear: β_T

  def __post_init__(self):
    if isinstance(self.timesteps, bool) or not isinstance(self.timesteps, int) or self.timesteps < 1:
      raise ConfigError(f"diffusion.timesteps={self.timesteps!r} must be a positive integer")
    if self.schedule not in SCHEDULES:
      raise ConfigError(f"diffusion.schedule={self.schedule!r} is not one of {SCHEDULES}")
    if not 0.0 < self.beta_start <= self.beta_end < 1.0:
      raise ConfigError(
          f"diffusion.beta_start={self.beta_start} and diffusion.beta_end={self.beta_end} must satisfy "
          "0 < beta_start <= beta_end < 1"
      )


def alpha_bars(config: DiffusionConfig) -> jax.Array:
  """ᾱ float32 [T]: index i holds ᾱ_{i+1}, computed in float64 so that small β lose nothing to rounding."""
  if config.schedule == "linear":
    betas = np.linspace(config.beta_start, config.beta_end, config.timesteps, dtype=np.float64)
  else:
    fraction = np.arange(config.timesteps + 1) / config.timesteps  # t / T for t = 0..T
    f = np.square(np.cos((fraction + COSINE_OFFSET) / (1 + COSINE_OFFSET) * np.pi / 2))
    betas = np.minimum(1.0 - f[1:] / f[:-1], MAX_BETA)
  return jnp.asarray(np.cumprod(1.0 - betas), jnp.float32)


def _per_example(values: jax.Array, like: jax.Array) -> jax.Array:
  """values [b] shaped to broadcast against `like` [b, ...]."""
  return values.reshape(-1, *(1,) * (like.ndim - 1))


def q_sample(alpha_bar: jax.Array, x0: jax.Array, timesteps: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, a draw of q(x_t | x_0) (Ho et al. 2020, eq. 4)."""
  a = _per_example(alpha_bar[timesteps], x0)
  return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


def l_simple(
    denoiser: Denoiser, alpha_bar: jax.Array, x0: jax.Array, timesteps: jax.Array, noise: jax.Array,
    labels: jax.Array | None = None,
) -> jax.Array:
  """|| ε - ε_θ(x_t, t) ||² per example [b], the mean over its dimensions (Ho et al. 2020, eq. 14); the caller draws
  t uniformly from [0, T) and ε ~ N(0, I)."""
  predicted = denoiser(q_sample(alpha_bar, x0, timesteps, noise), timesteps, labels)
  return jnp.square(noise - predicted).reshape(x0.shape[0], -1).mean(axis=-1)


def drop_labels(rng: jax.Array, labels: jax.Array, p_uncond: float, null_label: int) -> jax.Array:
  """Each label replaced by the null label with probability p_uncond: one network learns both ε_θ(x, c) and
  ε_θ(x, ∅) (Ho & Salimans 2022, Algorithm 1)."""
  return jnp.where(jax.random.bernoulli(rng, p_uncond, labels.shape), null_label, labels)


def classifier_free_guidance(denoiser: Denoiser, guidance: float, null_label: int) -> Denoiser:
  """ε̃(x, t, c) = (1 + w) ε_θ(x, t, c) - w ε_θ(x, t, ∅) (Ho & Salimans 2022, eq. 6), both from one call on a doubled
  batch; w = 0 is the conditional model."""

  def guided(x: jax.Array, timesteps: jax.Array, labels: jax.Array | None) -> jax.Array:
    if labels is None:
      raise ConfigError("classifier-free guidance needs labels to guide towards")
    both = denoiser(
        jnp.concatenate([x, x]), jnp.concatenate([timesteps, timesteps]),
        jnp.concatenate([labels, jnp.full_like(labels, null_label)]),
    )
    conditional, unconditional = jnp.split(both, 2)
    return (1.0 + guidance) * conditional - guidance * unconditional

  return guided


def _alpha_bar_or_one(alpha_bar: jax.Array, timestep: jax.Array) -> jax.Array:
  """ᾱ at `timestep`, and ᾱ_0 = 1 (no noise) at index -1, where every sampler ends."""
  return jnp.where(timestep >= 0, alpha_bar[jnp.maximum(timestep, 0)], 1.0)


# update(x_t, ε_θ(x_t, t), t, t', z) -> x_{t'}: one step of a sampler, t' the next (smaller) timestep or -1.
Update = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def _reverse_process(
    denoiser: Denoiser, start: jax.Array, rng: jax.Array, labels: jax.Array | None, timesteps: np.ndarray,
    update: Update,
) -> jax.Array:
  """x = `start` (x_T), then x <- update(x, ε_θ(x, t), t, t', z_t) for each t of the descending `timesteps`, in one
  lax.scan. z_t ~ N(0, I) comes from fold_in(rng, t): the same at step t whatever the sampler, so two samplers that
  agree in law agree sample by sample."""
  previous = np.append(timesteps[1:], -1)
  batch_size = start.shape[0]

  def step(x, timestep_pair):
    timestep, previous_timestep = timestep_pair
    epsilon = denoiser(x, jnp.full((batch_size,), timestep, jnp.int32), labels)
    z = jax.random.normal(jax.random.fold_in(rng, timestep), x.shape, x.dtype)
    return update(x, epsilon, timestep, previous_timestep, z), None

  pairs = (jnp.asarray(timesteps, jnp.int32), jnp.asarray(previous, jnp.int32))
  return jax.lax.scan(step, start, pairs)[0]


def ddpm_sample(
    denoiser: Denoiser, alpha_bar: jax.Array, start: jax.Array, rng: jax.Array, labels: jax.Array | None = None,
    variance: str = "posterior",
) -> jax.Array:
  """x_0 [b, ...] by ancestral sampling from x_T = `start` through all T steps (Ho et al. 2020, Algorithm 2), with
  σ_t² = β̃_t ("posterior") or β_t ("beta")."""
  if variance not in DDPM_VARIANCES:
    raise ConfigError(f"DDPM variance={variance!r} is not one of {DDPM_VARIANCES}")

  def update(x, epsilon, timestep, previous_timestep, z):
    a_bar, a_bar_previous = alpha_bar[timestep], _alpha_bar_or_one(alpha_bar, previous_timestep)
    alpha = a_bar / a_bar_previous
    beta = 1.0 - alpha
    mean = (x - beta / jnp.sqrt(1.0 - a_bar) * epsilon) / jnp.sqrt(alpha)
    sigma_squared = beta if variance == "beta" else beta * (1.0 - a_bar_previous) / (1.0 - a_bar)
    return mean + jnp.where(timestep > 0, jnp.sqrt(sigma_squared), 0.0) * z

  return _reverse_process(denoiser, start, rng, labels, np.arange(alpha_bar.shape[0] - 1, -1, -1), update)


def ddim_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
  """`steps` timesteps evenly spaced from T - 1 down to 0 (Song et al. 2021's "linear" sub-sequence τ, its ends
  included), all T of them when steps = T; one step starts at T - 1."""
  if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
    raise ConfigError(f"DDIM steps={steps!r} must be an integer in [1, T={num_timesteps}]")
  return np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int32)


def ddim_sample(
    denoiser: Denoiser, alpha_bar: jax.Array, start: jax.Array, rng: jax.Array, labels: jax.Array | None = None,
    steps: int = 50, eta: float = 0.0,
) -> jax.Array:
  """x_0 [b, ...] from x_T = `start` in `steps` DDIM steps (Song et al. 2021, eq. 12); η = 0 is deterministic (`rng`
  unused), η = 1 over all T steps is DDPM with σ_t² = β̃_t."""
  if not 0.0 <= eta <= 1.0:
    raise ConfigError(f"DDIM eta={eta!r} must be in [0, 1] (0: deterministic, 1: DDPM's posterior variance)")

  def update(x, epsilon, timestep, previous_timestep, z):
    a_bar, a_bar_previous = alpha_bar[timestep], _alpha_bar_or_one(alpha_bar, previous_timestep)
    predicted_x0 = (x - jnp.sqrt(1.0 - a_bar) * epsilon) / jnp.sqrt(a_bar)
    sigma = eta * jnp.sqrt((1.0 - a_bar_previous) / (1.0 - a_bar) * (1.0 - a_bar / a_bar_previous))  # eq. 16
    direction = jnp.sqrt(jnp.maximum(1.0 - a_bar_previous - jnp.square(sigma), 0.0)) * epsilon
    return jnp.sqrt(a_bar_previous) * predicted_x0 + direction + sigma * z

  return _reverse_process(denoiser, start, rng, labels, ddim_timesteps(alpha_bar.shape[0], steps), update)


def latent_unet_config(latent_shape: tuple[int, int, int], embedding_dim: int, **unet_fields) -> UNetConfig:
  """The U-Net of a LatentDenoiser over latents [h, w, c]: it predicts ε of the latent's c channels, and takes the
  latent zero-padded at the bottom and right to the next multiple of 2^(depth - 1), the U-Net's halvings (the
  7x7 latent of a 28x28 image at f = 4 enters a U-Net of 2 or 3 levels as 8x8); `unet_fields` are UNetConfig's."""
  height, width, channels = latent_shape
  if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim <= 0 or embedding_dim % 2:
    raise ConfigError(f"model.embedding_dim={embedding_dim!r} must be a positive even integer (sines and cosines)")
  multipliers = unet_fields.get("channel_multipliers", UNetConfig.channel_multipliers)
  halvings = len(multipliers) - 1 if isinstance(multipliers, tuple) and multipliers else 0
  if 2**halvings > min(height, width):
    raise ConfigError(
        f"a U-Net of {len(multipliers)} levels (model.channel_multipliers) halves its input {halvings} times, more "
        f"than latents of {height}x{width} allow"
    )

  def padded(size: int) -> int:
    return -(-size // 2**halvings) * 2**halvings

  return UNetConfig(
      image_height=padded(height), image_width=padded(width), image_channels=channels, out_channels=channels,
      conditioning_dim=embedding_dim, **unet_fields,
  )


def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(
      features, kernel_init=with_axes(nn.initializers.lecun_normal(), None, EMBED),
      bias_init=with_axes(nn.initializers.zeros, EMBED), name=name,
  )


class LatentDenoiser(nn.Module):
  """ε_θ(latents [b, h, w, c], timesteps int [b], labels int [b]) -> ε [b, h, w, c]: a `latent_unet_config` U-Net.

  conditioning = Dense(silu(Dense(sinusoids(t)))) (Ho et al. 2020, appendix B) + Embed(label), the label's table one
  row longer than the classes: row `num_classes` is the null label ∅ of classifier-free guidance.
  """

  unet: UNetConfig
  latent_shape: tuple[int, int, int]
  num_classes: int = 0  # 0: an unconditional model, called with labels None

  @nn.compact
  def __call__(self, latents: jax.Array, timesteps: jax.Array, labels: jax.Array | None, train: bool = False):
    height, width, _ = self.latent_shape
    if tuple(latents.shape[1:]) != tuple(self.latent_shape):
      raise ConfigError(f"latents of shape {tuple(latents.shape[1:])} do not fit a denoiser of {self.latent_shape}")
    if (labels is None) != (self.num_classes == 0):
      raise ConfigError(f"a denoiser of num_classes={self.num_classes} takes labels iff num_classes > 0")
    dim = self.unet.conditioning_dim
    conditioning = _dense(dim, "time_out")(nn.silu(_dense(dim, "time_in")(timestep_embedding(timesteps, dim))))
    if self.num_classes:
      classes = nn.Embed(
          self.num_classes + 1, dim, embedding_init=with_axes(nn.initializers.normal(1.0), None, EMBED), name="classes"
      )
      conditioning = conditioning + classes(labels)
    padding = ((0, 0), (0, self.unet.image_height - height), (0, self.unet.image_width - width), (0, 0))
    return UNet(self.unet, name="unet")(jnp.pad(latents, padding), conditioning, train)[:, :height, :width]
