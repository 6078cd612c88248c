"""Position-wise feed-forward blocks (Vaswani et al. 2017, eq. 2), activation chosen by name."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers.partitioning import EMBED, MLP, with_axes

ACTIVATIONS = {"gelu": nn.gelu, "relu": nn.relu}


class FeedForward(nn.Module):
  """x -> W2 act(W1 x): widen to `hidden_dim`, apply `activation`, project back."""

  hidden_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.normal(stddev=0.02)
  output_init: Any = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    width = x.shape[-1]
    h = nn.Dense(
        self.hidden_dim,
        use_bias=self.use_bias,
        dtype=self.dtype,
        kernel_init=with_axes(self.kernel_init, EMBED, MLP),
        bias_init=with_axes(nn.initializers.zeros, MLP),
        name="wi",
    )(x)
    h = ACTIVATIONS[self.activation](h)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(
        width,
        use_bias=self.use_bias,
        dtype=self.dtype,
        kernel_init=with_axes(self.output_init, MLP, EMBED),
        bias_init=with_axes(nn.initializers.zeros, EMBED),
        name="wo",
    )(h)
