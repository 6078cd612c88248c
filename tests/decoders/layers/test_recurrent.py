"""Recurrent cells against references (torch.nn.LSTMCell; Cho et al. 2014's GRU equations in numpy), and the
sequence layers' padding: a right-padded row equals the row alone, forwards and backwards."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from decoders.layers import recurrent

BATCH, LENGTH, INPUTS, FEATURES = 3, 6, 5, 8
LENGTHS = np.array([6, 4, 1], np.int32)
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _inputs(seed=0, shape=(BATCH, LENGTH, INPUTS)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _cell_params(cell):
  carry = cell.initial_carry(BATCH)
  return nn.unbox(cell.init(jax.random.key(0), carry, jnp.zeros((BATCH, INPUTS)))["params"])


def _run_cell(cell, params, xs, carry):
  """The cell stepped over xs [batch, length, in] in a Python loop: the reference for the layers' scans."""
  outputs = []
  for t in range(xs.shape[1]):
    carry, h = cell.apply({"params": params}, carry, xs[:, t])
    outputs.append(h)
  return carry, np.stack(outputs, axis=1)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_gru_cell_follows_cho_et_al_equations_5_to_8():
  cell = recurrent.GRUCell(FEATURES)
  params = _cell_params(cell)
  w, b = params["input"]["kernel"], params["input"]["bias"]  # [in, 3, H], [3, H]: W_r, W_z, W
  u_gates, u = params["recurrent_gates"]["kernel"], params["recurrent_candidate"]["kernel"]
  xs = _inputs(1)
  h = np.random.default_rng(2).normal(size=(BATCH, FEATURES)).astype(np.float32)
  carry, outputs = _run_cell(cell, params, xs, jnp.asarray(h))
  expected = []
  for t in range(LENGTH):
    x = xs[:, t]
    r = _sigmoid(x @ w[:, 0] + b[0] + h @ u_gates[:, 0])  # eq. 5
    z = _sigmoid(x @ w[:, 1] + b[1] + h @ u_gates[:, 1])  # eq. 6
    candidate = np.tanh(x @ w[:, 2] + b[2] + (r * h) @ u)  # eq. 8
    h = z * h + (1 - z) * candidate  # eq. 7
    expected.append(h)
  np.testing.assert_allclose(outputs, np.stack(expected, axis=1), **TOLERANCE)
  np.testing.assert_allclose(carry, h, **TOLERANCE)


def test_lstm_cell_equals_torch_lstm_cell_with_copied_weights():
  cell = recurrent.LSTMCell(FEATURES)
  params = _cell_params(cell)
  torch.manual_seed(0)
  reference = torch.nn.LSTMCell(INPUTS, FEATURES)
  # torch stacks the gates i, f, g, o along the rows of [4H, in] and has two biases; ours are [in, 4, H] and one.
  to_ours = lambda weight: weight.detach().numpy().reshape(4, FEATURES, -1).transpose(2, 0, 1)
  params = {
      "input": {
          "kernel": to_ours(reference.weight_ih),
          "bias": (reference.bias_ih + reference.bias_hh).detach().numpy().reshape(4, FEATURES),
      },
      "recurrent": {"kernel": to_ours(reference.weight_hh)},
  }
  xs = _inputs(3)
  c, h = np.random.default_rng(4).normal(size=(2, BATCH, FEATURES)).astype(np.float32)
  (our_c, our_h), outputs = _run_cell(cell, params, xs, (jnp.asarray(c), jnp.asarray(h)))
  state = (torch.from_numpy(h), torch.from_numpy(c))
  expected = []
  with torch.no_grad():
    for t in range(LENGTH):
      state = reference(torch.from_numpy(xs[:, t]), state)
      expected.append(state[0].numpy())
  np.testing.assert_allclose(outputs, np.stack(expected, axis=1), **TOLERANCE)
  np.testing.assert_allclose(our_h, state[0].numpy(), **TOLERANCE)
  np.testing.assert_allclose(our_c, state[1].numpy(), **TOLERANCE)


def test_lstm_forget_gate_bias_starts_at_one_and_the_other_gates_at_zero():
  bias = _cell_params(recurrent.LSTMCell(FEATURES))["input"]["bias"]
  np.testing.assert_array_equal(bias, np.array([0.0, 1.0, 0.0, 0.0])[:, None].repeat(FEATURES, axis=1))


def test_parameters_carry_logical_axis_names():
  cell = recurrent.LSTMCell(FEATURES)
  boxed = cell.init(jax.random.key(0), cell.initial_carry(1), jnp.zeros((1, INPUTS)))["params"]
  specs = nn.get_partition_spec(boxed)
  assert specs["input"]["kernel"] == jax.sharding.PartitionSpec("embed", None, "mlp")
  assert specs["recurrent"]["kernel"] == jax.sharding.PartitionSpec("embed", None, "mlp")


