"""losses.cross_entropy against a plain numpy reference."""
import numpy as np
import scipy.special

from decoders import losses


def _numpy_cross_entropy(logits, targets, weights):
  shifted = logits - logits.max(axis=-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return (nll * weights).sum(), weights.sum()


def test_cross_entropy_matches_numpy_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 4
  targets = rng.integers(0, 11, size=(3, 5))
  weights = (rng.random((3, 5)) > 0.3).astype(np.float32)

  total, count = losses.cross_entropy(logits, targets, weights)
  expected_total, expected_count = _numpy_cross_entropy(logits.astype(np.float64), targets, weights)
  np.testing.assert_allclose(total, expected_total, rtol=1e-5)
  assert count == expected_count


def test_cross_entropy_without_weights_counts_every_token():
  logits = np.zeros((2, 4, 8), np.float32)  # uniform: -log p = log 8 for every token
  total, count = losses.cross_entropy(logits, np.zeros((2, 4), np.int32))
  assert count == 8
  np.testing.assert_allclose(total, 8 * np.log(8), rtol=1e-6)


def test_cross_entropy_gradient_is_softmax_minus_one_hot_even_beside_masked_logits():
  import jax

  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 3, 6)).astype(np.float32)
  logits[..., -2:] = np.finfo(np.float32).min  # padded vocabulary rows, as DecoderLM masks them
  targets = rng.integers(0, 4, size=(2, 3))
  grad = jax.grad(lambda z: losses.cross_entropy(z, targets)[0])(logits)
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  expected = shifted / shifted.sum(axis=-1, keepdims=True) - np.eye(6)[targets]
  np.testing.assert_allclose(grad, expected, atol=1e-6)
  assert np.all(grad[..., -2:] == 0)


def test_label_smoothing_is_the_cross_entropy_against_the_smoothed_target_over_the_real_classes():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
  logits[..., -2:] = np.finfo(np.float32).min  # two padded rows: no class, so they get no target mass
  targets = rng.integers(0, 5, size=(2, 3))
  weights = (rng.random((2, 3)) > 0.3).astype(np.float32)
  epsilon, classes = 0.1, 5
  shifted = logits[..., :classes].astype(np.float64)
  log_probs = shifted - scipy.special.logsumexp(shifted, axis=-1, keepdims=True)
  smoothed = (1 - epsilon) * np.eye(classes)[targets] + epsilon / classes
  expected = (-(smoothed * log_probs).sum(-1) * weights).sum()
  total, count = losses.cross_entropy(logits, targets, weights, label_smoothing=epsilon, num_classes=classes)
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert count == weights.sum()
