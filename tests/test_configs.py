"""Each config in configs/ says how to run it, each architecture config trains the architecture it names,
and each published-shape variant has its preset's shape (checked, never built: they need up to 32 GB)."""
import importlib

import jax
import numpy as np
import pytest

from decoders.models import decoder_lm
from experiments import train
from experiments.tasks import language_model
from tests.experiments.test_config_checks import CONFIGS

# (config, variant) of every variant with a published shape (a config's PUBLISHED: variant -> (preset, context)).
PUBLISHED_VARIANTS = [
    (name, variant)
    for name in sorted(CONFIGS)
    for variant in getattr(importlib.import_module(f"configs.{name}"), "PUBLISHED", {})
]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_config_docstring_holds_its_run_command(name):
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  assert f"python run.py --config=configs/{name}.py" in module.__doc__


def _paths(tree):
  return [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


@pytest.mark.parametrize("name", ["gpt2", "llama", "mistral"])
def test_an_architecture_config_trains_the_architecture_it_names(name, data_dir, tmp_path):
  config = CONFIGS[name]("test")
  config.data.data_dir = data_dir
  final = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(final["loss"]) and final["loss"] < np.log(82)  # better than uniform over the characters

  _, trainer, _ = train.setup(config, str(tmp_path))
  params = trainer.abstract_state.params
  paths = _paths(params)
  heads, width = config.model.num_heads, config.model.width
  if name == "gpt2":
    assert "positions/embedding" in paths and any(p.endswith("/bias") for p in paths) and "unembed/kernel" not in paths
  else:  # LLaMA and Mistral: rotary positions, no biases, RMSNorm, SwiGLU, a separate output projection
    assert "positions/embedding" not in paths and not any(p.endswith("/bias") for p in paths)
    assert "unembed/kernel" in paths and "block_0/ffn/wi_gate/kernel" in paths
  kv_heads = heads // 2 if name == "mistral" else heads
  assert params["block_0"]["attention"]["key"]["kernel"].shape == (width, kv_heads, width // heads)


@pytest.mark.parametrize("name, variant", PUBLISHED_VARIANTS)
def test_a_published_variant_has_its_presets_shape_vocabulary_and_context(name, variant):
  preset, context = importlib.import_module(f"configs.{name}").PUBLISHED[variant]
  config = CONFIGS[name](variant)
  train.check_config(config)
  # Its vocabulary is the config's, whatever the data's (82 characters here).
  assert language_model.model_config(config, data_vocab_size=82) == decoder_lm.preset(preset)
  assert config.data.context_length == context <= config.model.max_len


def test_the_published_shapes_of_every_preset_with_a_vocabulary_have_a_variant():
  presets = {importlib.import_module(f"configs.{name}").PUBLISHED[variant][0] for name, variant in PUBLISHED_VARIANTS}
  assert presets == {name for name, fields in decoder_lm.PRESETS.items() if "vocab_size" in fields}


@pytest.mark.parametrize("name", ["gpt2", "llama", "mistral"])
def test_an_unknown_variant_names_the_variants(name):
  with pytest.raises(ValueError, match="unknown variant 'tiny'.*'published'"):
    CONFIGS[name]("tiny")
