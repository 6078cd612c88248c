"""Semantic segmentation with a U-Net (Ronneberger et al. 2015): a class for every pixel; throughput in examples/s.

Loss = per-pixel cross-entropy + objective.dice_weight x soft Dice loss (Milletari et al. 2016, eq. 1), both the
means over the batch of per-image values (decoders/segmentation.py). Training images and their masks are turned
by the same random symmetry of the square (flips and, for square images, quarter turns), drawn from the step's
rng, so a resumed run sees exactly the batches an uninterrupted one would.

Evaluation sums per-class intersection and union counts over the whole set; `summarize_eval` turns them into
mean IoU and mean Dice over the foreground classes (1 .. classes - 1: class 0 is the background, whose large
easy area would flatter both), leaving out a class found nowhere, and pixel accuracy over all classes.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from decoders import segmentation
from decoders.errors import ConfigError
from decoders.models import unet
from experiments.config_rules import Rule, fields_of, number
from experiments.data import pipeline
from experiments.data.images import DATASETS, ImageDataset
from experiments.tasks.base import ModelDescription, Task

# Set by the data set (shape, classes) or meaningless here (segmentation takes no conditioning).
FIGURE_COLUMNS = 8  # test images in the figure
_NOT_CONFIGURED = ("image_height", "image_width", "image_channels", "out_channels", "conditioning_dim")


def segmentation_dataset(name: str) -> ImageDataset:
  """The data set `data.name` names, if its targets are per-pixel masks; one-line ConfigError otherwise."""
  masked = sorted(key for key, dataset in DATASETS.items() if dataset.targets == "mask")
  if name not in DATASETS:
    raise ConfigError(f"data.name={name!r} is not an image data set; segmentation reads one of {masked}")
  if DATASETS[name].targets != "mask":
    raise ConfigError(
        f"data.name={name!r} is a classification set (one label per image); segmentation reads one of {masked}"
    )
  return DATASETS[name]


def model_config(config) -> unet.UNetConfig:
  dataset = segmentation_dataset(config.data.name)
  height, width, channels = dataset.image_shape
  return unet.UNetConfig(
      image_height=height, image_width=width, image_channels=channels, out_channels=dataset.num_classes, **config.model
  )


def random_symmetries(rng: jax.Array, images: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each image [h, w, c] and its mask [h, w] flipped up-down, left-right and (square images) transposed, each
  with probability 1/2: the three together reach all 8 symmetries of the square, 90° turns included."""
  square = images.shape[1] == images.shape[2]

  def one(key, image, mask):
    vertical, horizontal, transpose = jax.random.bernoulli(key, shape=(3,))

    def move(x):
      x = jnp.where(vertical, x[::-1], x)
      x = jnp.where(horizontal, x[:, ::-1], x)
      return jnp.where(transpose, jnp.swapaxes(x, 0, 1), x) if square else x

    return move(image), move(mask)

  return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images, masks)


