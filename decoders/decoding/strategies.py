"""Decoding strategies: small frozen dataclasses mapping (logits, rng) -> next tokens.

Frozen and hashable, so the compiled generation loop takes them as static arguments: a
strategy's settings are part of the program, and changing one compiles a new loop.
"""
import dataclasses

import jax
import jax.numpy as jnp

from decoders.decoding import filters
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


@dataclasses.dataclass(frozen=True)
class Sample:
  """Samples after the logits filters that are set, in the order users expect (filters.FILTERS):
  temperature, then top-k, top-p, min-p and typical; each as Hugging Face's processor of that name."""

  temperature: float = 1.0
  top_k: int | None = None
  top_p: float | None = None
  min_p: float | None = None
  typical: float | None = None

  def __post_init__(self):
    self._filter(jnp.zeros((1, 2), jnp.float32))  # each filter checks its setting: fail here, not in the loop

  def _filter(self, logits: jax.Array) -> jax.Array:
    settings = {name: getattr(self, name) for name in filters.FILTERS}
    return filters.apply_filters(logits, **settings)

  def __call__(self, logits: jax.Array, rng: jax.Array) -> jax.Array:
    return jax.random.categorical(rng, self._filter(logits), axis=-1).astype(jnp.int32)
