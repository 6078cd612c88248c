"""PSNR against numpy and SSIM against a transcription of scikit-image's structural_similarity (gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1; scikit-image is not installed here, so its code path is written
out below over scipy.ndimage.gaussian_filter, which it calls). The checkerboard score against its FFT definition
in numpy, on patterns whose answer is known, and on the upsampling blocks Odena et al. 2016 compare."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from decoders.errors import ConfigError
from decoders.image_metrics import checkerboard_score, psnr, ssim, ssim_window_size
from decoders.layers.upsampling import Upsample

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


def numpy_checkerboard_score(images: np.ndarray, stride: int) -> np.ndarray:
  """The docstring's formula itself: each channel's mean removed, its 2-D power spectrum, and the share of the power
  at the frequencies (k H/s, l W/s), (k, l) != (0, 0), summed over channels."""
  _, height, width, _ = images.shape
  x = images - images.mean(axis=(1, 2), keepdims=True)
  power = np.abs(np.fft.fft2(x, axes=(1, 2))) ** 2
  rows, cols = np.arange(stride) * height // stride, np.arange(stride) * width // stride
  at_stride = power[:, rows][:, :, cols].sum(axis=(1, 2, 3))  # (0, 0) holds no power: the mean is removed
  return at_stride / power.sum(axis=(1, 2, 3))


def _checkerboard(height, width, stride=2):
  rows, cols = np.indices((height, width))
  return ((rows % stride == 0) ^ (cols % stride == 0)).astype(np.float64)[None, :, :, None]


SMOOTH = scipy.ndimage.gaussian_filter(RNG.uniform(size=(4, 16, 16, 3)), sigma=(0, 2, 2, 0))  # natural-ish: blurred


@pytest.mark.parametrize("shape, stride", [((4, 16, 16, 3), 2), ((3, 8, 12, 1), 2), ((2, 16, 8, 2), 4)])
def test_the_checkerboard_score_is_the_share_of_power_at_the_stride_frequencies(shape, stride):
  images = np.random.default_rng(1).uniform(size=shape)
  images[0] += 0.3 * _checkerboard(*shape[1:3], stride)[0]  # one image with the pattern, so not all are near 0
  got = jax.jit(checkerboard_score, static_argnums=1)(jnp.asarray(images, jnp.float32), stride)
  np.testing.assert_allclose(got, numpy_checkerboard_score(images, stride), rtol=1e-4, atol=1e-6)


def test_a_pure_checkerboard_scores_one_and_a_smooth_or_constant_image_about_zero():
  pattern = _checkerboard(16, 16)
  np.testing.assert_allclose(checkerboard_score(jnp.asarray(0.2 + 0.5 * pattern, jnp.float32)), [1.0], rtol=1e-5)
  stripes = np.tile(np.arange(16) % 2, (16, 1)).astype(np.float32)[None, :, :, None]  # period 2 along one axis
  np.testing.assert_allclose(checkerboard_score(jnp.asarray(stripes)), [1.0], rtol=1e-5)
  assert float(checkerboard_score(jnp.asarray(SMOOTH, jnp.float32)).max()) < 0.01
  np.testing.assert_array_equal(checkerboard_score(jnp.full((2, 8, 8, 1), 0.7)), [0.0, 0.0])  # no power, no NaN


def test_adding_a_faint_checkerboard_raises_the_score():
  images = jnp.asarray(SMOOTH, jnp.float32)
  marked = images + 0.05 * jnp.asarray(_checkerboard(16, 16), jnp.float32)  # a 5 % pattern on a [0, 1] image
  before, after = np.asarray(checkerboard_score(images)), np.asarray(checkerboard_score(marked))
  assert (before < 0.01).all() and (after > before + 0.1).all(), (before, after)


def _all_ones_upsampling(method: str, kernel_size: int, inputs: jax.Array) -> jax.Array:
  block = Upsample(1, method, 2, kernel_size)
  params = nn.unbox(block.init(jax.random.key(0), inputs))["params"]
  params = {"conv": {"kernel": jnp.ones_like(params["conv"]["kernel"]), "bias": jnp.zeros_like(params["conv"]["bias"])}}
  return block.apply({"params": params}, inputs)


@pytest.mark.parametrize("inputs", ["constant", "smooth"])
def test_a_kernel_3_transposed_convolution_overlaps_unevenly_and_resize_convolution_does_not(inputs):
  # Odena et al. 2016, Fig. 1-2: with all-ones weights a stride-2 transposed convolution of kernel 3 gives some
  # output pixels 1 tap per axis and others 2 (decoders/layers/upsampling.py), a checkerboard even on a constant
  # input; kernel 4, which the stride divides, and nearest resize + convolution give every pixel the same taps.
  x = jnp.ones((1, 8, 8, 1)) if inputs == "constant" else jnp.asarray(SMOOTH[:1, :8, :8, :1], jnp.float32)
  uneven = float(checkerboard_score(_all_ones_upsampling("transposed", 3, x))[0])
  even = float(checkerboard_score(_all_ones_upsampling("transposed", 4, x))[0])
  resized = float(checkerboard_score(_all_ones_upsampling("nearest", 3, x))[0])
  assert uneven > 0.3 and max(even, resized) < 0.01, (uneven, even, resized)


@pytest.mark.parametrize("stride, message", [
    (3, "images of 16x16 cannot be split into stride=3 phases"),
    (1, "checkerboard stride=1 must be an integer of at least 2"),
])
def test_a_stride_that_does_not_fit_is_one_line(stride, message):
  with pytest.raises(ConfigError) as raised:
    checkerboard_score(jnp.zeros((1, 16, 16, 1)), stride)
  assert message in str(raised.value) and "\n" not in str(raised.value)
