"""`python -m experiments.reproduce NAME [--quick]`: a reproduction's runs through the one trainer, then its report.

    python -m experiments.reproduce transformer_variants            # 18 runs: 35-85 min on 2 CPU cores
    python -m experiments.reproduce transformer_variants --quick    # the same grid, small: < 10 min
    python -m experiments.reproduce shakespeare_char                # the `make run` job beside nanoGPT's numbers
    python -m experiments.reproduce smollm2_shakespeare             # a pretrained model before and after fine-tuning
    python -m experiments.reproduce vaswani2017 --runs=base,heads_1  # two runs now; the rest recorded or left to do
    python -m experiments.reproduce --regenerate                    # REPRODUCTIONS.md from reproductions/*/results.json

NAME is one of experiments/reproductions (ABLATIONS). Each of its runs trains in
`<workdir>/<run name>` (workdir: workdirs/reproduce/NAME, or NAME-quick) with
`train.train_and_evaluate`. A run whose metrics.jsonl holds its final evaluation and
whose config.json is the run's config is done and is not trained again; any other
resumes from its newest checkpoint, as run.py would (a run of train.num_steps=0 only
evaluates and samples its initial, e.g. pretrained, weights). So a sweep stopped anywhere
(Ctrl-C checkpoints the run in progress) goes on where it stopped when the same
command is given again. A sweep longer than one sitting on one machine can be spread
over several, the committed results carrying it: `--runs=a,b` trains only those runs;
each other one is taken from the workdir if done there, else from the committed
reproductions/NAME/results.json if it holds that run with the same base config,
overrides and steps, and is otherwise listed as not run yet (its claims "not measured").

Every run reports its final held-out loss, tokens/s, and its model's non-embedding
parameters and KV-cache bytes per token (`--mode=inspect`'s numbers); a task that
generates (translation) adds its BLEU and chrF.

Then, from the runs' metrics.jsonl: <workdir>/results.json (per run: overrides,
metrics, loss curves, machine, date, steps; the command), table.md and PNG plots,
copied to reproductions/NAME[-quick]/, and REPRODUCTIONS.md regenerated whole from
every reproductions/*/results.json and the claims of the definitions.

The runs share this process rather than each starting run.py: one start (imports,
JAX) instead of 18, and the trainer's progress bar nests under the sweep's. Each run
builds its own jitted steps, and JAX's caches are cleared after it, so a long sweep does
not pile up compiled programs. What a run prints (its evaluations, the sample) goes to
<run>/train.log; the terminal shows a line per run and the two bars.
"""
import contextlib
import datetime
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import tqdm
from absl import app, flags, logging

from experiments import inspection
from experiments import metrics as metrics_lib
from experiments import figures, preemption, reproductions, tasks, train
from experiments import workdir as workdir_lib
from experiments.bench import common
from experiments.errors import USER_ERRORS, UserError
from experiments.reproductions import quality, report
from experiments.reproductions.base import (
    METRICS, UNIT_METRICS, Ablation, Run, format_metric, resolve_run_dirs, run_config
)

RESULTS_DIR = "reproductions"  # committed: one folder per reproduction
REPORT = "REPRODUCTIONS.md"
RESULTS_FILE, TABLE_FILE = "results.json", "table.md"
RUN_RECORD = "reproduce.json"  # in a run's workdir: wall time spent on it; machine and date it finished
LOG_FILE = "train.log"
COMPILE_ROWS = 1  # the first train row's window includes compiling the step: left out of throughput

_QUICK = flags.DEFINE_bool("quick", False, "Run the reproduction's small version (minutes, not an hour).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs train; default workdirs/reproduce/NAME[-quick].")
_RUNS = flags.DEFINE_list(
    "runs", None, "Train only these runs now; take the others from the workdir or the committed results, if there."
)
_REGENERATE = flags.DEFINE_bool("regenerate", False, f"Run nothing; rewrite {REPORT} from {RESULTS_DIR}/*/{RESULTS_FILE}.")


def folder_name(ablation: Ablation, quick: bool) -> str:
  return ablation.name + ("-quick" if quick else "")


def command(ablation: Ablation, quick: bool) -> str:
  return f"{report.COMMAND} {ablation.name}" + (" --quick" if quick else "")


def read_rows(run_dir: str) -> list[dict]:
  """The rows of a run's metrics.jsonl (a line cut short by a kill is skipped)."""
  path = os.path.join(run_dir, metrics_lib.JSONL_FILE)
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      with contextlib.suppress(ValueError):
        rows.append(json.loads(line))
  return rows


