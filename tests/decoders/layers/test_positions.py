"""Position encodings against independent numpy references of the papers and of the HF checkpoints' code."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.layers import positions

# float32 trigonometry in XLA and numpy differs by a few ulps.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


# sinusoidal


def test_sinusoidal_matches_the_papers_formula():
  pos = np.array([[0, 1, 5], [17, 100, 2047]], np.int32)
  width = 8
  out = positions.sinusoidal(pos, width)
  assert out.shape == (2, 3, width) and out.dtype == jnp.float32
  expected = np.zeros((2, 3, width))
  for i in range(width // 2):  # Vaswani et al. 2017, sec. 3.5, evaluated one dimension at a time
    expected[..., 2 * i] = np.sin(pos / 10_000.0 ** (2 * i / width))
    expected[..., 2 * i + 1] = np.cos(pos / 10_000.0 ** (2 * i / width))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)  # angles up to 2047 rad in float32


def test_sinusoidal_rejects_an_odd_width():
  with pytest.raises(ConfigError, match="width=7"):
    positions.sinusoidal(np.arange(3), 7)


# apply_rope


def rope_reference(x, pos, base=10_000.0):
  """HF LLaMA's apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, cos/sin repeated over both halves."""
  d = x.shape[-1]
  inv_freq = 1.0 / base ** (np.arange(0, d, 2) / d)
  freqs = np.broadcast_to(pos, x.shape[:2])[..., None] * inv_freq  # [b, l, d/2]
  emb = np.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [b, l, 1, d]
  rotate_half = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
  return x * np.cos(emb) + rotate_half * np.sin(emb)


def random_heads(seed, shape=(2, 5, 3, 8)):
  # numpy inputs: XLA:CPU compiles some jax.random ops slowly.
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_rope_matches_hugging_face_rotate_half():
  x = random_heads(0)
  pos = np.array([[0, 1, 2, 3, 4], [7, 3, 30, 100, 9]], np.int32)
  out = positions.apply_rope(x, pos)
  assert out.shape == x.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, rope_reference(x.astype(np.float64), pos), **TOLERANCE)


def test_rope_preserves_each_head_vectors_norm():
  x = random_heads(1)
  out = positions.apply_rope(x, np.arange(5) * 11)
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), **TOLERANCE)


@pytest.mark.parametrize("shift", [1, 13])
def test_rope_scores_depend_only_on_the_offset(shift):
  q, k = random_heads(2, (2, 1, 1, 3, 8))
  m, n = np.array([4]), np.array([1])

  def score(m, n):
    return np.sum(np.asarray(positions.apply_rope(q, m)) * np.asarray(positions.apply_rope(k, n)), axis=-1)

  np.testing.assert_allclose(score(m, n), score(m + shift, n + shift), **TOLERANCE)
  assert not np.allclose(score(m, n), score(m + shift, n), **TOLERANCE)  # the offset does matter


def test_rope_at_position_zero_is_the_identity():
  x = random_heads(3)
  np.testing.assert_array_equal(positions.apply_rope(x, np.zeros(5, np.int32)), x)


def test_rope_broadcasts_length_positions_over_the_batch():
  x = random_heads(4)
  pos = np.array([3, 1, 4, 1, 5], np.int32)
  np.testing.assert_array_equal(positions.apply_rope(x, pos), positions.apply_rope(x, np.stack([pos, pos])))


def test_rope_rejects_an_odd_head_dim():
  with pytest.raises(ConfigError, match="head_dim=7"):
    positions.apply_rope(np.zeros((1, 2, 1, 7), np.float32), np.arange(2))


def test_rope_keeps_bfloat16():
  x = jnp.asarray(random_heads(5), jnp.bfloat16)
  out = positions.apply_rope(x, np.arange(5))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(np.float32), rope_reference(np.asarray(x, np.float64), np.arange(5)), atol=0.05)


# relative_position_bucket


