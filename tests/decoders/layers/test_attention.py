"""The attention kernels compute the same function (DESIGN.md: xla path == einsum path, and the
chunked kernel too, gradients included), for every mask kind and for grouped-query attention
(Ainslie et al. 2023)."""
import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.layers import attention, chunked_attention, masks

# Two float32 implementations of the same softmax: they differ only in summation order.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
BATCH, LENGTH, HEADS, DEPTH = 2, 5, 4, 8

MASKS = {
    "causal": lambda: masks.causal_mask(LENGTH),
    "sliding_window": lambda: masks.sliding_window_mask(LENGTH, 2),
    "padding": lambda: masks.padding_mask(np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])),
    "prefix_lm": lambda: masks.prefix_lm_mask(LENGTH, np.array([2, 0])),
    "packed": lambda: masks.combine(
        masks.causal_mask(LENGTH), masks.segment_mask(np.array([[1, 1, 2, 2, 0], [1, 1, 1, 2, 2]]))
    ),
}

_kernel = jax.jit(attention.attention, static_argnames="implementation")
# Blocks of 2 over 5 positions: 3 query blocks and 3 key blocks, the last padded with a masked key.
CHUNK = 2
_chunked = functools.partial(chunked_attention.chunked_attention, block_size=CHUNK)


def _qkv(seed, kv_heads, length=LENGTH):
  # numpy inputs: XLA:CPU takes seconds to compile a rank-5 jax.random.normal.
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(BATCH, length, HEADS, DEPTH)).astype(np.float32)
  k, v = rng.normal(size=(2, BATCH, length, kv_heads, DEPTH)).astype(np.float32)
  return q, k, v


def _bias(seed, length=LENGTH):
  return np.random.default_rng(seed).normal(size=(1, HEADS, length, length)).astype(np.float32)


