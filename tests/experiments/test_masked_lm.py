"""The masked-LM task: BERT's 15 % / 80-10-10 masking, loss at the chosen positions only, resumable data, one run."""
import jax
import ml_collections
import numpy as np
import pytest

from configs import bert
from decoders.errors import ConfigError
from decoders.models import encoder
from experiments import inspection, train
from experiments.tasks import masked_lm
from tests.experiments.test_config_checks import _check_fails, _with


def _config(data_dir) -> ml_collections.ConfigDict:
  config = bert.get_config("test")
  config.data.data_dir = data_dir
  return config


@pytest.fixture(scope="module")
def task(data_dir):
  return masked_lm.MaskedLMTask(_config(data_dir))


def test_masking_chooses_15_percent_then_masks_80_randomises_10_keeps_10():
  masking = masked_lm.Masking(0.15, 0.8, 0.1, mask_id=1000, num_tokens=1000)
  rows = np.random.default_rng(0).integers(0, 1000, (2000, 100))
  out = masking(rows, np.random.default_rng(1))
  chosen = out["chosen"].astype(bool)
  np.testing.assert_array_equal(chosen.sum(axis=1), 15)  # round(0.15 x 100) in every row, as BERT's data generator
  np.testing.assert_array_equal(out["targets"], rows)
  np.testing.assert_array_equal(out["inputs"][~chosen], rows[~chosen])  # only chosen positions change
  inputs, targets = out["inputs"][chosen], rows[chosen]
  masked = np.mean(inputs == 1000)
  kept = np.mean(inputs == targets)  # includes the 1 in 1,000 random draws that hit the original
  randomised = np.mean((inputs != 1000) & (inputs != targets))
  # 30,000 chosen positions: a standard error of 0.2 % on the 80 % and 0.17 % on each 10 %.
  assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(randomised - 0.1) < 0.01
  assert inputs[inputs != 1000].max() < 1000  # a random token is never [MASK]


def test_the_loss_counts_only_the_chosen_positions(task):
  params = jax.jit(task.init_params)(jax.random.key(0))
  batch = task.train_batches(0, 0, 1)[0]
  loss = jax.jit(task.loss_fn, static_argnums=3)
  base, _ = loss(params, batch, jax.random.key(1), False)
  chosen = batch["chosen"].astype(bool)

  unchosen_changed = {**batch, "targets": np.where(chosen, batch["targets"], 0)}
  np.testing.assert_array_equal(loss(params, unchosen_changed, jax.random.key(1), False)[0], base)
  chosen_changed = {**batch, "targets": np.where(chosen, 0, batch["targets"])}
  assert loss(params, chosen_changed, jax.random.key(1), False)[0] != base


def test_training_batches_depend_only_on_seed_and_position_whatever_the_processes(task):
  batches = task.train_batches(0, 0, 1)
  again = task.train_batches(0, 0, 1)
  for name in ("inputs", "targets", "chosen"):
    np.testing.assert_array_equal(batches[7][name], again[7][name])  # what a resumed run reads at position 7
  assert not np.array_equal(batches[7]["chosen"], batches[8]["chosen"])
  assert not np.array_equal(batches[7]["chosen"], task.train_batches(1, 0, 1)[7]["chosen"])
  # Two processes read the rows of the same global batch, masked the same way.
  halves = [task.train_batches(0, index, 2)[7] for index in range(2)]
  for name in ("inputs", "targets", "chosen"):
    np.testing.assert_array_equal(halves[0][name], batches[7][name][0::2])
    np.testing.assert_array_equal(halves[1][name], batches[7][name][1::2])


def test_evaluation_masks_the_validation_windows_the_same_way_whatever_the_seed(task, data_dir):
  config = _config(data_dir)
  config.seed = 1
  first, second = task.eval_batches(), masked_lm.MaskedLMTask(config).eval_batches()
  assert len(first) == len(second) > 1
  for name in ("inputs", "targets", "chosen", "weight"):
    np.testing.assert_array_equal(np.concatenate([b[name] for b in first]), np.concatenate([b[name] for b in second]))


