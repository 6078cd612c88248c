"""The RNN papers' ablations on English→German LibreOffice translation (configs/translation.py:rnn).

    python -m experiments.reproduce bahdanau2015     # fixed context vs additive attention, BLEU by source length
    python -m experiments.reproduce luong2015        # dot vs general vs concat (= additive) scores
    python -m experiments.reproduce sutskever2014    # the fixed-context LSTM reading its source forwards or reversed
    python -m experiments.reproduce bengio2015       # teacher forcing vs scheduled sampling, each decay
    (each with --quick: a small model for a few hundred steps, minutes)

Every run of one reproduction has the same data, vocabulary, steps, batch, seed and size;
only the factor under study changes. BLEU and chrF are sacreBLEU's on the whole test
split (greedy decoding), BLEU also per bucket of 10 source words.
"""
import math

import ml_collections

from configs import translation
from experiments.reproductions.base import Ablation, Claim, Run
from experiments.reproductions.claims import BLEU_MARGIN, Higher, HoldsWithLength, Lower

STEPS, QUICK_STEPS = 4000, 300
COLUMNS = ("non_embedding_params", "validation_loss", "bleu", "chrf", "tokens_per_second", "wall_seconds")
QUICK_SUMMARY = f"width 64, {QUICK_STEPS} steps, BLEU on 300 test sentences"