def _reference_mha(q, k, v, mask, bias):
  """Vaswani et al. 2017, eq. 1 in numpy, one key/value head per query head."""
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]) + bias
  logits = np.where(mask, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", weights, v)


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_kernels_agree_with_einsum_on_a_single_token(implementation):
  q, k, v = _qkv(0, 2, length=1)
  mask = masks.causal_mask(1)
  out = _kernel(q, k, v, mask, implementation=implementation)
  np.testing.assert_allclose(out, _kernel(q, k, v, mask, implementation="einsum"), **TOLERANCE)
  assert out.shape == (BATCH, 1, HEADS, DEPTH)


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("mask_kind", list(MASKS))
def test_xla_and_einsum_kernels_agree(mask_kind, kv_heads, with_bias):
  q, k, v = _qkv(0, kv_heads)
  mask, bias = MASKS[mask_kind](), _bias(1) if with_bias else None
  xla = _kernel(q, k, v, mask, implementation="xla", bias=bias)
  einsum = _kernel(q, k, v, mask, implementation="einsum", bias=bias)
  assert xla.shape == einsum.shape == (BATCH, LENGTH, HEADS, DEPTH)
  np.testing.assert_allclose(xla, einsum, **TOLERANCE)


@functools.partial(jax.jit, static_argnums=0)
def _output_and_gradients(kernel, q, k, v, mask, bias, d_out):
  out, vjp = jax.vjp(lambda q, k, v, bias: kernel(q, k, v, mask, bias=bias), q, k, v, bias)
  return out, vjp(d_out)


def _assert_chunked_agrees_with_einsum(q, k, v, mask, bias, d_out):
  """The chunked kernel's output and its gradients with respect to query, key, value and bias equal the einsum's."""
  chunked, chunked_grads = _output_and_gradients(_chunked, q, k, v, mask, bias, d_out)
  einsum, einsum_grads = _output_and_gradients(attention.einsum_attention, q, k, v, mask, bias, d_out)
  np.testing.assert_allclose(chunked, einsum, **TOLERANCE)
  for name, got, want in zip(("query", "key", "value", "bias"), chunked_grads, einsum_grads):
    assert got.shape == want.shape, name
    np.testing.assert_allclose(got, want, **TOLERANCE, err_msg=name)


# Multi-head attention (kv_heads = HEADS) is the grouped case tested against numpy below.
@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa", "mqa"])
@pytest.mark.parametrize("mask_kind", list(MASKS))
def test_chunked_and_einsum_kernels_agree_with_their_gradients(mask_kind, kv_heads):
  # Gradients with respect to query, key, value and the bias (a T5 relative bias is learned).
  q, k, v = _qkv(11, kv_heads)
  mask, bias = MASKS[mask_kind](), _bias(12)
  d_out = np.random.default_rng(13).normal(size=q.shape).astype(np.float32)
  _assert_chunked_agrees_with_einsum(q, k, v, mask, bias, d_out)


def test_chunked_kernel_skips_the_key_blocks_a_causal_mask_hides():
  # The first query block (positions 0, 1) never visits the later key blocks: NaN values there,
  # which any visit would spread (a zero weight times NaN is NaN), leave its rows as they were.
  q, k, v = _qkv(14, 2)
  mask = masks.causal_mask(LENGTH)
  kernel = jax.jit(_chunked)
  out = kernel(q, k, v, mask)
  v[:, CHUNK:] = np.nan
  hidden = kernel(q, k, v, mask)
  np.testing.assert_array_equal(hidden[:, :CHUNK], out[:, :CHUNK])
  assert np.isnan(hidden[:, CHUNK:]).all()  # every later query sees position CHUNK


@pytest.mark.parametrize("implementation", attention.IMPLEMENTATIONS)
def test_grouped_attention_with_one_kv_head_per_query_head_is_multi_head_attention(implementation):
  q, k, v = _qkv(2, HEADS)
  mask, bias = MASKS["packed"](), _bias(3)
  out = _kernel(q, k, v, mask, implementation=implementation, bias=bias)
  np.testing.assert_allclose(out, _reference_mha(q, k, v, np.asarray(mask), bias), **TOLERANCE)


@pytest.mark.parametrize("implementation", attention.IMPLEMENTATIONS)
@pytest.mark.parametrize("kv_heads", [2, 1])
def test_grouped_attention_is_multi_head_attention_with_each_kv_head_repeated(implementation, kv_heads):
  # The definition (Ainslie et al. 2023): query head i reads key/value head i // (heads // kv_heads).
  q, k, v = _qkv(4, kv_heads)
  mask, bias = MASKS["prefix_lm"](), _bias(5)
  out = _kernel(q, k, v, mask, implementation=implementation, bias=bias)
  k, v = np.repeat(k, HEADS // kv_heads, axis=2), np.repeat(v, HEADS // kv_heads, axis=2)
  np.testing.assert_allclose(out, _kernel(q, k, v, mask, implementation=implementation, bias=bias), **TOLERANCE)
  np.testing.assert_allclose(out, _reference_mha(q, k, v, np.asarray(mask), bias), **TOLERANCE)


@pytest.mark.parametrize("implementation", attention.IMPLEMENTATIONS)
def test_a_fully_masked_key_never_influences_the_output(implementation):
  q, k, v = _qkv(6, 2)
  mask = masks.combine(masks.causal_mask(LENGTH), masks.padding_mask(np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]])))
  out = _kernel(q, k, v, mask, implementation=implementation, bias=_bias(7))
  k[0, 2], v[0, 2] = 9.0, -9.0  # the padding key of row 0
  changed = _kernel(q, k, v, mask, implementation=implementation, bias=_bias(7))
  np.testing.assert_array_equal(out, changed)
  k[0, 3] = 9.0  # a real key of row 0: visible from query 3 on
  assert not np.allclose(out[0, 3:], _kernel(q, k, v, mask, implementation=implementation, bias=_bias(7))[0, 3:])


def test_einsum_kernel_applies_dropout_to_grouped_attention():
  q, k, v = _qkv(8, 2)
  mask = masks.causal_mask(LENGTH)
  kernel = jax.jit(attention.einsum_attention, static_argnames="dropout_rate")
  dropped = kernel(q, k, v, mask, jax.random.key(0), dropout_rate=0.5)
  assert dropped.shape == q.shape
  assert not np.allclose(dropped, kernel(q, k, v, mask))


def test_unknown_implementation_is_rejected():
  q = np.zeros((1, 2, 1, 4), np.float32)
  with pytest.raises(ValueError, match="flash"):
    attention.attention(q, q, q, masks.causal_mask(2), implementation="flash")


WIDTH = 16


def _init(**fields):
  module = attention.MultiHeadAttention(num_heads=HEADS, head_dim=4, **fields)
  x = np.random.default_rng(9).normal(size=(BATCH, LENGTH, WIDTH)).astype(np.float32)
  return module, x, jax.jit(lambda x: module.init(jax.random.key(0), x, masks.causal_mask(LENGTH), deterministic=True))(x)


