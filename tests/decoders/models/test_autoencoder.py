"""The MLP and convolutional autoencoders: shapes, the mirrored decoder, each upsampling method, the pixel
likelihoods against numpy / scipy, and the one-line errors of impossible configs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from decoders.errors import ConfigError
from decoders.layers.upsampling import METHODS
from decoders.models.autoencoder import (
    Autoencoder, AutoencoderConfig, bernoulli_log_likelihood, gaussian_log_likelihood, pixel_means,
)

IMAGES = jax.random.uniform(jax.random.key(0), (4, 8, 8, 2))


def _init(config, images=IMAGES):
  model = Autoencoder(config)
  return model, nn.unbox(model.init(jax.random.key(1), images))["params"]


def _shapes(tree):
  return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("method", METHODS)
def test_the_conv_decoder_takes_each_upsampling_method(method):
  config = AutoencoderConfig(image_shape=(8, 8, 2), channels=(4, 8), latent_dim=5, upsampling=method)
  model, params = _init(config)
  outputs, log_likelihood = model.apply({"params": params}, IMAGES)
  assert outputs.shape == IMAGES.shape and log_likelihood.shape == (4,)
  assert model.apply({"params": params}, IMAGES, method="encode").shape == (4, 5)


def test_the_conv_decoder_mirrors_the_encoder():
  config = AutoencoderConfig(image_shape=(16, 8, 2), channels=(4, 8), latent_dim=5, kernel_size=4)
  shapes = _shapes(_init(config, jnp.zeros((1, 16, 8, 2)))[1])
  # Encoder: 3x3 stride-2 convolutions 2 -> 4 -> 8, a 4x2x8 map flattened to the latent.
  assert shapes["encoder/conv_0/kernel"] == (3, 3, 2, 4) and shapes["encoder/conv_1/kernel"] == (3, 3, 4, 8)
  assert shapes["encoder/to_latent/kernel"] == (4 * 2 * 8, 5)
  # Decoder: the way back, 8 -> 4 -> 2 channels, with the configured 4x4 upsampling kernels.
  assert shapes["decoder/from_latent/kernel"] == (5, 4 * 2 * 8)
  assert shapes["decoder/up_0/conv/kernel"] == (4, 4, 8, 4) and shapes["decoder/up_1/conv/kernel"] == (4, 4, 4, 2)


def test_the_mlp_decoder_mirrors_the_encoder():
  config = AutoencoderConfig(image_shape=(8, 8, 2), architecture="mlp", hidden_sizes=(32, 16), latent_dim=5)
  model, params = _init(config)
  shapes = _shapes(params)
  assert [shapes[f"encoder/hidden_{i}/kernel"] for i in range(2)] == [(128, 32), (32, 16)]
  assert [shapes[f"decoder/hidden_{i}/kernel"] for i in range(2)] == [(5, 16), (16, 32)]
  assert shapes["decoder/to_pixels/kernel"] == (32, 128)
  assert model.apply({"params": params}, IMAGES)[0].shape == IMAGES.shape


def test_parameters_carry_logical_axis_names():
  model = Autoencoder(AutoencoderConfig(image_shape=(8, 8, 2), channels=(4, 8)))
  specs = nn.get_partition_spec(model.init(jax.random.key(0), IMAGES))["params"]
  assert tuple(specs["encoder"]["conv_0"]["kernel"]) == (None, None, "conv_in", "conv_out")
  assert tuple(specs["decoder"]["up_1"]["conv"]["bias"]) == ("conv_out",)
  assert tuple(specs["encoder"]["to_latent"]["kernel"]) == (None, "embed")


def test_the_bernoulli_log_likelihood_is_minus_the_binary_cross_entropy():
  rng = np.random.default_rng(0)
  images, logits = rng.uniform(size=(3, 4, 4, 1)), rng.normal(scale=3, size=(3, 4, 4, 1))
  p = 1 / (1 + np.exp(-logits))
  expected = (images * np.log(p) + (1 - images) * np.log(1 - p)).sum(axis=(1, 2, 3))
  got = bernoulli_log_likelihood(jnp.asarray(images, jnp.float32), jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_the_gaussian_log_likelihood_is_scipys_density():
  rng = np.random.default_rng(1)
  images, means = rng.uniform(size=(3, 4, 4, 2)), rng.uniform(size=(3, 4, 4, 2))
  expected = scipy.stats.norm.logpdf(images, means, np.exp(0.5 * -1.3)).sum(axis=(1, 2, 3))
  got = gaussian_log_likelihood(jnp.asarray(images, jnp.float32), jnp.asarray(means, jnp.float32), jnp.float32(-1.3))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_model_scores_its_targets_with_its_likelihood(likelihood):
  config = AutoencoderConfig(image_shape=(8, 8, 2), channels=(4, 8), likelihood=likelihood)
  model, params = _init(config)
  targets = jnp.flip(IMAGES, axis=1)  # a denoising autoencoder scores the clean image, not what it read
  outputs, log_likelihood = model.apply({"params": params}, IMAGES, targets)
  if likelihood == "bernoulli":
    expected = bernoulli_log_likelihood(targets, outputs)
  else:
    expected = gaussian_log_likelihood(targets, outputs, params["likelihood"]["log_variance"])
  np.testing.assert_allclose(log_likelihood, expected, rtol=1e-6)
  assert ("likelihood" in params) == (likelihood == "gaussian")  # the learned variance: one scalar
  means = pixel_means(likelihood, outputs)
  assert likelihood == "gaussian" or (means.min() > 0 and means.max() < 1)


@pytest.mark.parametrize("fields, message", [
    (dict(image_shape=(12, 12, 1), channels=(4, 8, 16)), "images of 12x12 cannot be halved len(model.channels)=3"),
    (dict(latent_dim=0), "model.latent_dim=0 must be a positive integer"),
    (dict(upsampling="deconv"), "model.upsampling='deconv' is not one of"),
    (dict(architecture="resnet"), "model.architecture='resnet' is not one of ('mlp', 'conv')"),
    (dict(likelihood="poisson"), "model.likelihood='poisson' is not one of"),
    (dict(channels=()), "model.channels=() must be a non-empty tuple"),
    (dict(kernel_size=0), "model.kernel_size=0 must be a positive integer"),
    (dict(architecture="mlp", hidden_sizes=(8, -1)), "model.hidden_sizes=(8, -1) must be a tuple of positive integers"),
])
def test_an_impossible_config_is_one_line_naming_the_field(fields, message):
  with pytest.raises(ConfigError) as raised:
    AutoencoderConfig(**{"image_shape": (8, 8, 1), **fields})
  assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_mlp_ignores_the_conv_divisibility():
  AutoencoderConfig(image_shape=(7, 9, 1), architecture="mlp")  # no stride-2 levels: any size


def test_images_or_latents_of_the_wrong_shape_are_refused():
  model, params = _init(AutoencoderConfig(image_shape=(8, 8, 2), channels=(4, 8), latent_dim=5))
  with pytest.raises(ConfigError, match=r"images of shape \(8, 8, 1\) do not fit a model of image_shape=\(8, 8, 2\)"):
    model.apply({"params": params}, jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(ConfigError, match="latents of width 6 do not fit a decoder of latent_dim=5"):
    model.apply({"params": params}, jnp.zeros((2, 6)), method="decode")
