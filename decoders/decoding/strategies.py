"""Decoding strategies: small frozen dataclasses mapping (logits, rng) -> next tokens."""
import dataclasses

import jax
import jax.numpy as jnp

from decoders.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Temperature:
  """Samples from softmax(logits / temperature); temperature 0 is greedy (argmax)."""

  temperature: float = 1.0

  def __post_init__(self):
    if self.temperature < 0:
      raise ConfigError(f"temperature={self.temperature} must be >= 0")

  def __call__(self, logits: jax.Array, rng: jax.Array) -> jax.Array:
    """logits: [batch, vocab] -> tokens: [batch] int32."""
    if self.temperature == 0:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, logits / self.temperature, axis=-1).astype(jnp.int32)
