"""Norms compute their papers' formulas, in float32 statistics."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from decoders.layers import norms

X = np.random.default_rng(0).normal(2.0, 3.0, size=(2, 5, 8)).astype(np.float32)


def _apply(kind, x, epsilon=1e-5):
  norm = norms.make_norm(kind, "norm", epsilon=epsilon)
  params = nn.unbox(norm.init(jax.random.key(0), x))
  return params["params"], np.asarray(norm.apply(params, x))


def test_rmsnorm_divides_by_the_root_mean_square_without_centring():
  params, out = _apply("rmsnorm", X, epsilon=1e-6)
  assert set(params) == {"scale"}  # no bias
  expected = X / np.sqrt(np.mean(X**2, axis=-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  assert abs(out.mean()) > 0.1  # the mean (2.0 here) is not removed, unlike LayerNorm


def test_layernorm_centres_and_scales():
  params, out = _apply("layernorm", X)
  assert set(params) == {"scale", "bias"}
  expected = (X - X.mean(-1, keepdims=True)) / np.sqrt(X.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_unknown_norm_is_rejected():
  with pytest.raises(ValueError, match="batchnorm"):
    norms.make_norm("batchnorm", "norm")
