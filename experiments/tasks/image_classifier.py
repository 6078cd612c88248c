"""Image classification with a small CNN (decoders/models/classifier.py): cross-entropy loss, accuracy in evaluation.

Its purpose is evaluation: trained on the data set a generative model learns, its penultimate layer is the feature
space in which experiments/image_eval.py measures the Fréchet distance between real and generated images (no
Inception-v3 weights can be had offline; Heusel et al. 2017 use its pool3 features).

The data set is read when batches are first asked for, not when the task is built: restoring a trained classifier
to extract features (experiments/image_eval.py) builds the task and needs only its model.
"""
import functools

import jax.numpy as jnp
import numpy as np

from decoders import losses
from decoders.models import classifier
from experiments.config_rules import fields_of, one_of
from experiments.data import pipeline
from experiments.data.images import DATASETS
from experiments.tasks.base import Task

CLASSIFICATION_SETS = tuple(name for name, dataset in DATASETS.items() if dataset.targets == "label")


def model_config(config) -> classifier.ClassifierConfig:
  """The model of `config.model`, its image shape and classes the data set's."""
  dataset = DATASETS[config.data.name]
  return classifier.ClassifierConfig(image_shape=dataset.image_shape, num_classes=dataset.num_classes, **config.model)


class ImageClassifierTask(Task):
  unit = "examples"
  config_schema = {
      "data": {"name": one_of(CLASSIFICATION_SETS)},
      # The data set sets the image shape and the classes; ClassifierConfig checks ranges when built.
      "model": fields_of(classifier.ClassifierConfig, exclude=("image_shape", "num_classes")),
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    del mesh_shape
    model_config(config)

  def __init__(self, config):
    super().__init__(config)
    self.dataset = DATASETS[config.data.name]
    self.model = classifier.Classifier(model_config(config))

  @functools.cached_property
  def train_split(self) -> dict[str, np.ndarray]:
    return self.dataset.load(self.config.data.data_dir, self.dataset.train_split)

  @functools.cached_property
  def eval_split(self) -> dict[str, np.ndarray]:
    return self.dataset.load(self.config.data.data_dir, self.dataset.eval_split)

  def init_params(self, rng):
    return self.model.init(rng, jnp.zeros((1, *self.dataset.image_shape)))["params"]

  def loss_fn(self, params, batch, rng, train):
    del rng, train  # no dropout, no augmentation: training and evaluation run the same network
    logits = self.model.apply({"params": params}, batch["image"])
    summed, count = losses.cross_entropy(logits, batch["label"])
    loss = summed / count
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == batch["label"])
    return loss, {"loss": loss, "accuracy": accuracy}

  def eval_fn(self, params, batch):
    weight = batch["weight"]
    logits = self.model.apply({"params": params}, batch["image"])
    summed, examples = losses.cross_entropy(logits, batch["label"], weight)
    correct = jnp.sum(jnp.where(jnp.argmax(logits, axis=-1) == batch["label"], weight, 0.0))
    return {"loss": summed, "correct": correct, "examples": examples}

  def summarize_eval(self, sums):
    return {"loss": sums["loss"] / sums["examples"], "accuracy": sums["correct"] / sums["examples"]}

  def train_batches(self, seed, process_index, process_count):
    images, labels = self.train_split["image"], self.train_split["label"]
    return pipeline.training_batches(
        pipeline.grain.MapDataset.range(len(images)), self.config.data.batch_size, seed, process_index, process_count,
        batch_fn=lambda rows: {"image": images[np.asarray(rows)], "label": labels[np.asarray(rows)]},
    )

  def eval_batches(self):
    return pipeline.padded_batches(
        {"image": self.eval_split["image"], "label": self.eval_split["label"]}, self.config.data.eval_batch_size
    )

  def units_per_step(self):
    return self.config.data.batch_size
