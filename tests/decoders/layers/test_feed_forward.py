"""Feed-forward variants compute their papers' formulas (Vaswani et al. 2017 eq. 2; Shazeer 2020 eqs. 5-6)."""
import flax.linen as nn
import jax
import numpy as np
import pytest
from scipy.special import erf

from decoders.layers import feed_forward

X = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)


def _gelu_exact(x):
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


REFERENCE = {
    "relu": lambda x: np.maximum(x, 0),
    "gelu": _gelu_exact,
    "gelu_tanh": _gelu_tanh,
    "swiglu": lambda x: x / (1 + np.exp(-x)),
    "geglu": _gelu_exact,
    "geglu_tanh": _gelu_tanh,
}


def _dense(params, x):
  return x @ np.asarray(params["kernel"]) + np.asarray(params["bias"])


@pytest.mark.parametrize("activation", sorted(feed_forward.ACTIVATIONS))
def test_each_variant_matches_its_formula(activation):
  block = feed_forward.FeedForward(hidden_dim=16, activation=activation)
  params = nn.unbox(block.init(jax.random.key(0), X, deterministic=True))["params"]
  out = np.asarray(block.apply({"params": params}, X, deterministic=True))

  act = REFERENCE[activation]
  if activation in feed_forward.GATED:
    assert set(params) == {"wi_gate", "wi", "wo"}
    hidden = act(_dense(params["wi_gate"], X)) * _dense(params["wi"], X)
  else:
    assert set(params) == {"wi", "wo"}
    hidden = act(_dense(params["wi"], X))
  np.testing.assert_allclose(out, _dense(params["wo"], hidden), rtol=1e-5, atol=1e-6)


def test_exact_and_tanh_gelu_are_different_functions():
  x = np.linspace(-3, 3, 13, dtype=np.float32)
  exact, tanh = (np.asarray(feed_forward.ACTIVATIONS[name](x)) for name in ("gelu", "gelu_tanh"))
  assert 1e-5 < np.abs(exact - tanh).max() < 1e-2
