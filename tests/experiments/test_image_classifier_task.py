"""The image classifier task: it trains on the 8x8 digits through the one trainer, its evaluation matches the restored
model's predictions over the whole test split, it reads no data until batches are asked for, and impossible settings
are one-line errors before anything runs."""
import dataclasses

import jax
import ml_collections
import numpy as np
import pytest
import scipy.special

from configs import image_classifier as classifier_configs
from decoders.errors import ConfigError
from experiments import train
from experiments.data import images
from experiments.tasks.image_classifier import ImageClassifierTask


def _config(data_dir, variant="test"):
  config = classifier_configs.get_config(variant)
  config.data.data_dir = data_dir
  return config


def test_it_trains_and_its_evaluation_is_the_restored_models_over_the_test_split(data_dir, tmp_path):
  config = _config(data_dir)
  task, trainer, _ = train.setup(config, str(tmp_path))
  initial = trainer.evaluate(trainer.init(jax.random.key(config.seed)).params, task.eval_batches())

  final = train.train_and_evaluate(config, str(tmp_path))

  assert final["loss"] < initial["loss"] - 0.1 and final["accuracy"] > max(initial["accuracy"], 0.25)  # 10 classes
  restored_task, _, state = train.restore_for_inference(config, str(tmp_path))
  assert int(state.step) == config.train.num_steps
  test = images.DATASETS["sklearn_digits"].load(data_dir, "test")
  assert len(test["label"]) % config.data.eval_batch_size  # the last eval batch is padded
  logits = np.asarray(restored_task.model.apply({"params": state.params}, test["image"]), np.float64)
  nll = -scipy.special.log_softmax(logits, axis=-1)[np.arange(len(logits)), test["label"]]
  np.testing.assert_allclose(final["loss"], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(final["accuracy"], np.mean(logits.argmax(-1) == test["label"]), rtol=1e-6)


def test_the_task_reads_its_data_only_when_batches_are_asked_for(data_dir, monkeypatch):
  digits = images.DATASETS["sklearn_digits"]
  reads = []

  def counting_load(directory, split):
    reads.append(split)
    return digits.load(directory, split)

  monkeypatch.setitem(images.DATASETS, "sklearn_digits", dataclasses.replace(digits, load=counting_load))
  task = ImageClassifierTask(_config(data_dir))
  task.init_params(jax.random.key(0))
  assert reads == []  # restoring a classifier for its features reads no data
  batch = task.eval_batches()[0]
  assert reads == ["test"] and batch["image"].shape == (64, 8, 8, 1) and batch["label"].dtype == np.int32


@pytest.mark.parametrize("variant", ["", "mnist", "test", "mnist,test"])
def test_every_variant_checks(variant):
  assert train.check_config(classifier_configs.get_config(variant)) is ImageClassifierTask


def test_an_unknown_variant_names_the_variants():
  with pytest.raises(ValueError, match="unknown variant 'cifar10' of image_classifier; expected one of"):
    classifier_configs.get_config("cifar10")


CASES = {  # overrides: a fragment of the message
    (("data.name", "shapes"),): "data.name='shapes' must be one of ('sklearn_digits', 'fashion_mnist', 'mnist')",
    (("model.channels", (4, 8, 16, 32)),): "images of 8x8 cannot be max-pooled len(model.channels)=4 times",
    (("model.feature_dim", 0),): "model.feature_dim=0 must be a positive integer",
    (("model.dropout", 0.1),): "model.dropout is not a setting that anything reads",
}


@pytest.mark.parametrize("overrides", sorted(CASES))
def test_an_impossible_setting_is_one_line_before_anything_runs(overrides):
  tree = classifier_configs.get_config("test").to_dict()
  for key, value in overrides:
    section, name = key.split(".")
    tree[section][name] = value
  with pytest.raises(ConfigError) as raised:
    train.check_config(ml_collections.ConfigDict(tree))
  assert CASES[overrides] in str(raised.value) and "\n" not in str(raised.value)
