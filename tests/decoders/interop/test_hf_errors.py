"""load_hf_checkpoint / save_hf_checkpoint on bad input: one WeightsError line naming the problem, nothing half-done.

Tiny reference models are saved once by `transformers` (module fixture); each test copies a folder and breaks one
thing in it. A few tests are positive: the config keys a loader must read from either place, and bare base models.
"""
import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from decoders.errors import WeightsError
from decoders.interop import load_hf_checkpoint, safetensors, save_hf_checkpoint
from decoders.models import decoder_lm

SIZES = dict(vocab_size=37, bos_token_id=None, eos_token_id=None, pad_token_id=None)
LLAMA = dict(num_hidden_layers=1, hidden_size=16, intermediate_size=24, num_attention_heads=2, num_key_value_heads=1,
             max_position_embeddings=16, **SIZES)
DELETE = object()  # as a value for edit_config: remove the key


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A folder of reference folders, each as save_pretrained wrote it."""
  torch.manual_seed(0)
  gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=16, **SIZES))
  llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))
  models = {
      "gpt2": gpt2, "gpt2_bare": gpt2.transformer, "llama": llama, "llama_bare": llama.model,
      "llama_bare_tied": transformers.LlamaModel(transformers.LlamaConfig(**LLAMA, tie_word_embeddings=True)),
      "mistral": transformers.MistralForCausalLM(transformers.MistralConfig(**LLAMA, sliding_window=None)),
  }
  root = tmp_path_factory.mktemp("reference")
  for name, model in models.items():
    model.save_pretrained(root / name)
  return root


@pytest.fixture
def copy(saved, tmp_path):
  """copy("gpt2") -> a fresh copy of that reference folder, free to break."""
  return lambda name: shutil.copytree(saved / name, tmp_path / name)


def edit_config(folder, **changes):
  path = folder / "config.json"
  hf = json.loads(path.read_text())
  hf.update(changes)
  path.write_text(json.dumps({key: value for key, value in hf.items() if value is not DELETE}))
  return folder


def edit_tensors(folder, edit):
  tensors = {name: np.array(array) for name, array in safetensors.read_file(str(folder / "model.safetensors")).items()}
  edit(tensors)
  safetensors.write_file(str(folder / "model.safetensors"), tensors)
  return folder


def load_fails(folder, pattern):
  """The WeightsError loading `folder` raises; its message matches `pattern` and is one line."""
  with pytest.raises(WeightsError, match=pattern) as info:
    load_hf_checkpoint(str(folder))
  assert "\n" not in str(info.value)
  return info.value


# The folder itself


def test_a_file_is_not_a_directory(tmp_path):
  (tmp_path / "weights").write_text("x")
  load_fails(tmp_path / "weights", "is not a directory")


def test_a_folder_without_config_json(tmp_path):
  load_fails(tmp_path, "no config.json in")


def test_config_json_that_is_not_json(copy):
  folder = copy("gpt2")
  (folder / "config.json").write_text("{'model_type': 'gpt2',")
  load_fails(folder, r"config\.json is not valid JSON")


def test_config_without_weights_names_model_safetensors(copy):
  folder = copy("gpt2")
  (folder / "model.safetensors").unlink()
  load_fails(folder, r"no weights in .*model\.safetensors")


def tripwire(marker) -> bytes:
  """A protocol-0 pickle whose loading calls open(marker, "w"): proof that a loader unpickled the file.

  Opcodes: c (push builtins.open), ( (mark), S (two string arguments), t (tuple), R (call), . (stop).
  """
  return f"c__builtin__\nopen\n(S'{marker}'\nS'w'\ntR.".encode()


def test_pytorch_model_bin_is_refused_and_never_unpickled(copy, tmp_path):
  folder, marker = copy("gpt2"), tmp_path / "unpickled"
  (folder / "model.safetensors").unlink()
  (folder / "pytorch_model.bin").write_bytes(tripwire(marker))
  load_fails(folder, r"pytorch_model\.bin is there, but we do not read pickle")
  assert not marker.exists()


def test_unsupported_model_type_names_it_and_the_supported_ones(copy):
  folder = edit_config(copy("gpt2"), model_type="bert")
  load_fails(folder, "model_type='bert' is not supported; supported: gpt2, llama, mistral")


# Tensors that do not fit the config


@pytest.mark.parametrize("name, change, tensor, found, needed", [
    ("gpt2", dict(n_embd=32), "transformer.wte.weight", (37, 16), (37, 32)),
    ("llama", dict(intermediate_size=32), "model.layers.0.mlp.gate_proj.weight", (24, 16), (32, 16)),
])
def test_a_shape_that_does_not_fit_the_config_names_tensor_and_both_shapes(copy, name, change, tensor, found, needed):
  message = f"tensor {tensor} has shape {found}, but the config needs {needed}"
  load_fails(edit_config(copy(name), **change), re.escape(message))


def test_a_missing_tensor_is_named(copy):
  folder = edit_tensors(copy("gpt2"), lambda tensors: tensors.pop("transformer.h.0.mlp.c_fc.bias"))
  load_fails(folder, r"tensor transformer\.h\.0\.mlp\.c_fc\.bias is missing")


def test_an_unexpected_tensor_is_named(copy):
  folder = edit_tensors(copy("llama"), lambda tensors: tensors.update({"model.layers.0.extra.weight": np.ones(3)}))
  load_fails(folder, r"unexpected tensor model\.layers\.0\.extra\.weight")


def test_a_header_that_lies_about_a_tensors_size(copy):
  path = copy("gpt2") / "model.safetensors"
  raw = path.read_bytes()
  size = int.from_bytes(raw[:8], "little")
  header = json.loads(raw[8:8 + size])
  begin, end = header["transformer.wpe.weight"]["data_offsets"]
  header["transformer.wpe.weight"]["data_offsets"] = [begin, end - 4]
  new = json.dumps(header).encode()
  new += b" " * (-len(new) % 8)
  path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + size:])
  load_fails(path.parent, r"lies about its sizes: tensor 'transformer\.wpe\.weight'")


@pytest.mark.parametrize("kept, pattern", [(-4, r"ends at data byte \d+, the data has \d+ \(truncated"),
                                           (20, r"header says \d+ bytes, file has 20")])
def test_a_truncated_model_safetensors(copy, kept, pattern):
  path = copy("llama") / "model.safetensors"
  path.write_bytes(path.read_bytes()[:kept])
  load_fails(path.parent, pattern)


# Config values we cannot run as the reference does


@pytest.mark.parametrize("name, change, pattern", [
    ("llama", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8}),
     "rope_type='llama3'"),
    ("llama", dict(rope_parameters=DELETE, rope_theta=1e4, rope_scaling={"type": "linear", "factor": 2.0}),
     "rope_type='linear'"),
    ("llama", dict(attention_bias=True), "attention_bias=true is not supported"),
    ("llama", dict(head_dim=4), r"head_dim=4 is not hidden_size / num_attention_heads = 8"),
    ("mistral", dict(hidden_act="relu"), "hidden_act='relu' is not one of"),
    ("gpt2", dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True is not supported"),
])
def test_an_unsupported_config_value_is_named(copy, name, change, pattern):
  load_fails(edit_config(copy(name), **change), pattern)


def test_rope_scaling_beside_default_rope_parameters_is_not_ignored(copy):
  # transformers (modeling_rope_utils: `rope_parameters = rope_scaling or rope_parameters`) runs this as linear.
  load_fails(edit_config(copy("llama"), rope_scaling={"type": "linear", "factor": 2.0}), "rope_type='linear'")


@pytest.mark.parametrize("change, pattern", [
    (dict(n_head=3), r"n(um)?_heads?=3"),  # each size fine, but 16 is not divisible by 3
    (dict(n_layer="1"), "n(um)?_layers?"),  # a number written as a string
    (dict(model_type=["gpt2"]), "model_type"),  # not a string at all
    (dict(model_type="llama", rope_parameters="x"), "rope_parameters"),
])
def test_an_impossible_config_value_is_a_weights_error(copy, change, pattern):
  load_fails(edit_config(copy("gpt2"), **change), pattern)


# Positive cases: keys read from either place, bare base models


@pytest.mark.parametrize("change, base", [
    (dict(rope_parameters=DELETE, rope_theta=1234.0), 1234.0),
    (dict(rope_theta=DELETE, rope_parameters={"rope_type": "default", "rope_theta": 4321.0}), 4321.0),
])
def test_rope_theta_is_read_from_either_place(copy, change, base):
  model, _ = load_hf_checkpoint(str(edit_config(copy("llama"), **change)))
  assert model.config.rope_base == base


def test_mistral_with_sliding_window_null_has_no_window(saved):
  assert json.loads((saved / "mistral" / "config.json").read_text())["sliding_window"] is None
  model, _ = load_hf_checkpoint(str(saved / "mistral"))
  assert model.config.sliding_window == 0


def test_a_bare_gpt2_model_loads_as_its_lm_head_model(saved):
  model, params = load_hf_checkpoint(str(saved / "gpt2"))
  bare_model, bare_params = load_hf_checkpoint(str(saved / "gpt2_bare"))
  assert bare_model.config == model.config
  assert jax.tree.structure(bare_params) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, bare_params, params)


def test_a_bare_tied_llama_model_loads(saved):
  model, params = load_hf_checkpoint(str(saved / "llama_bare_tied"))
  tensors = safetensors.read_file(str(saved / "llama_bare_tied" / "model.safetensors"))
  assert model.config.tie_embeddings and "unembed" not in params
  np.testing.assert_array_equal(params["embed"]["embedding"][:37], tensors["embed_tokens.weight"])
  assert model.apply({"params": params}, jnp.zeros((1, 4), jnp.int32)).shape == (1, 4, 37)


def test_a_bare_untied_llama_model_has_no_output_layer(saved):
  load_fails(saved / "llama_bare", r"tensor lm_head\.weight is missing")


# Saving a model no Hugging Face architecture describes


@pytest.mark.parametrize("override, pattern", [(dict(positions="sinusoidal"), "positions='sinusoidal'.* has no Hugging"),
                                               (dict(norm_position="post"), "norm_position='post'.* has no Hugging"),
                                               (dict(key_size=4), "model.key_size=4 differs from width / num_heads = 8")])
def test_saving_a_model_without_hf_architecture_writes_nothing(tmp_path, override, pattern):
  cfg = decoder_lm.preset("shakespeare_char", vocab_size=11, num_layers=1, width=16, num_heads=2, mlp_dim=32, max_len=8,
                          **override)
  model = decoder_lm.DecoderLM(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
  target = tmp_path / "out"
  with pytest.raises(WeightsError, match=pattern) as info:
    save_hf_checkpoint(model, params, str(target))
  assert "\n" not in str(info.value)
  assert not target.exists()
