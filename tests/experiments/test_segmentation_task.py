"""The segmentation task through the one trainer, on a tiny fake data set of blobs registered for the test."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import segmentation as segmentation_config
from decoders import segmentation
from decoders.errors import ConfigError
from experiments import train
from experiments.data import images
from experiments.tasks.segmentation import random_symmetries

SIDE, CLASSES = 16, 3


def _blobs(data_dir: str, split: str) -> dict[str, np.ndarray]:
  """16x16 images of a bright disc (class 1) and a dim square (class 2) on a noisy background (class 0)."""
  del data_dir
  rng = np.random.default_rng(0 if split == "train" else 1)
  count = 48 if split == "train" else 12  # 12: the last eval batch of 8 is half padding
  rows, columns = np.mgrid[:SIDE, :SIDE]
  masks = np.zeros((count, SIDE, SIDE), np.int32)
  for mask in masks:
    top, left, size = *rng.integers(0, SIDE - 6, 2), rng.integers(3, 6)
    mask[top : top + size, left : left + size] = 2
    centre, radius = rng.uniform(3, SIDE - 3, 2), rng.uniform(2, 4)
    mask[(rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius**2] = 1
  pictures = np.array([0.1, 0.9, 0.5], np.float32)[masks] + rng.normal(0, 0.1, masks.shape).astype(np.float32)
  return {"image": np.clip(pictures, 0, 1)[..., None], "mask": masks}


@pytest.fixture
def config(monkeypatch, tmp_path):
  monkeypatch.setitem(images.DATASETS, "blobs", images.ImageDataset(_blobs, (SIDE, SIDE, 1), CLASSES, targets="mask"))
  config = segmentation_config.get_config("test")
  config.data.name = "blobs"
  config.data.data_dir = str(tmp_path / "data")
  return config


def test_the_task_trains_with_the_one_trainer_and_reports_segmentation_metrics(config, tmp_path):
  workdir = str(tmp_path / "run")
  task, trainer, _ = train.setup(config, workdir)
  initial = trainer.evaluate(trainer.init(jax.random.key(config.seed)).params, task.eval_batches())

  final = train.train_and_evaluate(config, workdir)  # 20 steps from that same init

  assert set(final) == {"loss", "cross_entropy", "dice_loss", "mean_iou", "mean_dice", "pixel_accuracy"}
  assert final["loss"] < 0.8 * initial["loss"]
  np.testing.assert_allclose(final["loss"], final["cross_entropy"] + config.objective.dice_weight * final["dice_loss"])
  assert final["pixel_accuracy"] > initial["pixel_accuracy"] and 0 <= final["mean_iou"] <= final["mean_dice"] <= 1

  # The figure: test images, their true masks and the predicted ones, as grey levels of the classes.
  (grid,) = task.figures(trainer.init(jax.random.key(config.seed)).params, jax.random.key(0)).values()
  masks = task.eval_split["mask"][: grid.shape[1]]
  np.testing.assert_allclose(grid[1, ..., 0], masks / (task.num_classes - 1))
  assert grid.shape[0] == 3 and os.path.exists(os.path.join(workdir, "figures", "segmentations.png"))


def test_eval_counts_over_padded_batches_are_the_counts_of_the_whole_set(config):
  task, trainer = train.build(config, train.check_config(config))
  params = trainer.init(jax.random.key(3)).params
  evaluated = trainer.evaluate(params, task.eval_batches())  # 12 images in 2 batches of 8: 4 padding rows

  data = _blobs("", "test")
  logits = task.model.apply({"params": params}, jnp.asarray(data["image"]))
  iou, dice = segmentation.iou_and_dice(*segmentation.intersection_and_union(logits, jnp.asarray(data["mask"])))
  np.testing.assert_allclose(evaluated["mean_iou"], np.nanmean(iou[1:]), rtol=1e-6)
  np.testing.assert_allclose(evaluated["mean_dice"], np.nanmean(dice[1:]), rtol=1e-6)
  accuracy = np.mean(np.asarray(logits).argmax(-1) == data["mask"])
  np.testing.assert_allclose(evaluated["pixel_accuracy"], accuracy, rtol=1e-6)
  cross_entropy = segmentation.pixel_cross_entropy(logits, jnp.asarray(data["mask"])).mean()
  np.testing.assert_allclose(evaluated["cross_entropy"], cross_entropy, rtol=1e-5)


def _summary(task, intersection, union, examples=1):
  sums = {"cross_entropy": 0.0, "dice_loss": 0.0, "examples": float(examples)}
  sums.update({f"intersection_{c}": float(i) for c, i in enumerate(intersection)})
  sums.update({f"union_{c}": float(u) for c, u in enumerate(union)})
  return task.summarize_eval(sums)


def test_a_perfect_model_scores_1_and_a_class_found_nowhere_is_left_out(config):
  task = train.build(config, train.check_config(config))[0]
  pixels = SIDE * SIDE
  perfect = _summary(task, [200, 40, 16], [200, 40, 16])
  assert perfect["mean_iou"] == perfect["mean_dice"] == perfect["pixel_accuracy"] == 1.0
  no_squares = _summary(task, [216, 40, 0], [216, 40, 0])  # class 2 in neither predictions nor masks
  assert no_squares["mean_iou"] == no_squares["mean_dice"] == 1.0
  # The discs predicted as squares and the squares as discs: the foreground is all wrong, the background right.
  swapped = _summary(task, [200, 0, 0], [200, 56, 56])
  assert swapped["mean_iou"] == swapped["mean_dice"] == 0.0 and swapped["pixel_accuracy"] == 200 / pixels
  # The foreground means leave out the background: a model predicting only background scores 0.
  background = _summary(task, [200, 0, 0], [256, 40, 16])
  assert background["mean_iou"] == 0.0 and np.isclose(background["pixel_accuracy"], 200 / pixels)


def _symmetries(square: np.ndarray) -> list[np.ndarray]:
  """The 8 symmetries of a square array: 4 quarter turns of it and of its transpose."""
  return [np.rot90(a, k) for a in (square, square.T) for k in range(4)]


def test_augmentation_moves_image_and_mask_together_by_a_symmetry_of_the_square():
  data = _blobs("", "train")
  pictures, masks = jnp.asarray(data["image"][:8]), jnp.asarray(data["mask"][:8])
  moved_pictures, moved_masks = random_symmetries(jax.random.key(0), pictures, masks)
  for index in range(8):
    moves = [s for s, m in enumerate(_symmetries(np.asarray(masks[index]))) if np.array_equal(moved_masks[index], m)]
    candidates = _symmetries(np.asarray(pictures[index, ..., 0]))
    assert any(np.array_equal(moved_pictures[index, ..., 0], candidates[s]) for s in moves), index  # the same move
  assert not np.array_equal(moved_masks, masks)
  again = random_symmetries(jax.random.key(0), pictures, masks)  # a step's rng decides: a resumed run repeats it
  np.testing.assert_array_equal(again[1], moved_masks)


def test_a_classification_set_or_an_image_size_the_network_cannot_halve_is_refused_before_it_runs(config, monkeypatch):
  config.data.name = "sklearn_digits"
  with pytest.raises(ConfigError, match=r"data.name='sklearn_digits' is a classification set .* one of \[.*'blobs'"):
    train.check_config(config)
  config.data.name = "no_such_set"
  with pytest.raises(ConfigError, match="data.name='no_such_set' is not an image data set"):
    train.check_config(config)
  monkeypatch.setitem(images.DATASETS, "odd", images.ImageDataset(_blobs, (18, 18, 1), CLASSES, targets="mask"))
  config.data.name, config.model.channel_multipliers = "odd", (1, 2, 4)
  with pytest.raises(ConfigError, match="image_height=18 is not divisible by 4"):
    train.check_config(config)


def test_the_config_has_a_test_size_for_each_data_set_and_refuses_unknown_variants():
  for variant, name in [("", "shapes"), ("nuclei", "nuclei"), ("nuclei,test", "nuclei"), ("test", "shapes")]:
    config = segmentation_config.get_config(variant)
    assert config.data.name == name and config.model.skips
    assert (config.train.num_steps <= 20) == variant.endswith("test")
  assert segmentation_config.get_config("shapes")["model"]["channel_multipliers"] == (1, 2, 4, 8)
  with pytest.raises(ValueError, match="unknown variant 'cells' of segmentation"):
    segmentation_config.get_config("cells")
