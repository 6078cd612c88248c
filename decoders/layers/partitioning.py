"""Logical axis names that parameters carry, mapped to mesh axes by the harness.

Every parameter is created through `with_axes`, so a model file names the role of
each dimension ("embed", "mlp", "heads", ...) and never a device axis; the
experiment config holds the rules that map those names onto the mesh.
"""
from collections.abc import Callable

import flax.linen as nn

# The logical names used across decoders/, one line each so a rule table can cover them.
BATCH = "batch"
LENGTH = "length"
EMBED = "embed"  # model width
MLP = "mlp"  # feed-forward hidden width
HEADS = "heads"
KV_HEADS = "kv_heads"  # key/value heads, fewer than HEADS under grouped-query attention
HEAD_DIM = "kv"
VOCAB = "vocab"
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
LAYERS = "layers"  # the stacked axis of nn.scan'ed layers: one slice per layer, never split


def with_axes(init: Callable, *names: str | None) -> Callable:
  """An initializer whose parameter is boxed with logical axis `names`."""
  return nn.with_logical_partitioning(init, names)
