"""--mode=inspect: published parameter counts from the abstract parameter tree, FLOPs, KV cache, sharding; nothing allocated."""
import functools
import resource
import subprocess
import sys

import jax
import pytest

from configs import autoencoder, gpt2, llama, mistral
from decoders.errors import ConfigError
from decoders.models import decoder_lm
from experiments import inspection
from tests.conftest import REPO, subprocess_env
from tests.decoders.models.test_presets import PUBLISHED

CONFIGS = {"gpt2": gpt2, "llama": llama, "mistral": mistral}
# Meshes of 32 devices where the tests see 8 (GPT-2's 50,257-row vocabulary splits over no tensor axis).
MESHES = {
    "gpt2": dict(data=4, fsdp=8, tensor=1),
    "llama": dict(data=4, fsdp=2, tensor=4),
    "mistral": dict(data=4, fsdp=2, tensor=4),
}
# What inspecting each published config added to the bytes of live JAX arrays and to the process's peak memory.
GROWTH = {}


def published(name: str, **mesh):
  config = CONFIGS[name].get_config("published")
  config.data.data_dir = config.data.source_dir = "/nonexistent"  # a published shape needs no data
  config.mesh.update(mesh)
  return config


@functools.cache
def summary(name: str) -> inspection.Summary:
  live, peak = sum(a.nbytes for a in jax.live_arrays()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  result = inspection.summarize(published(name, **MESHES[name]))
  GROWTH[name] = (
      sum(a.nbytes for a in jax.live_arrays()) - live,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak,
  )
  return result


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_parameter_tree_has_the_published_count_and_the_formulas_agree_with_it(name):
  result, model = summary(name), decoder_lm.preset(name)
  assert result.total == PUBLISHED[name]  # counted from the eval_shape tree, not from num_params
  assert result.total == model.num_params(include_embeddings=True)
  assert result.non_embedding == model.num_params()
  # Training FLOPs per token from the tree: 6 x (non-embedding weights + the output matmul)
  # + 6 L T d for attention, T the keys a query sees (Kaplan et al. 2020, table 1).
  context = CONFIGS[name].PUBLISHED["published"][1]
  keys = min(context, model.sliding_window or context)
  embedding = next(p for p in result.parameters if p.path == "embed/embedding")
  expected = 6 * (result.non_embedding + embedding.count) + 6 * model.num_layers * keys * model.width
  assert result.flops_per_unit == expected == model.flops_per_token(context)


@pytest.mark.parametrize(
    "name, kib_per_token, tokens_held",
    [("llama", 512, 4096), ("mistral", 128, 4096)],  # Mistral's 8 KV heads; its rolling buffer holds the 4,096-token window
)
def test_kv_cache_bytes_per_token(name, kib_per_token, tokens_held):
  result, model = summary(name), decoder_lm.preset(name)
  assert result.cache_bytes_per_unit("bfloat16") == kib_per_token * 1024 == model.kv_cache_bytes_per_token(2)
  assert result.cache_bytes_per_unit("float32") == model.kv_cache_bytes_per_token(4)
  assert result.cache_units == tokens_held


def test_a_7b_model_is_inspected_on_a_mesh_of_any_size_without_allocating_it():
  result = summary("llama")
  live, peak = GROWTH["llama"]
  assert live < 2**20 and peak < 2**30  # its parameters would take 27 GB in float32

  assert result.mesh == {"data": 4, "fsdp": 2, "tensor": 4}
  by_path = {p.path: p for p in result.parameters}
  query = by_path["block_0/attention/query/kernel"]  # [width, heads, head_dim]: width over fsdp, heads over tensor
  assert (query.logical_axes, query.mesh_axes) == (("embed", "heads", "kv"), ("fsdp", "tensor", None))
  assert query.per_device == query.count // 8
  assert by_path["embed/embedding"].mesh_axes == ("tensor", "fsdp")
  assert by_path["final_norm/scale"].per_device == 4096 // 2  # replicated over tensor
  assert result.per_device == sum(p.per_device for p in result.parameters) < result.total // 7
  assert result.cache_bytes_per_unit("bfloat16", per_device=True) == 512 * 1024 // 4  # the KV heads split over tensor


def test_the_table_groups_identical_blocks_and_names_each_parameters_axes():
  text = inspection.format_summary(summary("gpt2"))
  assert "block_{0..11}: 12 x 7,087,872 = 85,054,464" in text
  assert text.count("attention/query/kernel") == 1
  assert "embed: 38,597,376" in text and "positions: 786,432" in text  # 50,257 x 768 and 1,024 x 768
  assert "124,439,808" in text and "85,056,000" in text  # total; non-embedding (the blocks and the final norm)


def test_without_model_vocab_size_the_vocabulary_is_the_datas(lm_config):
  result = inspection.summarize(lm_config)
  embedding = next(p for p in result.parameters if p.path == "embed/embedding")
  assert embedding.shape == (88, lm_config.model.width)  # 82 characters padded to a multiple of 8


def test_the_autoencoder_is_inspected_without_its_data():
  config = autoencoder.get_config("conv,test")
  config.data.data_dir = "/nonexistent"
  result = inspection.summarize(config)
  # 8x8x1 images, channels (16, 32), latent 16: 3x3 convolutions 1->16->32, a dense 128->16,
  # and the mirror image: a dense 16->128, transposed convolutions 32->16->1 (weights + biases).
  encoder = (9 * 1 * 16 + 16) + (9 * 16 * 32 + 32) + (128 * 16 + 16)
  decoder = (16 * 128 + 128) + (9 * 32 * 16 + 16) + (9 * 16 * 1 + 1)
  assert result.total == result.non_embedding == encoder + decoder
  assert result.mesh == {"data": jax.device_count(), "fsdp": 1, "tensor": 1}  # data=-1: all the devices there are
  assert result.flops_per_unit is None and result.cache_values_per_unit == 0
  assert "training FLOPs per example  not known" in inspection.format_summary(result)


# (config, mesh) -> a fragment of the one-line error: the checks of every mode run first.
CASES = {
    "GPT-2's vocabulary over 4 tensor shards": (
        ("gpt2", dict(data=1, fsdp=2, tensor=4)),
        "model.vocab_size=50257 is not divisible by mesh.tensor=4",
    ),
    "LLaMA's heads over 64 tensor shards": (
        ("llama", dict(data=1, tensor=64)),
        "model.num_heads=32 is not divisible by mesh.tensor=64",
    ),
    "a mesh size of -2": (("llama", dict(data=-2)), "mesh.data=-2"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_config_mistake_is_one_line(case):
  (name, mesh), fragment = CASES[case]
  with pytest.raises(ConfigError, match=fragment):
    inspection.summarize(published(name, **mesh))


def test_run_py_inspects_without_a_workdir(tmp_path):
  # Run from an empty directory: inspect writes nothing, and a 2-device mesh is described on 1 device.
  command = [sys.executable, str(REPO / "run.py"), f"--config={REPO}/configs/gpt2.py:published", "--mode=inspect"]
  command += ["--config.mesh.data=1", "--config.mesh.fsdp=2"]
  result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "mesh data=1, fsdp=2, tensor=1 (2 devices)" in result.stdout
  assert any(line.split()[:2] == ["parameters", "124,439,808"] for line in result.stdout.splitlines())
  assert list(tmp_path.iterdir()) == []

