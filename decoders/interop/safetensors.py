"""Safetensors files and Hugging Face weight folders, read and written with numpy alone.

Why our own: the format is a length, a JSON header and raw little-endian bytes, so a page of numpy reads it without
torch or the `safetensors` package, and we can check every claim the header makes before returning anything; a
corrupt or truncated download then fails with one WeightsError line naming the file and tensor, never with a numpy
reshape error or a silently wrong array. Nothing here unpickles or executes anything from a file.

Arrays from `read_file` / `read_folder` are read-only views of a memory map of the file (copy them to modify); the
map stays open as long as any array from it is alive.
"""
import json
import mmap
import os
import re
from typing import Mapping

import ml_dtypes
import numpy as np

from decoders.errors import WeightsError

DTYPES = {
  "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
  "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
  "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
  "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
  "BOOL": np.dtype(bool), "C64": np.dtype("<c8"),
}
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000  # the limit the reference implementation sets too
SINGLE_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"


def _is_count(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0  # JSON true is not a size


def _read_header(path: str, file, file_size: int) -> tuple[dict, int]:
  """The validated header (tensor entries only) and the file offset where the data begins."""
  if file_size < 8:
    raise WeightsError(f"{path}: file has {file_size} bytes, too short for a safetensors file (at least 8)")
  header_size = int.from_bytes(file.read(8), "little")
  if header_size > MAX_HEADER_BYTES:
    raise WeightsError(f"{path}: header says {header_size} bytes, more than the {MAX_HEADER_BYTES} we accept")
  if 8 + header_size > file_size:
    raise WeightsError(f"{path}: header says {header_size} bytes, file has {file_size}")
  try:
    header = json.loads(file.read(header_size).decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as error:
    raise WeightsError(f"{path}: header is not valid UTF-8 JSON ({error})") from None
  if not isinstance(header, dict):
    raise WeightsError(f"{path}: header is a JSON {type(header).__name__}, not an object")
  header.pop("__metadata__", None)
  data_size, spans = file_size - 8 - header_size, []
  for name, entry in header.items():
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
      raise WeightsError(f"{path}: tensor {name!r} needs dtype, shape and data_offsets, header has {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
      raise WeightsError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(size) for size in shape):
      raise WeightsError(f"{path}: tensor {name!r} has shape {shape!r}, not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
      raise WeightsError(f"{path}: tensor {name!r} has data_offsets {offsets!r}, not [begin, end] with begin <= end")
    expected = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
      raise WeightsError(f"{path}: the header lies about its sizes: tensor {name!r} is {dtype}{shape}, which is "
                         f"{expected} bytes, but its data_offsets span {offsets[1] - offsets[0]}")
    if offsets[1] > data_size:
      raise WeightsError(f"{path}: tensor {name!r} ends at data byte {offsets[1]}, the data has {data_size} "
                         "(truncated file?)")
    if expected:
      spans.append((offsets[0], offsets[1], name))
  spans.sort()
  for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
    if begin < end:
      raise WeightsError(f"{path}: tensors {first!r} and {second!r} overlap in the data")
  return header, 8 + header_size


def read_file(path: str) -> dict[str, np.ndarray]:
  """Every tensor of a safetensors file, as read-only views of a memory map of it, validated against the header."""
  if not os.path.isfile(path):
    raise WeightsError(f"{path}: no such file")
  with open(path, "rb") as file:
    header, data_start = _read_header(path, file, os.fstat(file.fileno()).st_size)
    memory = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
  tensors = {}
  for name, entry in header.items():
    dtype, shape = DTYPES[entry["dtype"]], entry["shape"]
    array = np.frombuffer(memory, dtype, int(np.prod(shape)), data_start + entry["data_offsets"][0]).reshape(shape)
    if dtype == bool and (array.view(np.uint8) > 1).any():
      raise WeightsError(f"{path}: BOOL tensor {name!r} holds bytes other than 0 and 1")
    tensors[name] = array
  return tensors


def write_file(path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
  """Writes `tensors` (any byte order; stored little-endian) to `path` via `path`.tmp, so a crash leaves no half file.

  `metadata` defaults to {"format": "pt"}, which transformers insists on.
  """
  metadata = {"format": "pt"} if metadata is None else dict(metadata)
  if not all(isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()):
    raise WeightsError(f"{path}: metadata must map str to str, got {metadata!r}")
  arrays = {}
  for name, tensor in tensors.items():
    array = np.asarray(tensor)
    if not isinstance(name, str) or name == "__metadata__":
      raise WeightsError(f"{path}: tensor name {name!r} is not allowed")
    if array.dtype.newbyteorder("<") not in _DTYPE_NAMES:
      raise WeightsError(f"{path}: tensor {name!r} has dtype {array.dtype}, which safetensors cannot store")
    arrays[name] = np.asarray(array, array.dtype.newbyteorder("<"), order="C")  # keeps 0-d, unlike ascontiguousarray
  # Widest dtypes first (as the reference writer does): with the header padded to 8, every tensor stays aligned.
  names = sorted(arrays, key=lambda name: (-arrays[name].dtype.itemsize, name))
  header, offset = {"__metadata__": metadata}, 0
  for name in names:
    array = arrays[name]
    header[name] = {"dtype": _DTYPE_NAMES[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + array.nbytes]}
    offset += array.nbytes
  header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
  header_bytes += b" " * (-len(header_bytes) % 8)
  temporary = path + ".tmp"
  try:  # on any failure, remove the temporary; the file under the real name is untouched
    with open(temporary, "wb") as file:
      file.write(len(header_bytes).to_bytes(8, "little") + header_bytes)
      for name in names:
        file.write(arrays[name].reshape(-1).view(np.uint8).data)
      file.flush()
      os.fsync(file.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def read_folder(directory: str) -> dict[str, np.ndarray]:
  """The weights of a folder as `save_pretrained` writes it: model.safetensors, else the index and its shards."""
  if not os.path.isdir(directory):
    raise WeightsError(f"{directory}: no such directory")
  if os.path.isfile(os.path.join(directory, SINGLE_FILE)):  # transformers prefers the single file too
    return read_file(os.path.join(directory, SINGLE_FILE))
  index_path = os.path.join(directory, INDEX_FILE)
  if not os.path.isfile(index_path):
    pickle_note = ("; pytorch_model.bin is there, but we do not read pickle-based .bin files (re-save with safetensors)"
                   if os.path.exists(os.path.join(directory, "pytorch_model.bin")) else "")
    raise WeightsError(f"no weights in {directory}: expected {SINGLE_FILE} or {INDEX_FILE}{pickle_note}")
  try:
    with open(index_path, encoding="utf-8") as file:
      weight_map = json.load(file)["weight_map"]
  except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
    raise WeightsError(f"{index_path}: not a JSON object with a weight_map ({error!r})") from None
  if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
    raise WeightsError(f"{index_path}: weight_map must map tensor names to shard file names")
  tensors, shard_of = {}, {}
  for shard in sorted(set(weight_map.values())):
    shard_path = os.path.join(directory, shard)
    if os.path.basename(shard) != shard or not os.path.isfile(shard_path):
      raise WeightsError(f"{index_path}: names shard {shard!r}, which is not a file in {directory}")
    for name, array in read_file(shard_path).items():
      if name in tensors:
        raise WeightsError(f"{directory}: tensor {name!r} is in both {shard_of[name]} and {shard}")
      tensors[name], shard_of[name] = array, shard
  for name, shard in weight_map.items():
    if shard_of.get(name) != shard:
      raise WeightsError(f"{index_path}: lists tensor {name!r} in {shard}, but that shard does not hold it")
  return tensors


def write_folder(directory: str, tensors: Mapping[str, np.ndarray], max_shard_bytes: int | None = None) -> list[str]:
  """Writes model.safetensors, or (over `max_shard_bytes` in all) shards and an index named as transformers names them.

  Shards fill in the order of `tensors`; a tensor larger than the limit gets a shard of its own. Weight files of an
  earlier save that this one does not rewrite are removed, so the folder never mixes two saves. Returns the paths.
  """
  os.makedirs(directory, exist_ok=True)
  groups, group_bytes, total = [[]], 0, 0
  for name, array in tensors.items():
    size = np.asarray(array).nbytes
    if groups[-1] and max_shard_bytes is not None and group_bytes + size > max_shard_bytes:
      groups, group_bytes = groups + [[]], 0
    groups[-1].append(name)
    group_bytes, total = group_bytes + size, total + size
  files = [SINGLE_FILE] if len(groups) == 1 else [
    f"model-{number:05d}-of-{len(groups):05d}.safetensors" for number in range(1, len(groups) + 1)]
  for file, group in zip(files, groups):
    write_file(os.path.join(directory, file), {name: tensors[name] for name in group})
  if len(groups) > 1:
    index = {"metadata": {"total_size": total},
             "weight_map": {name: file for file, group in zip(files, groups) for name in sorted(group)}}
    index_path = os.path.join(directory, INDEX_FILE)
    with open(index_path + ".tmp", "w", encoding="utf-8") as handle:
      json.dump(index, handle, indent=2, sort_keys=True)
    os.replace(index_path + ".tmp", index_path)
    files.append(INDEX_FILE)
  stale = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?")
  for name in os.listdir(directory):
    if stale.fullmatch(name) and name not in files:
      os.remove(os.path.join(directory, name))
  return [os.path.join(directory, file) for file in files]
