"""Losses as pure functions of arrays."""
import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None):
  """Summed token cross-entropy in nats and the summed weight: (sum -log p(target), count).

  Returning the sum and the count (not their ratio) lets callers average over any
  number of batches or devices exactly.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  if weights is None:
    weights = jnp.ones_like(nll)
  return jnp.sum(nll * weights), jnp.sum(weights)
