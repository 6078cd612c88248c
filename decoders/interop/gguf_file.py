"""Reads GGUF, llama.cpp's single-file format for weights, tokenizer and hyperparameters, without the `gguf` package.

Layout (ggml/docs/gguf.md, versions 2 and 3; version 1 used 32-bit counts and is refused), all little-endian:
  magic b"GGUF", uint32 version, uint64 tensor_count, uint64 kv_count;
  kv_count x (string key, uint32 value type, value)   -- a string is a uint64 byte length and utf-8 bytes;
  tensor_count x (string name, uint32 n_dims, n_dims x uint64 ne, uint32 ggml type, uint64 offset);
  padding to `general.alignment` (default 32), then the data section, which tensor offsets are relative to.
ggml's ne[0] varies fastest, so the numpy shape is the dims reversed. The header is parsed eagerly and checked, so a
bad file fails here in one line instead of deep inside a model; tensor data is read lazily from a read-only memmap.
"""
import dataclasses
import math
import os
import struct

import numpy as np

from decoders.errors import WeightsError
from decoders.interop import quants

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS

# ggml type id -> (name, elements per block, bytes per block): ggml.h's enum ggml_type and ggml.c's type_traits.
# Most are listed only so that an unsupported tensor can be named and sized; quants.BLOCK_SIZES says what we read.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}
_TYPE_IDS = {name: type_id for type_id, (name, _, _) in GGML_TYPES.items()}

# GGUF metadata value type -> (struct format, numpy dtype) for the fixed-size ones; 8 is a string, 9 an array.
_SCALARS = {
    0: ("<B", "<u1"), 1: ("<b", "<i1"), 2: ("<H", "<u2"), 3: ("<h", "<i2"), 4: ("<I", "<u4"), 5: ("<i", "<i4"),
    6: ("<f", "<f4"), 7: ("<?", "<u1"), 10: ("<Q", "<u8"), 11: ("<q", "<i8"), 12: ("<d", "<f8"),
}
_STRING, _ARRAY, _BOOL = 8, 9, 7
_U64 = struct.Struct("<Q")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  name: str
  shape: tuple[int, ...]  # numpy (row-major) order: GGUF's dims reversed
  type_name: str  # "F32", "Q4_1", ...; f"type {id}" for an id we do not know
  offset: int  # absolute byte offset of the data in the file
  nbytes: int  # 0 when the type is unknown (and so is its size)


class _Truncated(Exception):
  """Raised by the cursor on a read past the end; turned into a WeightsError naming the section being parsed."""


class _Cursor:
  """Reads little-endian values from a buffer, refusing to read past its end."""

  def __init__(self, buffer):
    self.buffer, self.pos, self.size = buffer, 0, len(buffer)

  def skip(self, n):
    start = self.pos
    if n < 0 or start + n > self.size:
      raise _Truncated
    self.pos = start + n
    return start

  def scalar(self, fmt):
    size = struct.calcsize(fmt)
    return struct.unpack_from(fmt, self.buffer, self.skip(size))[0]

  def string(self):
    n = self.scalar("<Q")
    return str(self.buffer[self.skip(n):self.pos], "utf-8")

  def strings(self, count):
    """`count` strings in a tight loop: a vocabulary is ~50k of them."""
    if count * 8 > self.size - self.pos:
      raise _Truncated
    buffer, pos, size, out = self.buffer, self.pos, self.size, []
    for _ in range(count):
      if pos + 8 > size:
        raise _Truncated
      (n,) = _U64.unpack_from(buffer, pos)
      pos += 8
      if pos + n > size:
        raise _Truncated
      out.append(str(buffer[pos:pos + n], "utf-8"))
      pos += n
    self.pos = pos
    return out


def _value(cursor, value_type, where):
  """One metadata value of GGUF type `value_type`; `where` names it for errors ("metadata key 'x' in FILE")."""
  if value_type in _SCALARS:
    value = cursor.scalar(_SCALARS[value_type][0])
    return bool(value) if value_type == _BOOL else value
  if value_type == _STRING:
    return cursor.string()
  if value_type == _ARRAY:
    element_type, count = cursor.scalar("<I"), cursor.scalar("<Q")
    if element_type == _STRING:
      return cursor.strings(count)
    if element_type in _SCALARS:
      dtype = np.dtype(_SCALARS[element_type][1])
      start = cursor.skip(count * dtype.itemsize)
      array = np.frombuffer(cursor.buffer, dtype, count, start).astype(dtype.newbyteorder("="))  # a copy
      return array != 0 if element_type == _BOOL else array
    if element_type == _ARRAY:
      return [_value(cursor, _ARRAY, where) for _ in range(count)]
    raise WeightsError(f"{where} is an array of unknown value type {element_type}")
  raise WeightsError(f"{where} has unknown value type {value_type}")


def _describe_type(type_name):
  return f"{type_name} ({_TYPE_IDS[type_name]})" if type_name in _TYPE_IDS else f"unknown {type_name}"


