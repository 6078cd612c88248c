"""Alignment pictures: which source tokens each target token attended to (Bahdanau et al. 2015, Fig. 3).

    python run.py --config=configs/translation.py --workdir=workdirs/translation --mode=attention \
        --prompt="Click the Save button to save the document."

writes <workdir>/attention/<n>.png per prompt: the source tokens across, the translation's tokens
down, each cell's grey level the attention weight (white: 1), as the paper draws them.
"""
import os
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402

FOLDER = "attention"


def draw(source: Sequence[str], target: Sequence[str], weights: np.ndarray, path: str, title: str = "") -> str:
  """Draws `weights` [len(target), len(source)] with the tokens as tick labels into the PNG `path`."""
  if weights.shape != (len(target), len(source)):
    raise ValueError(f"weights of shape {weights.shape} for {len(target)} target and {len(source)} source tokens")
  figure, axes = plt.subplots(figsize=(0.35 * len(source) + 2.5, 0.35 * len(target) + 2.0))
  axes.imshow(weights, cmap="gray", vmin=0.0, vmax=1.0, aspect="equal")
  axes.set_xticks(range(len(source)), source, rotation=90, fontsize=8)
  axes.set_yticks(range(len(target)), target, fontsize=8)
  axes.xaxis.tick_top()
  if title:
    axes.set_title(title, fontsize=9, pad=12)
  figure.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path
