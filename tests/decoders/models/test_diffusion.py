"""Diffusion (decoders/models/diffusion.py) against closed forms: the schedules against their formulas, q(x_t | x_0)'s
moments, L_simple of known denoisers, and the samplers driven by the exact ε of Gaussian data, whose samples must
have the data's mean and spread; DDIM(η = 1, all T steps) against DDPM(σ² = β̃), guidance against its formula, one
compilation per loop. Also the spatial latent of the KL-regularised VAE (decoders/models/{autoencoder,vae}.py) and
the vector latent beside it."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.models import autoencoder, diffusion, unet, vae

ALPHA_BAR = diffusion.alpha_bars(diffusion.DiffusionConfig())
# The samplers' tests run Ho et al.'s linear schedule over 200 steps, its β x 1000/200 so that ᾱ_T is as small: a
# fifth of the loop, a little more discretisation error (within the tolerances below).
SHORT_CONFIG = diffusion.DiffusionConfig(timesteps=200, beta_start=5e-4, beta_end=0.1)
SHORT = diffusion.alpha_bars(SHORT_CONFIG)
MEAN, STD = jnp.array([1.5, -0.5]), jnp.array([0.5, 2.0])  # the data: x_0 ~ N(MEAN, diag STD²)
SAMPLES = 10_000


def gaussian_oracle(alpha_bar, mean=MEAN, std=STD):
  """E[ε | x_t] for data N(mean, std²): x_t ~ N(sqrt(ᾱ) mean, ᾱ std² + 1 - ᾱ), and ε's share of x_t's deviation
  is sqrt(1 - ᾱ) / (ᾱ std² + 1 - ᾱ) of it. The best any denoiser can do."""

  def denoiser(x, timesteps, labels):
    del labels
    a = alpha_bar[timesteps][:, None]
    return jnp.sqrt(1.0 - a) * (x - jnp.sqrt(a) * mean) / (a * jnp.square(std) + 1.0 - a)

  return denoiser


def _start(key=0):
  return jax.random.normal(jax.random.key(key), (SAMPLES, 2))


def _assert_data_moments(samples, std_tolerance):
  samples = np.asarray(samples, np.float64)
  np.testing.assert_array_less(np.abs(samples.mean(axis=0) - MEAN), 4 * STD / np.sqrt(SAMPLES))
  np.testing.assert_allclose(samples.std(axis=0), STD, rtol=std_tolerance)


def test_the_linear_schedule_has_its_betas_and_the_cosine_one_its_alpha_bars():
  betas = 1.0 - ALPHA_BAR / jnp.concatenate([jnp.ones(1), ALPHA_BAR[:-1]])
  np.testing.assert_allclose(betas, np.linspace(1e-4, 0.02, 1000), rtol=2e-3, atol=1e-6)
  cosine = diffusion.alpha_bars(diffusion.DiffusionConfig(timesteps=50, schedule="cosine"))
  f = np.cos((np.arange(51) / 50 + 0.008) / 1.008 * np.pi / 2) ** 2
  np.testing.assert_allclose(cosine[:-1], (f / f[0])[1:-1], rtol=1e-5)  # the last β is clipped at 0.999
  assert np.all(np.diff(cosine) < 0) and cosine[-1] > 0


def test_q_sample_has_the_mean_and_variance_of_eq_4():
  x0 = jnp.array([[2.0, -1.0]])
  timesteps = jnp.array([0, 99, 499, 999])
  noise = jax.random.normal(jax.random.key(1), (100_000, 4, 2))
  x_t = jax.vmap(lambda z: diffusion.q_sample(ALPHA_BAR, jnp.repeat(x0, 4, axis=0), timesteps, z))(noise)
  a = np.asarray(ALPHA_BAR[timesteps])[:, None]
  np.testing.assert_allclose(x_t.mean(axis=0), np.sqrt(a) * x0, atol=0.015)
  np.testing.assert_allclose(x_t.var(axis=0), np.broadcast_to(1.0 - a, (4, 2)), rtol=0.02, atol=1e-5)


def test_l_simple_is_zero_for_the_true_noise_one_for_none_and_the_posterior_variance_for_the_oracle():
  keys = jax.random.split(jax.random.key(2), 2)
  timesteps = jax.random.randint(keys[0], (SAMPLES,), 0, 1000)
  noise = jax.random.normal(keys[1], (SAMPLES, 2))
  zeros = jnp.zeros((SAMPLES, 2))

  def knows_the_noise(x, t, labels):  # data exactly 0: x_t = sqrt(1 - ᾱ) ε, so ε is known from x_t
    return x / jnp.sqrt(1.0 - ALPHA_BAR[t])[:, None]

  def guesses_zero(x, t, labels):
    return jnp.zeros_like(x)

  np.testing.assert_allclose(diffusion.l_simple(knows_the_noise, ALPHA_BAR, zeros, timesteps, noise), 0.0, atol=1e-4)
  assert diffusion.l_simple(guesses_zero, ALPHA_BAR, zeros, timesteps, noise).mean() == pytest.approx(1.0, abs=0.02)
  # Gaussian data: the oracle's loss is Var(ε | x_t) = ᾱ std² / (ᾱ std² + 1 - ᾱ), averaged over t and dimensions.
  x0 = MEAN + STD * jax.random.normal(jax.random.key(3), (SAMPLES, 2))
  loss = diffusion.l_simple(gaussian_oracle(ALPHA_BAR), ALPHA_BAR, x0, timesteps, noise).mean()
  a = ALPHA_BAR[:, None]
  expected = (a * STD**2 / (a * STD**2 + 1.0 - a)).mean()
  assert loss == pytest.approx(float(expected), rel=0.03)


def test_labels_are_dropped_to_the_null_label_with_probability_p_uncond():
  labels = jnp.arange(100_000) % 10
  dropped = diffusion.drop_labels(jax.random.key(4), labels, 0.2, null_label=10)
  assert float(jnp.mean(dropped == 10)) == pytest.approx(0.2, abs=0.01)
  assert bool(jnp.all((dropped == labels) | (dropped == 10)))
  assert bool(jnp.all(diffusion.drop_labels(jax.random.key(4), labels, 0.0, 10) == labels))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("sampler", ["ddpm_posterior", "ddpm_beta", "ddim_100"])
def test_the_samplers_driven_by_the_exact_epsilon_draw_the_data_distribution(schedule, sampler):
  alpha_bar = diffusion.alpha_bars(dataclasses.replace(SHORT_CONFIG, schedule=schedule))
  oracle, rng = gaussian_oracle(alpha_bar), jax.random.key(5)
  if sampler.startswith("ddpm"):
    samples = diffusion.ddpm_sample(oracle, alpha_bar, _start(), rng, variance=sampler.split("_")[1])
  else:
    samples = diffusion.ddim_sample(oracle, alpha_bar, _start(), rng, steps=100)
  _assert_data_moments(samples, std_tolerance=0.04)  # σ² = β̃_t's spread is 3 % short at T = 200, β_t's 1 % wide


def test_ddim_with_eta_0_is_deterministic_and_follows_the_probability_flow_of_gaussian_data():
  oracle, start = gaussian_oracle(SHORT), _start()
  first = diffusion.ddim_sample(oracle, SHORT, start, jax.random.key(6), steps=200)
  np.testing.assert_array_equal(first, diffusion.ddim_sample(oracle, SHORT, start, jax.random.key(7), steps=200))
  # For Gaussian data the deterministic flow keeps each sample's standardised position: x_0 = mean + std u, with
  # u the standardised x_T (Song et al. 2021, sec. 4.3: DDIM is an Euler method for this ODE).
  a = SHORT[-1]
  u = (start - jnp.sqrt(a) * MEAN) / jnp.sqrt(a * STD**2 + 1.0 - a)
  np.testing.assert_allclose(first, MEAN + STD * u, atol=0.05 * float(STD.max()))
  stochastic = [diffusion.ddim_sample(oracle, SHORT, start, jax.random.key(k), steps=50, eta=1.0) for k in (6, 7)]
  assert float(jnp.abs(stochastic[0] - stochastic[1]).max()) > 0.1


def test_ddim_with_eta_1_over_all_steps_is_ddpm_with_the_posterior_variance_sample_by_sample():
  oracle, start, rng = gaussian_oracle(SHORT), _start(), jax.random.key(8)
  ddim = diffusion.ddim_sample(oracle, SHORT, start, rng, steps=200, eta=1.0)
  np.testing.assert_allclose(ddim, diffusion.ddpm_sample(oracle, SHORT, start, rng, variance="posterior"), atol=2e-4)
  beta = diffusion.ddpm_sample(oracle, SHORT, start, rng, variance="beta")
  assert float(jnp.abs(ddim - beta).max()) > 1e-3  # the other variance is another sampler


def _class_oracle(class_means):
  """ε of data N(class_means[label], STD²); the last row is the null label's (unconditional) mean."""
  oracles = [gaussian_oracle(SHORT, mean=m) for m in class_means]

  def denoiser(x, timesteps, labels):
    outputs = jnp.stack([oracle(x, timesteps, None) for oracle in oracles])  # [classes, b, 2]
    return jnp.take_along_axis(outputs, labels[None, :, None], axis=0)[0]

  return denoiser