def t5_bucket_reference(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
  """numpy port of Hugging Face transformers' T5Attention._relative_position_bucket
  (src/transformers/models/t5/modeling_t5.py), itself from mesh-tensorflow; float32 as torch's `.float()`."""
  relative_buckets = 0
  if bidirectional:
    num_buckets //= 2
    relative_buckets += (relative_position > 0).astype(np.int64) * num_buckets
    relative_position = np.abs(relative_position)
  else:
    relative_position = -np.minimum(relative_position, np.zeros_like(relative_position))
  max_exact = num_buckets // 2
  is_small = relative_position < max_exact
  with np.errstate(divide="ignore", invalid="ignore"):  # log(0) sits in the branch is_small discards
    relative_position_if_large = max_exact + (
        np.log(relative_position.astype(np.float32) / np.float32(max_exact))
        / np.float32(math.log(max_distance / max_exact))
        * np.float32(num_buckets - max_exact)
    ).astype(np.int64)
  relative_position_if_large = np.minimum(relative_position_if_large, num_buckets - 1)
  return relative_buckets + np.where(is_small, relative_position, relative_position_if_large)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 40)])
def test_buckets_match_hugging_face_t5_for_every_offset(bidirectional, num_buckets, max_distance):
  offsets = np.arange(-300, 301, dtype=np.int32)
  out = positions.relative_position_bucket(offsets, bidirectional, num_buckets, max_distance)
  assert out.shape == offsets.shape and out.dtype == jnp.int32
  np.testing.assert_array_equal(out, t5_bucket_reference(offsets, bidirectional, num_buckets, max_distance))
  assert np.asarray(out).max() == num_buckets - 1  # the far offsets reach the last bucket


def test_causal_buckets_put_every_future_offset_in_bucket_zero():
  out = positions.relative_position_bucket(np.arange(0, 300, dtype=np.int32), bidirectional=False)
  np.testing.assert_array_equal(out, 0)


def test_buckets_keep_a_two_dimensional_shape():
  offsets = np.arange(4)[None, :] - np.arange(3)[:, None]
  assert positions.relative_position_bucket(offsets, True).shape == (3, 4)


@pytest.mark.parametrize("num_buckets,max_distance,field", [(2, 128, "num_buckets=2"), (32, 8, "max_distance=8")])
def test_impossible_bucket_configs_are_rejected(num_buckets, max_distance, field):
  with pytest.raises(ConfigError, match=field):
    positions.relative_position_bucket(np.arange(3), True, num_buckets, max_distance)


# RelativePositionBias


def test_relative_position_bias_shape_and_equal_offsets():
  layer = positions.RelativePositionBias(num_heads=3, num_buckets=8, max_distance=16)
  params = layer.init(jax.random.PRNGKey(0), 5, 7)
  bias = np.asarray(layer.apply(params, 5, 7))
  assert bias.shape == (1, 3, 5, 7)
  # Every diagonal holds one offset key - query, hence one bucket, hence one value per head.
  for offset in range(-4, 7):
    diagonal = np.diagonal(bias[0], offset=offset, axis1=1, axis2=2)
    np.testing.assert_array_equal(diagonal, diagonal[:, :1] * np.ones_like(diagonal))
  assert not np.allclose(bias[0, :, 0, 0], bias[0, :, 0, 1])  # different offsets differ


def test_relative_position_bias_looks_up_the_bucket_of_key_minus_query():
  layer = positions.RelativePositionBias(num_heads=2, num_buckets=8, max_distance=16)
  params = layer.init(jax.random.PRNGKey(1), 4, 6)
  table = np.asarray(params["params"]["embedding"].value)
  buckets = t5_bucket_reference(np.arange(6)[None, :] - np.arange(4)[:, None], True, 8, 16)  # [q, k]
  np.testing.assert_array_equal(layer.apply(params, 4, 6)[0], np.moveaxis(table[buckets], -1, 0))


def test_relative_position_bias_parameter_has_shape_and_logical_axes():
  layer = positions.RelativePositionBias(num_heads=3, num_buckets=8, dtype=jnp.bfloat16)
  params = layer.init(jax.random.PRNGKey(0), 2, 2)
  embedding = params["params"]["embedding"]
  assert isinstance(embedding, nn.LogicallyPartitioned)
  assert embedding.value.shape == (8, 3)
  spec = nn.get_partition_spec(params)["params"]["embedding"]
  assert tuple(spec) == (None, "heads")
  assert layer.apply(params, 2, 2).dtype == jnp.bfloat16
