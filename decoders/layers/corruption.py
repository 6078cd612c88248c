"""Input corruptions of the denoising autoencoder (Vincent et al. 2008): the model reads corrupt(x) and is trained to
reconstruct the clean x, so it must learn the data's structure rather than copy its input.

    gaussian  x + N(0, σ²) per pixel and channel, clipped back to [0, 1] ("additive isotropic Gaussian noise",
              Vincent et al. 2010, sec. 4.2); `level` is σ
    mask      each pixel set to 0 with probability p, all its channels together ("masking noise", Vincent et al. 2008,
              sec. 2.3); `level` is p. Vincent et al. zero a fixed fraction of the components; independent draws
              zero that fraction on average, with no per-image bookkeeping.

Pure functions of (rng, images): the same key gives the same corruption, on any device, under jit.
"""
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError

CORRUPTIONS = ("none", "gaussian", "mask")


def check_corruption(
    kind: str, level: float, what: str = "objective.corruption", level_what: str = "objective.corruption_level"
) -> None:
  """Raises ConfigError unless `kind` is one of CORRUPTIONS and `level` a σ >= 0 (gaussian) or p in [0, 1) (mask);
  `what` and `level_what` name them in the message."""
  if kind not in CORRUPTIONS:
    raise ConfigError(f"{what}={kind!r} is not one of {CORRUPTIONS}")
  if kind == "gaussian" and not level >= 0:
    raise ConfigError(f"{level_what}={level!r} must be a noise standard deviation >= 0")
  if kind == "mask" and not 0 <= level < 1:
    raise ConfigError(f"{level_what}={level!r} must be a masking probability in [0, 1)")


def gaussian_noise(rng: jax.Array, images: jax.Array, sigma: float) -> jax.Array:
  """images + N(0, sigma²) noise, clipped to the [0, 1] range of intensities."""
  noise = sigma * jax.random.normal(rng, images.shape, images.dtype)
  return jnp.clip(images + noise, 0.0, 1.0)


def masking_noise(rng: jax.Array, images: jax.Array, probability: float) -> jax.Array:
  """images [b, h, w, c] with each pixel (every channel of it) zeroed with `probability`."""
  keep = jax.random.bernoulli(rng, 1.0 - probability, (*images.shape[:-1], 1))
  return jnp.where(keep, images, jnp.zeros_like(images))


def corrupt(kind: str, rng: jax.Array, images: jax.Array, level: float | jax.Array) -> jax.Array:
  """The corruption `kind` (one of CORRUPTIONS) of `images` at `level` (σ or p; a traced level goes unchecked)."""
  check_corruption(kind, level if isinstance(level, (int, float)) else 0.0)
  if kind == "gaussian":
    return gaussian_noise(rng, images, level)
  if kind == "mask":
    return masking_noise(rng, images, level)
  return images
