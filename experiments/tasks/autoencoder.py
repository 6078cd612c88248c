"""Image autoencoding: reconstruct the input through a small latent (no tokens; throughput in examples/s)."""
import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from decoders.models import autoencoder
from experiments.config_rules import fields_of, one_of
from experiments.data import digits, pipeline
from experiments.tasks.base import ModelDescription, Task

@dataclasses.dataclass(frozen=True)
class ImageDataset:
  load: Callable[[str, str], np.ndarray]  # (data_dir, split) -> images [n, height, width, channels]
  train_split: str
  eval_split: str
  image_shape: tuple[int, int, int]  # known without reading the data, so the model is checked first


DATASETS = {"sklearn_digits": ImageDataset(digits.load_split, "train", "test", digits.IMAGE_SHAPE)}


def model_config(config) -> autoencoder.AutoencoderConfig:
  height, _, channels = DATASETS[config.data.name].image_shape
  return autoencoder.AutoencoderConfig(image_size=height, image_channels=channels, **config.model)


class AutoencoderTask(Task):
  unit = "examples"
  config_schema = {
      "data": {"name": one_of(DATASETS)},
      # The image size and channels come from the data set; AutoencoderConfig checks the rest when built.
      "model": fields_of(autoencoder.AutoencoderConfig, exclude=["image_size", "image_channels"]),
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    model_config(config)

  @classmethod
  def describe(cls, config):
    model = autoencoder.Autoencoder(model_config(config))  # the image shape is known without the data
    return ModelDescription(init_params=functools.partial(_init_params, model, DATASETS[config.data.name].image_shape))

  def __init__(self, config):
    super().__init__(config)
    dataset = DATASETS[config.data.name]
    self.train_images = dataset.load(config.data.data_dir, dataset.train_split)
    self.eval_images = dataset.load(config.data.data_dir, dataset.eval_split)
    self.model = autoencoder.Autoencoder(model_config(config))

  def init_params(self, rng):
    return _init_params(self.model, self.train_images.shape[1:], rng)

  def _reconstruction_error(self, params, images):
    """Per-image binary cross-entropy summed over pixels (intensities in [0, 1] as targets)."""
    logits = self.model.apply({"params": params}, images)
    per_pixel = -(images * jax.nn.log_sigmoid(logits) + (1 - images) * jax.nn.log_sigmoid(-logits))
    squared = jnp.square(nn.sigmoid(logits) - images)
    return per_pixel.sum(axis=(1, 2, 3)), squared.mean(axis=(1, 2, 3))

  def loss_fn(self, params, batch, rng, train):
    del rng, train
    bce, mse = self._reconstruction_error(params, batch["image"])
    return bce.mean(), {"loss": bce.mean(), "mse": mse.mean()}

  def eval_fn(self, params, batch):
    bce, mse = self._reconstruction_error(params, batch["image"])
    weight = batch["weight"]
    return {"bce": (bce * weight).sum(), "mse": (mse * weight).sum(), "examples": weight.sum()}

  def summarize_eval(self, sums):
    return {"loss": sums["bce"] / sums["examples"], "mse": sums["mse"] / sums["examples"]}

  def train_batches(self, seed, process_index, process_count):
    images = self.train_images
    examples = pipeline.grain.MapDataset.range(len(images)).map(lambda i: images[i])
    return pipeline.training_batches(
        examples, self.config.data.batch_size, seed, process_index, process_count, batch_fn=lambda xs: {"image": np.stack(xs)}
    )

  def eval_batches(self):
    return pipeline.padded_batches({"image": self.eval_images}, self.config.data.eval_batch_size)

  def units_per_step(self):
    return self.config.data.batch_size


def _init_params(model: autoencoder.Autoencoder, image_shape: tuple[int, ...], rng: jax.Array):
  return model.init(rng, jnp.zeros((1, *image_shape)))["params"]
