"""PSNR against numpy and SSIM against a transcription of scikit-image's structural_similarity (gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1; scikit-image is not installed here, so its code path is written
out below over scipy.ndimage.gaussian_filter, which it calls)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from decoders.errors import ConfigError
from decoders.image_metrics import psnr, ssim, ssim_window_size

RNG = np.random.default_rng(0)
CLEAN = RNG.uniform(size=(4, 16, 16, 3))
NOISY = np.clip(CLEAN + RNG.normal(scale=0.1, size=CLEAN.shape), 0, 1)


def skimage_ssim(x: np.ndarray, y: np.ndarray, window_size: int, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0):
  """skimage.metrics.structural_similarity of two [h, w, c] images, its steps in order: Gaussian-filter the five
  moments (reflect mode, truncated to the window's radius), combine, crop the border the window overhangs, and
  average over positions, then channels."""
  radius = (window_size - 1) // 2
  per_channel = []
  for channel in range(x.shape[-1]):
    a, b = x[..., channel].astype(np.float64), y[..., channel].astype(np.float64)
    blur = lambda image: scipy.ndimage.gaussian_filter(image, sigma=sigma, truncate=radius / sigma, mode="reflect")
    ux, uy, uxx, uyy, uxy = blur(a), blur(b), blur(a * a), blur(b * b), blur(a * b)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    per_channel.append(s[radius:-radius, radius:-radius].mean())
  return np.mean(per_channel)


def test_psnr_matches_numpy():
  mse = ((CLEAN - NOISY) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(psnr(jnp.asarray(NOISY), jnp.asarray(CLEAN)), 10 * np.log10(1 / mse), rtol=1e-5)
  assert np.isinf(psnr(jnp.asarray(CLEAN), jnp.asarray(CLEAN))).all()
  np.testing.assert_allclose(psnr(jnp.full((1, 2, 2, 1), 0.6), jnp.full((1, 2, 2, 1), 0.5)), [20.0], rtol=1e-5)


@pytest.mark.parametrize("size, window", [(16, 11), (8, 7)])
def test_ssim_matches_scikit_image(size, window):
  clean, noisy = CLEAN[:, :size, :size], NOISY[:, :size, :size]
  blurred = scipy.ndimage.uniform_filter(clean, size=(1, 3, 3, 1))  # a second, structure-losing distortion
  for distorted in (noisy, blurred, 1 - clean):
    expected = [skimage_ssim(d, c, window) for d, c in zip(distorted, clean)]
    got = ssim(jnp.asarray(distorted, jnp.float32), jnp.asarray(clean, jnp.float32), window_size=window)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_ssim_is_one_for_equal_images_and_within_minus_one_to_one():
  images = jnp.asarray(CLEAN, jnp.float32)
  np.testing.assert_allclose(ssim(images, images), 1.0, atol=1e-5)
  inverted = np.asarray(jax.jit(ssim)(1 - images, images))
  assert (-1 <= inverted).all() and (inverted < 0).all()  # anticorrelated structure


def test_the_window_shrinks_to_the_largest_odd_one_that_fits():
  assert [ssim_window_size(28, 28), ssim_window_size(8, 8), ssim_window_size(10, 12), ssim_window_size(64, 9)] == [
      11, 7, 9, 9
  ]
  with pytest.raises(ConfigError, match="SSIM window of 11 taps must be odd and fit in 8x8 images"):
    ssim(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 1)))
