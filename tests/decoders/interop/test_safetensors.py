"""decoders.interop.safetensors against the reference `safetensors` package, transformers and hand-made bad files."""
import json
import os

import ml_dtypes
import numpy as np
import pytest

from decoders.errors import WeightsError
from decoders.interop import safetensors as st

reference = pytest.importorskip("safetensors.numpy")


def _every_dtype():
  rng = np.random.default_rng(0)
  return {
    "f64": rng.normal(size=(2, 3)), "f32": rng.normal(size=(4,)).astype(np.float32),
    "f16": rng.normal(size=(3, 1, 2)).astype(np.float16), "bf16": rng.normal(size=(5,)).astype(ml_dtypes.bfloat16),
    "f8": rng.normal(size=(3,)).astype(ml_dtypes.float8_e4m3fn), "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
    "i32": np.array([-1, 2**31 - 1], np.int32), "i16": np.array([-7], np.int16), "i8": np.array([-128, 127], np.int8),
    "u8": np.array([0, 255], np.uint8), "u32": np.array([7], np.uint32), "bool": np.array([True, False, True]),
    "c64": np.array([1 + 2j], np.complex64), "scalar": np.float32(3.5), "empty": np.zeros((0, 4), np.float32),
    "big_endian": np.array([1.5, -2.0], ">f4"), "strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],
  }


def _assert_same(actual, expected):
  assert actual.keys() == expected.keys()
  for name, array in expected.items():
    array = np.asarray(array)
    assert actual[name].shape == array.shape, name
    assert actual[name].dtype == array.dtype.newbyteorder("<"), name
    np.testing.assert_array_equal(actual[name], array, err_msg=name)


def _raw(tmp_path, header, data=b"", header_size=None):
  """A file written by hand: `header` is a JSON-able object or raw bytes."""
  header = header if isinstance(header, bytes) else json.dumps(header).encode()
  path = tmp_path / "raw.safetensors"
  size = len(header) if header_size is None else header_size
  path.write_bytes(size.to_bytes(8, "little") + header + data)
  return str(path)


def test_round_trip_of_every_dtype_with_header_padded_and_metadata(tmp_path):
  path = str(tmp_path / "all.safetensors")
  tensors = _every_dtype()
  st.write_file(path, tensors, metadata={"format": "pt", "note": "hi"})
  loaded = st.read_file(path)
  _assert_same(loaded, tensors)
  assert not loaded["f32"].flags.writeable
  raw = open(path, "rb").read()
  header_size = int.from_bytes(raw[:8], "little")
  assert header_size % 8 == 0
  assert json.loads(raw[8:8 + header_size])["__metadata__"] == {"format": "pt", "note": "hi"}
  assert not os.path.exists(path + ".tmp")


def test_default_metadata_says_format_pt(tmp_path):
  from safetensors import safe_open

  path = str(tmp_path / "a.safetensors")
  st.write_file(path, {"w": np.ones(3, np.float32)})
  with safe_open(path, "np") as file:
    assert file.metadata() == {"format": "pt"}


def test_our_files_load_with_the_reference_and_theirs_with_ours(tmp_path):
  tensors = {name: array for name, array in _every_dtype().items() if name not in ("bf16", "f8")}  # numpy lacks them
  ours, theirs = str(tmp_path / "ours.safetensors"), str(tmp_path / "theirs.safetensors")
  st.write_file(ours, tensors)
  _assert_same(reference.load_file(ours), tensors)
  little_endian = {name: np.asarray(a, np.asarray(a).dtype.newbyteorder("<"), order="C") for name, a in tensors.items()}
  reference.save_file(little_endian, theirs)
  _assert_same(st.read_file(theirs), tensors)