def _final_eval(rows: list[dict], num_steps: int) -> dict | None:
  """The evaluation on the whole held-out set: the only eval row at the last step (periodic ones skip it)."""
  return next((row for row in rows if row["split"] == "eval" and row["step"] == num_steps), None)


def is_done(config, run_dir: str) -> bool:
  finished = _final_eval(read_rows(run_dir), config.train.num_steps) is not None
  return finished and not workdir_lib.config_changes(run_dir, config)


def _read_record(run_dir: str) -> dict:
  path = os.path.join(run_dir, RUN_RECORD)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_json(path: str, value) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
  os.replace(path + ".tmp", path)


def killed_session_seconds(run_dir: str) -> float:
  """The time of a session of this run killed before `train_run` could record it (SIGKILL, a reboot): from the start
  its stale lock records to its last metrics row, so at most `train.log_every` steps short; 0 if there was none."""
  started = workdir_lib.stale_holder(run_dir).get("started")
  rows = os.path.join(run_dir, metrics_lib.JSONL_FILE)
  if started is None or not os.path.exists(rows):
    return 0.0
  return max(0.0, os.path.getmtime(rows) - datetime.datetime.fromisoformat(started).timestamp())


def train_run(config, run_dir: str) -> None:
  """Trains (or resumes) one run, its printed output in <run_dir>/train.log; adds the time to its record."""
  os.makedirs(run_dir, exist_ok=True)
  killed = killed_session_seconds(run_dir)
  start = time.perf_counter()
  finished = False
  try:
    with open(os.path.join(run_dir, LOG_FILE), "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
      train.train_and_evaluate(config, run_dir)
    finished = True
  finally:  # an interrupted run's time counts too: the run's wall time is the sum over its sessions, killed ones too
    # The run's compiled programs: each maps code into the process, and a long sweep must not pile them up
    # towards Linux's vm.max_map_count (tests/conftest.py).
    jax.clear_caches()
    record = _read_record(run_dir)
    record["wall_seconds"] = record.get("wall_seconds", 0.0) + killed + time.perf_counter() - start
    if finished:
      record.update(machine=common.machine(), date=datetime.date.today().isoformat())
    _write_json(os.path.join(run_dir, RUN_RECORD), record)


def summarize_run(config, run: Run, run_dir: str) -> dict:
  """A finished run's entry of results.json, from its metrics.jsonl, config and record."""
  rows = read_rows(run_dir)
  num_steps = config.train.num_steps
  train_rows = [row for row in rows if row["split"] == "train"]
  # Training seconds at each logged step: each row's window of steps at its logged rate.
  train_curve, elapsed, previous = [], 0.0, 0
  for row in train_rows:
    elapsed += (row["step"] - previous) / row["steps_per_second"]
    train_curve.append([row["step"], round(_train_loss(row), 5), round(elapsed, 2)])
    previous = row["step"]
  seconds_at = {step: seconds for step, _, seconds in train_curve}
  eval_rows = [row for row in rows if row["split"] == "eval"]
  eval_curve = [[row["step"], round(row["loss"], 5), seconds_at.get(row["step"])] for row in eval_rows]
  loss_metric, rate_metric = UNIT_METRICS[tasks.lookup(config).unit]
  rates = [row[rate_metric] for row in train_rows[COMPILE_ROWS:] or train_rows]
  final = _final_eval(rows, num_steps)
  samples = [row["text"] for row in rows if row["split"] == "sample" and row["step"] == num_steps]
  model = inspection.summarize(config)  # the parameters and cache of config's model, none of them allocated
  record = _read_record(run_dir)
  return {
      "name": run.name,
      "levels": dict(run.levels),
      "overrides": dict(run.overrides),
      "steps": num_steps,
      "metrics": {
          loss_metric: final["loss"],
          "validation_loss_per_character": final.get("nats_per_character"),
          rate_metric: statistics.median(rates) if rates else None,  # None: a run of 0 steps
          "kv_cache_bytes_per_token": model.cache_bytes_per_unit(config.model.get("dtype", "float32")),
          "non_embedding_params": model.non_embedding,
          "wall_seconds": record.get("wall_seconds"),
          # The rest of the final evaluation: a translation's BLEU and chrF (overall, by length, by beam width), an
          # image model's PSNR, ELBO, IoU, ...
          **{name: value for name, value in final.items() if name not in ("loss", "step", "split")},
      },
      "curves": {"train": train_curve, "eval": eval_curve},
      "sample": samples[-1] if samples else None,
      "figures": sorted(os.listdir(figures_dir)) if os.path.isdir(figures_dir := os.path.join(run_dir, figures.FOLDER))
      else [],
      "machine": record.get("machine"),
      "date": record.get("date"),
      "workdir": run_dir,
  }


def _train_loss(row: dict) -> float:
  """A train row's loss; of a task with several objectives (a GAN), the first objective's."""
  return row["loss"] if "loss" in row else next(value for name, value in row.items() if name.endswith("/loss"))


def _describe(result: dict) -> str:
  shown = {name: format_metric(name, value) for name, value in result["metrics"].items() if name in METRICS}
  loss, rate = next(names for names in UNIT_METRICS.values() if names[0] in shown)
  bleu = f", BLEU {shown['bleu']}" if "bleu" in shown else ""
  return f"{METRICS[loss][0]} {shown[loss]}{bleu}, {METRICS[rate][0]} {shown[rate]}, {shown['wall_seconds']}"


def _as_json(value):
  """`value` as results.json holds it (tuples as lists, ...), so that a recorded run compares equal to a defined one."""
  return json.loads(json.dumps(value))


def recorded_runs(ablation: Ablation, quick: bool, base_json: dict, results_dir: str) -> dict[str, dict]:
  """The runs of the committed results.json of `ablation`, by name, if its base config is `base_json`; else none."""
  path = os.path.join(results_dir, folder_name(ablation, quick), RESULTS_FILE)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    document = json.load(f)
  return {run["name"]: run for run in document["runs"]} if document["base_config"] == base_json else {}


def _recorded_as_defined(recorded: dict[str, dict], run: Run, config) -> dict | None:
  """`run`'s entry of `recorded` if it ran as `run` is defined now (the same overrides and steps); else None."""
  kept = recorded.get(run.name)
  if kept and kept["overrides"] == _as_json(dict(run.overrides)) and kept["steps"] == config.train.num_steps:
    return kept
  return None


def sweep(
    ablation: Ablation, quick: bool, workdir: str, only: Sequence[str] | None = None, results_dir: str = RESULTS_DIR
) -> tuple[dict, list[dict], list[str]]:
  """Trains every run not done yet, in order, or of those only the runs named in `only`, taking the others from the
  workdir or `results_dir` (module docstring); returns (the base config as a dict, each run's summary, the names of
  the runs still to train)."""
  base = ablation.base_config(quick)
  base_json = json.loads(base.to_json())
  runs = resolve_run_dirs(ablation.runs(base), workdir)
  unknown = sorted(set(only or ()) - {run.name for run in runs})
  if unknown:
    raise UserError(f"--runs: {', '.join(unknown)} not runs of {ablation.name} ({', '.join(r.name for r in runs)})")
  recorded = recorded_runs(ablation, quick, base_json, results_dir) if only is not None else {}
  configs = [run_config(run.base_config(quick) if run.base_config else base, run) for run in runs]
  for run, config in zip(runs, configs):  # every run's mistakes surface now, not an hour in
    try:
      train.check_config(config)
    except USER_ERRORS as error:
      raise UserError(f"run {run.name}: {error}") from None
  done = [is_done(config, os.path.join(workdir, run.name)) for run, config in zip(runs, configs)]
  to_train = sum(not was_done and (only is None or run.name in only) for run, was_done in zip(runs, done))
  results, pending = [], []
  # The bar counts only the runs trained now, so that its rate and time left are not skewed by runs read back.
  with tqdm.tqdm(total=to_train, unit="run", desc=folder_name(ablation, quick), dynamic_ncols=True) as bar:
    for index, (run, config, was_done) in enumerate(zip(runs, configs, done), start=1):
      run_dir = os.path.join(workdir, run.name)
      head = f"[{index}/{len(runs)}] {run.name}"
      if was_done:
        result = summarize_run(config, run, run_dir)
        bar.write(f"{head}: done before: {_describe(result)}")
      elif only is not None and run.name not in only:
        result = _recorded_as_defined(recorded, run, config)
        if result is not None:
          bar.write(f"{head}: recorded in {results_dir}: {_describe(result)}")
        else:
          pending.append(run.name)
          bar.write(f"{head}: not run now (--runs)")
          continue
      else:
        bar.write(f"{head}: training, output in {os.path.join(run_dir, LOG_FILE)}")
        try:
          train_run(config, run_dir)
        except preemption.Interrupted:
          bar.write(f"{head}: stopped; the same command resumes it")
          raise
        except USER_ERRORS as error:
          raise UserError(f"run {run.name} in {run_dir}: {error}") from None
        result = summarize_run(config, run, run_dir)
        bar.write(f"{head}: {_describe(result)}")
        bar.update()
      results.append(result)
  return base_json, results, pending


def write_results(ablation: Ablation, document: dict, workdir: str, results_dir: str) -> str:
  """results.json, table.md and the plots into `workdir`, copied to results_dir/NAME[-quick]; returns that folder."""
  from experiments.reproductions import plots

  paths = [os.path.join(workdir, RESULTS_FILE), os.path.join(workdir, TABLE_FILE)]
  _write_json(paths[0], document)
  with open(paths[1], "w", encoding="utf-8") as f:
    f.write(report.table(ablation, document))
  paths += plots.draw(document, workdir)
  folder = os.path.join(results_dir, folder_name(ablation, document["quick"]))
  os.makedirs(folder, exist_ok=True)
  for path in paths:
    shutil.copy(path, folder)
  for run in document["runs"]:  # each run's pictures of what its model makes, as report.figure_path names them
    for name in run.get("figures", []):
      destination = os.path.join(folder, report.figure_path(run["name"], name))
      source = os.path.join(run["workdir"], figures.FOLDER, name)
      if not os.path.exists(source) and os.path.exists(destination):
        continue  # a run taken from the committed results (--runs): its figures are there already
      os.makedirs(os.path.dirname(destination), exist_ok=True)
      shutil.copy(source, destination)
  return folder


def regenerate(results_dir: str = RESULTS_DIR, path: str = REPORT) -> str:
  """Rewrites `path`, and each results folder's table.md, from the definitions and results_dir/*/results.json.

  A reproduction's section shows its full run's results if there are any, else --quick's.
  """
  sections, documents = [], []
  for ablation in reproductions.ABLATIONS.values():
    shown, link = None, None
    for quick in (True, False):  # the full run's last: it is the one shown
      folder = os.path.join(results_dir, folder_name(ablation, quick))
      if os.path.exists(os.path.join(folder, RESULTS_FILE)):
        with open(os.path.join(folder, RESULTS_FILE), encoding="utf-8") as f:
          shown, link = json.load(f), os.path.relpath(folder, os.path.dirname(os.path.abspath(path)))
        with open(os.path.join(folder, TABLE_FILE), "w", encoding="utf-8") as f:
          f.write(report.table(ablation, shown))  # the claims' wording may have changed since the run
        documents.append(shown)
    sections.append(report.section(ablation, shown, link))
  sections.append(quality.section(documents))  # the best of every family, over all the runs above
  text = report.report(sections)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return text


def reproduce(
    ablation: Ablation,
    quick: bool,
    workdir: str | None = None,
    results_dir: str = RESULTS_DIR,
    path: str = REPORT,
    only: Sequence[str] | None = None,
) -> dict:
  """Runs what of `ablation` is not done yet (of it, `only` these runs: see `sweep`), writes its results, regenerates
  `path`; returns results.json's content."""
  workdir = workdir or os.path.join("workdirs", "reproduce", folder_name(ablation, quick))
  workdir_lib.make_directory(workdir, "--workdir")
  base, runs, pending = sweep(ablation, quick, workdir, only, results_dir)
  document = dict(
      name=ablation.name, quick=quick, command=command(ablation, quick), base_config=base, runs=runs, pending=pending
  )
  folder = write_results(ablation, document, workdir, results_dir)
  regenerate(results_dir, path)
  print(report.table(ablation, document))
  print(f"results: {workdir}/{RESULTS_FILE}, copied with the table and plots to {folder}; {path} regenerated")
  return document


def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file they touch at INFO
  names = ", ".join(reproductions.ABLATIONS)
  usage = f"usage: {report.COMMAND} NAME [--quick] [--workdir=DIR] | --regenerate; NAME: {names}"
  if _REGENERATE.value:
    if len(argv) > 1:
      raise app.UsageError(f"--regenerate runs nothing, so it takes no NAME; {usage}")
    regenerate()
    print(f"{REPORT} regenerated from {RESULTS_DIR}/*/{RESULTS_FILE}")
    return
  if len(argv) != 2:
    raise app.UsageError(usage)
  try:
    reproduce(reproductions.lookup(argv[1]), _QUICK.value, _WORKDIR.value, only=_RUNS.value)
  except USER_ERRORS as error:
    sys.exit(f"error: {error}")
  except preemption.Interrupted as error:
    print(f"interrupted: {error}", file=sys.stderr, flush=True)
    sys.exit(error.exit_status)
  except KeyboardInterrupt:
    print("interrupted: the runs already done and the checkpoints written are kept", file=sys.stderr, flush=True)
    sys.exit(130)


if __name__ == "__main__":
  app.run(main)
