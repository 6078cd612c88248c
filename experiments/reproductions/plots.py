"""The PNG plots of a reproduction, drawn from its results document alone (so they can be redrawn).

    validation_loss.png     final validation loss per run (bars)
    loss_curves.png         training loss over steps per run (lines) and its periodic evaluations (dots)
    tokens_per_second.png   median training throughput per run (bars; examples_per_second.png for images)
    bleu_by_length.png      a translation's test BLEU per source-length bucket, a line per run (Bahdanau et al.
                            2015, Fig. 2); only where the runs translate
"""
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: the machines that run sweeps have no display
import matplotlib.pyplot as plt  # noqa: E402

from experiments.reproductions.base import METRICS, bleu_by_length, plot_names, unit_metrics  # noqa: E402


def _bars(runs: Sequence[Mapping[str, Any]], metric: str, path: str, zoom: bool) -> None:
  """Horizontal bars, one per run, labelled with their values; `zoom` starts the axis near the smallest."""
  names = [run["name"] for run in runs]
  values = [run["metrics"].get(metric) or 0.0 for run in runs]
  figure, axes = plt.subplots(figsize=(8, 0.32 * len(runs) + 1.3))
  axes.barh(range(len(runs)), values, color="tab:blue")
  axes.set_yticks(range(len(runs)), names, fontsize=8)
  axes.invert_yaxis()  # the first run on top, as in the table
  low, high = min(values), max(values)
  if zoom and high > low:
    # Differences of a few hundredths matter here; bars from zero would hide them.
    axes.set_xlim(low - 0.5 * (high - low), high + 0.3 * (high - low))
  for index, value in enumerate(values):
    label = METRICS[metric][1].format(value)
    axes.annotate(label, (value, index), fontsize=7, va="center", xytext=(2, 0), textcoords="offset points")
  axes.set_xlabel(METRICS[metric][0])
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def _curves(runs: Sequence[Mapping[str, Any]], path: str) -> None:
  figure, axes = plt.subplots(figsize=(10, 5.5))
  colors = plt.get_cmap("tab20")
  tail = []
  for index, run in enumerate(runs):
    train, evaluations = run["curves"]["train"], run["curves"]["eval"]
    steps, losses = [step for step, _, _ in train], [loss for _, loss, _ in train]
    (line,) = axes.plot(steps, losses, lw=1, color=colors(index % 20), label=run["name"])
    axes.plot([s for s, _, _ in evaluations], [loss for _, loss, _ in evaluations], "o", ms=3, color=line.get_color())
    tail += [loss for step, loss, _ in train if step >= 0.1 * run["steps"]]
  if tail:  # the first tenth of training (from ~4.4 nats) would flatten everything after it
    axes.set_ylim(min(tail) - 0.05, max(tail) + 0.05)
  axes.set_xlabel("step")
  axes.set_ylabel("loss (nats): training (lines), evaluation (dots)")
  axes.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def _bleu_by_length(runs: Sequence[Mapping[str, Any]], path: str) -> None:
  figure, axes = plt.subplots(figsize=(8, 5))
  for run in runs:
    buckets = bleu_by_length(run)
    axes.plot([low for low, _ in buckets], [bleu for _, bleu in buckets], "o-", label=run["name"])
  axes.set_xlabel("source sentence length (words; each point is a bucket of 10 from there)")
  axes.set_ylabel("test BLEU")
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def draw(document: Mapping[str, Any], folder: str) -> list[str]:
  """Writes the plots of `document` into `folder`; returns their paths."""
  runs = document["runs"]
  paths = {name: os.path.join(folder, name) for name in plot_names(document)}
  loss, throughput = unit_metrics(document)
  _bars(runs, loss, paths["validation_loss.png"], zoom=True)
  _curves(runs, paths["loss_curves.png"])
  _bars(runs, throughput, paths[f"{throughput}.png"], zoom=False)
  if "bleu_by_length.png" in paths:
    _bleu_by_length(runs, paths["bleu_by_length.png"])
  return list(paths.values())
