"""T5 (Raffel et al. 2020) and T5 v1.1 as Hugging Face stores them: `model_type: t5`, for an EncoderDecoder.

One token table `shared.weight` serves encoder, decoder and, tied, the output (`lm_head.weight` is in the file when
the output has its own, as in T5 v1.1; transformers >= 5 writes tie_word_embeddings=true either way, so the file
decides). Each stack's block 0 holds the relative bias table [buckets, heads] that all its layers share. Linear
weights are nn.Linear's [out, in], without biases; norms are RMSNorm scales. T5 computes attention without 1/sqrt(d)
(its initialisation folds it into the queries), so the query kernels come in multiplied by sqrt(d_kv). The decoder's
output is scaled by d_model^-1/2 before the output layer where `scale_decoder_outputs` says so (transformers >= 5), or
else where tie_word_embeddings is not false (the rule of earlier versions).
"""
import dataclasses
import math
import re

from decoders.errors import WeightsError
from decoders.interop import conversion
from decoders.interop.conversion import Rule, same
from decoders.interop.hf_config import read
from decoders.layers import feed_forward
from decoders.models import encoder_decoder

MODEL = encoder_decoder.EncoderDecoder
# T5Config's defaults (transformers 5.23) for keys a config.json may leave out; n_positions only old configs write.
DEFAULTS = dict(
    vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=None, num_heads=8,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1, layer_norm_epsilon=1e-6,
    feed_forward_proj="relu", tie_word_embeddings=True, scale_decoder_outputs=None, n_positions=512,
)
# feed_forward_proj -> our activation. "gated-gelu" runs transformers' gelu_new: the tanh approximation of GELU.
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gated-gelu": "geglu_tanh", "gated-silu": "swiglu"}
PREFIX = ""  # T5ForConditionalGeneration's names are a bare T5Model's, plus lm_head
# Copies of `shared` that some checkpoints keep, and a cross-attention bias table that none uses (transformers
# ignores it on load too).
IGNORED = re.compile(
    r"^(encoder|decoder)\.embed_tokens\.weight$|^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias"
)
OUTPUT = "lm_head.weight"


def config_from_hf(hf: dict, source: str, tensor_names) -> encoder_decoder.EncoderDecoderConfig:
  """The model a config.json describes; `tensor_names` (the checkpoint's) say whether the output is tied."""
  projection = read(hf, DEFAULTS, "feed_forward_proj", source)
  if projection not in ACTIVATIONS:
    raise WeightsError(f"{source}: feed_forward_proj={projection!r} is not one of {sorted(ACTIVATIONS)}")
  width, heads, head_dim = (read(hf, DEFAULTS, key, source) for key in ("d_model", "num_heads", "d_kv"))
  if heads * head_dim != width:
    raise WeightsError(f"{source}: num_heads={heads} x d_kv={head_dim} is not d_model={width}, which this model needs")
  untied = OUTPUT in tensor_names
  if not untied and read(hf, DEFAULTS, "tie_word_embeddings", source) is False:
    raise WeightsError(f"{source}: tensor {OUTPUT} is missing (tie_word_embeddings is false)")
  scale_output = read(hf, DEFAULTS, "scale_decoder_outputs", source)
  if scale_output is None:
    scale_output = read(hf, DEFAULTS, "tie_word_embeddings", source) is not False
  encoder_layers = read(hf, DEFAULTS, "num_layers", source)
  return encoder_decoder.preset(
      "t5-small",
      vocab_size=read(hf, DEFAULTS, "vocab_size", source),
      num_encoder_layers=encoder_layers,
      num_decoder_layers=read(hf, DEFAULTS, "num_decoder_layers", source) or encoder_layers,
      width=width,
      num_heads=heads,
      mlp_dim=read(hf, DEFAULTS, "d_ff", source),
      max_len=read(hf, DEFAULTS, "n_positions", source),  # no table: relative positions only bound the inputs
      relative_buckets=read(hf, DEFAULTS, "relative_attention_num_buckets", source),
      relative_max_distance=read(hf, DEFAULTS, "relative_attention_max_distance", source),
      dropout_rate=read(hf, DEFAULTS, "dropout_rate", source),
      norm_epsilon=read(hf, DEFAULTS, "layer_norm_epsilon", source),
      activation=ACTIVATIONS[projection],
      tie_embeddings=not untied,
      scale_output=scale_output,
  )


