"""Reconstruction quality per image: PSNR and SSIM, jittable, for images [b, h, w, c] with intensities in
[0, data_range].

PSNR = 10 log10(R² / MSE) in dB; a perfect reconstruction has MSE 0 and PSNR inf.

SSIM (Wang et al. 2004): local means μ, variances σ² and covariance σ_xy under a Gaussian window (11 taps, σ 1.5,
normalised to sum 1; sec. III-C), combined per position as (eq. 13)

    SSIM(x, y) = (2 μ_x μ_y + C1)(2 σ_xy + C2) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)),  C_i = (K_i R)²,
    K1 = 0.01, K2 = 0.03,

at every position where the window lies inside the image (Wang et al.'s MATLAB code filters 'valid'; scikit-image
filters the whole image and crops the same border), then averaged over positions and channels (MSSIM, eq. 17).
Images smaller than the window take `ssim_window_size`'s largest odd window that fits, with the same σ: 8x8 digits
are scored with 7 taps.

The checkerboard score (Odena et al. 2016) measures the periodic artifact an upsampling of stride s leaves: the
share of an image's power, its per-channel mean removed, that lies at the stride frequencies; see
`checkerboard_score`.
"""
import jax
import jax.numpy as jnp

from decoders.errors import ConfigError

WINDOW_SIZE = 11  # Wang et al. 2004, sec. III-C
WINDOW_SIGMA = 1.5


def psnr(images: jax.Array, references: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio per image [b], in dB."""
  squared = jnp.square(images.astype(jnp.float32) - references.astype(jnp.float32))
  mse = squared.reshape(squared.shape[0], -1).mean(axis=-1)
  return 10.0 * jnp.log10(data_range**2 / mse)


def ssim_window_size(height: int, width: int, preferred: int = WINDOW_SIZE) -> int:
  """The largest odd window of at most `preferred` taps that fits inside a height x width image."""
  size = min(preferred, height, width)
  return size if size % 2 else size - 1


def gaussian_window(size: int, sigma: float) -> jax.Array:
  """The 1-D Gaussian taps [size], normalised to sum 1 (the 2-D window is their outer product)."""
  offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  taps = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  return taps / taps.sum()


def _local_mean(x: jax.Array, taps: jax.Array) -> jax.Array:
  """Gaussian-weighted mean of every window inside x [b, h, w, c], per channel: [b, h - k + 1, w - k + 1, c]."""
  channels = x.shape[-1]
  kernel = jnp.tile(jnp.outer(taps, taps)[:, :, None, None], (1, 1, 1, channels))  # HWIO, one filter per channel
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding="VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=channels,
      precision=jax.lax.Precision.HIGHEST,  # TPUs otherwise multiply in bfloat16; σ² = E[x²] - μ² needs float32
  )


def ssim(
    images: jax.Array, references: jax.Array, data_range: float = 1.0, window_size: int = WINDOW_SIZE,
    sigma: float = WINDOW_SIGMA, k1: float = 0.01, k2: float = 0.03,
) -> jax.Array:
  """Mean structural similarity per image [b] (Wang et al. 2004, eq. 13 and 17), in [-1, 1]."""
  _, height, width, _ = images.shape
  if window_size > min(height, width) or window_size % 2 == 0:
    raise ConfigError(
        f"SSIM window of {window_size} taps must be odd and fit in {height}x{width} images "
        f"(ssim_window_size gives one that does)"
    )
  x, y = images.astype(jnp.float32), references.astype(jnp.float32)
  taps = gaussian_window(window_size, sigma)
  mean_x, mean_y = _local_mean(x, taps), _local_mean(y, taps)
  variance_x = _local_mean(x * x, taps) - mean_x**2
  variance_y = _local_mean(y * y, taps) - mean_y**2
  covariance = _local_mean(x * y, taps) - mean_x * mean_y
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  similarity = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
      (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2)
  )
  return similarity.reshape(similarity.shape[0], -1).mean(axis=-1)


def checkerboard_score(images: jax.Array, stride: int = 2) -> jax.Array:
  """The share of each image's power at the frequencies of a stride-`stride` pattern [b], in [0, 1].

  With x the image minus each channel's mean and X its 2-D DFT over height H and width W (per channel),

      score = Σ_c Σ_{(k, l) ≠ (0, 0)} |X_c(k H/s, l W/s)|² / Σ_c Σ_{u, v} |X_c(u, v)|²,   k, l = 0 .. s - 1,

  the frequencies of every pattern that repeats each s pixels, where the uneven overlap of a transposed
  convolution whose kernel the stride does not divide puts its checkerboard (Odena et al. 2016). A pattern of
  period s alone scores 1, a smooth image about 0, white noise about (s² - 1) / (H W).

  Computed without an FFT: the numerator is the power of x's s-periodic component p, x averaged over each of the
  s x s sampling phases (p[i, j] = mean of x[i + s m, j + s n] over m, n), since that average keeps exactly those
  frequencies; by Parseval, score = Σ p² over the image / Σ x². p's own mean is removed too: it is the (0, 0) term,
  zero but for float32 rounding, which would otherwise make a constant image's rounding residue all "periodic".
  An image with no power (a constant) scores 0.
  """
  batch, height, width, channels = images.shape
  if isinstance(stride, bool) or not isinstance(stride, int) or stride < 2:
    raise ConfigError(f"checkerboard stride={stride!r} must be an integer of at least 2")
  if height % stride or width % stride:
    raise ConfigError(f"images of {height}x{width} cannot be split into stride={stride} phases: both must be "
                      f"divisible by {stride}")
  x = images.astype(jnp.float32)
  x = x - x.mean(axis=(1, 2), keepdims=True)
  phases = x.reshape(batch, height // stride, stride, width // stride, stride, channels).mean(axis=(1, 3))
  phases = phases - phases.mean(axis=(1, 2), keepdims=True)
  periodic_power = (height // stride) * (width // stride) * jnp.square(phases).sum(axis=(1, 2, 3))
  total_power = jnp.square(x).sum(axis=(1, 2, 3))
  has_power = total_power > 0
  return jnp.where(has_power, periodic_power / jnp.where(has_power, total_power, 1.0), 0.0)
