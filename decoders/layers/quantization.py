"""Weight-only int8 quantisation for decoding: int8 kernels with a float32 scale per output channel.

Decoding one token at batch 1 reads every weight once and does two FLOPs with it, so its speed
is the bytes of weights read per token: int8 reads a quarter of float32's. Each matmul kernel W
is stored as int8 values q and one scale per output channel j (symmetric absmax quantisation,
Jacob et al. 2018 sec. 2.1 with a zero point of 0; vector-wise, Dettmers et al. 2022 sec. 3.1):

    s_j = max_i |W_ij| / 127,     q_ij = round(W_ij / s_j),     |W_ij - q_ij s_j| <= s_j / 2

Activations stay float (weight-only; W8A8, which also rounds the activations to int8 per token,
is a different method that adds the activations' rounding error for an int8 x int8 product that
XLA:CPU runs no faster, because it widens both operands to int32 first). The scale is per output
channel, so it factors out of the sum: y_j = s_j sum_i x_i q_ij, and the kernel is dequantised
inside the matmul (`int8_matmul`).

A tied embedding table [vocab, width] gets one scale per vocabulary row: its lookup reads a row
and that row's scale, and its `attend` (the output layer) has the rows as output channels.
Norm scales, biases and learned position tables stay float.
"""
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers.partitioning import with_axes

WEIGHTS = ("float", "int8")
INT8_MAX = 127
# The most bytes of one dequantised block of a kernel (`int8_matmul`): it stays in a core's L2 cache.
BLOCK_BYTES = 1 << 20


