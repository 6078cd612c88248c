"""LLaMA (Touvron et al. 2023) and Mistral (Jiang et al. 2023) as Hugging Face stores them.

Linear weights are nn.Linear's [out, in] (transposed for our [in, out] kernels); Q and K
are already in the "rotate half" layout of our RoPE (GGUF files are not: gguf.py);
keys and values have `num_key_value_heads` heads (GQA); Mistral adds a sliding window.
"""
import re

from decoders.errors import WeightsError
from decoders.interop import conversion
from decoders.interop.conversion import Rule, same
from decoders.interop.hf_config import read
from decoders.models import decoder_lm

MODEL_TYPES = ("llama", "mistral")
# LlamaConfig's and MistralConfig's defaults (transformers 5.23) for keys a config.json may leave out.
_COMMON = dict(
    vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, hidden_act="silu",
    rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False, mlp_bias=False, head_dim=None,
)
DEFAULTS = {
    "llama": dict(_COMMON, intermediate_size=11008, num_key_value_heads=None, max_position_embeddings=2048),
    "mistral": dict(
        _COMMON, intermediate_size=14336, num_key_value_heads=8, max_position_embeddings=4096 * 32, sliding_window=4096
    ),
}
ACTIVATIONS = {"silu": "swiglu", "gelu": "geglu"}  # the gate's activation -> our gated feed-forward
PREFIX = "model."  # LlamaForCausalLM's names; a bare LlamaModel's lack it
IGNORED = re.compile(r"\.rotary_emb\.inv_freq$")  # a buffer some older checkpoints saved


def rope_base(hf: dict, source: str) -> float:
  """RoPE's base: in `rope_parameters` (transformers >= 5) or top-level `rope_theta` (earlier).

  A scaled RoPE (`rope_scaling`, or a `rope_type` other than default) would need position
  interpolation we do not implement; as transformers does, `rope_scaling` wins over `rope_parameters`.
  """
  parameters, scaling = hf.get("rope_parameters") or {}, hf.get("rope_scaling") or {}
  for key, value in (("rope_parameters", parameters), ("rope_scaling", scaling)):
    if not isinstance(value, dict):
      raise WeightsError(f"{source}: {key}={value!r} is not an object")
  rope = scaling or parameters
  kind = rope.get("rope_type", rope.get("type", "default"))
  if kind != "default":
    raise WeightsError(f"{source}: RoPE scaling rope_type={kind!r} is not supported, only 'default'")
  return float(parameters.get("rope_theta", hf.get("rope_theta", 10_000.0)))


def config_from_hf(hf: dict, source: str) -> decoder_lm.DecoderLMConfig:
  model_type = hf["model_type"]
  defaults = DEFAULTS[model_type]
  for key in ("attention_bias", "mlp_bias"):
    if read(hf, defaults, key, source):
      raise WeightsError(f"{source}: {key}=true is not supported (LLaMA and Mistral have no biases)")
  activation = read(hf, defaults, "hidden_act", source)
  if activation not in ACTIVATIONS:
    raise WeightsError(f"{source}: hidden_act={activation!r} is not one of {sorted(ACTIVATIONS)}")
  width, heads = read(hf, defaults, "hidden_size", source), read(hf, defaults, "num_attention_heads", source)
  head_dim = read(hf, defaults, "head_dim", source)
  if head_dim not in (None, width // heads):
    raise WeightsError(f"{source}: head_dim={head_dim} is not hidden_size / num_attention_heads = {width // heads}")
  max_len = read(hf, defaults, "max_position_embeddings", source)
  window = read(hf, defaults, "sliding_window", source) if model_type == "mistral" else None
  return decoder_lm.preset(
      "llama",
      vocab_size=read(hf, defaults, "vocab_size", source),
      num_layers=read(hf, defaults, "num_hidden_layers", source),
      width=width,
      num_heads=heads,
      num_kv_heads=read(hf, defaults, "num_key_value_heads", source) or heads,
      mlp_dim=read(hf, defaults, "intermediate_size", source),
      max_len=max_len,
      rope_base=rope_base(hf, source),
      sliding_window=window if window and window <= max_len else 0,  # one longer than the context never binds
      norm_epsilon=read(hf, defaults, "rms_norm_eps", source),
      activation=ACTIVATIONS[activation],
      tie_embeddings=read(hf, defaults, "tie_word_embeddings", source),
  )


def config_to_hf(cfg: decoder_lm.DecoderLMConfig) -> dict:
  model_type = "mistral" if cfg.sliding_window else "llama"
  hf = dict(
      model_type=model_type, architectures=[f"{model_type.capitalize()}ForCausalLM"], vocab_size=cfg.vocab_size,
      hidden_size=cfg.width, intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim,
      hidden_act={"swiglu": "silu", "geglu": "gelu"}[cfg.activation], max_position_embeddings=cfg.max_len,
      rms_norm_eps=cfg.norm_epsilon, tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
      rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
  )
  if cfg.sliding_window:
    hf["sliding_window"] = cfg.sliding_window
  return hf


def is_exportable(cfg: decoder_lm.DecoderLMConfig) -> bool:
  return (cfg.positions, cfg.norm, cfg.norm_position, cfg.use_bias) == ("rope", "rmsnorm", "pre", False) and (
      cfg.activation in ("swiglu", "geglu")
  )


def rules(cfg: decoder_lm.DecoderLMConfig) -> list[Rule]:
  d, h, kv, hd, ff = cfg.width, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_dim
  out = [same(f"{PREFIX}embed_tokens.weight", "embed/embedding", (cfg.vocab_size, d))]
  for i in range(cfg.num_layers):
    hf, ours = f"{PREFIX}layers.{i}", f"{decoder_lm.BLOCK_PREFIX}{i}"
    attention, mlp = f"{hf}.self_attn", f"{hf}.mlp"
    out += [
        same(f"{hf}.input_layernorm.weight", f"{ours}/attention_norm/scale", (d,)),
        conversion.to_heads(f"{attention}.q_proj.weight", f"{ours}/attention/query/kernel", d, h, hd, linear=True),
        conversion.to_heads(f"{attention}.k_proj.weight", f"{ours}/attention/key/kernel", d, kv, hd, linear=True),
        conversion.to_heads(f"{attention}.v_proj.weight", f"{ours}/attention/value/kernel", d, kv, hd, linear=True),
        conversion.from_heads(f"{attention}.o_proj.weight", f"{ours}/attention/out/kernel", d, h, hd, linear=True),
        same(f"{hf}.post_attention_layernorm.weight", f"{ours}/ffn_norm/scale", (d,)),
        conversion.transposed(f"{mlp}.gate_proj.weight", f"{ours}/ffn/wi_gate/kernel", ff, d),
        conversion.transposed(f"{mlp}.up_proj.weight", f"{ours}/ffn/wi/kernel", ff, d),
        conversion.transposed(f"{mlp}.down_proj.weight", f"{ours}/ffn/wo/kernel", d, ff),
    ]
  out.append(same(f"{PREFIX}norm.weight", "final_norm/scale", (d,)))
  if not cfg.tie_embeddings:
    out.append(conversion.transposed("lm_head.weight", "unembed/kernel", cfg.vocab_size, d))
  return out
