"""GPT-2 (Radford et al. 2019) as Hugging Face `transformers` stores it: `model_type: gpt2`.

Its linear layers are `Conv1D`s, whose weights are [in, out] (our layout, no transpose);
Q, K and V are one fused `c_attn` matrix [width, 3 * width]; the output embedding is
tied to the token table, so a `GPT2LMHeadModel` checkpoint has no `lm_head` tensor.
"""
import re

import numpy as np

from decoders.errors import WeightsError
from decoders.interop import conversion
from decoders.interop.conversion import Rule, same
from decoders.interop.hf_config import read
from decoders.models import decoder_lm

MODEL_TYPE = "gpt2"
# GPT2Config's defaults (transformers 5.23), for keys a config.json may leave out.
DEFAULTS = dict(
    vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
    activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
    scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
)
# HF activation name -> ours. gelu_new is GPT-2's tanh approximation of GELU.
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
PREFIX = "transformer."  # GPT2LMHeadModel's names; a bare GPT2Model's lack it
# Buffers that older checkpoints saved beside the weights: the causal mask and its fill value.
IGNORED = re.compile(r"\.attn\.(masked_)?bias$")


def config_from_hf(hf: dict, source: str) -> decoder_lm.DecoderLMConfig:
  for key, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
    if read(hf, DEFAULTS, key, source) != supported:
      raise WeightsError(f"{source}: {key}={not supported} is not supported (GPT-2 uses {supported})")
  activation = read(hf, DEFAULTS, "activation_function", source)
  if activation not in ACTIVATIONS:
    raise WeightsError(f"{source}: activation_function={activation!r} is not one of {sorted(ACTIVATIONS)}")
  width = read(hf, DEFAULTS, "n_embd", source)
  return decoder_lm.preset(
      "gpt2",
      vocab_size=read(hf, DEFAULTS, "vocab_size", source),
      num_layers=read(hf, DEFAULTS, "n_layer", source),
      width=width,
      num_heads=read(hf, DEFAULTS, "n_head", source),
      mlp_dim=read(hf, DEFAULTS, "n_inner", source) or 4 * width,
      max_len=read(hf, DEFAULTS, "n_positions", source),
      norm_epsilon=read(hf, DEFAULTS, "layer_norm_epsilon", source),
      activation=ACTIVATIONS[activation],
      tie_embeddings=read(hf, DEFAULTS, "tie_word_embeddings", source),
  )


def config_to_hf(cfg: decoder_lm.DecoderLMConfig) -> dict:
  activation = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[cfg.activation]
  return dict(
      model_type=MODEL_TYPE, architectures=["GPT2LMHeadModel"], vocab_size=cfg.vocab_size, n_positions=cfg.max_len,
      n_embd=cfg.width, n_layer=cfg.num_layers, n_head=cfg.num_heads, n_inner=cfg.mlp_dim,
      activation_function=activation, layer_norm_epsilon=cfg.norm_epsilon, tie_word_embeddings=cfg.tie_embeddings,
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
  )


def is_exportable(cfg: decoder_lm.DecoderLMConfig) -> bool:
  return (cfg.positions, cfg.norm, cfg.norm_position, cfg.use_bias, cfg.sliding_window, cfg.num_kv_heads) == (
      "learned", "layernorm", "pre", True, 0, 0
  ) and cfg.activation in ("gelu_tanh", "gelu", "relu")


def _fused_qkv(name: str, block: str, width: int, heads: int, head_dim: int, is_bias: bool) -> Rule:
  """`c_attn`: Q, K and V side by side along its output axis, for our three projections."""
  kind = "bias" if is_bias else "kernel"
  paths = tuple(f"{block}/attention/{p}/{kind}" for p in ("query", "key", "value"))
  head_shape = (heads, head_dim) if is_bias else (width, heads, head_dim)
  return Rule(
      name,
      (3 * width,) if is_bias else (width, 3 * width),
      paths,
      lambda w: tuple(part.reshape(head_shape) for part in np.split(w, 3, axis=-1)),
      lambda *qkv: np.concatenate([x.reshape(*head_shape[:-2], width) for x in qkv], axis=-1),
  )


def rules(cfg: decoder_lm.DecoderLMConfig) -> list[Rule]:
  d, h, hd, ff = cfg.width, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  out = [same(f"{PREFIX}wte.weight", "embed/embedding", (cfg.vocab_size, d)),
         same(f"{PREFIX}wpe.weight", "positions/embedding", (cfg.max_len, d))]
  for i in range(cfg.num_layers):
    hf, ours = f"{PREFIX}h.{i}", f"{decoder_lm.BLOCK_PREFIX}{i}"
    out += [
        same(f"{hf}.ln_1.weight", f"{ours}/attention_norm/scale", (d,)),
        same(f"{hf}.ln_1.bias", f"{ours}/attention_norm/bias", (d,)),
        _fused_qkv(f"{hf}.attn.c_attn.weight", ours, d, h, hd, is_bias=False),
        _fused_qkv(f"{hf}.attn.c_attn.bias", ours, d, h, hd, is_bias=True),
        conversion.from_heads(f"{hf}.attn.c_proj.weight", f"{ours}/attention/out/kernel", d, h, hd, linear=False),
        same(f"{hf}.attn.c_proj.bias", f"{ours}/attention/out/bias", (d,)),
        same(f"{hf}.ln_2.weight", f"{ours}/ffn_norm/scale", (d,)),
        same(f"{hf}.ln_2.bias", f"{ours}/ffn_norm/bias", (d,)),
        same(f"{hf}.mlp.c_fc.weight", f"{ours}/ffn/wi/kernel", (d, ff)),
        same(f"{hf}.mlp.c_fc.bias", f"{ours}/ffn/wi/bias", (ff,)),
        same(f"{hf}.mlp.c_proj.weight", f"{ours}/ffn/wo/kernel", (ff, d)),
        same(f"{hf}.mlp.c_proj.bias", f"{ours}/ffn/wo/bias", (d,)),
    ]
  out += [same(f"{PREFIX}ln_f.weight", "final_norm/scale", (d,)), same(f"{PREFIX}ln_f.bias", "final_norm/bias", (d,))]
  if not cfg.tie_embeddings:
    out.append(conversion.transposed("lm_head.weight", "unembed/kernel", cfg.vocab_size, d))
  return out
