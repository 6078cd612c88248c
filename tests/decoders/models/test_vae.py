"""The VAE (Kingma & Welling 2013) and its bounds: the analytic KL against Monte Carlo, the reparameterised sample's
gradients, the IWAE bound (Burda et al. 2016) between the ELBO and log p(x) by quadrature, prior samples and latent
interpolation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from decoders.errors import ConfigError
from decoders.models import autoencoder, vae

IMAGES = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))


def _model(likelihood="bernoulli", latent_dim=4, decoder_scale=1.0):
  """A small MLP VAE at its initialisation; `decoder_scale` sharpens p(x|z), widening the gap between q(z|x) and the
  true posterior that importance weighting closes."""
  config = autoencoder.AutoencoderConfig(
      image_shape=(8, 8, 1), architecture="mlp", hidden_sizes=(16,), latent_dim=latent_dim, likelihood=likelihood
  )
  model = vae.VAE(config)
  params = nn.unbox(model.init(jax.random.key(1), IMAGES, jax.random.key(2)))["params"]
  params["decoder"] = jax.tree.map(lambda w: decoder_scale * w, params["decoder"])
  return model, params


def _mean_and_standard_error(samples):
  samples = np.asarray(samples, np.float64).reshape(len(samples), -1).mean(axis=1)  # one mean over images per key
  return samples.mean(), samples.std() / np.sqrt(len(samples))


def test_the_analytic_kl_equals_a_monte_carlo_estimate():
  mean = jax.random.normal(jax.random.key(3), (3, 4))
  log_variance = jax.random.normal(jax.random.key(4), (3, 4))
  keys = jax.random.split(jax.random.key(5), 100_000)
  latents = jax.vmap(lambda key: vae.reparameterize(key, mean, log_variance))(keys)
  log_q = vae.diagonal_gaussian_log_density(latents, mean, log_variance)
  log_p = vae.diagonal_gaussian_log_density(latents, jnp.zeros_like(latents), jnp.zeros_like(latents))
  estimate = np.asarray(log_q - log_p, np.float64)  # [samples, 3]: E_q[log q - log p] = KL(q || p)
  standard_error = estimate.std(axis=0) / np.sqrt(len(estimate))
  np.testing.assert_allclose(estimate.mean(axis=0), vae.gaussian_kl(mean, log_variance), atol=5 * standard_error.max())
  assert vae.gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0] == 0.0  # q = p


def test_the_sample_is_differentiable_in_the_mean_and_the_variance():
  key, mean, log_variance = jax.random.key(6), jnp.array([0.3, -1.0]), jnp.array([0.5, -2.0])
  epsilon = (vae.reparameterize(key, mean, log_variance) - mean) / jnp.exp(0.5 * log_variance)
  by_mean = jax.jacobian(lambda m: vae.reparameterize(key, m, log_variance))(mean)
  by_log_variance = jax.jacobian(lambda v: vae.reparameterize(key, mean, v))(log_variance)
  np.testing.assert_allclose(by_mean, np.eye(2), atol=1e-6)
  np.testing.assert_allclose(np.diag(by_log_variance), 0.5 * jnp.exp(0.5 * log_variance) * epsilon, rtol=1e-5)


def test_the_reconstruction_term_trains_the_encoder_through_the_sample():
  model, params = _model()

  def reconstruction_nats(params):  # the KL left out: any encoder gradient must come through z
    _, log_likelihood, _ = model.apply({"params": params}, IMAGES, jax.random.key(7))
    return -log_likelihood.mean()

  grads = jax.grad(reconstruction_nats)(params)
  for name in ("hidden_0", "to_latent"):
    assert np.abs(grads["encoder"][name]["kernel"]).max() > 1e-4
  # Both heads: the mean's and the log-variance's halves of the last layer.
  latent = model.config.latent_dim
  assert np.abs(grads["encoder"]["to_latent"]["kernel"][:, latent:]).max() > 1e-6


def test_the_elbo_is_the_likelihood_less_the_kl_and_the_model_scores_its_targets():
  model, params = _model()
  key, targets = jax.random.key(8), 1.0 - IMAGES
  outputs, log_likelihood, kl = model.apply({"params": params}, IMAGES, key, targets)
  np.testing.assert_allclose(log_likelihood, autoencoder.bernoulli_log_likelihood(targets, outputs), rtol=1e-6)
  mean, log_variance = model.apply({"params": params}, IMAGES, method=vae.VAE.encode)
  np.testing.assert_allclose(kl, vae.gaussian_kl(mean, log_variance), rtol=1e-6)
  _, own_log_likelihood, _ = model.apply({"params": params}, IMAGES, key)
  np.testing.assert_allclose(vae.elbo(model, params, IMAGES, key), own_log_likelihood - kl, rtol=1e-6)


def test_one_importance_sample_is_the_elbo_in_expectation():
  model, params = _model()
  keys = jax.random.split(jax.random.key(9), 256)
  elbo, elbo_error = _mean_and_standard_error(jax.vmap(lambda k: vae.elbo(model, params, IMAGES, k))(keys))
  iwae, iwae_error = _mean_and_standard_error(
      jax.vmap(lambda k: vae.importance_weighted_bound(model, params, IMAGES, k, 1))(keys)
  )
  assert abs(elbo - iwae) < 4 * np.hypot(elbo_error, iwae_error)


def _log_marginal_likelihood(model, params, images):
  """log p(x) = log ∫ p(x|z) p(z) dz per image, by quadrature over a one-dimensional latent (float64 sums)."""
  grid = np.linspace(-10.0, 10.0, 4001)
  log_likelihood = jax.vmap(
      lambda z: model.apply({"params": params}, images, jnp.full((len(images), 1), z), method=vae.VAE.log_likelihood)
  )(jnp.asarray(grid, jnp.float32))
  log_joint = np.asarray(log_likelihood, np.float64) - 0.5 * (grid[:, None] ** 2 + np.log(2 * np.pi))
  return scipy.special.logsumexp(log_joint, axis=0) + np.log(grid[1] - grid[0])


def test_the_importance_weighted_bound_rises_with_k_from_the_elbo_to_the_log_likelihood():
  model, params = _model(latent_dim=1, decoder_scale=3.0)
  log_px = _log_marginal_likelihood(model, params, IMAGES).mean()
  keys = jax.random.split(jax.random.key(10), 16)
  elbo, _ = _mean_and_standard_error(jax.vmap(lambda k: vae.elbo(model, params, IMAGES, k))(keys))
  (iwae_16, error_16), (iwae_256, error_256) = [
      _mean_and_standard_error(jax.vmap(lambda k: vae.importance_weighted_bound(model, params, IMAGES, k, K))(keys))
      for K in (16, 256)
  ]
  # Measured: ELBO ≈ -139, IWAE_16 ≈ -48.6 ± 0.2, IWAE_256 ≈ -47.26 ± 0.07, log p(x) = -47.23 nats per image.
  assert elbo < iwae_16 - 10
  assert iwae_16 + 4 * np.hypot(error_16, error_256) < iwae_256
  assert log_px - 0.3 < iwae_256 < log_px + 4 * error_256  # a lower bound, nearly tight at K = 256


def test_the_gaussian_decoder_learns_one_variance():
  model, params = _model("gaussian")
  assert params["likelihood"]["log_variance"].shape == ()
  grads = jax.grad(lambda p: -vae.elbo(model, p, IMAGES, jax.random.key(11)).mean())(params)
  assert grads["likelihood"]["log_variance"] != 0.0


def test_prior_samples_are_images_of_the_decoders_mean():
  model, params = _model()
  samples = vae.sample_prior(model, params, jax.random.key(12), 5)
  assert samples.shape == (5, 8, 8, 1) and 0 < samples.min() and samples.max() < 1
  np.testing.assert_array_equal(samples, vae.sample_prior(model, params, jax.random.key(12), 5))
  assert not np.array_equal(samples, vae.sample_prior(model, params, jax.random.key(13), 5))


def test_interpolation_runs_straight_between_the_posterior_means():
  model, params = _model()
  start, end = IMAGES[:2], IMAGES[2:4]
  path = vae.interpolate(model, params, start, end, 3)
  assert path.shape == (2, 3, 8, 8, 1)
  variables = {"params": params}
  start_latent, _ = model.apply(variables, start, method=vae.VAE.encode)
  end_latent, _ = model.apply(variables, end, method=vae.VAE.encode)
  for index, latent in enumerate([start_latent, (start_latent + end_latent) / 2, end_latent]):
    expected = jax.nn.sigmoid(model.apply(variables, latent, method=vae.VAE.decode))
    np.testing.assert_allclose(path[:, index], expected, atol=1e-6)


def test_impossible_counts_are_one_line():
  model, params = _model()
  with pytest.raises(ConfigError, match="importance samples K=0 must be a positive integer"):
    vae.importance_weighted_bound(model, params, IMAGES, jax.random.key(0), 0)
  with pytest.raises(ConfigError, match=r"interpolation steps=1 must be an integer >= 2"):
    vae.interpolate(model, params, IMAGES, IMAGES, 1)
