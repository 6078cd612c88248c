"""Normalisation layers chosen by name, over the last (model-width) axis."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from decoders.layers.partitioning import EMBED, with_axes

NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, name: str, dtype: Any = jnp.float32, epsilon: float = 1e-5) -> nn.Module:
  """A norm whose statistics are computed in float32 whatever the compute dtype."""
  if kind == "layernorm":  # Ba et al. 2016: (x - mean) / std * scale + bias
    return nn.LayerNorm(
        epsilon=epsilon,
        dtype=dtype,
        scale_init=with_axes(nn.initializers.ones, EMBED),
        bias_init=with_axes(nn.initializers.zeros, EMBED),
        name=name,
    )
  if kind == "rmsnorm":  # Zhang & Sennrich 2019, eq. 4: x / rms(x) * scale; no centring, no bias (LLaMA)
    return nn.RMSNorm(epsilon=epsilon, dtype=dtype, scale_init=with_axes(nn.initializers.ones, EMBED), name=name)
  raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
