"""The two attention kernels compute the same function (DESIGN.md: xla path == einsum path)."""
import jax
import numpy as np
import pytest

from decoders.layers import attention

# Two float32 implementations of the same softmax: they differ only in summation order.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [1, 7])
def test_xla_and_einsum_kernels_agree_under_causal_mask(length):
  # numpy inputs: XLA:CPU takes seconds to compile a rank-5 jax.random.normal.
  q, k, v = np.random.default_rng(0).normal(size=(3, 2, length, 4, 8)).astype(np.float32)
  mask = attention.causal_mask(length)
  kernel = jax.jit(attention.attention, static_argnames="implementation")
  xla = kernel(q, k, v, mask, implementation="xla")
  einsum = kernel(q, k, v, mask, implementation="einsum")
  assert xla.shape == (2, length, 4, 8)
  np.testing.assert_allclose(xla, einsum, **TOLERANCE)


def test_causal_mask_lets_position_i_see_only_positions_up_to_i():
  mask = np.asarray(attention.causal_mask(4))[0, 0]
  np.testing.assert_array_equal(mask, np.tril(np.ones((4, 4), bool)))


def test_einsum_kernel_ignores_masked_keys():
  q, k, v = np.random.default_rng(1).normal(size=(3, 1, 5, 2, 4)).astype(np.float32)
  mask = attention.causal_mask(5)
  kernel = jax.jit(attention.einsum_attention)
  out = kernel(q, k, v, mask)
  # Changing the last key/value can only affect the last query.
  k[:, -1], v[:, -1] = 9.0, -9.0
  out2 = kernel(q, k, v, mask)
  np.testing.assert_array_equal(out[:, :-1], out2[:, :-1])
  assert not np.allclose(out[:, -1], out2[:, -1])


def test_unknown_implementation_is_rejected():
  q = np.zeros((1, 2, 1, 4), np.float32)
  with pytest.raises(ValueError, match="flash"):
    attention.attention(q, q, q, attention.causal_mask(2), implementation="flash")