def test_bfloat16_matches_torch_both_ways(tmp_path):
  torch = pytest.importorskip("torch")
  from safetensors.torch import load_file, save_file

  weight = torch.randn(3, 5).to(torch.bfloat16)
  save_file({"w": weight}, str(tmp_path / "torch.safetensors"))
  ours = st.read_file(str(tmp_path / "torch.safetensors"))["w"]
  assert ours.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(ours.view(np.int16), weight.view(torch.int16).numpy())
  st.write_file(str(tmp_path / "ours.safetensors"), {"w": ours})
  assert torch.equal(load_file(str(tmp_path / "ours.safetensors"))["w"], weight)


def test_write_file_refuses_what_safetensors_cannot_store(tmp_path):
  with pytest.raises(WeightsError, match="'s'.*cannot store"):
    st.write_file(str(tmp_path / "x.safetensors"), {"s": np.array(["a"])})
  with pytest.raises(WeightsError, match="metadata"):
    st.write_file(str(tmp_path / "x.safetensors"), {}, metadata={"format": 1})
  assert os.listdir(tmp_path) == []


def test_a_crash_while_writing_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = str(tmp_path / "w.safetensors")
  st.write_file(path, {"w": np.zeros(3, np.float32)})

  def crash(descriptor):
    raise OSError("disk full")

  monkeypatch.setattr(os, "fsync", crash)
  with pytest.raises(OSError, match="disk full"):
    st.write_file(path, {"w": np.ones(3, np.float32)})
  assert os.listdir(tmp_path) == ["w.safetensors"]
  np.testing.assert_array_equal(st.read_file(path)["w"], np.zeros(3))


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
# (what the error says, the file): None is missing, a bytearray the whole file, a tuple (header, claimed header size),
# anything else a header (JSON-able or bytes) followed by 8 data bytes.
CORRUPTIONS = [
  ("no such file", None),
  ("has 2 bytes, too short", bytearray(b"\x01\x02")),
  ("header says 4000 bytes, file has 10", (b"{}", 4000)),
  ("more than the 100000000 we accept", (b"{}", 10**12)),
  ("not valid UTF-8 JSON", b"\xff\xfe{}"),
  ("not valid UTF-8 JSON", b"{not json"),
  ("JSON list, not an object", [1, 2]),
  ("'w' needs dtype, shape and data_offsets", {"w": {"dtype": "F32", "shape": [2]}}),
  ("'w' has unknown dtype 'F128'", {"w": dict(ENTRY, dtype="F128")}),
  ("'w' has shape \\[-2\\]", {"w": dict(ENTRY, shape=[-2])}),
  ("'w' has data_offsets \\[8, 0\\]", {"w": dict(ENTRY, data_offsets=[8, 0])}),
  ("the header lies about its sizes: tensor 'w' .* 12 bytes, .* span 8", {"w": dict(ENTRY, shape=[3])}),
  ("'w' ends at data byte 16, the data has 8", {"w": dict(ENTRY, data_offsets=[8, 16])}),
  ("'a' and 'b' overlap", {"a": ENTRY, "b": dict(ENTRY, shape=[1], data_offsets=[4, 8])}),
  ("BOOL tensor 'w' holds bytes", {"w": {"dtype": "BOOL", "shape": [8], "data_offsets": [0, 8]}}),
]


@pytest.mark.parametrize("message, corruption", CORRUPTIONS)
def test_each_corruption_is_one_line_weights_error_naming_the_file(tmp_path, message, corruption):
  if corruption is None:
    path = str(tmp_path / "missing.safetensors")
  elif isinstance(corruption, tuple):
    path = _raw(tmp_path, corruption[0], header_size=corruption[1])
  elif isinstance(corruption, bytearray):
    path = str(tmp_path / "short.safetensors")
    open(path, "wb").write(corruption)
  else:
    path = _raw(tmp_path, corruption, data=bytes(range(1, 9)))
  with pytest.raises(WeightsError, match=message) as error:
    st.read_file(path)
  assert path in str(error.value) and "\n" not in str(error.value)


