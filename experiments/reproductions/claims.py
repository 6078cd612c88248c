"""How a claim is tested against our runs: each test turns their numbers into a `Verdict`.

Factorial ablations compare like with like: `Paired` sets each run at the claim's
levels beside the run that differs from it only there (RoPE beside learned
positions with the same block and attention), so a claim about positions is judged
over every block and attention, and the verdict says in how many pairs it held.
The rules for "agrees" are fixed here, before any number is seen.
"""
import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.reproductions.base import MASK_LEVELS, Verdict, bleu_by_length, format_metric

RunResult = Mapping[str, Any]  # {"name", "levels", "metrics", "curves", ...}: one run of results.json
# BLEU points by which one run must beat another for "higher" to hold: on a test set of ~1,500 sentences a smaller
# difference is within sampling noise (Koehn 2004, bootstrap resampling), so it is not read as a difference.
BLEU_MARGIN = 0.5
UNITS = {
    "validation_loss": "nats/token",
    "validation_loss_per_character": "nats/char",
    "kv_cache_bytes_per_token": "bytes",
    "tokens_per_second": "tokens/s",
    "psnr": "dB",
    **{f"psnr_mask_{p:g}": "dB" for p in MASK_LEVELS},
}


def _unit(metric: str) -> str:
  """The metric's unit after a space, or nothing for a unitless one."""
  return f" {UNITS[metric]}" if metric in UNITS else ""


def _label(levels: Mapping[str, str]) -> str:
  return " + ".join(levels.values()) if len(levels) == 1 else "(" + " + ".join(levels.values()) + ")"


def _pairs(runs: Sequence[RunResult], levels: Mapping[str, str], baseline: Mapping[str, str]):
  """(run at `levels`, run at `baseline` with every other level the same), for each such run with a value."""
  by_levels = {tuple(sorted(run["levels"].items())): run for run in runs}
  pairs = []
  for run in runs:
    if all(run["levels"].get(factor) == level for factor, level in levels.items()):
      partner = by_levels.get(tuple(sorted({**run["levels"], **baseline}.items())))
      if partner is not None:
        pairs.append((run, partner))
  return pairs


def _find(runs: Sequence[RunResult], name: str) -> RunResult | None:
  return next((run for run in runs if run["name"] == name), None)


@dataclasses.dataclass(frozen=True)
class Paired:
  """`metric` at `levels` minus at `baseline`, averaged over the pairs of runs that differ only there.

  expect="lower": agrees if the mean difference is below -`margin`; "close": if its magnitude
  is at most `tolerance`.
  """

  metric: str
  levels: Mapping[str, str]
  baseline: Mapping[str, str]
  expect: str  # "lower" | "close"
  tolerance: float = 0.0
  margin: float = 0.0  # "lower": by more than this (BLEU_MARGIN for BLEU)

  def __post_init__(self):
    if self.expect not in ("lower", "close"):
      raise ValueError(f"unknown expectation {self.expect!r}; expected 'lower' or 'close'")

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    pairs = [
        (a, b)
        for a, b in _pairs(runs, self.levels, self.baseline)
        if a["metrics"].get(self.metric) is not None and b["metrics"].get(self.metric) is not None
    ]
    if not pairs:
      return Verdict(f"no runs at {_label(self.levels)} beside {_label(self.baseline)}", None)
    differences = [a["metrics"][self.metric] - b["metrics"][self.metric] for a, b in pairs]
    mean = statistics.fmean(differences)
    measured = f"{_label(self.levels)} − {_label(self.baseline)}: {mean:+.4f}{_unit(self.metric)}"
    if len(pairs) > 1:
      lower = sum(d < 0 for d in differences)
      measured += (
          f" on average over {len(pairs)} pairs ({min(differences):+.4f} to {max(differences):+.4f});"
          f" lower in {lower} of {len(pairs)}"
      )
    if self.expect == "lower":
      needed = f"; lower means by more than {self.margin:g}" if self.margin > 0 else ""
      return Verdict(measured + needed, mean < -self.margin)
    return Verdict(f"{measured}; close means within ±{self.tolerance}", abs(mean) <= self.tolerance)


