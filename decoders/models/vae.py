"""Variational autoencoder (Kingma & Welling 2013) over the encoder and decoder bodies of autoencoder.py.

    q(z|x) = N(μ(x), diag σ²(x))       the encoder, its head twice the latent's width: (μ, log σ²); a spatial
                                       latent (latent_channels > 0) is the KL-regularised autoencoder of Rombach
                                       et al. 2022, sec. 3, whose β is small (their "KL-reg")
    z = μ + σ ⊙ ε,  ε ~ N(0, I)        the reparameterisation trick (sec. 2.4): a sample differentiable in μ and σ
    p(z) = N(0, I),  p(x|z)            the decoder read by its pixel likelihood (Bernoulli logits, or Gaussian means
                                       under one learned variance: autoencoder.PixelLikelihood)
    KL(q(z|x) || p(z)) = -½ Σ_j (1 + log σ_j² - μ_j² - σ_j²)          analytic (eq. 10; appendix B)
    ELBO(x) = log p(x|z) - KL,  z ~ q(z|x)                              the estimator B of eq. 7, in nats per image
    loss = -log p(x|z) + β KL                                           β = 1: the negative ELBO; β-VAE otherwise
                                                                        (Higgins et al. 2017)
    IWAE_K(x) = log 1/K Σ_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)  Burda et al. 2016, eq. 8: a tighter bound on
                                                                        log p(x) than the ELBO, rising with K

A model's test-set log-likelihood is reported as IWAE_K with K in the thousands (Burda et al. 2016, sec. 5 use
5000); the K samples are drawn one after another (`jax.lax.map`), so K costs time, never memory.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.models.autoencoder import AutoencoderConfig, Decoder, Encoder, PixelLikelihood, pixel_means

Params = Any  # the 'params' collection of VAE.init


def reparameterize(rng: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
  """z = μ + σ ⊙ ε with ε ~ N(0, I) (Kingma & Welling 2013, sec. 2.4)."""
  return mean + jnp.exp(0.5 * log_variance) * jax.random.normal(rng, mean.shape, mean.dtype)


def gaussian_kl(mean: jax.Array, log_variance: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_variance)) || N(0, I)) per example [b], in nats (Kingma & Welling 2013, eq. 10), summed
  over every axis of the latent but the batch's."""
  per_dim = 1.0 + log_variance - jnp.square(mean) - jnp.exp(log_variance)
  return -0.5 * per_dim.reshape(per_dim.shape[0], -1).sum(axis=-1)


def diagonal_gaussian_log_density(latents: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
  """log N(latents; mean, diag exp(log_variance)) summed over the last axis."""
  per_dim = -0.5 * (jnp.log(2 * jnp.pi) + log_variance + jnp.square(latents - mean) * jnp.exp(-log_variance))
  return per_dim.sum(axis=-1)


class VAE(nn.Module):
  config: AutoencoderConfig

  def setup(self):
    self.encoder = Encoder(self.config, head_features=2 * self.config.latent_shape[-1])
    self.decoder = Decoder(self.config)
    self.likelihood = PixelLikelihood(self.config.likelihood)

  def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The posterior q(z|x): (mean, log-variance), each [b, *latent_shape]."""
    mean, log_variance = jnp.split(self.encoder(images), 2, axis=-1)
    return mean, log_variance

  def decode(self, latents: jax.Array) -> jax.Array:
    return self.decoder(latents)

  def log_likelihood(self, images: jax.Array, latents: jax.Array) -> jax.Array:
    """log p(images | latents) per image [b], in nats."""
    return self.likelihood(images, self.decode(latents))

  def __call__(
      self, inputs: jax.Array, rng: jax.Array, targets: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(decoder outputs, log p(targets | z) [b], KL(q(z|inputs) || p(z)) [b]) for one z ~ q(z|inputs); `targets`
    default to the inputs (a denoising VAE reads corrupted inputs)."""
    mean, log_variance = self.encode(inputs)
    outputs = self.decode(reparameterize(rng, mean, log_variance))
    targets = inputs if targets is None else targets
    return outputs, self.likelihood(targets, outputs), gaussian_kl(mean, log_variance)


def elbo(model: VAE, params: Params, images: jax.Array, rng: jax.Array) -> jax.Array:
  """The evidence lower bound per image [b], in nats: log p(x|z) - KL with one z ~ q(z|x) (eq. 7 and 10)."""
  _, log_likelihood, kl = model.apply({"params": params}, images, rng)
  return log_likelihood - kl


def importance_weighted_bound(
    model: VAE, params: Params, images: jax.Array, rng: jax.Array, num_samples: int
) -> jax.Array:
  """IWAE_K per image [b], in nats (Burda et al. 2016, eq. 8): logsumexp_k log w_k - log K with
  w_k = p(x|z_k) p(z_k) / q(z_k|x) and z_k ~ q(z|x)."""
  if not isinstance(num_samples, int) or num_samples < 1:
    raise ConfigError(f"importance samples K={num_samples!r} must be a positive integer")
  variables = {"params": params}
  mean, log_variance = model.apply(variables, images, method=VAE.encode)
  flat_mean, flat_log_variance = (x.reshape(x.shape[0], -1) for x in (mean, log_variance))  # a spatial latent too

  def log_weight(key: jax.Array) -> jax.Array:
    latents = reparameterize(key, mean, log_variance)
    flat = latents.reshape(flat_mean.shape)
    log_prior = diagonal_gaussian_log_density(flat, jnp.zeros_like(flat), jnp.zeros_like(flat))
    log_posterior = diagonal_gaussian_log_density(flat, flat_mean, flat_log_variance)
    return model.apply(variables, images, latents, method=VAE.log_likelihood) + log_prior - log_posterior

  log_weights = jax.lax.map(log_weight, jax.random.split(rng, num_samples))  # [K, b]
  return jax.nn.logsumexp(log_weights, axis=0) - jnp.log(num_samples)


def sample_prior(model: VAE, params: Params, rng: jax.Array, num_samples: int) -> jax.Array:
  """Images [n, h, w, c] decoded from z ~ p(z) = N(0, I): each the mean E[x|z] of its decoder distribution."""
  latents = jax.random.normal(rng, (num_samples, *model.config.latent_shape))
  outputs = model.apply({"params": params}, latents, method=VAE.decode)
  return pixel_means(model.config.likelihood, outputs)


def interpolate(model: VAE, params: Params, start: jax.Array, end: jax.Array, steps: int) -> jax.Array:
  """Images [b, steps, h, w, c] along the straight line between the posterior means of `start` and `end` [b, h, w, c]
  (both ends included), each the decoder's mean image."""
  if not isinstance(steps, int) or steps < 2:
    raise ConfigError(f"interpolation steps={steps!r} must be an integer >= 2 (both ends are included)")
  variables = {"params": params}
  start_latent, _ = model.apply(variables, start, method=VAE.encode)
  end_latent, _ = model.apply(variables, end, method=VAE.encode)
  fractions = jnp.linspace(0.0, 1.0, steps).reshape(1, steps, *(1,) * (start_latent.ndim - 1))  # [1, steps, 1...]
  latents = (1.0 - fractions) * start_latent[:, None] + fractions * end_latent[:, None]  # [b, steps, *latent_shape]
  outputs = model.apply(variables, latents.reshape(-1, *latents.shape[2:]), method=VAE.decode)
  return pixel_means(model.config.likelihood, outputs).reshape(*latents.shape[:2], *outputs.shape[1:])