def test_guidance_is_its_formula_and_w_0_is_the_conditional_model():
  class_means = jnp.array([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.5]])  # classes 0, 1 and the null label 2
  denoiser = _class_oracle(class_means)
  x, timesteps = _start()[:8], jnp.arange(8) * 25
  labels = jnp.array([0, 1] * 4)
  guided = diffusion.classifier_free_guidance(denoiser, 2.0, null_label=2)(x, timesteps, labels)
  expected = 3.0 * denoiser(x, timesteps, labels) - 2.0 * denoiser(x, timesteps, jnp.full_like(labels, 2))
  np.testing.assert_allclose(guided, expected, rtol=1e-5, atol=1e-6)

  start, labels, rng = _start(), jnp.zeros(SAMPLES, jnp.int32), jax.random.key(9)
  conditional = diffusion.ddim_sample(denoiser, SHORT, start, rng, labels, steps=100)
  unguided = diffusion.ddim_sample(
      diffusion.classifier_free_guidance(denoiser, 0.0, 2), SHORT, start, rng, labels, steps=100
  )
  np.testing.assert_allclose(unguided, conditional, atol=1e-5)
  # Equal variances: the guided ε is that of N((1 + w) μ_c - w μ_∅, STD²) at every t.
  guided_samples = diffusion.ddim_sample(
      diffusion.classifier_free_guidance(denoiser, 2.0, 2), SHORT, start, rng, labels, steps=200
  )
  np.testing.assert_allclose(guided_samples.mean(axis=0), 3.0 * class_means[0] - 2.0 * class_means[2], atol=0.05)
  np.testing.assert_allclose(guided_samples.std(axis=0), STD, rtol=0.03)


