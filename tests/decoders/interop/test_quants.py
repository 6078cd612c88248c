"""Our numpy dequantisation of ggml's block formats equals the `gguf` package's (llama.cpp's own Python reference),
bit for bit, on random blocks; plus one block worked by hand, independent of any reference."""
import numpy as np
import pytest

from decoders.errors import WeightsError
from decoders.interop import quants

gguf = pytest.importorskip("gguf")

# Byte offsets of the float16 scale fields of each block (ggml-common.h), set to finite values so no NaN/Inf appears.
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
ROWS = 3


def random_tensor(type_name, rng, blocks_per_row=5):
  """(bytes, numpy shape) of a random ROWS x row tensor of `type_name`."""
  block_elements, block_bytes = quants.BLOCK_SIZES[type_name]
  if type_name in ("F32", "F16", "BF16"):
    values = rng.normal(size=(ROWS, 40)).astype(np.float32)
    if type_name == "F16":
      return values.astype(np.float16).view(np.uint8).reshape(-1), values.shape
    if type_name == "BF16":
      return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(-1), values.shape
    return values.view(np.uint8).reshape(-1), values.shape
  blocks = rng.integers(0, 256, size=(ROWS * blocks_per_row, block_bytes), dtype=np.uint8)
  for start in F16_FIELDS[type_name]:
    blocks[:, start:start + 2] = rng.normal(size=(len(blocks), 1)).astype(np.float16).view(np.uint8)
  return blocks.reshape(-1), (ROWS, blocks_per_row * block_elements)


@pytest.mark.parametrize("type_name", list(quants.BLOCK_SIZES))
def test_dequantize_equals_the_gguf_reference(type_name):
  data, shape = random_tensor(type_name, np.random.default_rng(sum(map(ord, type_name))))
  ours = quants.dequantize(data, type_name, shape)
  reference = gguf.quants.dequantize(data.reshape(ROWS, -1), gguf.GGMLQuantizationType[type_name])
  assert ours.dtype == np.float32 and ours.shape == shape
  assert np.isfinite(ours).all()
  np.testing.assert_array_equal(ours, reference.reshape(shape))


def test_block_sizes_are_ggmls():
  for type_name, sizes in quants.BLOCK_SIZES.items():
    assert sizes == gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]], type_name


def test_q4_1_block_worked_by_hand():
  # block_q4_1: f16 d, f16 m, 16 bytes; element j = (qs[j] & 0xF) * d + m, element j + 16 = (qs[j] >> 4) * d + m.
  qs = np.arange(16, dtype=np.uint8) | (np.arange(16, 0, -1, dtype=np.uint8) % 16 << 4)
  block = np.concatenate([np.array([0.5, -1.0], np.float16).view(np.uint8), qs])
  expected = np.concatenate([qs & 0xF, qs >> 4]).astype(np.float32) * 0.5 - 1.0
  np.testing.assert_array_equal(quants.dequantize(block, "Q4_1", (32,)), expected)


def test_leading_dims_are_kept_and_the_input_is_not_aliased():
  data, _ = random_tensor("Q8_0", np.random.default_rng(0), blocks_per_row=2)
  out = quants.dequantize(data, "Q8_0", (ROWS, 1, 64))
  assert out.shape == (ROWS, 1, 64)
  floats = np.arange(6, dtype=np.float32)
  copy = quants.dequantize(floats.view(np.uint8), "F32", (2, 3))
  copy[0, 0] = 42
  assert floats[0] == 0


@pytest.mark.parametrize(
    "type_name, shape, nbytes, message",
    [
        ("IQ2_XXS", (256,), 66, "GGML type IQ2_XXS is not supported; supported: F32, F16"),
        ("Q8_0", (2, 48), 102, "rows of 48 are not whole blocks of 32"),
        ("Q8_0", (2, 32), 67, "needs 68 bytes, got 67"),
    ],
)
def test_bad_requests_raise_weights_error(type_name, shape, nbytes, message):
  with pytest.raises(WeightsError, match=message):
    quants.dequantize(np.zeros(nbytes, np.uint8), type_name, shape)