class GGUFFile:
  """A parsed GGUF file: `metadata` and `tensors` (in file order) in memory, tensor data read on demand."""

  def __init__(self, path, version, metadata, tensors, data):
    self.path, self.version, self.metadata, self.tensors, self._data = path, version, metadata, tensors, data

  def __repr__(self):
    return f"GGUFFile({self.path!r}, version={self.version}, {len(self.metadata)} keys, {len(self.tensors)} tensors)"

  def check_supported(self, names=None):
    """Raises WeightsError for the first of `names` (default: every tensor) whose type we cannot dequantise."""
    for name in self.tensors if names is None else names:
      info = self._info(name)
      if info.type_name not in quants.BLOCK_SIZES:
        raise WeightsError(
            f"tensor {name} in {self.path} has GGML type {_describe_type(info.type_name)}, which is not supported; "
            f"supported: {', '.join(quants.BLOCK_SIZES)}"
        )

  def read_tensor(self, name: str) -> np.ndarray:
    """The tensor as a new float32 array of shape `tensors[name].shape`, dequantised."""
    self.check_supported([name])
    info = self.tensors[name]
    data = self._data[info.offset:info.offset + info.nbytes]
    return quants.dequantize(data, info.type_name, info.shape)

  def _info(self, name):
    if name not in self.tensors:
      raise WeightsError(f"{self.path} has no tensor named {name!r} (it has {len(self.tensors)} tensors)")
    return self.tensors[name]


def read_gguf(path: str) -> GGUFFile:
  """Parses and checks the header, metadata and tensor infos of the GGUF file at `path`."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsError(f"{path}: no such GGUF file")
  size = os.path.getsize(path)
  if not size:
    raise WeightsError(f"{path} is empty, not a GGUF file")
  data = np.memmap(path, dtype=np.uint8, mode="r")
  buffer = memoryview(data)
  if bytes(buffer[:4]) != _MAGIC:
    if size < 4 and _MAGIC.startswith(bytes(buffer)):
      raise WeightsError(f"{path} ends after {size} bytes, inside the header")
    raise WeightsError(f"{path} is not a GGUF file: it starts with {bytes(buffer[:8])!r}, not {_MAGIC!r}")
  cursor, section = _Cursor(buffer), "header"
  try:
    cursor.skip(4)
    version = cursor.scalar("<I")
    if version not in _SUPPORTED_VERSIONS:
      hint = " (a big-endian file?)" if version >= 1 << 16 else " (with 32-bit counts)" if version == 1 else ""
      supported = ", ".join(map(str, _SUPPORTED_VERSIONS))
      raise WeightsError(f"{path} has GGUF version {version}{hint}; supported: {supported}")
    tensor_count, kv_count = cursor.scalar("<Q"), cursor.scalar("<Q")
    section = "metadata"
    metadata = _read_metadata(cursor, kv_count, path)
    section = "tensor infos"
    infos = _read_tensor_infos(cursor, tensor_count, path)
  except _Truncated:
    raise WeightsError(f"{path} ends after {size} bytes, inside the {section}") from None
  except UnicodeDecodeError:
    raise WeightsError(f"{path} has a string that is not valid UTF-8 in the {section}") from None
  alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
  if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
    raise WeightsError(f"{path} has general.alignment {alignment!r}; it must be a power of two")
  data_start = -(-cursor.pos // alignment) * alignment
  tensors = {}
  for name, shape, type_id, relative_offset in infos:
    if name in tensors:
      raise WeightsError(f"{path} has two tensors named {name}")
    tensors[name] = _tensor_info(path, name, shape, type_id, data_start, relative_offset, alignment, size)
  return GGUFFile(path, version, metadata, tensors, data)


def _read_metadata(cursor, kv_count, path):
  if kv_count * 12 > cursor.size - cursor.pos:  # a key length and a value type at least: fail fast on a bad count
    raise _Truncated
  metadata = {}
  for _ in range(kv_count):
    key = cursor.string()
    if key in metadata:
      raise WeightsError(f"{path} has metadata key {key!r} twice")
    metadata[key] = _value(cursor, cursor.scalar("<I"), f"metadata key {key!r} in {path}")
  return metadata


def _read_tensor_infos(cursor, tensor_count, path):
  if tensor_count * 24 > cursor.size - cursor.pos:  # name length, n_dims, type and offset at least
    raise _Truncated
  infos = []
  for _ in range(tensor_count):
    name = cursor.string()
    n_dims = cursor.scalar("<I")
    if n_dims > _MAX_DIMS:
      raise WeightsError(f"tensor {name} in {path} has {n_dims} dims; GGUF allows at most {_MAX_DIMS}")
    dims = struct.unpack_from(f"<{n_dims}Q", cursor.buffer, cursor.skip(8 * n_dims))
    type_id, offset = cursor.scalar("<I"), cursor.scalar("<Q")
    infos.append((name, tuple(reversed(dims)), type_id, offset))
  return infos


def _tensor_info(path, name, shape, type_id, data_start, relative_offset, alignment, file_size):
  type_name, block_elements, block_bytes = GGML_TYPES.get(type_id, (f"type {type_id}", 1, 0))
  if shape and shape[-1] % block_elements:
    raise WeightsError(
        f"tensor {name} in {path} has rows of {shape[-1]} elements, not a multiple of {type_name}'s block of "
        f"{block_elements}"
    )
  if relative_offset % alignment:
    raise WeightsError(f"tensor {name} in {path} has data offset {relative_offset}, not a multiple of {alignment}")
  offset = data_start + relative_offset
  nbytes = math.prod(shape) // block_elements * block_bytes
  if offset + nbytes > file_size:
    raise WeightsError(
        f"tensor {name} in {path} has data up to byte {offset + nbytes}, beyond the end of the file ({file_size} bytes)"
    )
  return TensorInfo(name, shape, type_name, offset, nbytes)
