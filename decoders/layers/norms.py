"""Normalisation layers chosen by name."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from decoders.layers.partitioning import EMBED, with_axes

NORMS = ("layernorm",)


def make_norm(kind: str, name: str, dtype: Any = jnp.float32) -> nn.Module:
  """A norm over the last (model-width) axis; statistics are computed in float32."""
  if kind == "layernorm":  # Ba et al. 2016
    return nn.LayerNorm(
        epsilon=1e-5,
        dtype=dtype,
        scale_init=with_axes(nn.initializers.ones, EMBED),
        bias_init=with_axes(nn.initializers.zeros, EMBED),
        name=name,
    )
  raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
