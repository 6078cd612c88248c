"""Runs that start from pretrained weights: `config.init_from` (experiments/pretrained.py) through the one trainer."""
import dataclasses
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smollm2
from decoders import interop
from decoders.interop.bpe_tokenizer import BPETokenizer
from decoders.interop.gguf_file import read_gguf
from decoders.errors import ConfigError
from decoders.models import decoder_lm
from experiments import pretrained, train
from experiments.errors import MissingDataError
from experiments.tasks import language_model
from tests.conftest import REPO, subprocess_env


@pytest.fixture
def llama_config(data_dir):
  from configs import llama

  config = llama.get_config("test")
  config.data.data_dir = data_dir
  return config


@pytest.fixture
def exported(llama_config, tmp_path):
  """(folder, params): a model of llama:test's shape, randomly initialised, saved as a Hugging Face folder."""
  task = language_model.LanguageModelTask(llama_config)
  model = decoder_lm.DecoderLM(task.model_config)
  params = nn.unbox(model.init(jax.random.key(7), jnp.zeros((1, 4), jnp.int32))["params"])
  folder = str(tmp_path / "hf")
  interop.save_hf_checkpoint(model, params, folder)
  pretrained.load.cache_clear()
  return folder, params


def test_a_run_starts_from_the_imported_weights(llama_config, exported, tmp_path):
  folder, params = exported
  llama_config.init_from = f"hf:{folder}"
  task, trainer = train.build(llama_config, train.check_config(llama_config))
  state = train.initial_state(llama_config, task, trainer)
  assert int(state.step) == 0
  vocab = task.model_config.vocab_size  # the saved folder has no padding rows; the run's table pads them with zeros
  np.testing.assert_array_equal(state.params["embed"]["embedding"][:vocab], params["embed"]["embedding"][:vocab])
  jax.tree.map(np.testing.assert_array_equal, state.params["block_0"], params["block_0"])
  # A fresh optimizer: Adam's moments start at zero.
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(state.opt_states) if x.ndim)


def test_a_fine_tuning_run_trains_and_resumes_from_its_own_checkpoints(llama_config, exported, tmp_path):
  llama_config.init_from = f"hf:{exported[0]}"
  workdir = str(tmp_path / "run")
  before = train.evaluate(llama_config.copy_and_resolve_references(), workdir=None)
  first = train.train_and_evaluate(llama_config, workdir)
  assert first["loss"] < before["loss"]
  llama_config.unlock()
  llama_config.train.num_steps += 2
  llama_config.init_from = f"hf:{tmp_path / 'no such folder'}"  # never read again: the checkpoint comes first
  second = train.train_and_evaluate(llama_config, workdir)
  assert np.isfinite(second["loss"])


def test_a_model_that_is_not_the_checkpoints_is_refused(llama_config, exported):
  llama_config.init_from = f"hf:{exported[0]}"
  llama_config.model.num_layers = 2
  task, trainer = train.build(llama_config, train.check_config(llama_config))
  with pytest.raises(ConfigError, match=r"model.num_layers=2, but init_from=.* has num_layers=1"):
    train.initial_state(llama_config, task, trainer)


def test_a_key_size_is_checked_as_the_size_it_gives():
  theirs = decoder_lm.preset("llama", vocab_size=37, num_layers=1, width=32, num_heads=4, mlp_dim=64, max_len=16)
  pretrained.check_model("hf:x", theirs, dataclasses.replace(theirs, key_size=8))  # 8 = width / heads: the same
  with pytest.raises(ConfigError, match=r"model.key_size=4, but init_from='hf:x' has key_size=8"):
    pretrained.check_model("hf:x", theirs, dataclasses.replace(theirs, key_size=4))


@pytest.mark.parametrize("spec", ["weights.gguf", "pt:x", "hf:"])
def test_init_from_must_name_a_kind(spec):
  with pytest.raises(ConfigError, match="must be hf:DIR or gguf:PATH"):
    pretrained.parse(spec)


def test_the_per_character_loss_of_a_character_model_is_its_loss(trained_lm):
  assert trained_lm[1]["nats_per_character"] == pytest.approx(trained_lm[1]["loss"])


def run_smollm2(*flags):
  return subprocess.run(
      [sys.executable, "run.py", "--config=configs/smollm2.py:test", *flags],
      cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
  )


def test_smollm2_knows_the_capital_of_france(data_dir):
  """The issue's command, at the test variant's short window: greedy, from the GGUF weights as released."""
  result = run_smollm2(
      "--mode=sample", "--prompt=The capital of France is", "--prompt=The capital of Italy is", f"--config.data.data_dir={data_dir}"
  )
  assert result.returncode == 0, result.stderr
  # Two prompts in one batch: each, then a continuation beginning with its capital.
  assert "The capital of France is Paris" in result.stdout and "The capital of Italy is Rome" in result.stdout
  assert "tokens/s" in result.stderr


def test_smollm2_tokenizer_round_trips_text():
  _, path = pretrained.parse(smollm2.GGUF_FILE)
  tokenizer = BPETokenizer.from_gguf_metadata(read_gguf(path).metadata, path)
  text = "ROMEO:\nBut, soft! what light through yonder window breaks?\n\tIt is the east — 1597, année.\n"
  assert tokenizer.decode(tokenizer.encode(text)) == text
  assert len(tokenizer.encode(text)) < len(text) / 2  # subwords, not characters


def test_a_trained_run_exports_to_a_folder_transformers_loads(trained_lm, lm_config, tmp_path):
  import torch
  import transformers

  workdir, _ = trained_lm
  train.export(lm_config, workdir, str(tmp_path / "hf"))
  task, _, state = train.restore_for_inference(lm_config, workdir)
  exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
  tokens = np.asarray([task.tokenizer.encode("ROMEO:\nBut soft")])
  ours = np.asarray(task.model.apply({"params": state.params}, jnp.asarray(tokens)))[..., : task.tokenizer.vocab_size]
  with torch.no_grad():
    theirs = exported(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_weights_in_a_package_that_is_not_installed_are_named():
  with pytest.raises(MissingDataError, match="no installed package 'no_such_package' holds it"):
    pretrained.parse("gguf:no_such_package/model.gguf")


def test_int8_weights_are_the_imported_weights_quantised(tmp_path):
  """model.weights="int8" is a runtime field: params_for quantises what it imports (here into the scanned layout)."""
  import dataclasses

  from decoders.layers import quantization

  config = decoder_lm.preset(
      "llama", vocab_size=37, num_layers=2, width=32, num_heads=4, num_kv_heads=2, mlp_dim=64, max_len=32
  )
  model = decoder_lm.DecoderLM(config)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(3), jnp.zeros((1, 4), jnp.int32))["params"])
  interop.save_hf_checkpoint(model, params, str(tmp_path))
  pretrained.load.cache_clear()
  int8_config = dataclasses.replace(config, weights="int8", scan_layers=True)
  imported = pretrained.params_for(f"hf:{tmp_path}", int8_config)
  pretrained.load.cache_clear()
  expected = quantization.quantize_params(decoder_lm.stack_layers(params), int8_config)
  assert jax.tree.structure(imported) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, imported, expected)
  tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, config.vocab_size)
  float_logits = model.apply({"params": params}, tokens)
  int8_logits = decoder_lm.DecoderLM(int8_config).apply({"params": imported}, tokens)
  rms_error = jnp.sqrt(jnp.mean((int8_logits - float_logits) ** 2) / jnp.mean(float_logits**2))
  assert float(rms_error) < 0.02  # weights at the init scale: the rounding barely moves the logits