def test_a_tiny_run_trains_evaluates_and_fills_in_the_prompt(task, data_dir, tmp_path, capsys):
  config = _config(data_dir)
  final = train.train_and_evaluate(config, str(tmp_path))

  # An untrained model scores about log(83) nats (uniform over the 82 characters and [MASK]);
  # six steps take it below, to about 4.28.
  assert final["loss"] < np.log(83) - 0.05 and 0 < final["accuracy"] <= 1
  assert final["predicted_tokens"] == 2 * (len(task.validation_text) // 16)  # round(0.15 x 16) in each 16-character window
  prompt = config.sample.prompt
  sample = capsys.readouterr().out.split("sample:\n", 1)[1].rstrip("\n")
  assert len(sample) == len(prompt) and "_" not in sample
  assert all(s == p for s, p in zip(sample, prompt) if p != "_")  # only the masks are filled in


# (overrides of configs/bert.py:test, fragments of the message): checked before any data is read.
CASES = {
    "fractions above 1": ({"data.mask_token_fraction": 0.8, "data.random_token_fraction": 0.3}, "data.mask_token_fraction=0.8"),
    "no masking": ({"data.mask_rate": 0.0}, "data.mask_rate=0.0"),
    "a mask of two characters": ({"data.mask_char": "[]"}, "data.mask_char='[]'"),
    "a prompt with nothing to fill in": ({"sample.prompt": "ROMEO:"}, "sample.prompt='ROMEO:'", "data.mask_char='_'"),
    "a prompt longer than the context": ({"sample.prompt": "_" * 17}, "sample.prompt=", "data.context_length=16"),
    "a decoder preset": ({"model.preset": "gpt2"}, "model.preset='gpt2'"),
    "a sliding window": ({"model.sliding_window": 8}, "model.sliding_window=8"),
    "negative token types": ({"model.type_vocab_size": -1}, "model.type_vocab_size=-1"),
    "heads not divisible by tensor": ({"mesh.data": 1, "mesh.fsdp": 2, "mesh.tensor": 4}, "model.num_heads=2", "mesh.tensor=4"),
    "context beyond max_len": ({"data.context_length": 17}, "data.context_length=17", "model.max_len=16"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_impossible_values_are_named_before_anything_runs(case):
  overrides, *fragments = CASES[case]
  config = bert.get_config("test")
  for key, value in overrides.items():
    config = _with(config, key, value)
  _check_fails(config, *fragments)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("data.mask_char", "e", "data.mask_char='e' occurs in the text"),
        ("sample.prompt", "ROMEO: _ ~", "sample.prompt='ROMEO: _ ~' has characters '~'"),
    ],
)
def test_a_mask_or_prompt_that_the_data_contradicts_is_named(data_dir, key, value, fragment):
  config = _with(_config(data_dir), key, value)
  with pytest.raises(ConfigError, match=fragment):
    masked_lm.MaskedLMTask(config)


# Hugging Face's BertForMaskedLM for bert-base-uncased and bert-large-uncased (tests/decoders/models/test_encoder.py
# derives these from BertModel's published counts).
BERT_FOR_MASKED_LM = {"bert-base": 109_514_298, "bert-large": 335_174_458}


@pytest.mark.parametrize("variant", sorted(bert.PUBLISHED_ENCODERS))
def test_a_published_variant_has_its_presets_shape_and_inspecting_it_reads_no_data(variant):
  config = bert.get_config(variant)
  config.data.data_dir = config.data.source_dir = "/nonexistent"
  preset = bert.PUBLISHED_ENCODERS[variant]
  model = encoder.preset(preset)
  assert masked_lm.model_config(config, data_vocab_size=83) == model and config.data.context_length == 512
  summary = inspection.summarize(config)  # counted from the abstract parameter tree
  assert summary.total == model.num_params(include_embeddings=True) == BERT_FOR_MASKED_LM[preset]
  assert summary.non_embedding == model.num_params()
  assert summary.flops_per_unit == model.flops_per_token(512)
