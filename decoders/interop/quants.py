"""ggml's quantised block formats, dequantised to float32 with numpy, vectorised over blocks.

llama.cpp stores a weight matrix row by row in blocks (ggml-common.h): a block of 32 elements, or a 256-element
"super-block" for the K-quants, holds one or two float16 scales and the packed low-bit integers. The formulas here are
those of ggml-quants.c's dequantize_row_*, evaluated in float32 in the same order (float16 scales converted to float32
first), so that they agree bit for bit with ggml and with the `gguf` Python package.
"""
import math

import numpy as np

from decoders.errors import WeightsError

QK_K = 256  # elements in a K-quant super-block

# type name -> (elements per block, bytes per block), as ggml's type_traits.
BLOCK_SIZES = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 2 + 16),  # f16 d; 16 bytes of nibbles
    "Q4_1": (32, 2 + 2 + 16),  # f16 d, f16 m; 16 bytes of nibbles
    "Q5_0": (32, 2 + 4 + 16),  # f16 d; 32 high bits; 16 bytes of nibbles
    "Q5_1": (32, 2 + 2 + 4 + 16),  # f16 d, f16 m; 32 high bits; 16 bytes of nibbles
    "Q8_0": (32, 2 + 32),  # f16 d; 32 int8
    "Q4_K": (QK_K, 2 + 2 + 12 + QK_K // 2),  # f16 d, f16 dmin; 6-bit scales and mins; nibbles
    "Q5_K": (QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),  # as Q4_K plus one high bit per element
    "Q6_K": (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),  # low nibbles; 2 high bits; int8 scales; f16 d
}

# Dequantise about this many elements at a time, to bound the temporaries of a large matrix.
_CHUNK_ELEMENTS = 1 << 22


def _f16(blocks, start):
  """The little-endian float16 field at byte `start` of every block, as a float32 column [n, 1]."""
  return np.ascontiguousarray(blocks[:, start:start + 2]).view("<f2").astype(np.float32)


def _nibbles(qs):
  """[n, k] bytes -> [n, 2k]: the k low nibbles, then the k high nibbles (ggml's order within a 32-element block)."""
  return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits_q5(blocks, start):
  """Q5_0/Q5_1's uint32 qh: bit j is the fifth bit of element j. Returns [n, 32] of 0/1."""
  qh = np.ascontiguousarray(blocks[:, start:start + 4]).view("<u4")
  return ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def _q4_0(blocks):
  q = _nibbles(blocks[:, 2:18]).astype(np.int8) - 8
  return q.astype(np.float32) * _f16(blocks, 0)


def _q4_1(blocks):
  q = _nibbles(blocks[:, 4:20]).astype(np.float32)
  return q * _f16(blocks, 0) + _f16(blocks, 2)


def _q5_0(blocks):
  q = (_nibbles(blocks[:, 6:22]) | (_high_bits_q5(blocks, 2) << 4)).astype(np.int8) - 16
  return q.astype(np.float32) * _f16(blocks, 0)


def _q5_1(blocks):
  q = (_nibbles(blocks[:, 8:24]) | (_high_bits_q5(blocks, 4) << 4)).astype(np.float32)
  return q * _f16(blocks, 0) + _f16(blocks, 2)


def _q8_0(blocks):
  return blocks[:, 2:34].view(np.int8).astype(np.float32) * _f16(blocks, 0)


def _k_scales_and_mins(scales):
  """get_scale_min_k4 for j = 0..7 at once: [n, 12] packed bytes -> two [n, 8] arrays of 6-bit values.

  Bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7; bytes 4-7 the same for the mins;
  bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and of mins 4-7 (high nibble).
  """
  s0, s1, s2 = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
  sc = np.concatenate([s0 & 63, (s2 & 0x0F) | ((s0 >> 6) << 4)], axis=-1)
  mn = np.concatenate([s1 & 63, (s2 >> 4) | ((s1 >> 6) << 4)], axis=-1)
  return sc.astype(np.float32), mn.astype(np.float32)


