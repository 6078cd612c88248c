"""The Transformer's ablations on English→German LibreOffice translation (configs/translation.py).

    python -m experiments.reproduce vaswani2017      # Table 3 rows (A)–(E) at a CPU size
    python -m experiments.reproduce beam_search      # one Transformer: greedy vs beam search of widths 2, 4, 8
    python -m experiments.reproduce raffel2020       # T5 Table 2: encoder-decoder vs (prefix) language models
    (each with --quick: a small model for a few hundred steps, minutes)

Every run has the same data, vocabulary, steps, batch and seed; `transformer-small` (3 + 3
post-LN layers, width 256, 4 heads of 64, feed-forward 1,024, dropout and label smoothing 0.1)
plays the paper's base model. BLEU and chrF are sacreBLEU's on the whole test split, greedy.
"""
import ml_collections

from configs import translation
from experiments.reproductions.base import Ablation, Claim, Run
from experiments.reproductions.claims import BLEU_MARGIN, Exceeds, Higher, HoldsWithLength, Paired

STEPS, QUICK_STEPS = 3000, 300
COLUMNS = ("non_embedding_params", "validation_loss", "bleu", "chrf", "tokens_per_second", "wall_seconds")
QUICK_SUMMARY = f"2 + 2 layers of width 64, {QUICK_STEPS} steps, BLEU on 300 test sentences"
# Two runs' BLEU "close" means within this many points: run-to-run noise at this size, where the paper's
# "nearly identical" is 0.1 BLEU.
CLOSE_BLEU = 1.0


