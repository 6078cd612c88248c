"""The denoising autoencoder's corruptions: their statistics, their determinism per key, and their errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.layers.corruption import corrupt, gaussian_noise, masking_noise

GRAY = jnp.full((16, 16, 16, 3), 0.5)  # far from 0 and 1: clipping leaves noise of σ = 0.1 alone


def test_gaussian_noise_has_the_standard_deviation_sigma():
  noise = np.asarray(gaussian_noise(jax.random.key(0), GRAY, 0.1) - GRAY)
  assert abs(noise.std() - 0.1) < 0.003 and abs(noise.mean()) < 0.003  # 12,288 draws: standard error ~0.0006
  assert len(np.unique(noise[0, 0, 0])) == 3  # each channel draws its own


def test_gaussian_noise_is_clipped_to_intensities():
  noisy = gaussian_noise(jax.random.key(1), GRAY, 5.0)
  assert noisy.min() == 0.0 and noisy.max() == 1.0


def test_masking_zeroes_each_pixel_with_probability_p_all_its_channels_together():
  images = jax.random.uniform(jax.random.key(2), GRAY.shape, minval=0.1, maxval=1.0)
  masked = np.asarray(masking_noise(jax.random.key(3), images, 0.3))
  zeroed = masked == 0
  assert abs(zeroed.mean() - 0.3) < 0.03  # 4,096 pixels: standard error ~0.007
  assert (zeroed.all(axis=-1) == zeroed.any(axis=-1)).all()
  np.testing.assert_array_equal(masked[~zeroed], np.asarray(images)[~zeroed])  # the rest is untouched


@pytest.mark.parametrize("kind, level", [("gaussian", 0.2), ("mask", 0.4)])
def test_a_corruption_is_a_function_of_its_key(kind, level):
  key = jax.random.key(4)
  first = corrupt(kind, key, GRAY, level)
  np.testing.assert_array_equal(first, corrupt(kind, key, GRAY, level))
  # Compiled: the same draws (XLA may fuse x + σ·n into one rounding, so to the last bit of float32).
  np.testing.assert_allclose(first, jax.jit(lambda k, x: corrupt(kind, k, x, level))(key, GRAY), atol=1e-6)
  assert not np.array_equal(first, corrupt(kind, jax.random.key(5), GRAY, level))


def test_no_corruption_and_level_zero_leave_the_images_alone():
  key = jax.random.key(6)
  for kind in ("none", "gaussian", "mask"):
    np.testing.assert_array_equal(corrupt(kind, key, GRAY, 0.0), GRAY)


@pytest.mark.parametrize("kind, level, message", [
    ("salt", 0.1, "objective.corruption='salt' is not one of"),
    ("gaussian", -0.1, "objective.corruption_level=-0.1 must be a noise standard deviation >= 0"),
    ("mask", 1.0, "objective.corruption_level=1.0 must be a masking probability in [0, 1)"),
])
def test_an_impossible_corruption_is_one_line(kind, level, message):
  with pytest.raises(ConfigError) as raised:
    corrupt(kind, jax.random.key(0), GRAY, level)
  assert message in str(raised.value) and "\n" not in str(raised.value)