def test_every_truncation_of_a_file_is_a_weights_error(tmp_path):
  path = str(tmp_path / "full.safetensors")
  st.write_file(path, {"a": np.arange(3, dtype=np.float32), "b": np.ones((2, 2), np.int16), "c": np.array([True])})
  raw = open(path, "rb").read()
  cut_path = tmp_path / "cut.safetensors"
  for cut in range(len(raw)):
    cut_path.write_bytes(raw[:cut])
    with pytest.raises(WeightsError):
      st.read_file(str(cut_path))


def test_folder_single_and_sharded_round_trip(tmp_path):
  tensors = {f"layer{i}": np.full((10, 10), i, np.float32) for i in range(5)}  # 400 bytes each
  assert st.write_folder(str(tmp_path), tensors) == [str(tmp_path / "model.safetensors")]
  _assert_same(st.read_folder(str(tmp_path)), tensors)
  files = st.write_folder(str(tmp_path), tensors, max_shard_bytes=900)
  names = [os.path.basename(file) for file in files]
  assert names == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)] + ["model.safetensors.index.json"]
  assert sorted(os.listdir(tmp_path)) == sorted(names)  # the single file of the earlier save is gone
  index = json.load(open(tmp_path / "model.safetensors.index.json"))
  assert index["metadata"] == {"total_size": 2000} and index["weight_map"]["layer4"] == names[2]
  _assert_same(st.read_folder(str(tmp_path)), tensors)


def test_folder_problems_are_weights_errors(tmp_path):
  with pytest.raises(WeightsError, match="no such directory"):
    st.read_folder(str(tmp_path / "nowhere"))
  (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
  with pytest.raises(WeightsError, match="no weights in .*expected model.safetensors.*do not read pickle"):
    st.read_folder(str(tmp_path))
  os.remove(tmp_path / "pytorch_model.bin")
  st.write_folder(str(tmp_path), {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}, max_shard_bytes=16)
  index_path, index = tmp_path / "model.safetensors.index.json", {"a": "model-00001-of-00002.safetensors"}
  for weight_map, message in [
      (dict(index, b="model-00009-of-00009.safetensors"), "names shard 'model-00009-of-00009.safetensors'"),
      (dict(index, b="../outside.safetensors"), "names shard '../outside.safetensors'"),
      (dict(index, b="model-00001-of-00002.safetensors"), "lists tensor 'b' in model-00001-of-00002.*does not hold"),
      ([1], "weight_map must map")]:
    index_path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(WeightsError, match=message):
      st.read_folder(str(tmp_path))
  st.write_file(str(tmp_path / "model-00002-of-00002.safetensors"), {"a": np.ones(4), "b": np.ones(4)})
  index_path.write_text(json.dumps({"weight_map": dict(index, b="model-00002-of-00002.safetensors")}))
  with pytest.raises(WeightsError, match="tensor 'a' is in both model-00001-of-00002.* and model-00002"):
    st.read_folder(str(tmp_path))


def _tiny_gpt2():
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16)
  return transformers, torch, transformers.GPT2LMHeadModel(config).eval()


def test_reads_a_folder_sharded_by_transformers(tmp_path):
  _, _, model = _tiny_gpt2()
  model.save_pretrained(str(tmp_path), max_shard_size="20KB")
  assert len([name for name in os.listdir(tmp_path) if name.startswith("model-000")]) > 2
  tensors, state = st.read_folder(str(tmp_path)), model.state_dict()
  assert set(state) - set(tensors) <= {"lm_head.weight"} and set(tensors) <= set(state)
  for name, array in tensors.items():
    np.testing.assert_array_equal(array, state[name].numpy(), err_msg=name)


def test_transformers_loads_a_folder_we_sharded(tmp_path):
  transformers, torch, model = _tiny_gpt2()
  model.config.save_pretrained(str(tmp_path))
  state = {name: tensor.numpy() for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
  assert len(st.write_folder(str(tmp_path), state, max_shard_bytes=20_000)) > 3
  loaded = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
  tokens = torch.arange(10)[None]
  with torch.no_grad():
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)
