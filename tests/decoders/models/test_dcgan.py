"""The DCGAN pair: shapes with each upsampling method, the two parameter groups, per-example outputs (no batch
statistics), the GAN losses against numpy, the checkerboard a kernel-3 transposed generator starts with, and the
one-line errors of impossible configs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.image_metrics import checkerboard_score
from decoders.layers.upsampling import METHODS
from decoders.models.dcgan import DCGAN, DCGANConfig, discriminator_losses, generator_losses, sample_latents

LATENT = 6
LATENTS = sample_latents(jax.random.key(0), 4, LATENT)


def _config(**fields):
  return DCGANConfig(**{
      "image_shape": (8, 16, 2), "latent_dim": LATENT, "generator_channels": (8, 4), "discriminator_channels": (4, 8),
      **fields,
  })


def _init(config):
  model = DCGAN(config)
  return model, nn.unbox(model.init(jax.random.key(1), LATENTS))["params"]


def _shapes(tree):
  return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("method", METHODS)
def test_the_generator_takes_each_upsampling_method_to_images_in_0_1(method):
  model, params = _init(_config(upsampling=method, kernel_size=3))
  images = model.apply({"params": params}, LATENTS, method="generate")
  assert images.shape == (4, 8, 16, 2) and float(images.min()) > 0 and float(images.max()) < 1
  logits = model.apply({"params": params}, images, method="discriminate")
  assert logits.shape == (4,)
  np.testing.assert_allclose(model.apply({"params": params}, LATENTS), logits, rtol=1e-6)  # D(G(z)) in one call


def test_parameters_split_into_the_two_groups_with_the_configured_shapes():
  _, params = _init(_config(kernel_size=4))
  assert set(params) == {"generator", "discriminator"}
  shapes = _shapes(params)
  # Generator: z -> a 2x4x8 map -> 4x8x4 -> 8x16x2, upsampling kernels 4x4.
  assert shapes["generator/project/kernel"] == (LATENT, 2 * 4 * 8)
  assert shapes["generator/up_0/conv/kernel"] == (4, 4, 8, 4) and shapes["generator/up_1/conv/kernel"] == (4, 4, 4, 2)
  assert shapes["generator/project_norm/scale"] == (8,) and shapes["generator/norm_0/scale"] == (4,)
  assert "generator/norm_1/scale" not in shapes  # nothing normalises the output layer (Radford et al. 2016, sec. 3)
  # Discriminator: 5x5 stride-2 convolutions 2 -> 4 -> 8 channels, a 2x4x8 map flattened to one logit.
  assert shapes["discriminator/conv_0/kernel"] == (5, 5, 2, 4) and shapes["discriminator/conv_1/kernel"] == (5, 5, 4, 8)
  assert shapes["discriminator/logit/kernel"] == (2 * 4 * 8, 1)
  assert not any(path.startswith("discriminator") and "norm" in path for path in shapes)


def test_without_a_norm_the_generator_has_no_norm_parameters():
  shapes = _shapes(_init(_config(generator_norm="none"))[1])
  assert not any("norm" in path for path in shapes)


def test_parameters_carry_logical_axis_names():
  specs = nn.get_partition_spec(DCGAN(_config()).init(jax.random.key(0), LATENTS))["params"]
  assert tuple(specs["generator"]["up_0"]["conv"]["kernel"]) == (None, None, "conv_in", "conv_out")
  assert tuple(specs["generator"]["project"]["kernel"]) == (None, "embed")
  assert tuple(specs["generator"]["project_norm"]["scale"]) == ("conv_out",)
  assert tuple(specs["discriminator"]["conv_1"]["kernel"]) == (None, None, "conv_in", "conv_out")


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_each_example_is_generated_and_judged_alone(norm):
  # No batch statistics: an image and its logit are the same whatever else shares the batch.
  model, params = _init(_config(generator_norm=norm))
  images = model.apply({"params": params}, LATENTS, method="generate")
  alone = jnp.concatenate([model.apply({"params": params}, LATENTS[i : i + 1], method="generate") for i in range(4)])
  np.testing.assert_allclose(images, alone, atol=1e-6)
  logits = model.apply({"params": params}, images, method="discriminate")
  np.testing.assert_allclose(model.apply({"params": params}, images[:1], method="discriminate"), logits[:1], atol=1e-6)


def test_the_layer_norm_normalises_each_feature_map_over_height_width_and_channels():
  model, params = _init(_config())
  _, state = model.apply({"params": params}, LATENTS, method="generate", capture_intermediates=True)
  normalised = np.asarray(state["intermediates"]["generator"]["project_norm"]["__call__"][0])
  np.testing.assert_allclose(normalised.mean(axis=(1, 2, 3)), 0, atol=1e-5)  # scale 1, bias 0 at initialisation
  np.testing.assert_allclose(normalised.var(axis=(1, 2, 3)), 1, atol=1e-3)


def test_the_losses_are_the_binary_cross_entropies_of_the_logits():
  rng = np.random.default_rng(0)
  real, fake = rng.normal(scale=3, size=8), rng.normal(scale=3, size=8)
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  expected_d = -np.log(sigmoid(real)) - np.log(1 - sigmoid(fake))
  np.testing.assert_allclose(discriminator_losses(jnp.asarray(real), jnp.asarray(fake)), expected_d, rtol=1e-5)
  np.testing.assert_allclose(generator_losses(jnp.asarray(fake)), -np.log(sigmoid(fake)), rtol=1e-5)
  # Confident mistakes stay finite: log sigmoid(-100) would underflow to -inf computed naively.
  np.testing.assert_allclose(discriminator_losses(jnp.array([-100.0]), jnp.array([100.0])), [200.0], rtol=1e-6)
  np.testing.assert_allclose(generator_losses(jnp.array([-100.0])), [100.0], rtol=1e-6)


def test_latents_are_uniform_in_minus_one_to_one():
  z = np.asarray(sample_latents(jax.random.key(3), 2000, 5))
  assert z.shape == (2000, 5) and z.min() >= -1 and z.max() <= 1
  np.testing.assert_allclose(z.mean(), 0, atol=0.03)
  np.testing.assert_allclose(z.var(), 1 / 3, atol=0.02)


def test_a_kernel_3_transposed_generator_starts_with_a_checkerboard_that_resizing_avoids():
  # Odena et al. 2016: a stride-2 transposed convolution whose kernel (3) the stride does not divide overlaps
  # unevenly; nearest resize + convolution and ICNR-initialised pixel shuffle do not.
  latents = sample_latents(jax.random.key(5), 16, LATENT)
  scores = {}
  for method in ("transposed", "nearest", "pixel_shuffle"):
    model, params = _init(_config(upsampling=method, kernel_size=3))
    scores[method] = float(checkerboard_score(model.apply({"params": params}, latents, method="generate")).mean())
  assert scores["transposed"] > 5 * scores["nearest"] and scores["transposed"] > 0.05
  assert scores["pixel_shuffle"] < 1e-6


@pytest.mark.parametrize("fields, message", [
    (dict(image_shape=(12, 12, 1), generator_channels=(8, 4, 2)),
     "images of 12x12 cannot be reached by doubling len(model.generator_channels)=3 times"),
    (dict(upsampling="deconv"), "model.upsampling='deconv' is not one of"),
    (dict(kernel_size=0), "model.kernel_size=0 must be a positive integer"),
    (dict(latent_dim=-2), "model.latent_dim=-2 must be a positive integer"),
    (dict(generator_channels=()), "model.generator_channels=() must be a non-empty tuple of positive integers"),
    (dict(discriminator_channels=(4, 0)), "model.discriminator_channels=(4, 0) must be a non-empty tuple"),
    (dict(generator_norm="batch"), "model.generator_norm='batch' is not one of ('layer', 'none')"),
    (dict(image_shape=(8, 8)), "image_shape=(8, 8) must be (height, width, channels)"),
])
def test_an_impossible_config_is_one_line_naming_the_field(fields, message):
  with pytest.raises(ConfigError) as raised:
    _config(**fields)
  assert message in str(raised.value) and "\n" not in str(raised.value)


def test_latents_or_images_of_the_wrong_shape_are_refused():
  model, params = _init(_config())
  with pytest.raises(ConfigError, match=r"latents of shape \(4, 5\) do not fit a generator of latent_dim=6"):
    model.apply({"params": params}, LATENTS[:, :5], method="generate")
  with pytest.raises(ConfigError, match=r"images of shape \(4, 8, 8, 2\) do not fit a discriminator"):
    model.apply({"params": params}, jnp.zeros((4, 8, 8, 2)), method="discriminate")
