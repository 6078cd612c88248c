"""The reproduction harness: a two-run ablation of the tiny LM through the one trainer; the definitions' budgets.

One sweep (module fixture) finds its first run done (a copy of the suite's trained
tiny LM, the same config) and trains the second; the other tests reuse its workdir: a
second sweep trains nothing, a sweep over a copy with one run cut back to its first
checkpoint resumes that run alone, and the report comes from the results files only.
"""
import contextlib
import datetime
import json
import math
import os
import shutil
import time

import pytest

from configs import autoencoder as autoencoder_configs
from configs import shakespeare_char
from experiments import inspection, reproduce, reproductions, train
from experiments.errors import UserError
from experiments.reproductions import base as base_lib
from experiments.reproductions import report
from experiments.reproductions.claims import BLEU_MARGIN, Exceeds, Higher, HoldsWithLength, Lower, Paired, Shrinks
from experiments.tasks import language_model

CLAIM = "A wider feed-forward layer lowers the loss"
LOSS, KV_CACHE = "validation_loss", "kv_cache_bytes_per_token"


def _tiny_ablation(data_dir: str) -> base_lib.Ablation:
  def base_config(quick):
    del quick
    config = shakespeare_char.get_config("test")  # 6 steps, checkpoints at 3 and 6
    config.data.data_dir = data_dir
    return config

  return base_lib.Ablation(
      name="tiny",
      title="Tiny: two MLP widths",
      summary="The test LM with two MLP widths.",
      base_config=base_config,
      runs=lambda base: [
          base_lib.Run("narrow", {}, {"mlp": "narrow"}),
          base_lib.Run("wide", {"model.mlp_dim": 128}, {"mlp": "wide"}),
      ],
      claims=[base_lib.Claim(CLAIM, "Nobody 2024, table 0", Paired(LOSS, {"mlp": "wide"}, {"mlp": "narrow"}, "lower"))],
  )


@pytest.fixture(scope="module")
def tiny(data_dir):
  """The tiny ablation, registered for this module's tests only."""
  ablation = _tiny_ablation(data_dir)
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(reproductions.ABLATIONS, ablation.name, ablation)
    yield ablation


def _paths(root) -> dict:
  return dict(workdir=str(root / "work"), results_dir=str(root / "reproductions"), path=str(root / "REPRODUCTIONS.md"))


@contextlib.contextmanager
def _recording_training():
  """Yields the list of the runs (workdir names) that reproduce trains inside the context."""
  trained, real = [], reproduce.train_run

  def spy(config, run_dir):
    trained.append(os.path.basename(run_dir))
    real(config, run_dir)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(reproduce, "train_run", spy)
    yield trained


@pytest.fixture(scope="module")
def swept(tiny, trained_lm, tmp_path_factory):
  """(results document, paths, runs trained) of the tiny ablation swept once, its first run already done."""
  paths = _paths(tmp_path_factory.mktemp("reproduce"))
  shutil.copytree(trained_lm[0], os.path.join(paths["workdir"], "narrow"))
  with _recording_training() as trained:
    document = reproduce.reproduce(tiny, quick=False, **paths)
  return document, paths, trained


@pytest.fixture
def trained_runs() -> list[str]:
  with _recording_training() as trained:
    yield trained


