"""BART (Lewis et al. 2020) as Hugging Face stores it: `model_type: bart`, for an EncoderDecoder.

`model.shared.weight` is the token table of both stacks and, tied, of the output (`lm_head.weight` is in the file
when the output has its own); `final_logits_bias` [1, vocab] is added to the logits. Each stack has its own learned
positions, looked up at position + 2 (fairseq kept rows 0 and 1 for padding), so their first two rows are dropped,
and its own `layernorm_embedding`. Layers are post-norm; each layer's `final_layer_norm` is its feed-forward's
norm. Linear weights are nn.Linear's [out, in] with biases; `scale_embedding` multiplies the token embeddings by
sqrt(d_model).
"""
import re

import numpy as np

from decoders.errors import WeightsError
from decoders.interop import conversion
from decoders.interop.conversion import Rule, same
from decoders.interop.hf_config import read
from decoders.models import encoder_decoder

MODEL = encoder_decoder.EncoderDecoder
# BartConfig's defaults (transformers 5.23) for keys a config.json may leave out.
DEFAULTS = dict(
    vocab_size=50265, max_position_embeddings=1024, encoder_layers=12, encoder_ffn_dim=4096,
    encoder_attention_heads=16, decoder_layers=12, decoder_ffn_dim=4096, decoder_attention_heads=16,
    activation_function="gelu", d_model=1024, dropout=0.1, scale_embedding=False, tie_word_embeddings=True,
)
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
PREFIX = "model."  # BartForConditionalGeneration's names; a bare BartModel's lack it
# Copies of `shared` that some checkpoints keep (transformers ties them to it, as long as tie_word_embeddings holds).
IGNORED = re.compile(r"^model\.(encoder|decoder)\.embed_tokens\.weight$")
OUTPUT = "lm_head.weight"
POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding's offset


def config_from_hf(hf: dict, source: str, tensor_names) -> encoder_decoder.EncoderDecoderConfig:
  """The model a config.json describes; `tensor_names` (the checkpoint's) say whether the output is tied."""
  sizes = {}
  for ours, key in (("num_heads", "attention_heads"), ("mlp_dim", "ffn_dim")):
    encoder, decoder = read(hf, DEFAULTS, f"encoder_{key}", source), read(hf, DEFAULTS, f"decoder_{key}", source)
    if encoder != decoder:
      raise WeightsError(f"{source}: encoder_{key}={encoder} but decoder_{key}={decoder}; this model shares them")
    sizes[ours] = encoder
  activation = read(hf, DEFAULTS, "activation_function", source)
  if activation not in ACTIVATIONS:
    raise WeightsError(f"{source}: activation_function={activation!r} is not one of {sorted(ACTIVATIONS)}")
  tied = read(hf, DEFAULTS, "tie_word_embeddings", source)
  own_tables = sorted(name for name in tensor_names if IGNORED.search(name))
  if not tied and own_tables:  # transformers >= 5 then ties nothing: each stack reads a token table of its own
    raise WeightsError(f"{source}: tie_word_embeddings=false and {own_tables[0]}: this model has one token table")
  untied = OUTPUT in tensor_names
  if not untied and not tied:
    raise WeightsError(f"{source}: tensor {OUTPUT} is missing (tie_word_embeddings is false)")
  return encoder_decoder.preset(
      "bart-base",
      **sizes,
      vocab_size=read(hf, DEFAULTS, "vocab_size", source),
      num_encoder_layers=read(hf, DEFAULTS, "encoder_layers", source),
      num_decoder_layers=read(hf, DEFAULTS, "decoder_layers", source),
      width=read(hf, DEFAULTS, "d_model", source),
      max_len=read(hf, DEFAULTS, "max_position_embeddings", source),
      dropout_rate=read(hf, DEFAULTS, "dropout", source),
      activation=ACTIVATIONS[activation],
      scale_embeddings=read(hf, DEFAULTS, "scale_embedding", source),
      tie_embeddings=not untied,
  )


def _positions(name: str, path: str, max_len: int, width: int) -> Rule:
  """A learned position table whose first POSITION_OFFSET rows no position reads."""
  unused = np.zeros((POSITION_OFFSET, width), np.float32)
  return Rule(name, (max_len + POSITION_OFFSET, width), (path,), lambda w: (w[POSITION_OFFSET:],),
              lambda table: np.concatenate([unused, table]))


def _linear(hf: str, ours: str, out_features: int, in_features: int) -> list[Rule]:
  return [conversion.transposed(f"{hf}.weight", f"{ours}/kernel", out_features, in_features),
          same(f"{hf}.bias", f"{ours}/bias", (out_features,))]


def _attention(hf: str, ours: str, cfg: encoder_decoder.EncoderDecoderConfig) -> list[Rule]:
  d, h, hd = cfg.width, cfg.stack.num_heads, cfg.stack.head_dim
  out = []
  for hf_name, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
    out += [
        conversion.to_heads(f"{hf}.{hf_name}.weight", f"{ours}/{name}/kernel", d, h, hd, linear=True),
        Rule(f"{hf}.{hf_name}.bias", (d,), (f"{ours}/{name}/bias",), lambda b: (b.reshape(h, hd),),
             lambda b: b.reshape(d)),
    ]
  return out + [conversion.from_heads(f"{hf}.out_proj.weight", f"{ours}/out/kernel", d, h, hd, linear=True),
                same(f"{hf}.out_proj.bias", f"{ours}/out/bias", (d,))]


def _norm(hf: str, ours: str, width: int) -> list[Rule]:
  return [same(f"{hf}.weight", f"{ours}/scale", (width,)), same(f"{hf}.bias", f"{ours}/bias", (width,))]


def rules(cfg: encoder_decoder.EncoderDecoderConfig) -> list[Rule]:
  d, ff, vocab = cfg.width, cfg.stack.mlp_dim, cfg.vocab_size
  out = [same(f"{PREFIX}shared.weight", "embed/embedding", (vocab, d)),
         Rule("final_logits_bias", (1, vocab), ("final_logits_bias",), lambda b: (b[0],), lambda b: b[None])]
  for stack, depth in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    hf_stack = f"{PREFIX}{stack}"
    out.append(_positions(f"{hf_stack}.embed_positions.weight", f"{stack}/positions/embedding", cfg.max_len, d))
    out += _norm(f"{hf_stack}.layernorm_embedding", f"{stack}/embed_norm", d)
    attentions = [("self_attn", "attention")] + ([("encoder_attn", "cross_attention")] if stack == "decoder" else [])
    for i in range(depth):
      hf, ours = f"{hf_stack}.layers.{i}", f"{stack}/block_{i}"
      for hf_name, name in attentions:
        out += _attention(f"{hf}.{hf_name}", f"{ours}/{name}", cfg)
        out += _norm(f"{hf}.{hf_name}_layer_norm", f"{ours}/{name}_norm", d)
      out += _linear(f"{hf}.fc1", f"{ours}/ffn/wi", ff, d) + _linear(f"{hf}.fc2", f"{ours}/ffn/wo", d, ff)
      out += _norm(f"{hf}.final_layer_norm", f"{ours}/ffn_norm", d)
  if not cfg.stack.tie_embeddings:
    out.append(conversion.transposed(OUTPUT, "unembed/kernel", vocab, d))
  return out
