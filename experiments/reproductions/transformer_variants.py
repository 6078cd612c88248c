"""Positions × block × attention on the char-level Shakespeare LM, at a fixed parameter budget.

    python -m experiments.reproduce transformer_variants            # 18 runs of 1,500 steps: 35–85 min on 2 cores
    python -m experiments.reproduce transformer_variants --quick    # a 2-layer model, 150 steps: < 10 min

3 positions (learned, sinusoidal, RoPE) × 2 blocks (LayerNorm + GELU as GPT-2,
RMSNorm + SwiGLU as LLaMA; both pre-norm with biases, so the block is the only
change) × 3 attentions (4 query heads with 4, 2 or 1 key/value heads: MHA, GQA,
MQA), every run with the same steps, data order and seed.

The budget: GQA and MQA drop key/value projection weights and SwiGLU has three
feed-forward matrices where GELU has two, so each run's `mlp_dim` is set (a multiple
of 8) to bring its non-embedding parameter count nearest the default model's
(`DecoderLMConfig.num_params`); the counts are in the table, within 0.5 % of each other
(1.3 % in --quick, whose widths are smaller multiples of 8).
Learned positions add their table (64 × width), which is an embedding and not counted.

1,500 steps: the default model takes about 60 ms a step on the AVX-512 machine of this
project and 125–167 ms on the AVX2 one (README), so a run takes 2–5 minutes with its
compilation and evaluations, and the 18 runs 35–85 minutes: within the 90-minute budget
on either machine while it is quiet. Measured on the AVX-512 machine: 37 minutes, and
2 min 20 s for --quick (most of it compiling each run's steps).
"""
import dataclasses

import ml_collections

from configs import shakespeare_char
from experiments.reproductions.base import Ablation, Claim, Run
from experiments.reproductions.claims import Paired, Shrinks

POSITIONS = ("learned", "sinusoidal", "rope")
BLOCKS = {
    "layernorm_gelu": dict(norm="layernorm", activation="gelu_tanh"),  # GPT-2's (tanh approximation of GELU)
    "rmsnorm_swiglu": dict(norm="rmsnorm", activation="swiglu"),  # LLaMA's
}
KV_HEADS = {"mha": 4, "gqa2": 2, "mqa": 1}  # of num_heads=4 query heads

# Two runs' losses "close" means within this many nats/token: about the gap Shazeer 2019
# (table 1) calls "minor" (dev log-perplexity 1.424 for multi-head, 1.439 for multi-query).
CLOSE = 0.02


def base_config(quick: bool) -> ml_collections.ConfigDict:
  """The default Shakespeare LM with the ablated fields spelled out; --quick: 2 layers of width 64, 150 steps."""
  config = shakespeare_char.get_config()
  config.model.update(positions="learned", num_kv_heads=KV_HEADS["mha"], **BLOCKS["layernorm_gelu"])
  config.train.update(num_steps=1500, eval_every=500, checkpoint_every=500)
  if quick:
    config.data.batch_size = 16
    config.model.update(num_layers=2, width=64, mlp_dim=256)
    config.optimizer.warmup_steps = 15
    config.train.update(num_steps=150, log_every=10, eval_every=50, eval_batches=4, checkpoint_every=50)
    config.sample.num_tokens = 50
  return config


def _model(config: ml_collections.ConfigDict):
  from experiments.tasks import language_model

  return language_model.model_config(config, data_vocab_size=1)  # the vocabulary counts only with embeddings


def balanced_mlp_dim(base: ml_collections.ConfigDict, **fields) -> int:
  """The `mlp_dim` (a multiple of 8) that brings a model with `fields` changed nearest the base's parameter count.

  The count is linear in mlp_dim, so two points give the exact width; rounding to 8
  keeps the feed-forward splittable over up to 8 tensor-parallel devices.
  """
  model = dataclasses.replace(_model(base), **fields)
  count_at = lambda mlp_dim: dataclasses.replace(model, mlp_dim=mlp_dim).num_params()  # noqa: E731
  per_unit = (count_at(16) - count_at(8)) / 8
  exact = 8 + (_model(base).num_params() - count_at(8)) / per_unit
  return max(8, round(exact / 8) * 8)


def runs(base: ml_collections.ConfigDict) -> list[Run]:
  grid = []
  for positions in POSITIONS:
    for block, block_fields in BLOCKS.items():
      for attention, kv_heads in KV_HEADS.items():
        fields = dict(positions=positions, num_kv_heads=kv_heads, **block_fields)
        overrides = {f"model.{key}": value for key, value in fields.items()}
        overrides["model.mlp_dim"] = balanced_mlp_dim(base, **fields)
        levels = dict(positions=positions, block=block, attention=attention)
        grid.append(Run(f"{positions}-{block}-{attention}", overrides, levels))
  return grid


LEARNED, SINUSOIDAL, ROPE = {"positions": "learned"}, {"positions": "sinusoidal"}, {"positions": "rope"}
GPT_BLOCK, LLAMA_BLOCK = {"block": "layernorm_gelu"}, {"block": "rmsnorm_swiglu"}
MHA, GQA, MQA = {"attention": "mha"}, {"attention": "gqa2"}, {"attention": "mqa"}
LOSS, KV_CACHE = "validation_loss", "kv_cache_bytes_per_token"