@dataclasses.dataclass(frozen=True)
class Shrinks:
  """`metric` at `baseline` is exactly `factor` times `metric` at `levels`, in every pair of runs."""

  metric: str
  levels: Mapping[str, str]
  baseline: Mapping[str, str]
  factor: float

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    pairs = _pairs(runs, self.levels, self.baseline)
    if not pairs:
      return Verdict(f"no runs at {_label(self.levels)} beside {_label(self.baseline)}", None)
    ratios = [b["metrics"][self.metric] / a["metrics"][self.metric] for a, b in pairs]
    exact = all(math.isclose(r, self.factor) for r in ratios)
    a, b = pairs[0]
    before, after = (format_metric(self.metric, run["metrics"][self.metric]) for run in (b, a))
    if exact:
      shown = f"{self.factor:g}× in all {len(ratios)} pairs"
    else:
      shown = f"{min(ratios):.2f}× to {max(ratios):.2f}× over {len(ratios)} pairs"
    unit = UNITS.get(self.metric, "")
    return Verdict(f"{_label(self.baseline)} / {_label(self.levels)} = {shown} ({before} → {after} {unit})", exact)


@dataclasses.dataclass(frozen=True)
class AtMost:
  """`metric` of the run `run` is at most `value` + `tolerance` (we reach a published number)."""

  metric: str
  run: str
  value: float
  tolerance: float = 0.0

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    found = _find(runs, self.run)
    if found is None or found["metrics"].get(self.metric) is None:
      return Verdict(f"run {self.run!r} has no {self.metric}", None)
    ours = found["metrics"][self.metric]
    wall = found["metrics"].get("wall_seconds")
    measured = f"{ours:.4f}{_unit(self.metric)} ({ours - self.value:+.4f})"
    if wall is not None:
      measured += f", {format_metric('wall_seconds', wall)} of wall time for the run"
    return Verdict(f"{measured}; agrees at ≤ {self.value + self.tolerance:g}", ours <= self.value + self.tolerance)


@dataclasses.dataclass(frozen=True)
class AtLeast:
  """`metric` is at least `value` in every run that measures it (a threshold fixed before the runs)."""

  metric: str
  value: float

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    measured = {run["name"]: run["metrics"][self.metric] for run in runs
                if run["metrics"].get(self.metric) is not None}
    if not measured:
      return Verdict(f"no run has {self.metric}", None)
    shown = ", ".join(f"{name} {format_metric(self.metric, value)}" for name, value in measured.items())
    return Verdict(f"{shown}; agrees at ≥ {self.value:g} in every run", min(measured.values()) >= self.value)


@dataclasses.dataclass(frozen=True)
class ReachedWithin:
  """The run's evaluated loss is at most `value` at an evaluation within `seconds` of training.

  Training time is the run's logged throughput turned back into seconds (compilation
  included, evaluations excluded); evaluations are the periodic ones on a few batches.
  """

  run: str
  seconds: float
  value: float

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    found = _find(runs, self.run)
    evaluations = found["curves"]["eval"] if found else []
    within = [(step, loss, s) for step, loss, s in evaluations if s is not None and s <= self.seconds]
    if not within:
      first = f"; the first, at step {evaluations[0][0]}, came {evaluations[0][2]:.0f} s in" if evaluations else ""
      return Verdict(f"no evaluation within {self.seconds:g} s of training{first}", None)
    step, loss, seconds = min(within, key=lambda e: e[1])
    return Verdict(f"{loss:.4f} at step {step}, {seconds:.0f} s into training", loss <= self.value)


