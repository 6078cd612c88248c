"""End to end: the one training loop on the tiny LM and on the (different) autoencoder task."""
import glob
import gzip
import json
import os

import jax
import numpy as np
import pytest

from experiments import train
from experiments.errors import DivergedError
from tests.conftest import checkpoint_names


def test_tiny_lm_trains_logs_and_checkpoints(trained_lm):
  workdir, final = trained_lm  # configs/shakespeare_char.py:test, 6 steps on 8 virtual devices
  assert np.isfinite(final["loss"]) and final["loss"] > 0
  np.testing.assert_allclose(final["bits_per_token"], final["loss"] / np.log(2))

  events = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  assert len(events) == 1
  with open(events[0], "rb") as f:
    content = f.read()
  assert b"train/loss" in content and b"eval/loss" in content

  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  train_steps = [r["step"] for r in rows if r["split"] == "train"]
  eval_rows = [r for r in rows if r["split"] == "eval"]
  assert train_steps == [2, 3, 4, 6]  # log_every=2, and before the checkpoint at step 3 (checked first)
  assert [r["step"] for r in eval_rows] == [4, 6]  # eval_every=4, plus the final evaluation
  assert eval_rows[-1]["loss"] == final["loss"]
  assert all(np.isfinite(r["loss"]) and r["tokens_per_second"] > 0 for r in rows if r["split"] == "train")

  assert checkpoint_names(workdir) == ["3", "6"]  # checkpoint_every=3


def test_a_finished_run_resumes_at_its_last_step_without_training(trained_lm, trained_lm_copy, lm_config, capsys):
  final, copy = trained_lm[1], trained_lm_copy
  again = train.train_and_evaluate(lm_config, copy)
  assert "resuming from the checkpoint at step 6" in capsys.readouterr().out
  assert again["loss"] == final["loss"]
  with open(os.path.join(copy, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [(row["step"], row["split"]) for row in map(json.loads, f)]
  assert rows.count((6, "eval")) == 1  # the final evaluation, written again, is not there twice
  assert len(rows) == len(set(rows))


def test_autoencoder_trains_with_the_same_trainer(autoencoder_config, tmp_path):
  workdir = str(tmp_path)
  task, trainer, _ = train.setup(autoencoder_config, workdir)
  initial = trainer.evaluate(trainer.init(jax.random.key(autoencoder_config.seed)).params, task.eval_batches())

  final = train.train_and_evaluate(autoencoder_config, workdir)  # 60 steps from that same init

  # Reconstruction cross-entropy falls from ~44 to ~27 nats per image in 60 steps: a
  # 20 % drop cannot come from noise, only from training.
  assert final["loss"] < 0.8 * initial["loss"]
  assert final["mse"] < initial["mse"]
  assert checkpoint_names(workdir) == ["30", "60"]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39 -> inf, on purpose
def test_no_checkpoint_ever_holds_a_non_finite_value(lm_config, tmp_path):
  # 1e39 is a finite Python float, so the config accepts it, but float32 rounds it to
  # inf: the first update makes the parameters NaN while that step's loss is finite.
  lm_config.optimizer.learning_rate = 1e39
  lm_config.optimizer.warmup_steps = 0
  lm_config.train.update(checkpoint_every=1, log_every=1)
  with pytest.raises(DivergedError, match="the parameters or optimizer state .* became NaN/Inf at step 1; .*none yet"):
    train.train_and_evaluate(lm_config, str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == []


def test_a_profile_of_the_asked_steps_is_written_into_the_workdir(lm_config, tmp_path, capsys):
  lm_config.train.profile_steps = 2
  train.train_and_evaluate(lm_config, str(tmp_path))
  assert f"profile of steps 3-4 written to {tmp_path / 'profile'}" in capsys.readouterr().out
  traces = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*"))
  assert {os.path.basename(path).split(".", 1)[1] for path in traces} >= {"xplane.pb", "trace.json.gz"}
  trace = next(path for path in traces if path.endswith(".trace.json.gz"))
  with gzip.open(trace) as f:
    names = [event.get("name", "") for event in json.load(f)["traceEvents"]]
  assert names.count("train") == 2  # the two step annotations, nothing from the steps around them
  assert any("Execute (jit__train_step)" in name for name in names)  # and the compiled step itself ran inside