def _shapes_and_axes(params):
  """Each parameter's shape and logical axis names."""
  return jax.tree_util.tree_map(lambda p: (p.value.shape, p.names), params, is_leaf=lambda p: isinstance(p, nn.Partitioned))


@pytest.mark.parametrize("num_kv_heads", [0, HEADS])
def test_multi_head_attention_parameters_are_unchanged_without_grouping(num_kv_heads):
  # Checkpoints written before grouped-query attention must still load: names and shapes as they were.
  _, _, variables = _init(num_kv_heads=num_kv_heads)
  shapes = jax.tree_util.tree_map(lambda p: p.shape, nn.unbox(variables))
  assert shapes == {
      "params": {
          "query": {"kernel": (WIDTH, HEADS, 4), "bias": (HEADS, 4)},
          "key": {"kernel": (WIDTH, HEADS, 4), "bias": (HEADS, 4)},
          "value": {"kernel": (WIDTH, HEADS, 4), "bias": (HEADS, 4)},
          "out": {"kernel": (HEADS, 4, WIDTH), "bias": (WIDTH,)},
      }
  }


def test_grouped_query_attention_projects_to_fewer_key_value_heads():
  module, x, variables = _init(num_kv_heads=2)
  axes = _shapes_and_axes(variables)["params"]
  assert axes["query"]["kernel"] == ((WIDTH, HEADS, 4), ("embed", "heads", "kv"))
  for name in ("key", "value"):
    assert axes[name]["kernel"] == ((WIDTH, 2, 4), ("embed", "kv_heads", "kv"))
    assert axes[name]["bias"] == ((2, 4), ("kv_heads", "kv"))
  apply = jax.jit(lambda v, bias: module.apply(v, x, masks.causal_mask(LENGTH), deterministic=True, bias=bias))
  einsum = attention.MultiHeadAttention(num_heads=HEADS, head_dim=4, num_kv_heads=2, implementation="einsum")
  apply_einsum = jax.jit(
      lambda v, bias: einsum.apply(v, x, masks.causal_mask(LENGTH), deterministic=True, bias=bias)
  )
  out = apply(variables, _bias(10))
  assert out.shape == x.shape
  np.testing.assert_allclose(out, apply_einsum(variables, _bias(10)), **TOLERANCE)
  assert not np.allclose(out, apply(variables, None))  # the bias reaches the logits


def test_kv_heads_that_do_not_divide_the_heads_are_a_config_error():
  with pytest.raises(ConfigError, match="num_kv_heads=3.*num_heads=4"):
    _init(num_kv_heads=3)


def test_rotary_attention_depends_only_on_relative_positions():
  # RoPE (Su et al. 2021) rotates query and key alike, so shifting every position changes nothing.
  rotary, x, variables = _init(num_kv_heads=2, rope_base=10_000.0)
  plain = attention.MultiHeadAttention(num_heads=HEADS, head_dim=4, num_kv_heads=2)
  assert _shapes_and_axes(variables) == _shapes_and_axes(_init(num_kv_heads=2)[2])  # no parameters of its own
  mask = masks.causal_mask(LENGTH)
  apply = jax.jit(
      lambda module, positions: module.apply(variables, x, mask, deterministic=True, positions=positions), static_argnums=0
  )
  out = apply(rotary, None)
  np.testing.assert_allclose(out, apply(rotary, np.arange(LENGTH) + 3), **TOLERANCE)
  np.testing.assert_allclose(out, apply(rotary, np.tile(np.arange(LENGTH), (BATCH, 1))), **TOLERANCE)
  assert not np.allclose(out, apply(plain, None))


# A separate key size (Vaswani et al. 2017, Table 3 (B)): queries and keys of d_k, values of d_v.
KEY_DEPTH = 3


def _qkv_separate_key_size(seed, kv_heads):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(BATCH, LENGTH, HEADS, KEY_DEPTH)).astype(np.float32)
  k = rng.normal(size=(BATCH, LENGTH, kv_heads, KEY_DEPTH)).astype(np.float32)
  v = rng.normal(size=(BATCH, LENGTH, kv_heads, DEPTH)).astype(np.float32)
  return q, k, v


