"""The translation task end to end on a tiny fake LibreOffice corpus: both families train, evaluate BLEU, translate and
draw their attention through the one trainer; its schedules, scores and errors against independent references."""
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import sacrebleu

from configs import translation as translation_config
from decoders.errors import ConfigError
from experiments import train
from experiments.tasks import translation
from tests.experiments.data.test_parallel import write_fake_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """(source dir, TFDS data dir) of the fake corpus; the dataset and vocabulary are built by the first run."""
  root = tmp_path_factory.mktemp("fake_translation")
  return write_fake_corpus(str(root / "source")), str(root / "tfds")


def tiny_config(corpus, family: str = "transformer"):
  config = translation_config.get_config(f"{family},test")
  config.data.source_dir, config.data.data_dir = corpus
  return config


@pytest.fixture(scope="module", params=["transformer", "rnn", "prefix_lm"])
def trained(request, corpus, tmp_path_factory):
  """(config, workdir, final metrics) of a few steps of each family."""
  config, workdir = tiny_config(corpus, request.param), str(tmp_path_factory.mktemp(request.param))
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_both_families_train_and_report_loss_bleu_and_chrf_by_length(trained):
  config, _, final = trained
  assert math.isfinite(final["loss"]) and final["perplexity"] == pytest.approx(math.exp(final["loss"]), rel=1e-5)
  assert 0.0 <= final["bleu"] <= 100.0 and 0.0 <= final["chrf"] <= 100.0
  assert final["sentences"] == config.evaluation.sentences
  assert any(name.startswith("bleu_words_") for name in final)


def test_a_trained_model_translates_and_draws_its_attention(trained):
  config, workdir, _ = trained
  text = train.sample(config, workdir, ["Open the file menu.", "Close the window."])
  assert text.startswith("Open the file menu.\n  -> ") and "\nClose the window.\n  -> " in text  # a few steps: any words
  if config.model.architecture == "prefix_lm":
    with pytest.raises(ConfigError, match="has no attention over a separate source"):
      train.attention(config, workdir, ["Open the file menu."])
    return
  (path,) = train.attention(config, workdir, ["Open the file menu."])
  assert os.path.getsize(path) > 0 and path.endswith(os.path.join("attention", "0.png"))


def test_alignment_rows_are_distributions_over_the_source(trained):
  config, workdir, _ = trained
  if config.model.architecture == "prefix_lm":
    pytest.skip("a decoder-only model has no separate source to align with")
  task, _, state = train.restore_for_inference(config, workdir)
  source, target, weights = task.alignment(state.params, "Save the selected table.")
  assert weights.shape == (len(target), len(source))
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


def test_a_source_longer_than_the_model_takes_is_truncated_with_a_warning(trained, capsys):
  config, workdir, _ = trained
  task, _, state = train.restore_for_inference(config, workdir)
  long = " ".join(["the file menu opens"] * 20) + "."
  (translated,) = task.translate(state.params, [long])
  assert isinstance(translated, str)
  assert f"1 of 1 sources exceed data.max_source_len={config.data.max_source_len}" in capsys.readouterr().err
  with pytest.raises(ConfigError, match="an empty source sentence"):
    task.translate(state.params, ["  "])
  # Characters the vocabulary never saw are no error: SentencePiece's byte fallback spells them in UTF-8 bytes.
  assert task.vocabulary.decode(task.encode_source("Open ☃ 漢字.")) == "Open ☃ 漢字."
  assert isinstance(task.translate(state.params, ["Open ☃ 漢字."])[0], str)
  if config.model.architecture != "prefix_lm":
    with pytest.raises(ConfigError, match="exceeds data.max_source_len"):
      task.alignment(state.params, long)


@pytest.mark.parametrize("architecture", ["decoder_only", "prefix_lm"])
def test_a_decoder_only_model_reads_each_source_then_its_target_as_one_sequence(corpus, architecture):
  task = translation.TranslationTask(tiny_config(corpus, architecture))
  params = task.init_params(jax.random.key(0))
  batch = {name: jnp.asarray(array) for name, array in task.eval_batches()[0].items()}
  logits = task._logits(params, batch)  # [batch, target length, vocab]
  for row in (0, 3):
    length = int(batch["encoder_lengths"][row])
    sequence = jnp.concatenate([batch["encoder_tokens"][row, :length], batch["decoder_tokens"][row]])[None]
    prefix = jnp.array([length + 1]) if architecture == "prefix_lm" else None  # source, EOS, BOS
    expected = task.model.apply({"params": params}, sequence, prefix_lengths=prefix)[0, length:]
    np.testing.assert_allclose(logits[row], expected, rtol=2e-5, atol=2e-5)


