"""Position-wise feed-forward blocks (Vaswani et al. 2017, eq. 2), plain or gated, activation chosen by name.

    plain:  x -> W_o act(W_i x)
    gated:  x -> W_o (act(W_gate x) * W_i x)      (Shazeer 2020, eqs. 5-6: GeGLU, SwiGLU)
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers import quantization
from decoders.layers.partitioning import EMBED, MLP

ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": functools.partial(nn.gelu, approximate=False),  # Hendrycks & Gimpel 2016, exact (erf)
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),  # their tanh approximation (GPT-2, BERT)
    "swiglu": nn.silu,  # gated, Swish with beta = 1 (LLaMA, Mistral)
    "geglu": functools.partial(nn.gelu, approximate=False),  # gated
    "geglu_tanh": functools.partial(nn.gelu, approximate=True),  # gated, tanh GELU (T5 v1.1's "gated-gelu")
}
GATED = ("swiglu", "geglu", "geglu_tanh")


class FeedForward(nn.Module):
  """Widen to `hidden_dim`, apply `activation` (gating it for GATED ones), project back to the input width."""

  hidden_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.normal(stddev=0.02)
  output_init: Any = nn.initializers.normal(stddev=0.02)
  weights: str = "float"  # one of quantization.WEIGHTS: int8 stores the kernels as int8 + scales

  def _widen(self, x: jax.Array, name: str) -> jax.Array:
    return quantization.dense(
        self.weights, self.hidden_dim, (EMBED, MLP), use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=self.kernel_init, name=name,
    )(x)

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    activation = ACTIVATIONS[self.activation]
    if self.activation in GATED:
      h = activation(self._widen(x, "wi_gate")) * self._widen(x, "wi")
    else:
      h = activation(self._widen(x, "wi"))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return quantization.dense(
        self.weights, x.shape[-1], (MLP, EMBED), use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=self.output_init, name="wo",
    )(h)