@pytest.mark.parametrize("implementation", attention.IMPLEMENTATIONS)
@pytest.mark.parametrize("kv_heads", [HEADS, 2], ids=["mha", "gqa"])
def test_kernels_scale_by_the_key_size_and_return_values_of_the_value_size(implementation, kv_heads):
  q, k, v = _qkv_separate_key_size(15, kv_heads)
  mask, bias = MASKS["packed"](), _bias(16)
  out = _kernel(q, k, v, mask, implementation=implementation, bias=bias)
  assert out.shape == (BATCH, LENGTH, HEADS, DEPTH)
  k, v = np.repeat(k, HEADS // kv_heads, axis=2), np.repeat(v, HEADS // kv_heads, axis=2)
  # _reference_mha divides by sqrt(q.shape[-1]): the key size, 3, not the value size, 8.
  np.testing.assert_allclose(out, _reference_mha(q, k, v, np.asarray(mask), bias), **TOLERANCE)


def test_chunked_kernel_gradients_with_a_separate_key_size():
  q, k, v = _qkv_separate_key_size(17, 2)
  mask, bias = MASKS["causal"](), _bias(18)
  d_out = np.random.default_rng(19).normal(size=(BATCH, LENGTH, HEADS, DEPTH)).astype(np.float32)
  _assert_chunked_agrees_with_einsum(q, k, v, mask, bias, d_out)


@pytest.mark.parametrize("implementation", attention.IMPLEMENTATIONS)
def test_multi_head_attention_with_a_separate_key_size_is_eq_1_with_d_k_apart_from_d_v(implementation):
  module, x, variables = _init(num_kv_heads=2, key_dim=2, implementation=implementation)
  shapes = jax.tree_util.tree_map(lambda p: p.shape, nn.unbox(variables))["params"]
  assert shapes == {
      "query": {"kernel": (WIDTH, HEADS, 2), "bias": (HEADS, 2)},
      "key": {"kernel": (WIDTH, 2, 2), "bias": (2, 2)},
      "value": {"kernel": (WIDTH, 2, 4), "bias": (2, 4)},
      "out": {"kernel": (HEADS, 4, WIDTH), "bias": (WIDTH,)},
  }
  mask = masks.causal_mask(LENGTH)
  out = jax.jit(lambda v: module.apply(v, x, mask, deterministic=True))(variables)
  assert out.shape == x.shape
  p = jax.tree_util.tree_map(np.asarray, nn.unbox(variables))["params"]
  project = lambda name: np.einsum("bld,dhk->blhk", x, p[name]["kernel"]) + p[name]["bias"]
  q, k, v = project("query"), np.repeat(project("key"), 2, axis=2), np.repeat(project("value"), 2, axis=2)
  heads = _reference_mha(q, k, v, np.asarray(mask), 0.0)  # softmax(q k^T / sqrt(2)) v
  want = np.einsum("blhd,hdw->blw", heads, p["out"]["kernel"]) + p["out"]["bias"]
  np.testing.assert_allclose(out, want, **TOLERANCE)


def test_cross_attention_projects_keys_of_the_key_size_once():
  module = attention.MultiHeadAttention(num_heads=HEADS, head_dim=4, num_kv_heads=2, key_dim=6)
  rng = np.random.default_rng(20)
  x, source = (rng.normal(size=(BATCH, n, WIDTH)).astype(np.float32) for n in (LENGTH, 7))
  variables = jax.jit(lambda x, s: module.init(jax.random.key(0), x, None, deterministic=True, source=s))(x, source)
  key, value = module.apply(variables, None, None, deterministic=True, source=source)
  assert key.shape == (BATCH, 7, 2, 6) and value.shape == (BATCH, 7, 2, 4)
  out = module.apply(variables, x, None, deterministic=True, source=source)
  from_pair = module.apply(variables, x, None, deterministic=True, source=(key, value))
  np.testing.assert_allclose(out, from_pair, **TOLERANCE)


def test_rotary_attention_with_a_separate_key_size_depends_only_on_relative_positions():
  rotary, x, variables = _init(key_dim=6, rope_base=10_000.0)
  apply = jax.jit(lambda positions: rotary.apply(variables, x, masks.causal_mask(LENGTH), deterministic=True,
                                                 positions=positions))
  np.testing.assert_allclose(apply(None), apply(np.arange(LENGTH) + 3), **TOLERANCE)


@pytest.mark.parametrize("fields, message", [
    (dict(key_dim=-1), "key_dim=-1 must be >= 0"),
    (dict(key_dim=3, rope_base=10_000.0), "key size 3 must be even"),
])
def test_a_bad_key_size_is_one_config_error_line(fields, message):
  with pytest.raises(ConfigError, match=message) as raised:
    _init(**fields)
  assert "\n" not in str(raised.value)
