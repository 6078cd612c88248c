"""The best English→German test BLEU of each model family, over every translation reproduction's full runs.

No runs of its own: REPRODUCTIONS.md's last section is regenerated from the results files the translation
reproductions wrote (`python -m experiments.reproduce --regenerate`). For each family the run with the highest
greedy test BLEU is shown with the steps and wall time it took on its machine, and the two quality claims are
judged on those best runs: the Transformer translates better than the attention RNN, and the attention RNN better
than the fixed-context RNN on sentences longer than 20 words.
"""
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.reproductions import report
from experiments.reproductions.base import Claim, bleu_by_length, format_metric
from experiments.reproductions.claims import BLEU_MARGIN, Higher

PAIR = "libreoffice_en_de"
LONG_FROM = 20  # words: "sentences longer than 20 words" are the 10-word buckets from 20 up
FIXED_CONTEXT, ATTENTION_RNN, TRANSFORMER = "RNN, fixed context", "RNN + attention", "Transformer"
FAMILY_OF_ARCHITECTURE = {"transformer": TRANSFORMER, "decoder_only": "decoder-only LM", "prefix_lm": "prefix LM"}
TITLE = "Translation quality: the best English→German test BLEU of each model family"
SUMMARY = (
    "Of all the full runs of the translation reproductions above, each family's run with the highest greedy test "
    "BLEU on the LibreOffice English→German test split, with the steps and wall time its training and evaluation "
    "took. The claims are judged on these best runs."
)

CLAIMS = (
    Claim(
        "The Transformer translates better than the attention RNN (Vaswani et al. 2017, Table 2: 27.3 BLEU for the "
        "base model against 24.6 for GNMT's attention LSTM on WMT14 en→de)",
        "Vaswani et al. 2017, Table 2",
        Higher("bleu", run=TRANSFORMER, than=ATTENTION_RNN, margin=BLEU_MARGIN),
    ),
    Claim(
        f"Attention keeps long sentences translatable: on sources longer than {LONG_FROM} words the attention RNN "
        "beats the fixed-context RNN",
        "Bahdanau et al. 2015, Fig. 2",
        Higher("bleu_long", run=ATTENTION_RNN, than=FIXED_CONTEXT, margin=BLEU_MARGIN),
    ),
)


def _setting(document: Mapping[str, Any], run: Mapping[str, Any], key: str) -> Any:
  """The value of the dotted `key` in the run's config: its override, else the reproduction's base config's."""
  if key in run["overrides"]:
    return run["overrides"][key]
  node = document["base_config"]
  for part in key.split("."):
    node = node.get(part, {}) if isinstance(node, Mapping) else {}
  return node if node != {} else None


def family(document: Mapping[str, Any], run: Mapping[str, Any]) -> str | None:
  """The model family of an English→German translation run; None for any other run."""
  config = document["base_config"]
  if config.get("task") != "translation" or _setting(document, run, "data.name") != PAIR:
    return None
  architecture = _setting(document, run, "model.architecture")
  if architecture == "rnn":
    return FIXED_CONTEXT if _setting(document, run, "model.attention") == "none" else ATTENTION_RNN
  return FAMILY_OF_ARCHITECTURE.get(architecture)


def long_sentence_bleu(run: Mapping[str, Any]) -> float | None:
  """The mean BLEU of the run's 10-word source-length buckets from LONG_FROM words up."""
  long = [bleu for low, bleu in bleu_by_length(run) if low >= LONG_FROM]
  return sum(long) / len(long) if long else None


def best_runs(documents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per family, its full run of highest greedy BLEU, as a run of its own named after the family."""
  best: dict[str, dict[str, Any]] = {}
  for document in documents:
    if document["quick"]:
      continue
    for run in document["runs"]:
      name = family(document, run)
      if name is None or run["metrics"].get("bleu") is None:
        continue
      if name not in best or run["metrics"]["bleu"] > best[name]["metrics"]["bleu"]:
        metrics = {**run["metrics"], "bleu_long": long_sentence_bleu(run)}
        best[name] = {"name": name, "levels": {}, "metrics": metrics, "steps": run["steps"],
                      "machine": run.get("machine", ""), "source": f"{document['name']} / {run['name']}"}
  order = [FIXED_CONTEXT, ATTENTION_RNN, *FAMILY_OF_ARCHITECTURE.values()]
  return [best[name] for name in order if name in best]


def section(documents: Sequence[Mapping[str, Any]]) -> str:
  runs = best_runs(documents)
  lines = [f"## {TITLE}", "", SUMMARY, ""]
  lines += [*report.claims_table(CLAIMS, runs or None), ""]
  if runs:
    header = ["family", "test BLEU, greedy", "test chrF", f"BLEU, {LONG_FROM}+ words", "run", "steps", "wall time",
              "machine"]
    rows = [
        [run["name"], format_metric("bleu", run["metrics"]["bleu"]), format_metric("chrf", run["metrics"].get("chrf")),
         format_metric("bleu", run["metrics"]["bleu_long"]), f"`{run['source']}`", f"{run['steps']:,}",
         format_metric("wall_seconds", run["metrics"].get("wall_seconds")), run["machine"]]
        for run in runs
    ]
    lines += [*report.table_lines(header, rows), ""]
    lines += [f"BLEU, {LONG_FROM}+ words: the mean of the run's BLEU over 10-word buckets of longer sources.", ""]
  return "\n".join(lines)
