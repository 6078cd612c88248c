"""What a reproduction is: named runs of one base config, and the published claims their numbers test.

    Ablation(name, title, summary,
             base_config(quick) -> ConfigDict,       the config every run starts from
             runs(base) -> [Run(name, overrides, levels)],
             claims=[Claim(claim, source, test)])

A run's overrides may name an earlier run's workdir, `RunDir("kl_vae")`: a later run reads the model it trained
(latent diffusion encodes with that VAE). A run's `levels` place it in the ablation's grid ({"positions": "rope", ...}); a
claim's `test` (claims.py) compares the runs that differ only in the factors it
names, and says from our numbers whether we agree. The definitions hold no numbers
of ours: those come from the runs (experiments/reproduce.py) and go to results files.
"""
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import ml_collections

MASK_LEVELS = (0.1, 0.25, 0.5, 0.75)  # masking probabilities the image reproductions evaluate at
DDIM_STEPS = (10, 20, 50, 100)  # DDIM step counts the image reproductions sample with

# What the harness measures for every run: key -> (column heading, format of a value).
METRICS = {
    "non_embedding_params": ("non-embedding parameters", "{:,.0f}"),
    "validation_loss": ("validation loss (nats/token)", "{:.4f}"),
    "validation_loss_per_character": ("validation loss (nats/char)", "{:.4f}"),
    "validation_loss_per_image": ("validation loss (nats/image)", "{:.2f}"),
    "tokens_per_second": ("train tokens/s (median)", "{:,.0f}"),
    "examples_per_second": ("train images/s (median)", "{:,.0f}"),
    "kv_cache_bytes_per_token": ("KV cache bytes/token", "{:,.0f}"),
    "wall_seconds": ("wall time", None),  # minutes and seconds: see format_metric
    "bleu": ("test BLEU", "{:.2f}"),
    "chrf": ("test chrF", "{:.2f}"),
    "bleu_long": ("test BLEU on long sources", "{:.2f}"),
    **{f"bleu_beam_{w}": (f"BLEU, beam {w}" if w > 1 else "BLEU, greedy", "{:.2f}") for w in (1, 2, 4, 8)},
    # The image families' final evaluations (experiments/tasks: autoencoder, segmentation, gan, image_classifier).
    "psnr": ("test PSNR (dB)", "{:.2f}"),
    "ssim": ("test SSIM", "{:.3f}"),
    "denoised_psnr": ("PSNR from corrupted inputs (dB)", "{:.2f}"),
    "elbo": ("test ELBO (nats)", "{:.2f}"),
    "iwae": ("test log-likelihood, IWAE bound (nats)", "{:.2f}"),
    "mean_iou": ("test mean IoU", "{:.3f}"),
    "mean_dice": ("test mean Dice", "{:.3f}"),
    "checkerboard": ("checkerboard score", "{:.4f}"),
    "pixel_accuracy": ("test pixel accuracy", "{:.4f}"),
    "accuracy": ("test accuracy", "{:.4f}"),
    "anomaly_auroc": ("anomaly AUROC (other classes)", "{:.3f}"),
    # The autoencoder's PSNR from inputs with a share p of their pixels masked (evaluation.corruption_levels).
    **{f"psnr_mask_{p:g}": (f"PSNR, {p:.0%} masked (dB)", "{:.2f}") for p in MASK_LEVELS},
    # In a classifier's features, to the test images (experiments/image_eval.py): samples, then train images.
    "frechet_distance": ("Fréchet distance of samples", "{:.3f}"),
    "frechet_distance_train": ("Fréchet distance of train images", "{:.3f}"),
    **{f"frechet_ddim_{s}": (f"Fréchet distance, {s} DDIM steps", "{:.3f}") for s in DDIM_STEPS},
}
# A run's validation loss and training throughput, by its task's unit (Task.unit).
UNIT_METRICS = {
    "tokens": ("validation_loss", "tokens_per_second"),
    "examples": ("validation_loss_per_image", "examples_per_second"),
}


# The plots of each results folder (plots.py draws them, the report links them): file -> what it shows.
PLOTS = {"validation_loss.png": "validation loss", "loss_curves.png": "loss curves"}
THROUGHPUT_PLOTS = {"tokens_per_second": "tokens/s", "examples_per_second": "images/s"}  # metric (.png) -> label
TRANSLATION_PLOTS = {"bleu_by_length.png": "BLEU by source length"}
LENGTH_METRIC = "bleu_words_"  # the translation task's BLEU per bucket of source words: bleu_words_10_19, ...


def bleu_by_length(run: Mapping[str, Any]) -> list[tuple[int, float]]:
  """(lowest source length in words, BLEU) of each length bucket of a translation run, shortest first."""
  buckets = [(int(name[len(LENGTH_METRIC):].split("_")[0]), value) for name, value in run["metrics"].items()
             if name.startswith(LENGTH_METRIC)]
  return sorted(buckets)