def test_each_sampler_is_one_compiled_loop_that_a_second_call_does_not_retrace():
  traces = []

  def counting_oracle(x, timesteps, labels):
    traces.append(x.shape)
    return gaussian_oracle(SHORT)(x, timesteps, labels)

  ddim = jax.jit(lambda start, rng: diffusion.ddim_sample(counting_oracle, SHORT, start, rng, steps=50))
  ddpm = jax.jit(lambda start, rng: diffusion.ddpm_sample(counting_oracle, SHORT, start, rng))
  for sample in (ddim, ddpm):
    traces.clear()
    sample(_start(), jax.random.key(0))
    assert len(traces) == 1  # 50 or 200 steps, one trace of the denoiser: the loop is lax.scan's
    sample(_start(1), jax.random.key(1))
    assert len(traces) == 1


def test_ddim_timesteps_run_from_t_to_1_strictly_down():
  np.testing.assert_array_equal(diffusion.ddim_timesteps(10, 10), np.arange(9, -1, -1))
  np.testing.assert_array_equal(diffusion.ddim_timesteps(1000, 1), [999])
  for steps in range(1, 61):
    timesteps = diffusion.ddim_timesteps(60, steps)
    assert len(timesteps) == steps and timesteps[0] == 59 and np.all(np.diff(timesteps) < 0) and timesteps[-1] >= 0