class SegmentationTask(Task):
  unit = "examples"
  config_schema = {
      # data.name is checked in check_config against the data sets registered then (tests register their own).
      "data": {"augment": Rule(bool, "True or False")},
      # UNetConfig checks ranges and choices itself when it is built.
      "model": fields_of(unet.UNetConfig, exclude=_NOT_CONFIGURED),
      "objective": {"dice_weight": number(0)},  # loss = cross-entropy + dice_weight x Dice loss
  }

  @classmethod
  def check_config(cls, config, mesh_shape):
    model_config(config)

  @classmethod
  def describe(cls, config):
    model = unet.UNet(model_config(config))  # the image shape is known without the data
    shape = DATASETS[config.data.name].image_shape
    return ModelDescription(init_params=functools.partial(_init_params, model, shape))

  def __init__(self, config):
    super().__init__(config)
    dataset = segmentation_dataset(config.data.name)
    self.image_shape, self.num_classes = dataset.image_shape, dataset.num_classes
    self.train_split = dataset.load(config.data.data_dir, dataset.train_split)
    self.eval_split = dataset.load(config.data.data_dir, dataset.eval_split)
    self.model = unet.UNet(model_config(config))

  def init_params(self, rng):
    return _init_params(self.model, self.image_shape, rng)

  def _losses(self, logits, masks):
    """Per-image cross-entropy and Dice loss, [b] each."""
    return segmentation.pixel_cross_entropy(logits, masks), segmentation.soft_dice_loss(logits, masks)

  def loss_fn(self, params, batch, rng, train):
    images, masks = batch["image"], batch["mask"]
    augment_rng, dropout_rng = jax.random.split(rng)
    if train and self.config.data.augment:
      images, masks = random_symmetries(augment_rng, images, masks)
    logits = self.model.apply({"params": params}, images, train=train, rngs={"dropout": dropout_rng})
    cross_entropy, dice = self._losses(logits, masks)
    loss = cross_entropy.mean() + self.config.objective.dice_weight * dice.mean()
    return loss, {"loss": loss, "cross_entropy": cross_entropy.mean(), "dice_loss": dice.mean()}

  def eval_fn(self, params, batch):
    weight, masks = batch["weight"], batch["mask"]
    logits = self.model.apply({"params": params}, batch["image"])
    cross_entropy, dice = self._losses(logits, masks)
    intersection, union = segmentation.intersection_and_union(logits, masks, weight)
    sums = {
        "cross_entropy": (cross_entropy * weight).sum(), "dice_loss": (dice * weight).sum(), "examples": weight.sum()
    }
    for label in range(self.num_classes):  # the trainer adds up scalars: one key per class and count
      sums[f"intersection_{label}"], sums[f"union_{label}"] = intersection[label], union[label]
    return sums

  def figures(self, params, rng):
    """Eight test images (rows: the image, its true mask, the predicted mask; a mask's classes as grey levels)."""
    del rng
    images, masks = self.eval_split["image"][:FIGURE_COLUMNS], self.eval_split["mask"][:FIGURE_COLUMNS]
    predicted = np.asarray(jnp.argmax(self.model.apply({"params": params}, images), axis=-1))
    grey = lambda mask: np.repeat(mask[..., None] / (self.num_classes - 1), images.shape[-1], axis=-1)  # noqa: E731
    return {"segmentations": np.stack([images, grey(masks), grey(predicted)])}

  def summarize_eval(self, sums):
    examples = sums["examples"]
    intersection = np.array([sums[f"intersection_{label}"] for label in range(self.num_classes)])
    union = np.array([sums[f"union_{label}"] for label in range(self.num_classes)])
    iou, dice = segmentation.iou_and_dice(intersection, union)
    foreground = range(1, self.num_classes)
    cross_entropy, dice_loss = sums["cross_entropy"] / examples, sums["dice_loss"] / examples
    pixels = examples * self.image_shape[0] * self.image_shape[1]
    return {
        "loss": cross_entropy + self.config.objective.dice_weight * dice_loss,
        "cross_entropy": cross_entropy,
        "dice_loss": dice_loss,
        "mean_iou": segmentation.mean_over_classes(iou, foreground),
        "mean_dice": segmentation.mean_over_classes(dice, foreground),
        "pixel_accuracy": float(intersection.sum() / pixels),  # a pixel predicted right is in its class's I
    }

  def train_batches(self, seed, process_index, process_count):
    images, masks = self.train_split["image"], self.train_split["mask"]
    return pipeline.training_batches(
        pipeline.grain.MapDataset.range(len(images)), self.config.data.batch_size, seed, process_index, process_count,
        batch_fn=lambda rows: {"image": images[np.asarray(rows)], "mask": masks[np.asarray(rows)]},
    )

  def eval_batches(self):
    return pipeline.padded_batches({"image": self.eval_split["image"], "mask": self.eval_split["mask"]},
                                   self.config.data.eval_batch_size)

  def units_per_step(self):
    return self.config.data.batch_size


def _init_params(model: unet.UNet, image_shape: tuple[int, ...], rng: jax.Array):
  return model.init(rng, jnp.zeros((1, *image_shape)))["params"]