CLAIMS = (
    Claim(
        "Learned positional embeddings instead of sinusoids give \"nearly identical results\" "
        "(WMT 2014 En→De dev: 25.7 against 25.8 BLEU, perplexity 4.92 for both)",
        "Vaswani et al. 2017, sec. 3.5; table 3, row (E)",
        Paired(LOSS, SINUSOIDAL, LEARNED, "close", CLOSE),
    ),
    Claim(
        "RoFormer (RoPE) converges faster than BERT (learned absolute positions) in masked-language-model "
        "pre-training: lower training loss at the same step",
        "Su et al. 2021 (RoFormer), sec. 4.2, fig. 3 (left)",
        Paired(LOSS, ROPE, LEARNED, "lower"),
    ),
    Claim(
        "RoPE translates better than the Transformer-base's sinusoidal positions: 27.5 against 27.3 BLEU on "
        "WMT 2014 En→De",
        "Su et al. 2021 (RoFormer), sec. 4.1, table 1",
        Paired(LOSS, ROPE, SINUSOIDAL, "lower"),
    ),
    Claim(
        "At equal parameters and computation (d_ff 3072 → 2048 for the three-matrix GLU variants), SwiGLU lowers "
        "held-out log-perplexity against GELU: 1.983 → 1.944 after 65,536 steps, 1.679 → 1.636 after 524,288 "
        "(T5 span filling on C4). Our block also swaps LayerNorm for RMSNorm",
        "Shazeer 2020, sec. 2; sec. 3.2, table 1",
        Paired(LOSS, LLAMA_BLOCK, GPT_BLOCK, "lower"),
    ),
    Claim(
        "LLaMA departs from GPT with pre-normalisation by RMSNorm \"to improve the training stability\", "
        "SwiGLU \"to improve the performance\" (hidden width 2/3·4d) and rotary embeddings instead of absolute "
        "positions; no ablation is reported. Tested as the LLaMA choices against the GPT ones at each attention",
        "Touvron et al. 2023 (LLaMA), sec. 2.2",
        Paired(LOSS, {**ROPE, **LLAMA_BLOCK}, {**LEARNED, **GPT_BLOCK}, "lower"),
    ),
    Claim(
        "Multi-query attention (one key/value head shared by all query heads) costs \"only minor quality "
        "degradation\": WMT 2014 En→De dev log-perplexity 1.439 against 1.424 for multi-head",
        "Shazeer 2019, abstract; sec. 4, table 1",
        Paired(LOSS, MQA, MHA, "close", CLOSE),
    ),
    Claim(
        "Grouped-query attention \"achieves quality close to multi-head attention\" (T5-XXL uptrained from "
        "multi-head checkpoints: average 47.1 for GQA-8, 47.2 for MHA, 46.6 for MQA); here trained from scratch",
        "Ainslie et al. 2023 (GQA), abstract; table 1",
        Paired(LOSS, GQA, MHA, "close", CLOSE),
    ),
    Claim(
        "Sharing keys and values across the h heads divides the key/value tensors, which incremental decoding "
        "reloads at every step, by h",
        "Shazeer 2019, sec. 3",
        Shrinks(KV_CACHE, MQA, MHA, factor=KV_HEADS["mha"]),
    ),
    Claim(
        "GQA with G groups keeps G key/value heads: it interpolates between MHA (G = h) and MQA (G = 1)",
        "Ainslie et al. 2023 (GQA), sec. 2.2, fig. 2",
        Shrinks(KV_CACHE, GQA, MHA, factor=KV_HEADS["mha"] / KV_HEADS["gqa2"]),
    ),
    Claim(
        "Decoding is much faster with MQA than with MHA (Shazeer 2019), and GQA's speed is \"comparable to MQA\" "
        "(Ainslie et al. 2023)",
        "Shazeer 2019, table 2; Ainslie et al. 2023, abstract, table 1",
        untested="not measured: tokens/s here is training throughput, and incremental decoding is not timed; "
        "the key/value cache sizes above are the cause both papers give",
    ),
)

ABLATION = Ablation(
    name="transformer_variants",
    title="Transformer variants: positions × block × attention (Shakespeare, fixed parameter budget)",
    summary=(
        "The char-level Shakespeare LM (4 layers, width 128, 4 heads, context 64, batch 32) with 3 positions "
        "(learned, sinusoidal, RoPE) × 2 blocks (pre-LayerNorm + GELU as GPT-2, pre-RMSNorm + SwiGLU as LLaMA, "
        "biases in both) × 3 attentions (4 query heads with 4, 2 or 1 key/value heads: MHA, GQA-2, MQA): 18 runs "
        "of 1,500 steps with the same data order and seed. Each run's MLP width is chosen so its non-embedding "
        "parameter count stays within 0.5 % of the default model's. A difference between two runs is one seed's: "
        "differences of a few thousandths of a nat are within run-to-run noise."
    ),
    base_config=base_config,
    runs=runs,
    claims=CLAIMS,
    quick_summary=(
        "2 layers of width 64, batch 16, 150 steps: a check that the sweep runs, far too short to rank the variants"
    ),
)