def base_config(preset: str, quick: bool, **model) -> ml_collections.ConfigDict:
  """configs/translation.py:rnn with `preset` and `model` overrides; --quick: width 64, a few hundred steps."""
  config = translation.get_config("rnn")
  config.model.preset = preset
  config.model.update(model)
  steps = QUICK_STEPS if quick else STEPS
  config.train.update(num_steps=steps, eval_every=steps // 4, checkpoint_every=steps // 4)
  if quick:
    config.model.update(width=64, embed_dim=64)
    config.data.update(max_source_len=40, max_target_len=40, batch_size=32)
    config.train.update(log_every=10, eval_batches=2)
    config.evaluation.sentences = 300
  return config


BAHDANAU = Ablation(
    name="bahdanau2015",
    title="Bahdanau et al. 2015: attention holds up on long sentences, a fixed context does not",
    summary=(
        "Two bidirectional-GRU encoder-decoders of the same size (the `bahdanau2015` preset), trained alike on "
        "English→German LibreOffice sentences: `fixed_context` sees the source only through one vector (Cho et al. "
        "2014, RNNencdec), `additive` attends over every encoder state (RNNsearch). Fig. 2 of the paper plots BLEU "
        "against source length for both; `bleu_by_length.png` is ours."
    ),
    base_config=lambda quick: base_config("bahdanau2015", quick, attention="additive", input_feeding=True),
    runs=lambda base: [
        Run("fixed_context", {"model.attention": "none", "model.input_feeding": False}, {"attention": "none"}),
        Run("additive", {}, {"attention": "additive"}),
    ],
    claims=(
        Claim(
            "\"the performance of RNNencdec dramatically drops as the length of the sentences increases\", while "
            "RNNsearch-50 shows \"no deterioration\" up to 50 words and more",
            "Bahdanau et al. 2015, sec. 5.1, Fig. 2",
            HoldsWithLength(run="additive", than="fixed_context", long_from=30),
        ),
        Claim(
            "RNNsearch outperforms RNNencdec (BLEU on all test sentences: 26.75 against 17.82 for the -50 models)",
            "Bahdanau et al. 2015, Table 1",
            Higher("bleu", run="additive", than="fixed_context", margin=BLEU_MARGIN),
        ),
    ),
    columns=COLUMNS,
    quick_summary=QUICK_SUMMARY,
)

LUONG = Ablation(
    name="luong2015",
    title="Luong et al. 2015: attention scores — dot, general, concat (and Bahdanau's additive)",
    summary=(
        "The `luong2015` preset (a 2-layer LSTM, input feeding, reversed source, global attention) with each "
        "score of sec. 3.1, on English→German LibreOffice sentences. Bahdanau's additive score is the concat row: "
        "v^T tanh(W [s; h]) = v^T tanh(W_s s + W_h h), one function (`decoders/layers/alignment.py`), so a run "
        "with `model.attention=additive` repeats the concat run from the same initialisation, number for number. "
        "The two papers' models differ elsewhere (which decoder state scores the source), not in the score."
    ),
    base_config=lambda quick: base_config("luong2015", quick, attention="general"),
    runs=lambda base: [Run(score, {"model.attention": score}, {"score": score})
                       for score in ("dot", "general", "concat")],
    claims=(
        Claim(
            "For global attention, dot works better than general (BLEU 18.6 against 17.3; perplexity 6.1 for both)",
            "Luong et al. 2015, sec. 4.4 and Table 4",
            Higher("bleu", run="dot", than="general", margin=BLEU_MARGIN),
        ),
        Claim(
            "concat \"did not yield good performances\" (footnote 9): below dot",
            "Luong et al. 2015, sec. 3.1, footnote 9",
            Higher("bleu", run="dot", than="concat", margin=BLEU_MARGIN),
        ),
    ),
    columns=COLUMNS,
    quick_summary=QUICK_SUMMARY,
)

SUTSKEVER = Ablation(
    name="sutskever2014",
    title="Sutskever et al. 2014: reversing the source helps a fixed-context LSTM",
    summary=(
        "The `sutskever2014` preset (a 2-layer LSTM encoder-decoder, no attention) reading each source sentence "
        "forwards or reversed (the target stays in order), on English→German LibreOffice sentences."
    ),
    base_config=lambda quick: base_config("sutskever2014", quick, reverse_source=True),
    runs=lambda base: [
        Run("forward", {"model.reverse_source": False}, {"source": "forward"}),
        Run("reversed", {"model.reverse_source": True}, {"source": "reversed"}),
    ],
    claims=(
        Claim(
            "Reversing the source raises test BLEU from 25.9 to 30.6",
            "Sutskever et al. 2014, sec. 3.3",
            Higher("bleu", run="reversed", than="forward", margin=BLEU_MARGIN),
        ),
        Claim(
            "… and lowers the test perplexity from 5.8 to 4.7",
            "Sutskever et al. 2014, sec. 3.3",
            Lower("validation_loss", run="reversed", than="forward"),
        ),
    ),
    columns=COLUMNS,
    quick_summary=QUICK_SUMMARY,
)


def decay_overrides(schedule: str, steps: int) -> dict:
  """objective.* for `schedule`, scaled so that the probability of teacher forcing reaches 0.5 at the last step
  (linear and exponential) or half-way (inverse sigmoid), as Bengio et al. 2015's Fig. 2 curves fall over training."""
  overrides = {"objective.teacher_forcing": schedule}
  if schedule == "linear":  # ε_i = max(ε, k - c i): from 1 to 0.5
    return {**overrides, "objective.decay_k": 1.0, "objective.decay_c": 0.5 / steps, "objective.min_teacher_forcing": 0.5}
  if schedule == "exponential":  # ε_i = k^i
    return {**overrides, "objective.decay_k": 0.5 ** (1.0 / steps)}
  if schedule == "inverse_sigmoid":  # ε_i = k / (k + exp(i / k)): 0.5 where i = k ln k
    return {**overrides, "objective.decay_k": _inverse_sigmoid_k(steps / 2)}
  return overrides


def _inverse_sigmoid_k(midpoint: float) -> float:
  """The k >= 1 whose inverse sigmoid decay crosses 0.5 at step `midpoint` (k ln k = midpoint, by bisection)."""
  low, high = 1.0, max(2.0, midpoint)
  for _ in range(100):
    middle = (low + high) / 2
    low, high = (middle, high) if middle * math.log(middle) < midpoint else (low, middle)
  return low


BENGIO = Ablation(
    name="bengio2015",
    title="Bengio et al. 2015: scheduled sampling against teacher forcing",
    summary=(
        "The `bahdanau2015` attention GRU trained with teacher forcing, with scheduled sampling under each decay of "
        "sec. 2.4 (the probability of feeding the true previous token falls from 1; otherwise the "
        "decoder is fed a token sampled from its own previous output), and always fed its own samples. Linear and "
        "exponential decay reach 0.5 at the last step; the inverse sigmoid, which has no floor, crosses 0.5 half-way "
        "and goes on falling towards 0, so its last quarter is trained almost as `always_sampling`."
    ),
    base_config=lambda quick: base_config("bahdanau2015", quick),
    runs=lambda base: [
        Run("teacher_forcing", {}, {"schedule": "always"}),
        *(Run(s, decay_overrides(s, base.train.num_steps), {"schedule": s})
          for s in ("linear", "exponential", "inverse_sigmoid")),
        Run("always_sampling", {"objective.teacher_forcing": "never"}, {"schedule": "never"}),
    ],
    claims=(
        Claim(
            "Scheduled sampling (inverse sigmoid decay) beats the teacher-forced baseline: image captioning BLEU-4 "
            "30.6 against 28.8",
            "Bengio et al. 2015, Table 1",
            Higher("bleu", run="inverse_sigmoid", than="teacher_forcing", margin=BLEU_MARGIN),
        ),
        Claim(
            "Always sampling from the model, from the start, does much worse (BLEU-4 11.2)",
            "Bengio et al. 2015, Table 1",
            Higher("bleu", run="teacher_forcing", than="always_sampling", margin=BLEU_MARGIN),
        ),
    ),
    columns=COLUMNS,
    quick_summary=QUICK_SUMMARY,
)
