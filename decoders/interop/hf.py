"""Hugging Face checkpoint folders in and out: `config.json` + safetensors, as `save_pretrained` writes them.

    model, params = load_hf_checkpoint("path/to/folder")      # gpt2, llama or mistral
    logits = model.apply({"params": params}, tokens)          # [batch, length, vocab], float32
    model, params = load_hf_checkpoint("path/to/t5_or_bart")  # an EncoderDecoder
    logits = model.apply({"params": params}, encoder_tokens, decoder_tokens)  # [batch, target length, vocab]
    save_hf_checkpoint(model, params, "path/to/out")          # AutoModelForCausalLM.from_pretrained reads it

Only JSON and safetensors are read: no pickle, no code from the folder. The parameters
come back float32 in the loop layout (block_0, block_1, ...); `decoder_lm.stack_layers`
turns them into a scanned model's.
"""
import json
import os
import types
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from decoders.errors import ConfigError, WeightsError
from decoders.interop import conversion, hf_bart, hf_gpt2, hf_llama, hf_t5, safetensors
from decoders.models import decoder_lm

# model_type -> the module that knows its config.json keys and tensor names. A module whose model is not a DecoderLM
# names its class (MODEL: an EncoderDecoder, which takes a source and a target) and reads the tensor names too.
ARCHITECTURES: dict[str, types.ModuleType] = {
    "gpt2": hf_gpt2, "llama": hf_llama, "mistral": hf_llama, "t5": hf_t5, "bart": hf_bart,
}
CONFIG_FILE = "config.json"


def read_config(directory: str) -> dict:
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isdir(directory):
    raise WeightsError(f"{directory} is not a directory")
  if not os.path.isfile(path):
    raise WeightsError(f"no {CONFIG_FILE} in {directory}: expected a folder as save_pretrained writes it")
  try:
    with open(path, encoding="utf-8") as f:
      hf = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise WeightsError(f"{path} is not valid JSON: {error}") from None
  if not isinstance(hf, dict):
    raise WeightsError(f"{path} is not a JSON object")
  return hf


def architecture(hf: dict, source: str) -> types.ModuleType:
  model_type = hf.get("model_type")
  if not isinstance(model_type, str) or model_type not in ARCHITECTURES:
    raise WeightsError(f"{source}: model_type={model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
  return ARCHITECTURES[model_type]


def with_prefix(tensors: Mapping[str, np.ndarray], prefix: str) -> Mapping[str, np.ndarray]:
  """A bare base model's tensor names (`h.0...`, `layers.0...`) as its LM-head model's (`transformer.h.0...`)."""
  if any(name.startswith(prefix) for name in tensors):
    return tensors
  return {(name if name.startswith("lm_head.") else prefix + name): value for name, value in tensors.items()}


def from_tensors(hf: dict, tensors: Mapping[str, np.ndarray], source: str) -> tuple[nn.Module, dict]:
  """(model, params) for a config.json dict and its tensors by Hugging Face name; used for GGUF files too."""
  arch = architecture(hf, source)
  tensors = with_prefix(tensors, arch.PREFIX)
  model_class = getattr(arch, "MODEL", decoder_lm.DecoderLM)
  decoder_only = model_class is decoder_lm.DecoderLM
  try:
    cfg = arch.config_from_hf(hf, source) if decoder_only else arch.config_from_hf(hf, source, frozenset(tensors))
  except ConfigError as error:  # sizes that are each fine but cannot go together (heads not dividing the width)
    raise WeightsError(f"{source}: config.json describes no model we can build: {error}") from None
  model = model_class(cfg)
  params = conversion.params_from_tensors(arch.rules(cfg), tensors, source, arch.IGNORED)
  # The rules must fill the model's tree exactly; a difference is a bug in the rules, not in the file.
  inputs = [jnp.zeros((1, 1), jnp.int32)] * (1 if decoder_only else 2)  # tokens, or a source and a target
  expected = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), *inputs)["params"]))
  if jax.tree.structure(expected) != jax.tree.structure(params):
    raise AssertionError(f"the {hf['model_type']} rules do not give the model's parameter tree")
  return model, jax.tree.map(jnp.asarray, params)


def load_hf_checkpoint(directory: str) -> tuple[nn.Module, dict]:
  """The model a Hugging Face folder (config.json + model.safetensors, or its sharded index) holds, and its params."""
  hf = read_config(directory)
  architecture(hf, directory)  # an unsupported model_type is named before any weight is read
  return from_tensors(hf, safetensors.read_folder(directory), directory)


def save_hf_checkpoint(
    model: decoder_lm.DecoderLM, params, directory: str, max_shard_bytes: int | None = None
) -> list[str]:
  """Writes `model` and `params` as a folder `transformers` loads (AutoModelForCausalLM); returns the files.

  A GPT-2-style model (learned positions, LayerNorm, biases) is written as `gpt2`, a
  LLaMA-style one (RoPE, RMSNorm, gated feed-forward, no biases) as `llama`, or `mistral`
  with a sliding window. Padded vocabulary rows (`vocab_multiple`) are left out.
  """
  cfg = model.config
  arch = next((a for a in (hf_gpt2, hf_llama) if a.is_exportable(cfg)), None)
  if arch is None:
    raise WeightsError(
        f"a model with positions={cfg.positions!r}, norm={cfg.norm!r}, norm_position={cfg.norm_position!r}, "
        f"activation={cfg.activation!r}, use_bias={cfg.use_bias} has no Hugging Face architecture to save it as"
    )
  if cfg.key_dim != cfg.head_dim:  # GPT-2's and LLaMA's attention have one head size for queries, keys and values
    raise WeightsError(f"model.key_size={cfg.key_size} differs from width / num_heads = {cfg.head_dim}, which "
                       "Hugging Face's gpt2, llama and mistral cannot hold")
  params = jax.device_get(nn.unbox(params))
  if decoder_lm.SCANNED_LAYERS in params:
    params = decoder_lm.unstack_layers(params)
  params = _without_vocab_padding(params, cfg)
  tensors = conversion.tensors_from_params(arch.rules(cfg), params)
  os.makedirs(directory, exist_ok=True)
  written = safetensors.write_folder(directory, tensors, max_shard_bytes)
  hf = {**arch.config_to_hf(cfg), "dtype": "float32"}
  config_path = os.path.join(directory, CONFIG_FILE)
  with open(config_path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  os.replace(config_path + ".tmp", config_path)
  return [*written, config_path]


def _without_vocab_padding(params: dict, cfg: decoder_lm.DecoderLMConfig) -> dict:
  """The embedding (and output) rows of real ids only: padding rows exist for sharding, not for use."""
  params = {**params, "embed": {"embedding": np.asarray(params["embed"]["embedding"])[: cfg.vocab_size]}}
  if "unembed" in params:
    params["unembed"] = {"kernel": np.asarray(params["unembed"]["kernel"])[:, : cfg.vocab_size]}
  return params