@dataclasses.dataclass(frozen=True)
class Lower:
  """`metric` of the run `run` is below that of the run `than`, by at least `margin`."""

  metric: str
  run: str
  than: str
  margin: float = 0.0

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    found, other = _find(runs, self.run), _find(runs, self.than)
    if found is None or other is None or None in (found["metrics"].get(self.metric), other["metrics"].get(self.metric)):
      return Verdict(f"runs {self.run!r} and {self.than!r} do not both have {self.metric}", None)
    ours, theirs = found["metrics"][self.metric], other["metrics"][self.metric]
    return Verdict(self.measured(ours, theirs), self.holds(ours, theirs))

  def measured(self, ours: float, theirs: float) -> str:
    return f"{ours:.4f} against {theirs:.4f}{_unit(self.metric)} ({ours - theirs:+.4f})"

  def holds(self, ours: float, theirs: float) -> bool:
    return ours < theirs - self.margin


@dataclasses.dataclass(frozen=True)
class SampleStartsWith:
  """The final sample of the run `run` (prompt included) begins with `text`."""

  run: str
  text: str

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    found = _find(runs, self.run)
    sample = found.get("sample") if found else None
    if sample is None:
      return Verdict(f"run {self.run!r} has no sample", None)
    return Verdict(f"{sample[: len(self.text) + 20]!r}", sample.startswith(self.text))


@dataclasses.dataclass(frozen=True)
class Higher(Lower):
  """`metric` of the run `run` is above that of the run `than` by more than `margin` (BLEU: higher is better)."""

  def measured(self, ours: float, theirs: float) -> str:
    shown = lambda value: format_metric(self.metric, value)  # noqa: E731
    needed = f"; higher means by more than {self.margin:g}" if self.margin > 0 else ""
    return f"{self.run} {shown(ours)} against {self.than} {shown(theirs)} ({ours - theirs:+.2f}{needed})"

  def holds(self, ours: float, theirs: float) -> bool:
    return ours > theirs + self.margin


@dataclasses.dataclass(frozen=True)
class HoldsWithLength:
  """BLEU on sources of `long_from`+ words, as a fraction of BLEU on shorter ones, is higher for `run` than `than`.

  Bahdanau et al. 2015, Fig. 2: the fixed-context model's BLEU falls as sentences grow, the
  attention model's much less; the ratio compares the fall without the models' overall levels.
  """

  run: str
  than: str
  long_from: int = 30

  def _ratio(self, run: RunResult) -> tuple[float, float, float] | None:
    buckets = bleu_by_length(run)
    short = [bleu for low, bleu in buckets if low < self.long_from]
    long = [bleu for low, bleu in buckets if low >= self.long_from]
    if not short or not long or statistics.fmean(short) <= 0:
      return None
    return statistics.fmean(long) / statistics.fmean(short), statistics.fmean(short), statistics.fmean(long)

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    found, other = _find(runs, self.run), _find(runs, self.than)
    ratios = [None if r is None else self._ratio(r) for r in (found, other)]
    if None in ratios:
      return Verdict(f"runs {self.run!r} and {self.than!r} do not both have BLEU on short and long sources", None)
    (ours, our_short, our_long), (theirs, their_short, their_long) = ratios
    measured = (
        f"BLEU at {self.long_from}+ words / under {self.long_from}: {self.run} {our_long:.1f} / {our_short:.1f} = "
        f"{ours:.2f}, {self.than} {their_long:.1f} / {their_short:.1f} = {theirs:.2f}"
    )
    return Verdict(measured, ours > theirs)


@dataclasses.dataclass(frozen=True)
class Exceeds:
  """Within the run `run`: `metric` is above `than` by more than `margin` (beam search's BLEU above greedy's)."""

  run: str
  metric: str
  than: str
  margin: float = 0.0

  def judge(self, runs: Sequence[RunResult]) -> Verdict:
    found = _find(runs, self.run)
    values = [None if found is None else found["metrics"].get(name) for name in (self.metric, self.than)]
    if None in values:
      return Verdict(f"run {self.run!r} has no {self.metric} and {self.than}", None)
    ours, theirs = values
    return Verdict(f"{self.metric} {ours:.2f} against {self.than} {theirs:.2f} ({ours - theirs:+.2f})",
                   ours > theirs + self.margin)