@pytest.mark.parametrize("make, message", [
    (lambda: diffusion.DiffusionConfig(timesteps=0), "diffusion.timesteps=0 must be a positive integer"),
    (lambda: diffusion.DiffusionConfig(schedule="sigmoid"), "diffusion.schedule='sigmoid' is not one of"),
    (lambda: diffusion.DiffusionConfig(beta_start=0.1, beta_end=0.01), "must satisfy 0 < beta_start <= beta_end < 1"),
    (lambda: diffusion.ddim_timesteps(100, 101), "DDIM steps=101 must be an integer in [1, T=100]"),
    (lambda: diffusion.ddim_sample(None, SHORT, _start(), None, eta=1.5), "DDIM eta=1.5 must be in [0, 1]"),
    (lambda: diffusion.ddpm_sample(None, SHORT, _start(), None, variance="large"), "DDPM variance='large'"),
    (lambda: diffusion.latent_unet_config((7, 7, 4), 16, channel_multipliers=(1, 2, 2, 2)),
     "a U-Net of 4 levels (model.channel_multipliers) halves its input 3 times, more than latents of 7x7 allow"),
    (lambda: diffusion.latent_unet_config((8, 8, 4), 15), "model.embedding_dim=15 must be a positive even integer"),
])
def test_impossible_settings_are_one_line_errors(make, message):
  with pytest.raises(ConfigError) as raised:
    make()
  assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_latent_denoiser_pads_a_7x7_latent_for_its_unet_and_crops_the_output_back():
  unet_config = diffusion.latent_unet_config((7, 7, 4), 16, base_width=4, channel_multipliers=(1, 2), norm_groups=4)
  assert (unet_config.image_height, unet_config.image_width, unet_config.out_channels) == (8, 8, 4)
  model = diffusion.LatentDenoiser(unet_config, (7, 7, 4), num_classes=10)
  latents, timesteps = jax.random.normal(jax.random.key(10), (3, 7, 7, 4)), jnp.array([0, 500, 999])
  labels = jnp.array([0, 9, 10])  # 10: the null label
  params = nn.unbox(model.init(jax.random.key(11), latents, timesteps, labels))["params"]
  epsilon = model.apply({"params": params}, latents, timesteps, labels)
  assert epsilon.shape == (3, 7, 7, 4)
  # The reference: the conditioning by hand, the U-Net on the zero-padded latent, cropped.
  def dense(name, x):
    return x @ params[name]["kernel"] + params[name]["bias"]

  time = dense("time_out", jax.nn.silu(dense("time_in", unet.timestep_embedding(timesteps, 16))))
  conditioning = time + params["classes"]["embedding"][labels]
  padded = jnp.pad(latents, ((0, 0), (0, 1), (0, 1), (0, 0)))
  reference = unet.UNet(unet_config).apply({"params": params["unet"]}, padded, conditioning)[:, :7, :7]
  np.testing.assert_allclose(epsilon, reference, rtol=1e-4, atol=1e-5)
  other_labels = model.apply({"params": params}, latents, timesteps, jnp.array([1, 8, 3]))
  assert float(jnp.abs(other_labels - epsilon).max()) > 1e-4  # the class conditions every example