def test_reverse_valid_reverses_each_rows_prefix_keeps_padding_and_is_its_own_inverse():
  x = np.arange(BATCH * LENGTH).reshape(BATCH, LENGTH)
  reversed_ = np.asarray(recurrent.reverse_valid(x, LENGTHS))
  for row, length in enumerate(LENGTHS):
    np.testing.assert_array_equal(reversed_[row, :length], x[row, :length][::-1])
    np.testing.assert_array_equal(reversed_[row, length:], x[row, length:])
  np.testing.assert_array_equal(recurrent.reverse_valid(reversed_, LENGTHS), x)


def _layer(cell, reverse=False):
  layer = recurrent.Recurrent(cell, FEATURES, reverse=reverse)
  params = nn.unbox(layer.init(jax.random.key(1), jnp.zeros((1, LENGTH, INPUTS)))["params"])
  return jax.jit(lambda xs, lengths: layer.apply({"params": params}, xs, lengths)), params


@pytest.mark.parametrize("cell", recurrent.CELLS)
def test_a_padded_batch_equals_each_row_run_alone_and_the_loop_of_cell_steps(cell):
  run, params = _layer(cell)
  xs = _inputs(5)
  carry, outputs = run(xs, LENGTHS)
  step = recurrent.make_cell(cell, FEATURES)
  for row, length in enumerate(LENGTHS):
    alone = xs[row : row + 1, :length]
    expected_carry, expected = _run_cell(step, params["cell"], alone, step.initial_carry(1))
    np.testing.assert_allclose(outputs[row, :length], expected[0], **TOLERANCE)
    np.testing.assert_array_equal(outputs[row, length:], 0.0)  # padding outputs nothing ...
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[row], b[0], **TOLERANCE), carry, expected_carry)
    # ... and whatever the padding holds, the row is unchanged.
    noisy = xs.copy()
    noisy[row, length:] = 100.0
    np.testing.assert_allclose(run(noisy, LENGTHS)[1][row], outputs[row], **TOLERANCE)


@pytest.mark.parametrize("cell", recurrent.CELLS)
def test_the_backward_direction_runs_the_reversed_valid_prefix(cell):
  run, params = _layer(cell, reverse=True)
  xs = _inputs(6)
  carry, outputs = run(xs, LENGTHS)
  step = recurrent.make_cell(cell, FEATURES)
  for row, length in enumerate(LENGTHS):
    backwards = xs[row : row + 1, :length][:, ::-1]
    expected_carry, expected = _run_cell(step, params["cell"], backwards, step.initial_carry(1))
    # Output t has read inputs length - 1 down to t: the reference's outputs, flipped back into input order.
    np.testing.assert_allclose(outputs[row, :length], expected[0, ::-1], **TOLERANCE)
    np.testing.assert_array_equal(outputs[row, length:], 0.0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[row], b[0], **TOLERANCE), carry, expected_carry)


def test_a_bidirectional_stack_concatenates_directions_and_summarises_both_ends():
  encoder = recurrent.RecurrentEncoder("gru", FEATURES, num_layers=2, bidirectional=True)
  xs = _inputs(7)
  variables = encoder.init(jax.random.key(2), xs, LENGTHS, deterministic=True)
  params = nn.unbox(variables["params"])
  outputs, summary = encoder.apply({"params": params}, xs, LENGTHS, deterministic=True)
  assert outputs.shape == (BATCH, LENGTH, 2 * FEATURES)
  assert set(params) == {"forward_0", "backward_0", "forward_1", "backward_1"}
  # The second layer reads the first one's concatenated directions.
  assert params["forward_1"]["cell"]["input"]["kernel"].shape[0] == 2 * FEATURES
  for row, length in enumerate(LENGTHS):
    # ->h after the row's last token and <-h after its first (Bahdanau et al. 2015, A.2.2).
    np.testing.assert_allclose(summary[row, :FEATURES], outputs[row, length - 1, :FEATURES], **TOLERANCE)
    np.testing.assert_allclose(summary[row, FEATURES:], outputs[row, 0, FEATURES:], **TOLERANCE)
    alone, _ = encoder.apply({"params": params}, xs[row : row + 1, :length], None, deterministic=True)
    np.testing.assert_allclose(outputs[row, :length], alone[0], **TOLERANCE)


def test_bfloat16_computes_in_bfloat16_and_keeps_the_state_in_float32():
  xs = _inputs(8)
  run32, params = _layer("lstm")
  layer16 = recurrent.Recurrent("lstm", FEATURES, dtype=jnp.bfloat16)
  (c, h), outputs = layer16.apply({"params": params}, xs, LENGTHS)
  assert outputs.dtype == jnp.bfloat16 and c.dtype == h.dtype == jnp.float32
  np.testing.assert_allclose(outputs.astype(np.float32), run32(xs, LENGTHS)[1], atol=3e-2)
