"""Recurrent cells with explicit state, and the layers that run them over right-padded batches.

    GRU (Cho et al. 2014, eqs. 5-8):
      r  = sigmoid(W_r x + U_r h)          reset gate (5)
      z  = sigmoid(W_z x + U_z h)          update gate (6)
      h' = z * h + (1 - z) * h~            (7)
      h~ = tanh(W x + U (r * h))           candidate (8): the reset gate scales h before U
    LSTM with a forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000), as Zaremba et al. 2014
    and Sutskever et al. 2014 use it:
      i, f, o = sigmoid(W x + U h + b),  g = tanh(W_g x + U_g h + b_g)
      c' = f * c + i * g,                h' = o * tanh(c')

A cell is one step `(carry, x) -> (carry, h)`: the GRU's carry is h, the LSTM's (c, h). Its input
projection W x + b does not depend on the state, so `Recurrent` applies it to the whole sequence in
one matmul before the `nn.scan` and compiles one step for the recurrence alone. Matmuls run in the
compute dtype; the gates and the state are float32, because a bfloat16 state would round at every
step and the error compounds over the sequence.

The GRU is Cho et al.'s, not cuDNN's (torch.nn.GRUCell), which applies the reset gate after the
recurrent matmul, r * (U h + b): a different function. The LSTM is torch.nn.LSTMCell's, gates in
its order i, f, g, o, with its two biases summed into one.

`Recurrent` runs a cell over a right-padded batch: a row's state stops at its length, so the row
ends exactly as it would alone, and `reverse` reads each row's valid prefix backwards (the backward
direction of a bidirectional encoder, Bahdanau et al. 2015 sec. 3.2). `RecurrentEncoder` stacks
layers, optionally bidirectional.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers.partitioning import EMBED, MLP, with_axes

CELLS = ("gru", "lstm")


def _projection(gates: int, features: int, use_bias: bool, kernel_init, name: str, bias_init=nn.initializers.zeros,
                dtype: Any = jnp.float32) -> nn.Module:
  """A dense layer to [..., gates, features]: the model width in, one slice per gate out."""
  return nn.DenseGeneral(
      features=(gates, features),
      use_bias=use_bias,
      dtype=dtype,
      kernel_init=with_axes(kernel_init, EMBED, None, MLP),
      bias_init=with_axes(bias_init, None, MLP),
      name=name,
  )


# Flax's (and Keras') defaults for recurrent layers: LeCun-normal input kernels, orthogonal recurrent
# ones (Saxe et al. 2014), which keep the state's scale through many steps at initialisation.
INPUT_INIT = nn.initializers.lecun_normal()
RECURRENT_INIT = nn.initializers.orthogonal()


def forget_gate_bias(key, shape, dtype=jnp.float32):
  """Bias of 1 for the forget gate (the second of i, f, g, o), 0 elsewhere: the cell remembers by default
  (Gers et al. 2000; Jozefowicz et al. 2015). Flax passes the flattened [4 * features] shape."""
  del key
  return jnp.zeros(shape, dtype).reshape(4, -1).at[1].set(1.0).reshape(shape)


class GRUCell(nn.Module):
  """Cho et al. 2014's gated recurrent unit (eqs. 5-8); the carry is h [batch, features] float32."""

  features: int
  dtype: Any = jnp.float32

  def setup(self):
    # W_r, W_z, W (eqs. 5, 6, 8) with a bias each (the paper's equations leave biases out; implementations keep them).
    self.input_projection = _projection(3, self.features, True, INPUT_INIT, "input", dtype=self.dtype)
    self.gate_projection = _projection(2, self.features, False, RECURRENT_INIT, "recurrent_gates", dtype=self.dtype)
    self.candidate_projection = nn.Dense(
        self.features, use_bias=False, dtype=self.dtype, kernel_init=with_axes(RECURRENT_INIT, EMBED, MLP),
        name="recurrent_candidate",
    )

  def initial_carry(self, batch: int) -> jax.Array:
    return jnp.zeros((batch, self.features), jnp.float32)

  def hidden(self, carry: jax.Array) -> jax.Array:
    return carry

  def carry_with_hidden(self, hidden: jax.Array) -> jax.Array:
    """The carry whose hidden state is `hidden` (a decoder's initial state)."""
    return hidden.astype(jnp.float32)

  def project_inputs(self, x: jax.Array) -> jax.Array:
    """[..., in] -> [..., 3, features]: W_r x, W_z x, W x plus biases."""
    return self.input_projection(x)

  def step(self, h: jax.Array, projected: jax.Array) -> tuple[jax.Array, jax.Array]:
    projected = projected.astype(jnp.float32)
    recurrent = self.gate_projection(h).astype(jnp.float32)
    reset = jax.nn.sigmoid(projected[..., 0, :] + recurrent[..., 0, :])  # eq. 5
    update = jax.nn.sigmoid(projected[..., 1, :] + recurrent[..., 1, :])  # eq. 6
    candidate = jnp.tanh(projected[..., 2, :] + self.candidate_projection(reset * h).astype(jnp.float32))  # eq. 8
    h = update * h + (1.0 - update) * candidate  # eq. 7
    return h, h.astype(self.dtype)

  def __call__(self, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.step(carry, self.project_inputs(x))


class LSTMCell(nn.Module):
  """An LSTM with a forget gate; the carry is (c, h), each [batch, features] float32."""

  features: int
  dtype: Any = jnp.float32

  def setup(self):
    self.input_projection = _projection(
        4, self.features, True, INPUT_INIT, "input", bias_init=forget_gate_bias, dtype=self.dtype
    )
    self.recurrent_projection = _projection(4, self.features, False, RECURRENT_INIT, "recurrent", dtype=self.dtype)

  def initial_carry(self, batch: int) -> tuple[jax.Array, jax.Array]:
    zeros = jnp.zeros((batch, self.features), jnp.float32)
    return zeros, zeros

  def hidden(self, carry: tuple[jax.Array, jax.Array]) -> jax.Array:
    return carry[1]

  def carry_with_hidden(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The carry whose hidden state is `hidden` and whose memory cell is empty (a decoder's initial state)."""
    hidden = hidden.astype(jnp.float32)
    return jnp.zeros_like(hidden), hidden

  def project_inputs(self, x: jax.Array) -> jax.Array:
    """[..., in] -> [..., 4, features]: the input's share of gates i, f, g, o, biases included."""
    return self.input_projection(x)

  def step(self, carry, projected: jax.Array):
    memory, h = carry
    gates = projected.astype(jnp.float32) + self.recurrent_projection(h).astype(jnp.float32)
    input_gate, forget_gate, output_gate = (jax.nn.sigmoid(gates[..., k, :]) for k in (0, 1, 3))
    memory = forget_gate * memory + input_gate * jnp.tanh(gates[..., 2, :])
    h = output_gate * jnp.tanh(memory)
    return (memory, h), h.astype(self.dtype)

  def __call__(self, carry, x: jax.Array):
    return self.step(carry, self.project_inputs(x))


def make_cell(kind: str, features: int, dtype: Any = jnp.float32, name: str | None = None) -> nn.Module:
  if kind == "gru":
    return GRUCell(features, dtype, name=name)
  if kind == "lstm":
    return LSTMCell(features, dtype, name=name)
  raise ValueError(f"unknown recurrent cell {kind!r}; expected one of {CELLS}")


def advance_rows(active: jax.Array, new, old):
  """`new` where `active` [batch] is true, `old` elsewhere, for every [batch, ...] leaf of two equal pytrees."""
  select = lambda n, o: jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(select, new, old)


def reverse_valid(x: jax.Array, lengths: jax.Array) -> jax.Array:
  """x [batch, length, ...] with each row's first `lengths[b]` entries in reverse order and its padding in place.

  Reversing the padded array instead would put the padding first: the backward direction would start
  from padding, and a row would no longer equal itself run alone. The function is its own inverse.
  """
  time = jnp.arange(x.shape[1])[None]
  lengths = jnp.asarray(lengths)[:, None]
  index = jnp.where(time < lengths, lengths - 1 - time, time)
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _masked_step(cell: nn.Module, carry, projected: jax.Array, time: jax.Array, lengths: jax.Array):
  """One step of `Recurrent`'s scan: rows past their length keep their state and output 0."""
  new_carry, h = cell.step(carry, projected)
  active = time < lengths
  return advance_rows(active, new_carry, carry), jnp.where(active[:, None], h, jnp.zeros_like(h))


class Recurrent(nn.Module):
  """Runs a `cell` ("gru" | "lstm") over inputs [batch, length, in] -> (final carry, outputs [batch, length, features]).

  Row b's state advances for its first `lengths[b]` steps only, so its final carry is its state
  after its last real token; its outputs past that are 0. `reverse` runs each row's valid prefix
  backwards and returns the outputs in input order (output t has read inputs t, ..., lengths[b] - 1).
  """

  cell: str
  features: int
  reverse: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    self.step_cell = make_cell(self.cell, self.features, self.dtype, name="cell")

  def __call__(self, inputs: jax.Array, lengths: jax.Array | None = None, initial_carry=None):
    batch, length = inputs.shape[:2]
    lengths = jnp.full((batch,), length, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    if self.reverse:
      inputs = reverse_valid(inputs, lengths)
    carry = self.step_cell.initial_carry(batch) if initial_carry is None else initial_carry
    scan = nn.scan(
        _masked_step,
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=(1, 0, nn.broadcast),
        out_axes=1,
    )
    carry, outputs = scan(self.step_cell, carry, self.step_cell.project_inputs(inputs), jnp.arange(length), lengths)
    return carry, reverse_valid(outputs, lengths) if self.reverse else outputs


class RecurrentEncoder(nn.Module):
  """`num_layers` stacked `Recurrent` layers; bidirectional ones concatenate the forward and backward outputs.

  Returns the top layer's outputs [batch, length, features (x2 bidirectional)] and its summary
  [batch, features (x2)]: the forward state after each row's last token, and with a backward
  direction also its state after the row's first token (the <-h_1 that Bahdanau et al. 2015,
  appendix A.2.2, start the decoder from). Dropout sits between layers, never on the recurrent
  connections (Zaremba et al. 2014, sec. 3).
  """

  cell: str
  features: int
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, lengths: jax.Array | None, *, deterministic: bool):
    x, summary = inputs, None
    directions = (False, True) if self.bidirectional else (False,)
    for layer in range(self.num_layers):
      if layer:
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
      outputs, summary = [], []
      for reverse in directions:
        name = f"{'backward' if reverse else 'forward'}_{layer}"
        recurrent = Recurrent(self.cell, self.features, reverse=reverse, dtype=self.dtype, name=name)
        carry, out = recurrent(x, lengths)
        outputs.append(out)
        summary.append(recurrent.step_cell.hidden(carry))
      x = jnp.concatenate(outputs, axis=-1)
    return x, jnp.concatenate(summary, axis=-1)