# The spatial latent of the KL-regularised VAE (Rombach et al. 2022, sec. 3) beside the vector latent.
SPATIAL = autoencoder.AutoencoderConfig(image_shape=(16, 16, 1), channels=(8, 16), latent_channels=4)
VECTOR = autoencoder.AutoencoderConfig(image_shape=(16, 16, 1), channels=(8, 16), latent_dim=6)


def _vae(config):
  model = vae.VAE(config)
  images = jax.random.uniform(jax.random.key(12), (4, 16, 16, 1))
  return model, nn.unbox(model.init(jax.random.key(13), images, jax.random.key(14)))["params"], images


def _shapes(params):
  return {jax.tree_util.keystr(path, simple=True, separator="/"): x.shape
          for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_a_spatial_latent_is_the_encoders_last_map_with_no_dense_bottleneck():
  model, params, images = _vae(SPATIAL)
  assert SPATIAL.latent_shape == (4, 4, 4)
  mean, log_variance = model.apply({"params": params}, images, method=vae.VAE.encode)
  assert mean.shape == log_variance.shape == (4, 4, 4, 4)
  shapes = _shapes(params)
  assert shapes["encoder/to_latent/kernel"] == (3, 3, 16, 8)  # 3x3 conv to (μ, log σ²), 2 x 4 channels
  assert shapes["decoder/from_latent/kernel"] == (3, 3, 4, 16)
  outputs, log_likelihood, kl = model.apply({"params": params}, images, jax.random.key(15))
  assert outputs.shape == images.shape and log_likelihood.shape == kl.shape == (4,)
  expected_kl = -0.5 * np.sum(1 + log_variance - mean**2 - np.exp(log_variance), axis=(1, 2, 3))
  np.testing.assert_allclose(kl, expected_kl, rtol=1e-5)  # summed over the whole map
  assert vae.sample_prior(model, params, jax.random.key(16), 3).shape == (3, 16, 16, 1)
  assert vae.interpolate(model, params, images[:2], images[2:], 5).shape == (2, 5, 16, 16, 1)
  bound = vae.importance_weighted_bound(model, params, images, jax.random.key(17), 4)
  assert bound.shape == (4,) and np.all(np.isfinite(bound))
  message = r"latents of shape \(4, 4, 3\) do not fit a decoder of latent shape \(4, 4, 4\)"
  with pytest.raises(ConfigError, match=message):
    model.apply({"params": params}, jnp.zeros((1, 4, 4, 3)), method=vae.VAE.decode)


def test_the_vector_latent_keeps_its_dense_bottleneck():
  model, params, images = _vae(VECTOR)
  assert VECTOR.latent_shape == (6,)
  shapes = _shapes(params)
  assert shapes["encoder/to_latent/kernel"] == (4 * 4 * 16, 12)
  assert shapes["decoder/from_latent/kernel"] == (6, 4 * 4 * 16)
  assert {name.split("/")[1] for name in shapes} == {"conv_0", "conv_1", "to_latent", "from_latent", "up_0", "up_1"}
  mean, _ = model.apply({"params": params}, images, method=vae.VAE.encode)
  assert mean.shape == (4, 6) and vae.sample_prior(model, params, jax.random.key(16), 3).shape == (3, 16, 16, 1)


@pytest.mark.parametrize("fields, message", [
    (dict(latent_channels=-1), "model.latent_channels=-1 must be an integer >= 0"),
    (dict(architecture="mlp", latent_channels=4), "model.latent_channels=4 needs model.architecture='conv'"),
])
def test_an_impossible_spatial_latent_is_one_line(fields, message):
  with pytest.raises(ConfigError) as raised:
    autoencoder.AutoencoderConfig(image_shape=(28, 28, 1), **fields)
  assert message in str(raised.value) and "\n" not in str(raised.value)