def test_training_batches_carry_their_step(corpus):
  task = translation.TranslationTask(tiny_config(corpus))
  batches = task.train_batches(seed=0, process_index=0, process_count=1)
  widths = set()
  for step in range(12):
    batch = batches[step]
    source, target = task.bucket_lengths()[list(task.bucket_lengths()).index(
        (batch["encoder_tokens"].shape[1], batch["targets"].shape[1]))]
    widths.add(source)
    assert np.all(batch["step"] == step) and len(batch["targets"]) == 8
    assert np.all(batch["encoder_lengths"] <= source) and np.all(batch["target_weights"].sum(1) <= target)
    # The decoder reads BOS + target and predicts target + EOS: the targets are its inputs shifted by one.
    inner = batch["target_weights"][:, 1:] > 0  # target positions followed by another: all but the EOS
    np.testing.assert_array_equal(batch["decoder_tokens"][:, 1:][inner], batch["targets"][:, :-1][inner])
    assert np.all(batch["decoder_tokens"][:, 0] == 2) and np.all(batch["targets"][np.arange(8), inner.sum(1)] == 3)
  assert len(widths) > 1  # the fake corpus's pairs fall in more than one bucket


@pytest.mark.parametrize("schedule, k, c, floor, expected", [
    ("always", 1.0, 0.0, 0.0, lambda i: 1.0),
    ("never", 1.0, 0.0, 0.0, lambda i: 0.0),
    ("linear", 1.0, 1e-3, 0.25, lambda i: max(0.25, 1.0 - 1e-3 * i)),
    ("exponential", 0.999, 0.0, 0.0, lambda i: 0.999**i),
    ("inverse_sigmoid", 100.0, 0.0, 0.0, lambda i: 100.0 / (100.0 + math.exp(i / 100.0))),
])
def test_teacher_forcing_decays_as_bengio_et_al_write_it(schedule, k, c, floor, expected):
  objective = translation_config.get_config("rnn").objective
  objective.update(teacher_forcing=schedule, decay_k=k, decay_c=c, min_teacher_forcing=floor)
  for step in (0, 10, 500, 2000):
    assert float(translation.teacher_forcing_probability(objective, jnp.int32(step))) == pytest.approx(
        expected(step), rel=1e-4, abs=1e-7  # float32 powers
    )


def test_bleu_per_length_bucket_is_sacrebleu_on_that_bucket():
  sources = ["a b", "a b c d e f g h i j k l", "one two three", "x " * 25]
  hypotheses = ["das ist gut", "ein langer satz hier", "eins zwei drei", "sehr lang"]
  references = ["das ist gut", "ein langer satz", "eins zwei vier", "sehr sehr lang"]
  scores = translation.score_translations(sources, hypotheses, references)
  assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
  short = [0, 2]  # 2 and 3 words: the bucket of 0-9 words
  assert scores["bleu_words_0_9"] == pytest.approx(
      sacrebleu.corpus_bleu([hypotheses[i] for i in short], [[references[i] for i in short]]).score
  )
  assert scores["count_words_10_19"] == 1 and scores["count_words_20_29"] == 1


@pytest.mark.parametrize("overrides, match", [
    ({"objective.teacher_forcing": "linear"}, "objective.teacher_forcing='linear' is for model.architecture='rnn'"),
    ({"model.cell": "lstm"}, "model.cell is not a field of a model.architecture='transformer' model"),
    ({"model.preset": "bahdanau2015"}, "model.preset='bahdanau2015' is not a transformer preset"),
    ({"model.max_len": 8}, "model.max_len=8 is shorter than the 24 tokens data.max_source_len/max_target_len give"),
    ({"variant": "prefix_lm,test", "model.max_len": 40},
     "model.max_len=40 is shorter than the 48 tokens"),  # a decoder-only model reads both sides as one sequence
    ({"model.vocab_size": 100}, "model.vocab_size=100: the vocabulary is the data's"),
    ({"sample.prompt": " "}, "sample.prompt=' ' is empty"),
    ({"data.name": "wmt14"}, "data.name"),
])
def test_impossible_configs_are_one_line_errors_before_any_data_is_read(overrides, match):
  overrides = dict(overrides)
  config = translation_config.get_config(overrides.pop("variant", "test"))
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  with pytest.raises(ConfigError, match=match) as raised:
    train.check_config(config)
  assert "\n" not in str(raised.value)


def test_an_exponential_decay_needs_k_below_one():
  config = translation_config.get_config("rnn,test")
  config.objective.update(teacher_forcing="exponential", decay_k=1.5)
  with pytest.raises(ConfigError, match="objective.decay_k=1.5 must be < 1"):
    train.check_config(config)


def test_beam_widths_add_a_bleu_each_and_width_1_is_the_greedy_bleu(trained):
  config, workdir, _ = trained
  if config.model.architecture != "transformer":
    pytest.skip("one family shows it")
  config = ml_collections.ConfigDict(config.to_dict())
  config.evaluation.beam_widths = (1, 2)
  task, _, state = train.restore_for_inference(config, workdir)
  metrics = task.generation_metrics(state.params)
  assert metrics["bleu_beam_1"] == metrics["bleu"] and 0.0 <= metrics["bleu_beam_2"] <= 100.0