def _k_quant_low_nibbles(qs):
  """Q4_K/Q5_K: each 32 bytes hold two 32-element sub-blocks (low nibbles, then high). [n, 128] -> [n, 8, 32]."""
  qs = qs.reshape(len(qs), 4, 1, 32)
  return np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(len(qs), 8, 32)


def _q4_k(blocks):
  sc, mn = _k_scales_and_mins(blocks[:, 4:16])
  d = (_f16(blocks, 0) * sc)[:, :, None]  # d1, d2, ... of dequantize_row_q4_K
  m = (_f16(blocks, 2) * mn)[:, :, None]
  q = _k_quant_low_nibbles(blocks[:, 16:144]).astype(np.float32)
  return (d * q - m).reshape(len(blocks), QK_K)


def _q5_k(blocks):
  sc, mn = _k_scales_and_mins(blocks[:, 4:16])
  d = (_f16(blocks, 0) * sc)[:, :, None]
  m = (_f16(blocks, 2) * mn)[:, :, None]
  qh = blocks[:, 16:48]  # bit s of qh[l] is the fifth bit of element l of sub-block s
  high = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
  q = (_k_quant_low_nibbles(blocks[:, 48:176]) | (high << 4)).astype(np.float32)
  return (d * q - m).reshape(len(blocks), QK_K)


def _q6_k(blocks):
  n = len(blocks)
  # Two halves of 128 elements, each from 64 bytes of ql and 32 of qh: element l (< 32) of quarter k takes its low
  # nibble from ql[l + 32 * (k % 2)] (low nibble for k < 2, high for k >= 2) and its top 2 bits from qh[l] >> 2k.
  ql = blocks[:, 0:128].reshape(n, 2, 64)
  low = np.concatenate([ql & 0x0F, ql >> 4], axis=-1)  # [n, 2, 128]
  qh = blocks[:, 128:192].reshape(n, 2, 1, 32)
  high = ((qh >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 3).reshape(n, 2, 128)
  q = ((low | (high << 4)).astype(np.int8) - 32).astype(np.float32).reshape(n, 16, 16)
  scales = blocks[:, 192:208].view(np.int8).astype(np.float32)  # one per 16 elements
  d = (_f16(blocks, 208) * scales)[:, :, None]
  return (d * q).reshape(n, QK_K)


_DEQUANTIZE_BLOCKS = {
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q8_0": _q8_0,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}


def dequantize(data: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
  """ggml-encoded bytes -> a new float32 array of `shape` (numpy order: the last axis is ggml's ne[0], the row)."""
  if type_name not in BLOCK_SIZES:
    raise WeightsError(f"GGML type {type_name} is not supported; supported: {', '.join(BLOCK_SIZES)}")
  block_elements, block_bytes = BLOCK_SIZES[type_name]
  shape = tuple(int(d) for d in shape)
  if shape and shape[-1] % block_elements:
    raise WeightsError(
        f"{type_name} tensor of shape {shape}: rows of {shape[-1]} are not whole blocks of {block_elements}"
    )
  n_blocks = math.prod(shape) // block_elements
  data = np.asarray(data).reshape(-1).view(np.uint8)
  if data.size != n_blocks * block_bytes:
    raise WeightsError(f"{type_name} tensor of shape {shape} needs {n_blocks * block_bytes} bytes, got {data.size}")
  if type_name == "F32":
    return data.view("<f4").astype(np.float32).reshape(shape)  # astype copies: never a view of the file
  if type_name == "F16":
    return data.view("<f2").astype(np.float32).reshape(shape)
  if type_name == "BF16":  # bfloat16 is the top half of a float32
    return (data.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
  blocks = data.reshape(n_blocks, block_bytes)
  out = np.empty((n_blocks, block_elements), np.float32)
  step = max(1, _CHUNK_ELEMENTS // block_elements)
  for start in range(0, n_blocks, step):
    out[start:start + step] = _DEQUANTIZE_BLOCKS[type_name](blocks[start:start + step])
  return out.reshape(shape)
