"""Weight-only int8 quantisation for decoding: int8 kernels with a float32 scale per output channel.

Decoding one token at batch 1 reads every weight once and does two FLOPs with it, so its speed
is the bytes of weights read per token: int8 reads a quarter of float32's. Each matmul kernel W
is stored as int8 values q and one scale per output channel j (symmetric absmax quantisation,
Jacob et al. 2018 sec. 2.1 with a zero point of 0; vector-wise, Dettmers et al. 2022 sec. 3.1):

    s_j = max_i |W_ij| / 127,     q_ij = round(W_ij / s_j),     |W_ij - q_ij s_j| <= s_j / 2

Activations stay float (weight-only, not W8A8): the scale is per output channel, so it factors
out of the sum and the kernel is dequantised inside the matmul, y_j = s_j sum_i x_i q_ij.
A tied embedding table [vocab, width] gets one scale per vocabulary row: its lookup reads a row
and the row's scale, its `attend` (the output layer) has the rows as output channels.
Norm scales, biases and learned position tables stay float.
"""
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers.partitioning import with_axes

WEIGHTS = ("float", "int8")
INT8_MAX = 127
_VARIANT = "convert"  # benchmark hook (removed before commit)


def quantize(kernel: jax.Array, contracting: Sequence[int]) -> tuple[jax.Array, jax.Array]:
  """(int8 values, float32 scales) of `kernel`, one scale per index of the axes not in `contracting`.

  An all-zero channel gets the scale 0 and the values 0, which dequantise to it exactly.
  """
  kernel = jnp.asarray(kernel, jnp.float32)
  scale = jnp.max(jnp.abs(kernel), axis=tuple(contracting), keepdims=True) / INT8_MAX
  values = jnp.round(kernel / jnp.where(scale > 0, scale, 1.0))
  return jnp.clip(values, -INT8_MAX, INT8_MAX).astype(jnp.int8), jnp.squeeze(scale, tuple(contracting))


CHUNK_BYTES = 1 << 20
CHUNK_ALIGN = 128


def _dot(x, values, dtype, output_dtype, transposed):
  contract = ((x.ndim - 1,), (1 if transposed else 0,))
  if _VARIANT in ("barrier", "chunkedb"):
    x, values = jax.lax.optimization_barrier((x, values))
  if _VARIANT == "mixed":
    return jax.lax.dot_general(x.astype(dtype), values, (contract, ((), ())), preferred_element_type=output_dtype)
  return jax.lax.dot_general(x.astype(dtype), values.astype(dtype), (contract, ((), ())), preferred_element_type=output_dtype)