def unit_metrics(document: Mapping[str, Any]) -> tuple[str, str]:
  """(validation loss, throughput) metric names of a results document's runs: per token or per image."""
  metrics = document["runs"][0]["metrics"] if document["runs"] else {}
  return next((names for names in UNIT_METRICS.values() if names[0] in metrics), UNIT_METRICS["tokens"])


def plot_names(document: Mapping[str, Any]) -> dict[str, str]:
  """The plots a results document's runs have (plots.py draws them): file -> what it shows."""
  translates = any(bleu_by_length(run) for run in document["runs"])
  throughput = unit_metrics(document)[1]
  return {**PLOTS, f"{throughput}.png": THROUGHPUT_PLOTS[throughput], **(TRANSLATION_PLOTS if translates else {})}


def format_metric(name: str, value: float | None) -> str:
  if value is None:
    return "–"
  if name == "wall_seconds":
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
  return METRICS[name][1].format(value)


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: `overrides` of the base config (dotted keys), and its place in the grid.

  `base_config` (quick -> config), if given, replaces the ablation's base for this run: a
  baseline of another family, shown beside the others.
  """

  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  levels: Mapping[str, str] = dataclasses.field(default_factory=dict)
  base_config: Callable[[bool], ml_collections.ConfigDict] | None = None


@dataclasses.dataclass(frozen=True)
class Verdict:
  measured: str  # our numbers, in words
  agrees: bool | None  # None: these runs do not measure what the claim is about

  @property
  def word(self) -> str:
    return {True: "agrees", False: "does not agree", None: "not measured here"}[self.agrees]


class Test(Protocol):
  """Judges a claim from the runs' results (dicts with "name", "levels" and "metrics")."""

  def judge(self, runs: Sequence[Mapping[str, Any]]) -> Verdict: ...


@dataclasses.dataclass(frozen=True)
class Claim:
  claim: str  # what the paper says, quoted where the words matter
  source: str  # paper, section, table or figure
  test: Test | None = None  # None: nothing here measures it; `untested` says why
  untested: str = ""

  def judge(self, runs: Sequence[Mapping[str, Any]]) -> Verdict:
    if self.test is None:
      return Verdict(self.untested, None)
    return self.test.judge(runs)


@dataclasses.dataclass(frozen=True)
class Ablation:
  name: str  # the command's argument and the folder of its results
  title: str
  summary: str  # what is compared, under which budget: the section's first paragraph (Markdown)
  base_config: Callable[[bool], ml_collections.ConfigDict]  # quick -> the config each run overrides
  runs: Callable[[ml_collections.ConfigDict], Sequence[Run]]  # the base config -> the runs, in order
  claims: Sequence[Claim] = ()
  # The METRICS its table shows; per character only where tokenizers differ.
  columns: Sequence[str] = (
      "non_embedding_params", "validation_loss", "tokens_per_second", "kv_cache_bytes_per_token", "wall_seconds"
  )
  quick_summary: str = ""  # how --quick differs (smaller model, fewer steps)
  notes: str = ""  # typed facts that no run re-measures, printed as such (Markdown)
  show_samples: bool = False  # the report quotes each run's final sample

  def __post_init__(self):
    # Checked when the ablation is defined, not after hours of runs when its table is written.
    unknown = [name for name in self.columns if name not in METRICS]
    if unknown:
      raise ValueError(f"ablation {self.name!r}: columns {unknown} are not in reproductions.base.METRICS")


@dataclasses.dataclass(frozen=True)
class RunDir:
  """An override's value: the workdir of the earlier run `run` of the same sweep, whose trained model a later run
  reads (the VAE whose latents a diffusion models, the classifier whose features measure samples)."""

  run: str


def resolve_run_dirs(runs: Sequence[Run], workdir: str) -> list[Run]:
  """`runs` with each RunDir override replaced by that run's directory under `workdir`; a RunDir naming no earlier
  run is an error naming it (the sweep trains in order, so the run it reads must come first)."""
  from decoders.errors import ConfigError

  resolved, earlier = [], set()
  for run in runs:
    overrides = dict(run.overrides)
    for key, value in overrides.items():
      if isinstance(value, RunDir):
        if value.run not in earlier:
          raise ConfigError(f"run {run.name!r}: {key} reads run {value.run!r}, which is not an earlier run of the sweep")
        overrides[key] = os.path.join(workdir, value.run)
    resolved.append(dataclasses.replace(run, overrides=overrides))
    earlier.add(run.name)
  return resolved


def run_config(base: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
  """A copy of `base` with `run.overrides`; a key the base does not have is an error naming it."""
  from decoders.errors import ConfigError

  config = ml_collections.ConfigDict(base.to_dict())
  config.lock()
  for key, value in run.overrides.items():
    *sections, name = key.split(".")
    node = config
    try:
      for section in sections:
        node = node[section]
      if name not in node:
        raise KeyError(name)
      node[name] = value
    except (KeyError, AttributeError, TypeError) as error:
      raise ConfigError(f"run {run.name!r}: override {key}={value!r} does not fit the base config ({error})") from None
  return config