def base_config(quick: bool) -> ml_collections.ConfigDict:
  config = translation.get_config("transformer")
  config.model.update(
      num_encoder_layers=3, num_decoder_layers=3, width=256, num_heads=4, mlp_dim=1024, positions="sinusoidal"
  )
  steps = QUICK_STEPS if quick else STEPS
  config.train.update(num_steps=steps, eval_every=steps // 4, checkpoint_every=steps // 4)
  if quick:
    config.model.update(num_encoder_layers=2, num_decoder_layers=2, width=64, num_heads=4, mlp_dim=256)
    config.data.update(max_source_len=40, max_target_len=40, batch_size=32)
    config.optimizer.warmup_steps = 50
    config.train.update(log_every=10, eval_batches=2)
    config.evaluation.sentences = 300
  return config


# Each run's place in the grid: every factor at the base's level except the one the row of Table 3 varies. The key
# size d_k is named against the value heads' size d_v = width / heads (64 in the base, 16 with --quick), so a level
# is true of every run (the heads and size rows change d_v, and d_k with it) and in both sizes.
BASE_LEVELS = {
    "heads": "4", "size": "base", "key size": "d_v", "dropout": "0.1", "label smoothing": "0.1",
    "positions": "sinusoidal",
}
# Row (B): d_k as a fraction of d_v: the paper's 16 and 32 against its base's 64, our full base's too.
KEY_SIZE_FRACTIONS = (4, 2)


def _run(name: str, overrides: dict, **levels) -> Run:
  return Run(name, overrides, {**BASE_LEVELS, **{k.replace("_", " "): v for k, v in levels.items()}})


def vaswani_runs(base: ml_collections.ConfigDict) -> list[Run]:
  width, layers = base.model.width, base.model.num_encoder_layers
  head_size = width // base.model.num_heads
  return [
      _run("base", {}),
      # (A) heads at a fixed width: head size width / heads.
      _run("heads_1", {"model.num_heads": 1}, heads="1"),
      _run("heads_16", {"model.num_heads": 16}, heads="16"),
      # (B) a smaller query/key head size d_k alone; the value heads keep d_v = width / heads.
      *(
          _run(f"key_size_{head_size // n}", {"model.key_size": head_size // n}, key_size=f"d_v / {n}")
          for n in KEY_SIZE_FRACTIONS
      ),
      # (C) model size: half the width (and feed-forward), or one layer fewer in each stack.
      _run("narrow", {"model.width": width // 2, "model.mlp_dim": 2 * width}, size="half width"),
      _run("shallow", {"model.num_encoder_layers": layers - 1, "model.num_decoder_layers": layers - 1},
           size="one layer fewer"),
      # (D) regularisation.
      _run("dropout_0", {"model.dropout_rate": 0.0}, dropout="0"),
      _run("label_smoothing_0", {"objective.label_smoothing": 0.0}, label_smoothing="0"),
      # (E) learned positions instead of sinusoids.
      _run("learned_positions", {"model.positions": "learned"}, positions="learned"),
  ]


def _worse(factor: str, level: str, base_level: str, claim: str, source: str) -> Claim:
  """A Table 3 claim that the run at `level` of `factor` translates worse (lower BLEU, by more than BLEU_MARGIN) than
  the base."""
  worse = Paired("bleu", {factor: level}, {factor: base_level}, expect="lower", margin=BLEU_MARGIN)
  return Claim(claim, source, worse)


VASWANI = Ablation(
    name="vaswani2017",
    title="Vaswani et al. 2017, Table 3: variations on the Transformer, at a CPU size",
    summary=(
        "The base model (`transformer-small`: 3 + 3 post-LN layers, width 256, 4 heads, sinusoidal positions, "
        "dropout and label smoothing 0.1, shared source/target/output embeddings, inverse-square-root warm-up) and "
        "one change each, as in rows (A)–(E) of Table 3, trained alike on English→German LibreOffice "
        "sentences. Row (B) shrinks the query/key head size d_k alone (`model.key_size`) to a quarter and a half of "
        "the value heads' d_v = width / heads: 16 and 32 of 64, the paper's sizes (with --quick, 4 and 8 of 16)."
    ),
    base_config=base_config,
    runs=vaswani_runs,
    claims=(
        _worse("heads", "1", "4", "Single-head attention is 0.9 BLEU worse than the best setting (24.9 against 25.8)",
               "Vaswani et al. 2017, Table 3 (A)"),
        _worse("heads", "16", "4", "… and quality also drops off with too many heads (32 heads of 16: 25.4)",
               "Vaswani et al. 2017, Table 3 (A)"),
        _worse("key size", "d_v / 4", "d_v", "Reducing the attention key size d_k hurts model quality (d_k = 16: "
               "25.1 BLEU, 32: 25.4, against the base's 25.8)", "Vaswani et al. 2017, Table 3 (B)"),
        _worse("size", "half width", "base", "Bigger models are better: d_model = 256 scores 24.5 against the base's 25.8",
               "Vaswani et al. 2017, Table 3 (C)"),
        _worse("size", "one layer fewer", "base", "… and N = 4 layers 25.3 (N = 2: 23.7) against N = 6's 25.8",
               "Vaswani et al. 2017, Table 3 (C)"),
        _worse("dropout", "0", "0.1", "Dropout is very helpful in avoiding over-fitting: P_drop = 0 scores 24.6",
               "Vaswani et al. 2017, Table 3 (D)"),
        _worse("label smoothing", "0", "0.1", "Label smoothing improves BLEU (ε_ls = 0: 25.3) …",
               "Vaswani et al. 2017, sec. 5.4 and Table 3 (D)"),
        Claim(
            "… while it hurts perplexity (4.67 without against 4.92 with ε_ls = 0.1: \"the model learns to be more "
            "unsure\")",
            "Vaswani et al. 2017, sec. 5.4 and Table 3 (D)",
            Paired("validation_loss", {"label smoothing": "0"}, {"label smoothing": "0.1"}, expect="lower"),
        ),
        Claim(
            "Learned positional embeddings give nearly identical results to the sinusoids (25.7 against 25.8)",
            "Vaswani et al. 2017, sec. 3.5 and Table 3 (E)",
            Paired("bleu", {"positions": "learned"}, {"positions": "sinusoidal"}, expect="close", tolerance=CLOSE_BLEU),
        ),
        # Long sources are rare in training, so a learned table's last rows get few updates; a sinusoid is defined
        # at every position. Judged by BLEU on 30+ words as a fraction of BLEU on shorter sources.
        Claim(
            "The sinusoid was chosen because \"it may allow the model to extrapolate to sequence lengths longer than "
            "the ones encountered during training\"",
            "Vaswani et al. 2017, sec. 3.5",
            HoldsWithLength(run="base", than="learned_positions", long_from=30),
        ),
    ),
    columns=COLUMNS,
    quick_summary=QUICK_SUMMARY,
)

BEAM_WIDTHS = (1, 2, 4, 8)


BEAM_STEPS = 8000  # the base model trained longest: also the Transformer's row of the translation-quality table


def beam_base_config(quick: bool) -> ml_collections.ConfigDict:
  config = base_config(quick)
  config.evaluation.beam_widths = BEAM_WIDTHS
  if not quick:
    config.train.update(num_steps=BEAM_STEPS, eval_every=BEAM_STEPS // 8, checkpoint_every=BEAM_STEPS // 8)
  return config


BEAM = Ablation(
    name="beam_search",
    title="Beam search against greedy decoding, and BLEU against beam width",
    summary=(
        "One base Transformer (`transformer-small`), its test translations decoded greedily (width 1) and by beam "
        f"search of widths {', '.join(map(str, BEAM_WIDTHS[1:]))} with length penalty 1 (log-likelihood over "
        "length, as Hugging Face's `length_penalty=1`): the `bleu_beam_<width>` columns."
    ),
    base_config=beam_base_config,
    runs=lambda base: [Run("base")],
    claims=(
        Claim(
            "Beam search translates better than greedy decoding (Sutskever et al. 2014: a beam of 2 gives most of "
            "the benefit; Vaswani et al. 2017 use a beam of 4)",
            "Sutskever et al. 2014, sec. 3.2; Vaswani et al. 2017, sec. 6.1",
            Exceeds("base", "bleu_beam_4", than="bleu_beam_1"),
        ),
        Claim(
            "A wider beam than a few gains little or loses (Koehn & Knowles 2017, Fig. 10: BLEU falls beyond ~10)",
            "Koehn & Knowles 2017, sec. 3.6",
            Exceeds("base", "bleu_beam_4", than="bleu_beam_8", margin=-0.5),
        ),
    ),
    columns=("validation_loss", *(f"bleu_beam_{w}" for w in BEAM_WIDTHS), "wall_seconds"),
    quick_summary=QUICK_SUMMARY,
)


def decoder_only_config(architecture: str, quick: bool, layers_per_stack: int = 1) -> ml_collections.ConfigDict:
  """The base's data, steps and block sizes in one decoder-only stack of `layers_per_stack` x the base's stack depth."""
  base, config = base_config(quick), translation.get_config(architecture)
  config.data, config.train, config.evaluation = base.data, base.train, base.evaluation
  config.optimizer.warmup_steps = base.optimizer.warmup_steps
  model = base.model
  config.model.update(
      num_layers=layers_per_stack * model.num_encoder_layers, width=model.width, num_heads=model.num_heads,
      mlp_dim=model.mlp_dim,
  )
  return config


def t5_base_config(quick: bool) -> ml_collections.ConfigDict:
  config = base_config(quick)
  config.model.norm_position = "pre"  # as the decoder-only stacks, and T5's
  return config


T5 = Ablation(
    name="raffel2020",
    title="Raffel et al. 2020 (T5), Table 2: encoder-decoder against decoder-only and prefix language models",
    summary=(
        "Translation learnt from scratch by a pre-LN encoder-decoder of L + L layers (L = 3, width 256; "
        "Raffel et al.'s \"2P parameters, M FLOPs\"), and by one decoder-only stack reading source, EOS, BOS, target as "
        "one sequence, trained on the target: causal (a language model) or fully visible over its prompt (a prefix "
        "LM), with L layers (P parameters, M FLOPs: it runs both sides through one stack) or 2L (2P, 2M). T5 "
        "compares them after pre-training on C4; here there is no pre-training, only the en→de pairs."
    ),
    base_config=t5_base_config,
    runs=lambda base: [
        Run("encoder_decoder", {}, {"architecture": "encoder-decoder", "size": "2P, M"}),
        Run("language_model", {}, {"architecture": "language model", "size": "P, M"},
            base_config=lambda quick: decoder_only_config("decoder_only", quick)),
        Run("prefix_lm", {}, {"architecture": "prefix LM", "size": "P, M"},
            base_config=lambda quick: decoder_only_config("prefix_lm", quick)),
        Run("prefix_lm_deep", {}, {"architecture": "prefix LM", "size": "2P, 2M"},
            base_config=lambda quick: decoder_only_config("prefix_lm", quick, layers_per_stack=2)),
    ],
    claims=(
        Claim(
            "The encoder-decoder outperforms the decoder-only language model of the same compute",
            "Raffel et al. 2020, sec. 3.2.4 and Table 2",
            Higher("bleu", run="encoder_decoder", than="language_model", margin=BLEU_MARGIN),
        ),
        Claim(
            "… and the prefix LM of the same compute",
            "Raffel et al. 2020, sec. 3.2.4 and Table 2",
            Higher("bleu", run="encoder_decoder", than="prefix_lm", margin=BLEU_MARGIN),
        ),
        Claim(
            "A prefix LM, fully visible over its input, beats a causal language model of the same size",
            "Raffel et al. 2020, sec. 3.2.4 and Table 2",
            Higher("bleu", run="prefix_lm", than="language_model", margin=BLEU_MARGIN),
        ),
    ),
    columns=COLUMNS,
    quick_summary=QUICK_SUMMARY,
)