def _query(name: str, path: str, width: int, heads: int, head_dim: int) -> Rule:
  """A query projection for our kernels, which the attention divides by sqrt(head_dim) and T5's do not."""
  rule, scale = conversion.to_heads(name, path, width, heads, head_dim, linear=True), math.sqrt(head_dim)
  return dataclasses.replace(rule, split=lambda w: (rule.split(w)[0] * scale,), join=lambda k: rule.join(k / scale))


def _attention(hf: str, ours: str, cfg: encoder_decoder.EncoderDecoderConfig) -> list[Rule]:
  d, h, hd = cfg.width, cfg.stack.num_heads, cfg.stack.head_dim
  return [
      _query(f"{hf}.q.weight", f"{ours}/query/kernel", d, h, hd),
      conversion.to_heads(f"{hf}.k.weight", f"{ours}/key/kernel", d, h, hd, linear=True),
      conversion.to_heads(f"{hf}.v.weight", f"{ours}/value/kernel", d, h, hd, linear=True),
      conversion.from_heads(f"{hf}.o.weight", f"{ours}/out/kernel", d, h, hd, linear=True),
  ]


def _feed_forward(hf: str, ours: str, cfg: encoder_decoder.EncoderDecoderConfig) -> list[Rule]:
  d, ff = cfg.width, cfg.stack.mlp_dim
  if cfg.stack.activation in feed_forward.GATED:  # act(wi_0 x) * wi_1 x
    inputs = [conversion.transposed(f"{hf}.wi_0.weight", f"{ours}/wi_gate/kernel", ff, d),
              conversion.transposed(f"{hf}.wi_1.weight", f"{ours}/wi/kernel", ff, d)]
  else:
    inputs = [conversion.transposed(f"{hf}.wi.weight", f"{ours}/wi/kernel", ff, d)]
  return [*inputs, conversion.transposed(f"{hf}.wo.weight", f"{ours}/wo/kernel", d, ff)]


def rules(cfg: encoder_decoder.EncoderDecoderConfig) -> list[Rule]:
  d = cfg.width
  out = [same("shared.weight", "embed/embedding", (cfg.vocab_size, d))]
  for stack, depth in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    out.append(same(bias, f"{stack}/relative_bias/embedding", (cfg.relative_buckets, cfg.stack.num_heads)))
    # The sublayers of a block in order: self-attention, (decoder) cross-attention, feed-forward.
    sublayers = [("SelfAttention", "attention")]
    sublayers += [("EncDecAttention", "cross_attention")] if stack == "decoder" else []
    for i in range(depth):
      hf, ours = f"{stack}.block.{i}", f"{stack}/block_{i}"
      for index, (hf_name, name) in enumerate(sublayers):
        out.append(same(f"{hf}.layer.{index}.layer_norm.weight", f"{ours}/{name}_norm/scale", (d,)))
        out += _attention(f"{hf}.layer.{index}.{hf_name}", f"{ours}/{name}", cfg)
      ffn = len(sublayers)
      out.append(same(f"{hf}.layer.{ffn}.layer_norm.weight", f"{ours}/ffn_norm/scale", (d,)))
      out += _feed_forward(f"{hf}.layer.{ffn}.DenseReluDense", f"{ours}/ffn", cfg)
    out.append(same(f"{stack}.final_layer_norm.weight", f"{stack}/final_norm/scale", (d,)))
  if not cfg.stack.tie_embeddings:
    out.append(conversion.transposed(OUTPUT, "unembed/kernel", cfg.vocab_size, d))
  return out