def test_a_sweep_trains_what_is_not_done_and_writes_results_table_plots_and_report(swept, trained_lm):
  document, paths, trained = swept
  assert trained == ["wide"]
  assert [run["name"] for run in document["runs"]] == ["narrow", "wide"]
  narrow, wide = document["runs"]
  assert narrow["metrics"]["validation_loss"] == pytest.approx(trained_lm[1]["loss"])
  for run in document["runs"]:
    assert math.isfinite(run["metrics"]["validation_loss"]) and run["metrics"]["tokens_per_second"] > 0
    assert run["steps"] == 6 and run["curves"]["eval"][-1][0] == 6
  assert wide["machine"] and wide["date"] and wide["metrics"]["wall_seconds"] > 0
  assert wide["overrides"] == {"model.mlp_dim": 128}
  assert wide["metrics"]["non_embedding_params"] > narrow["metrics"]["non_embedding_params"]
  committed = os.path.join(paths["results_dir"], "tiny")
  for folder in (paths["workdir"], committed):
    with open(os.path.join(folder, "results.json")) as f:
      assert json.load(f) == document
    with open(os.path.join(folder, "table.md")) as f:
      assert "`wide`" in f.read()
    for plot in base_lib.PLOTS:
      with open(os.path.join(folder, plot), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_second_sweep_trains_nothing(swept, tiny, trained_runs):
  document, paths, _ = swept
  metrics_file = os.path.join(paths["workdir"], "wide", "metrics.jsonl")
  before = os.stat(metrics_file).st_mtime_ns
  again = reproduce.reproduce(tiny, quick=False, **paths)
  assert trained_runs == []
  assert os.stat(metrics_file).st_mtime_ns == before
  assert again["runs"] == document["runs"]


def _wall_seconds(run_dir: str) -> float:
  with open(os.path.join(run_dir, reproduce.RUN_RECORD)) as f:
    return json.load(f)["wall_seconds"]


def test_an_interrupted_sweep_resumes_the_unfinished_run(swept, tiny, trained_runs, tmp_path):
  document, paths, _ = swept
  copy = _paths(tmp_path)
  shutil.copytree(paths["workdir"], copy["workdir"])
  # As if killed after the checkpoint at step 3: no later checkpoint, no row after step 3.
  wide = os.path.join(copy["workdir"], "wide")
  shutil.rmtree(os.path.join(wide, "checkpoints", "6"))
  with open(os.path.join(wide, "metrics.jsonl")) as f:
    rows = [line for line in f if json.loads(line)["step"] <= 3]
  with open(os.path.join(wide, "metrics.jsonl"), "w") as f:
    f.writelines(rows)
  # The killed session left its lock, which says it started 100 s before its last metrics row.
  now = time.time()
  with open(os.path.join(wide, "lock"), "w") as f:
    json.dump({"pid": 0, "host": "gone", "started": datetime.datetime.fromtimestamp(now - 1000).isoformat()}, f)
  os.utime(os.path.join(wide, "metrics.jsonl"), (now - 900, now - 900))
  recorded = _wall_seconds(wide)
  resumed_at = time.perf_counter()
  resumed = reproduce.reproduce(tiny, quick=False, **copy)
  assert trained_runs == ["wide"]
  added = _wall_seconds(wide) - recorded
  assert 100 <= added <= 100 + time.perf_counter() - resumed_at + 1
  assert not os.path.exists(os.path.join(wide, "lock"))
  with open(os.path.join(wide, "train.log")) as f:
    assert "resuming from the checkpoint at step 3" in f.read()
  # The trainer resumes exactly (tests/experiments/test_resume.py): the same final loss.
  assert resumed["runs"][1]["metrics"][LOSS] == pytest.approx(document["runs"][1]["metrics"][LOSS], abs=1e-6)


def test_the_report_is_regenerated_from_results_files_alone(swept, tmp_path):
  document, paths, _ = swept
  with open(paths["path"]) as f:
    written = f.read()
  assert reproduce.regenerate(paths["results_dir"], paths["path"]) == written  # deterministic
  wide_loss = f"{document['runs'][1]['metrics']['validation_loss']:.4f}"
  assert "## Tiny: two MLP widths" in written and CLAIM in written and wide_loss in written
  assert "agree" in written.split(CLAIM)[1].split("\n")[0]  # the verdict in the claim's row
  assert "Not run yet: `python -m experiments.reproduce transformer_variants`" in written
  # A full run's results are shown when they exist; a quick run's only until then.
  results = str(tmp_path / "reproductions")
  shutil.copytree(os.path.join(paths["results_dir"], "tiny"), os.path.join(results, "tiny-quick"))
  with open(os.path.join(results, "tiny-quick", "results.json"), "w") as f:
    json.dump({**document, "quick": True}, f)
  quick = reproduce.regenerate(results, str(tmp_path / "REPRODUCTIONS.md"))
  assert "the quick version" in quick.split("## Tiny")[1] and wide_loss in quick
  shutil.copytree(os.path.join(paths["results_dir"], "tiny"), os.path.join(results, "tiny"))
  full = reproduce.regenerate(results, str(tmp_path / "REPRODUCTIONS.md"))
  assert "the quick version" not in full.split("## Tiny")[1]


def test_runs_spread_over_sittings_take_the_others_from_the_committed_results(swept, tiny, trained_runs, tmp_path):
  document, paths, _ = swept
  later = _paths(tmp_path)  # another machine: the committed results, and a workdir holding the first run only
  shutil.copytree(paths["results_dir"], later["results_dir"])
  shutil.copytree(os.path.join(paths["workdir"], "narrow"), os.path.join(later["workdir"], "narrow"))
  resumed = reproduce.reproduce(tiny, quick=False, only=["narrow"], **later)
  assert trained_runs == []  # narrow is done in the workdir; wide comes from the committed results.json
  assert resumed["runs"][1] == document["runs"][1] and resumed["pending"] == []
  with pytest.raises(UserError, match=r"--runs: mlp_huge not runs of tiny \(narrow, wide\)"):
    reproduce.reproduce(tiny, quick=False, only=["mlp_huge"], **later)
  # Recorded under another base config, the wide run is not taken: the report says what is left, and how to run it.
  committed = os.path.join(later["results_dir"], "tiny", "results.json")
  with open(committed) as f:
    recorded = json.load(f)
  with open(committed, "w") as f:
    json.dump({**recorded, "base_config": {**recorded["base_config"], "seed": -1}}, f)
  partial = reproduce.reproduce(tiny, quick=False, only=["narrow"], **later)
  assert trained_runs == [] and [run["name"] for run in partial["runs"]] == ["narrow"]
  with open(later["path"]) as f:
    section = f.read().split("## Tiny")[1]
  assert "Not run yet: `wide` (`python -m experiments.reproduce tiny --runs=wide`)" in section
  assert "not measured here" in section.split(CLAIM)[1].split("\n")[0]


def test_provenance_names_each_machines_runs_when_a_sweep_spans_machines():
  def run(name, machine):
    return {"name": name, "machine": machine, "date": "2026-11-25", "steps": 10}

  document = {"command": "python -m experiments.reproduce tiny", "runs": [run("a", "cpu box"), run("b", "cpu box")]}
  assert "machine: cpu box; date" in report.provenance(document)
  document["runs"].append(run("c", "gpu box"))
  assert "machine: cpu box (`a`, `b`); gpu box (`c`); date" in report.provenance(document)


def test_verdicts_compare_runs_that_differ_only_in_the_claimed_factor():
  def run(position, attention, loss, cache):
    levels = {"positions": position, "attention": attention}
    return {"name": f"{position}-{attention}", "levels": levels, "metrics": {LOSS: loss, KV_CACHE: cache}}

  runs = [
      run("learned", "mha", 2.0, 8), run("rope", "mha", 1.8, 8), run("learned", "mqa", 2.1, 2), run("rope", "mqa", 2.2, 2)
  ]
  rope_vs_learned = Paired(LOSS, {"positions": "rope"}, {"positions": "learned"}, "lower").judge(runs)
  assert rope_vs_learned.agrees is True  # lower on average (-0.2 and +0.1), though not in every pair
  assert "-0.0500" in rope_vs_learned.measured and "lower in 1 of 2" in rope_vs_learned.measured
  assert Paired(LOSS, {"attention": "mqa"}, {"attention": "mha"}, "close", 0.3).judge(runs).agrees is True
  assert Paired(LOSS, {"attention": "mqa"}, {"attention": "mha"}, "close", 0.2).judge(runs).agrees is False
  assert Shrinks(KV_CACHE, {"attention": "mqa"}, {"attention": "mha"}, factor=4).judge(runs).agrees is True
  assert Shrinks(KV_CACHE, {"attention": "mqa"}, {"attention": "mha"}, factor=2).judge(runs).agrees is False
  assert Paired(LOSS, {"positions": "alibi"}, {"positions": "learned"}, "lower").judge(runs).agrees is None
  # Lower by more than a margin (BLEU's): the mean difference -0.05 is not.
  within_noise = Paired(LOSS, {"positions": "rope"}, {"positions": "learned"}, "lower", margin=0.1).judge(runs)
  assert within_noise.agrees is False and "lower means by more than 0.1" in within_noise.measured
  # A claim judged within one level of another factor: the mqa pair alone, where rope is worse.
  within_mqa = Paired(LOSS, {"attention": "mqa", "positions": "rope"}, {"positions": "learned"}, "lower").judge(runs)
  assert within_mqa.agrees is False and "+0.1000" in within_mqa.measured and "pairs" not in within_mqa.measured


# The reproductions whose runs compare models of (nearly) the same size.
EQUAL_PARAMETERS = ("shakespeare_char", "transformer_variants", "sutskever2014", "bengio2015")


def test_a_bleu_difference_within_the_margin_is_no_difference():
  runs = [{"name": name, "levels": {}, "metrics": {"bleu": bleu}} for name, bleu in (("a", 12.3), ("b", 12.0))]
  assert Higher("bleu", run="a", than="b").judge(runs).agrees is True
  within = Higher("bleu", run="a", than="b", margin=BLEU_MARGIN).judge(runs)
  assert within.agrees is False and "(+0.30; higher means by more than 0.5)" in within.measured


def test_translation_verdicts_read_bleu_overall_by_length_and_by_beam_width():
  def run(name, bleu, by_length, **metrics):
    buckets = {f"bleu_words_{low}_{low + 9}": value for low, value in zip(range(0, 60, 10), by_length)}
    return {"name": name, "levels": {}, "metrics": {"bleu": bleu, **buckets, **metrics}}

  runs = [
      run("attention", 20.0, [22, 21, 20, 19, 19], bleu_beam_1=20.0, bleu_beam_4=21.5),
      run("fixed", 15.0, [20, 17, 12, 8, 5]),
  ]
  assert Higher("bleu", run="attention", than="fixed").judge(runs).agrees is True
  assert Higher("bleu", run="attention", than="fixed", margin=6).judge(runs).agrees is False
  holds = HoldsWithLength(run="attention", than="fixed", long_from=30).judge(runs)
  assert holds.agrees is True and "attention 19.0 / 21.0 = 0.90" in holds.measured  # (19 + 19) / 2 over (22 + 21 + 20) / 3
  assert HoldsWithLength(run="fixed", than="attention").judge(runs).agrees is False
  assert Exceeds("attention", "bleu_beam_4", than="bleu_beam_1").judge(runs).agrees is True
  assert Exceeds("fixed", "bleu_beam_4", than="bleu_beam_1").judge(runs).agrees is None
  assert base_lib.plot_names({"runs": runs})["bleu_by_length.png"]
  assert "bleu_by_length.png" not in base_lib.plot_names({"runs": [{"metrics": {"validation_loss": 1.0}}]})


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("name", list(reproductions.ABLATIONS))
def test_every_run_of_a_definition_is_valid_and_within_the_parameter_budget(name, quick, tmp_path):
  ablation = reproductions.ABLATIONS[name]
  base = ablation.base_config(quick)
  runs = base_lib.resolve_run_dirs(ablation.runs(base), str(tmp_path))
  assert len({run.name for run in runs}) == len(runs)
  counts = []
  for run in runs:
    config = base_lib.run_config(run.base_config(quick) if run.base_config else base, run)
    train.check_config(config)
    counts.append(inspection.summarize(config).non_embedding)
    # What a later run reads of this one before it trains (a latent diffusion, its VAE's shape): its config.
    (tmp_path / run.name).mkdir()
    (tmp_path / run.name / "config.json").write_text(config.to_json())
  if name in EQUAL_PARAMETERS:  # the others vary the size, add attention, or show another family, on purpose
    assert max(abs(count / counts[0] - 1) for count in counts) <= 0.02, dict(zip((r.name for r in runs), counts))


def test_the_transformer_variants_grid():
  ablation = reproductions.ABLATIONS["transformer_variants"]
  base = ablation.base_config(False)
  runs = ablation.runs(base)
  assert len(runs) == 18 and len({tuple(sorted(run.levels.items())) for run in runs}) == 18
  models = {run.levels["attention"]: language_model.model_config(base_lib.run_config(base, run), 1) for run in runs}
  caches = {attention: model.kv_cache_bytes_per_token() for attention, model in models.items()}
  assert caches["mha"] == 2 * caches["gqa2"] == 4 * caches["mqa"]


def test_an_unknown_reproduction_is_one_line_naming_them_all():
  with pytest.raises(UserError) as raised:
    reproductions.lookup("transformer_variant")
  message = str(raised.value)
  assert "\n" not in message and "'transformer_variant'" in message
  assert all(name in message for name in reproductions.ABLATIONS)


def test_an_override_the_base_config_lacks_is_named():
  from decoders.errors import ConfigError

  with pytest.raises(ConfigError, match="model.mlp_width"):
    base_lib.run_config(shakespeare_char.get_config("test"), base_lib.Run("typo", {"model.mlp_width": 8}))


def test_a_column_the_harness_does_not_measure_is_refused_when_defined():
  # The table is written after every run has finished: a typo there would cost the whole sweep's report.
  with pytest.raises(ValueError, match=r"ablation 'typo': columns \['pixel_acuracy'\] are not in"):
    base_lib.Ablation("typo", "", "", shakespeare_char.get_config, lambda base: [], columns=("pixel_acuracy",))


def test_a_run_reads_only_an_earlier_runs_workdir():
  from decoders.errors import ConfigError

  runs = [base_lib.Run("vae", {}), base_lib.Run("ldm", {"data.autoencoder_workdir": base_lib.RunDir("vae")})]
  resolved = base_lib.resolve_run_dirs(runs, "sweep")
  assert resolved[1].overrides == {"data.autoencoder_workdir": os.path.join("sweep", "vae")}
  assert runs[1].overrides["data.autoencoder_workdir"] == base_lib.RunDir("vae")  # the definition is left as it was
  with pytest.raises(ConfigError, match="run 'ldm': data.autoencoder_workdir reads run 'vae', which is not an earlier"):
    base_lib.resolve_run_dirs(runs[::-1], "sweep")


def test_an_image_sweep_reports_per_image_metrics_and_copies_each_runs_figures(data_dir, tmp_path):
  def base_config(quick):
    del quick
    config = autoencoder_configs.get_config("conv,test")  # the 8x8 digits, 60 steps
    config.data.data_dir = data_dir
    config.train.update(num_steps=10, eval_every=10, checkpoint_every=10)
    return config

  ablation = base_lib.Ablation(
      name="tiny_images", title="Tiny: two upsamplings", summary="The test autoencoder, upsampled two ways.",
      base_config=base_config,
      runs=lambda base: [base_lib.Run(method, {"model.upsampling": method}, {"upsampling": method})
                         for method in ("transposed", "nearest")],
      claims=[base_lib.Claim("Resizing first scores a lower checkerboard", "Odena et al. 2016",
                             Paired("checkerboard", {"upsampling": "nearest"}, {"upsampling": "transposed"}, "lower"))],
      columns=("validation_loss_per_image", "psnr", "examples_per_second"),
  )
  paths = _paths(tmp_path)
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(reproductions.ABLATIONS, ablation.name, ablation)
    document = reproduce.reproduce(ablation, quick=False, **paths)
  for run in document["runs"]:
    metrics = run["metrics"]
    assert metrics["examples_per_second"] > 0 and "tokens_per_second" not in metrics
    assert math.isfinite(metrics["validation_loss_per_image"]) and metrics["psnr"] > 0
    assert run["figures"] == ["reconstructions.png"]
  folder = os.path.join(paths["results_dir"], "tiny_images")
  for name in ("figures/transposed-reconstructions.png", "figures/nearest-reconstructions.png",
               "examples_per_second.png", "validation_loss.png"):
    with open(os.path.join(folder, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(paths["path"], encoding="utf-8") as f:
    text = f.read()
  assert "| validation loss (nats/image) | test PSNR (dB) | train images/s (median) |" in text
  assert "Figures of `nearest`: [reconstructions](reproductions/tiny_images/figures/nearest-reconstructions.png)" in text
  assert "checkerboard" in text and "[images/s](reproductions/tiny_images/examples_per_second.png)" in text


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("name", list(reproductions.ABLATIONS))
def test_every_claim_names_runs_and_levels_its_reproduction_defines(name, quick):
  """A misspelt run or level in a claim would only read "not measured here" after hours of training."""
  ablation = reproductions.ABLATIONS[name]
  runs = ablation.runs(ablation.base_config(quick))
  names = {run.name for run in runs}
  for claim in ablation.claims:
    compared = [getattr(claim.test, "run", None)]  # Exceeds' `than` is a metric of its run, not a run
    compared += [claim.test.than] if isinstance(claim.test, (Lower, HoldsWithLength)) else []
    for run in compared:
      assert run in names | {None}, f"{claim.claim!r}: no run {run!r}"
    for levels in (getattr(claim.test, "levels", None), getattr(claim.test, "baseline", None)):
      if levels is not None:
        assert any(levels.items() <= run.levels.items() for run in runs), f"{claim.claim!r}: no run at {levels}"