def quantize(kernel: jax.Array, contracting: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """(int8 values, float32 scales) of `kernel`: one scale per index of the axes not in `contracting`.

  An all-zero channel gets the scale 0 and the values 0, which dequantise to it exactly.
  """
  kernel = jnp.asarray(kernel, jnp.float32)
  scale = jnp.max(jnp.abs(kernel), axis=contracting, keepdims=True) / INT8_MAX
  values = jnp.clip(jnp.round(kernel / jnp.where(scale > 0, scale, 1.0)), -INT8_MAX, INT8_MAX)
  return values.astype(jnp.int8), jnp.squeeze(scale, contracting)


def int8_matmul(x, values, scale, dtype, output_dtype=None, transposed: bool = False) -> jax.Array:
  """x [..., k] times the kernel `values` [k, n] (int8; [n, k] if `transposed`) times `scale` [n]: [..., n].

  Computed as (x @ values.astype(dtype)) * scale in blocks of output channels, each converted
  and multiplied inside one loop. XLA:CPU does not fuse an int8 -> float convert into its dot:
  a whole-kernel `astype` writes a float32 copy of the kernel (4x the int8 bytes), and since
  it does not depend on the activations, the scheduler converts every layer's kernels up front
  (513 MiB of temporaries for SmolLM2-135M, refaulted page by page each step). A block of at
  most BLOCK_BYTES stays in cache, and a loop over blocks keeps each conversion next to its use.
  On GPU and TPU XLA fuses the convert into the matmul itself, so there the blocks are not
  needed and only serialise the matmul (into two, for kernels up to BLOCK_BYTES as float).
  """
  output_dtype = output_dtype or dtype
  channel_axis = 0 if transposed else 1
  n, k = values.shape[channel_axis], values.shape[1 - channel_axis]
  dimension_numbers = (((x.ndim - 1,), (1 - channel_axis,)), ((), ()))
  # At least two blocks: XLA removes a one-trip loop, and the conversion would float up front again.
  num_blocks = max(2, -(-n * k * jnp.dtype(dtype).itemsize // BLOCK_BYTES))
  block = -(-n // num_blocks)

  def multiply_block(i, y):
    start = jnp.minimum(i * block, n - block)  # the last block may overlap the one before; both write the same values
    part = jax.lax.dynamic_slice_in_dim(values, start, block, channel_axis).astype(dtype)
    product = jax.lax.dot_general(x.astype(dtype), part, dimension_numbers, preferred_element_type=output_dtype)
    return jax.lax.dynamic_update_slice_in_dim(y, product, start, axis=-1)

  y = jax.lax.fori_loop(0, num_blocks, multiply_block, jnp.zeros((*x.shape[:-1], n), output_dtype))
  return (y.astype(jnp.float32) * scale).astype(output_dtype)


def declare(module: nn.Module, names: tuple[str, str], init: Callable, shape, axes, contracting) -> tuple:
  """`module`'s int8 values and float32 scales (parameters `names`) of a kernel of `shape` that `init` draws in float.

  At initialisation one float kernel is drawn and quantised, so values and scales belong
  together. `axes` are the kernel's logical axis names; the scales carry those of its output
  axes (all but `contracting`), so a sharded run splits them like the kernel.
  """
  initial = (None, None)
  if module.is_initializing():
    initial = quantize(init(module.make_rng("params"), shape, jnp.float32), contracting)
  scale_axes = tuple(name for axis, name in enumerate(axes) if axis not in contracting)
  values = module.param(names[0], with_axes(lambda _: initial[0], *axes))
  scale = module.param(names[1], with_axes(lambda _: initial[1], *scale_axes))
  return values, scale


class Int8DenseGeneral(nn.Module):
  """nn.DenseGeneral over the input's trailing `num_inputs` axes: an int8 `kernel` and a float32 `scale` per output.

  The kernel's shape is the contracted axes' followed by `features`, as nn.DenseGeneral's.
  """

  features: tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  num_inputs: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  output_dtype: Any = None  # the compute dtype if None
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    inputs = x.shape[x.ndim - self.num_inputs :]
    contracting = tuple(range(self.num_inputs))
    shape = inputs + self.features
    values, scale = declare(self, ("kernel", "scale"), self.kernel_init, shape, self.kernel_axes, contracting)
    flat = x.reshape(*x.shape[: x.ndim - self.num_inputs], -1)
    y = int8_matmul(flat, values.reshape(flat.shape[-1], -1), scale.reshape(-1), self.dtype, self.output_dtype)
    y = y.reshape(*y.shape[:-1], *self.features)
    if self.use_bias:
      bias = self.param("bias", with_axes(nn.initializers.zeros, *self.kernel_axes[self.num_inputs :]), self.features)
      y = y + bias.astype(y.dtype)
    return y


def dense(
    weights: str,
    features: int | tuple[int, ...],
    kernel_axes: tuple[str | None, ...],
    *,
    num_inputs: int = 1,
    use_bias: bool,
    dtype: Any,
    kernel_init: Callable,
    name: str,
    float32_output: bool = False,
) -> nn.Module:
  """A dense layer over the input's trailing `num_inputs` axes whose kernel has the logical names `kernel_axes`.

  nn.DenseGeneral for float `weights`, Int8DenseGeneral for int8: both name their parameters
  kernel and bias (int8 adds scale). `float32_output` makes the products float32 whatever the
  compute dtype, so logits are never rounded to bfloat16.
  """
  if weights not in WEIGHTS:
    raise ValueError(f"unknown weights {weights!r}; expected one of {WEIGHTS}")
  features = (features,) if isinstance(features, int) else tuple(features)
  output_dtype = jnp.float32 if float32_output else None
  if weights == "int8":
    return Int8DenseGeneral(features, kernel_axes, num_inputs, use_bias, dtype, output_dtype, kernel_init, name=name)
  return nn.DenseGeneral(
      features=features,
      axis=tuple(range(-num_inputs, 0)),
      use_bias=use_bias,
      dtype=dtype,
      kernel_init=with_axes(kernel_init, *kernel_axes),
      bias_init=with_axes(nn.initializers.zeros, *kernel_axes[num_inputs:]),
      dot_general=functools.partial(jax.lax.dot_general, preferred_element_type=output_dtype),
      name=name,
  )


# quantize_params: which parameters are kernels, and which of their axes a matmul contracts.
# Every dense kernel (created by `dense`) contracts its leading axis, except attention's output
# projection [heads, head_dim, width] (decoders/layers/attention.py), which contracts two. A tied
# embedding table [vocab, width] contracts its trailing axis in `attend`.
TWO_INPUT_KERNELS = ("out",)
SCANNED_LAYERS = "layers"  # decoder_lm.SCANNED_LAYERS: its parameters have a leading [num_layers] axis


def quantize_params(params: dict, config) -> dict:
  """A float model's parameters (unboxed) as those of the same model with `weights="int8"` (a DecoderLMConfig `config`).

  Every matmul kernel becomes {"kernel": int8, "scale": float32} beside its float bias; with
  tied embeddings, so does the table ({"embedding", "scale"}). Looped and scanned layouts both.
  """

  def convert(path: tuple[str, ...], tree):
    if not isinstance(tree, dict):
      return tree
    if "kernel" in tree:
      lead = 1 if config.scan_layers and path[0] == SCANNED_LAYERS else 0
      num_inputs = 2 if path[-1] in TWO_INPUT_KERNELS else 1
      values, scale = quantize(tree["kernel"], tuple(range(lead, lead + num_inputs)))
      return {**tree, "kernel": values, "scale": scale}
    return {name: convert((*path, name), subtree) for name, subtree in tree.items()}

  quantized = convert((), dict(params))
  if config.tie_embeddings:
    table, scale = quantize(params["embed"]["embedding"], (1,))
    quantized["embed"] = {"embedding": table, "scale": scale}
  return quantized