def int8_matmul(x, values, scale, dtype, output_dtype=None, transposed=False):
  """x [..., k] times the int8 kernel `values` [k, n] ([n, k] if `transposed`) times `scale` [n]: [..., n]."""
  output_dtype = output_dtype or dtype
  n_axis = 0 if transposed else 1
  n, k = values.shape[n_axis], values.shape[1 - n_axis]
  if _VARIANT in ("convert", "mixed", "barrier"):
    y = _dot(x, values, dtype, output_dtype, transposed)
  elif _VARIANT == "loop":
    blocks = max(2, -(-n * k * 4 // CHUNK_BYTES))
    block = -(-n // blocks)

    def one(i, y):
      start = jnp.minimum(i * block, n - block)
      part = _dot(x, jax.lax.dynamic_slice_in_dim(values, start, block, n_axis), dtype, output_dtype, transposed)
      return jax.lax.dynamic_update_slice_in_dim(y, part, start, axis=-1)

    y = jax.lax.fori_loop(0, blocks, one, jnp.zeros((*x.shape[:-1], n), output_dtype))
  else:
    block = max(CHUNK_ALIGN, CHUNK_BYTES // (k * 4) // CHUNK_ALIGN * CHUNK_ALIGN)
    blocks = n // block
    parts = []
    if blocks > 1:
      def one(i):
        return _dot(x, jax.lax.dynamic_slice_in_dim(values, i * block, block, n_axis), dtype, output_dtype, transposed)
      mapped = jax.lax.map(one, jnp.arange(blocks))
      parts.append(jnp.moveaxis(mapped, 0, -2).reshape(*x.shape[:-1], blocks * block))
      start = blocks * block
    else:
      start = 0
    if start < n:
      parts.append(_dot(x, jax.lax.slice_in_dim(values, start, n, axis=n_axis), dtype, output_dtype, transposed))
    y = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
  return (y.astype(jnp.float32) * scale).astype(output_dtype)


def int8_dot(x, values, scale, axes, dtype, output_dtype=None):
  """Int8DenseGeneral's product: x's contracting `axes[0]` (trailing) against the kernel's leading ones."""
  x_axes, k_axes = axes
  k = 1
  for a in k_axes:
    k *= values.shape[a]
  out_shape = values.shape[len(k_axes):]
  x2 = x.reshape(*x.shape[: x.ndim - len(x_axes)], k)
  y = int8_matmul(x2, values.reshape(k, -1), scale.reshape(-1), dtype, output_dtype)
  return y.reshape(*y.shape[:-1], *out_shape)


def declare(module: nn.Module, names: tuple[str, str], init: Callable, shape, axes, contracting) -> tuple[jax.Array, jax.Array]:
  """Declares `module`'s int8 values and float32 scales (`names`) for a kernel of `shape` whose float version `init` draws.

  At initialisation one float kernel is drawn and quantised, so the values and scales belong
  together; `axes` are the kernel's logical axis names, the scales take those of its output axes.
  """
  initial = (None, None)
  if module.is_initializing():
    initial = quantize(init(module.make_rng("params"), shape, jnp.float32), contracting)
  scale_axes = tuple(name for axis, name in enumerate(axes) if axis not in contracting)
  values = module.param(names[0], with_axes(lambda _: initial[0], *axes))
  scale = module.param(names[1], with_axes(lambda _: initial[1], *scale_axes))
  return values, scale


class Int8DenseGeneral(nn.Module):
  """nn.DenseGeneral with an int8 `kernel` and a float32 `scale` per output feature (the `features` axes).

  `axis` are the input's contracted axes; the kernel's shape is theirs followed by `features`.
  """

  features: int | tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  axis: int | tuple[int, ...] = -1
  use_bias: bool = True
  dtype: Any = jnp.float32
  output_dtype: Any = None  # the compute dtype if None
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axis = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
    axis = tuple(a % x.ndim for a in axis)
    contracting = tuple(range(len(axis)))
    shape = tuple(x.shape[a] for a in axis) + features
    values, scale = declare(self, ("kernel", "scale"), self.kernel_init, shape, self.kernel_axes, contracting)
    y = int8_dot(x, values, scale, (axis, contracting), self.dtype, self.output_dtype)
    if self.use_bias:
      bias = self.param("bias", with_axes(nn.initializers.zeros, *self.kernel_axes[len(axis):]), features, jnp.float32)
      y = y + bias.astype(y.dtype)
    return y


def dense(
    weights: str,
    features: int | tuple[int, ...],
    kernel_axes: tuple[str | None, ...],
    *,
    axis: int | tuple[int, ...] = -1,
    use_bias: bool,
    dtype: Any,
    kernel_init: Callable,
    name: str,
    float32_output: bool = False,
) -> nn.Module:
  """A dense layer whose kernel has logical `kernel_axes`: nn.DenseGeneral for float weights, Int8DenseGeneral for int8.

  Both name their parameters alike (kernel, bias; int8 adds scale). `float32_output` makes the
  products float32 whatever the compute dtype (logits are never rounded to bfloat16).
  """
  if weights not in WEIGHTS:
    raise ValueError(f"unknown weights {weights!r}; expected one of {WEIGHTS}")
  output_dtype = jnp.float32 if float32_output else None
  num_inputs = 1 if isinstance(axis, int) else len(axis)
  if weights == "int8":
    return Int8DenseGeneral(
        features, kernel_axes, axis, use_bias, dtype, output_dtype, kernel_init, name=name
    )
  dot_general = functools.partial(jax.lax.dot_general, preferred_element_type=output_dtype)
  return nn.DenseGeneral(
      features=features,
      axis=axis,
      use_bias=use_bias,
      dtype=dtype,
      kernel_init=with_axes(kernel_init, *kernel_axes),
      bias_init=with_axes(nn.initializers.zeros, *kernel_axes[num_inputs:]),
      dot_general=dot_general,
      name=name,
  )
