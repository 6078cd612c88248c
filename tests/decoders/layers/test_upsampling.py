"""The upsampling blocks: shapes, torch's pixel shuffle, ICNR, resize semantics and the checkerboard of Odena et al."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from decoders.errors import ConfigError
from decoders.layers.upsampling import METHODS, Upsample, pixel_shuffle


def _params(module, x):
  return nn.unbox(module.init(jax.random.key(0), x))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factor", [2, 3])
def test_each_method_scales_height_and_width_and_sets_channels(method, factor):
  x = jnp.ones((2, 5, 7, 3))
  module = Upsample(8, method, factor)
  assert module.apply(_params(module, x), x).shape == (2, 5 * factor, 7 * factor, 8)


def test_pixel_shuffle_matches_torch():
  x = np.random.default_rng(0).normal(size=(2, 4, 3, 18)).astype(np.float32)
  expected = torch.nn.PixelShuffle(3)(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 3)), expected)


def test_pixel_shuffle_refuses_channels_not_divisible_by_the_factor_squared():
  with pytest.raises(ConfigError, match="divisible by 4, got 6"):
    pixel_shuffle(jnp.ones((1, 2, 2, 6)), 2)


def test_icnr_makes_pixel_shuffle_start_as_nearest_neighbour_resize():
  """Aitken et al. 2017: every output pixel of a 2x2 block is the same at initialisation."""
  x = jax.random.normal(jax.random.key(1), (1, 4, 4, 3))
  module = Upsample(5, "pixel_shuffle")
  y = np.asarray(module.apply(_params(module, x), x))
  np.testing.assert_allclose(y[:, 0::2, 0::2], y[:, 1::2, 1::2], rtol=1e-6)
  np.testing.assert_allclose(y[:, 0::2, 0::2], y[:, 0::2, 1::2], rtol=1e-6)


def test_nearest_resize_convolves_each_source_pixel_repeated():
  """With a 1x1 kernel, nearest + conv is the source convolved, each pixel repeated over a factor x factor block."""
  x = jax.random.normal(jax.random.key(2), (1, 3, 3, 2))
  module = Upsample(4, "nearest", kernel_size=1)
  params = _params(module, x)
  y = module.apply(params, x)
  kernel = params["params"]["conv"]["kernel"][0, 0]
  expected = np.repeat(np.repeat(np.asarray(x @ kernel), 2, axis=1), 2, axis=2)
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("kernel_size", "uneven"), [(3, True), (4, False)])
def test_transposed_convolution_overlaps_unevenly_when_kernel_not_divisible_by_stride(kernel_size, uneven):
  """Odena et al. 2016, Fig. 1: with all-ones weights and input, each output pixel counts the kernel taps it gets;
  the count alternates with the stride exactly when the kernel size is not a multiple of it."""
  x = jnp.ones((1, 6, 6, 1))
  module = Upsample(1, "transposed", kernel_size=kernel_size)
  params = jax.tree.map(jnp.ones_like, _params(module, x))
  params["params"]["conv"]["bias"] = jnp.zeros(1)
  taps = np.asarray(module.apply(params, x))[0, 2:-2, 2:-2, 0]  # away from the border
  assert (len(np.unique(taps)) > 1) == uneven


def test_unknown_method_and_factor_are_refused():
  x = jnp.ones((1, 2, 2, 1))
  with pytest.raises(ConfigError, match="model.upsampling='cubic' is not one of"):
    Upsample(1, "cubic").init(jax.random.key(0), x)
  with pytest.raises(ConfigError, match="factor 1 must be an integer of at least 2"):
    Upsample(1, "nearest", factor=1).init(jax.random.key(0), x)
