"""The image data sets every image family reads, by the name `config.data.name` gives.

Each loads a split as numpy arrays: "image" float32 [n, height, width, channels] in [0, 1], and either "label"
int32 [n] (a class per image) or "mask" int32 [n, height, width] (a class per pixel, for segmentation).
The shape is known without reading the data, so a model is checked against it before anything is built.
Each is a TFDS dataset built on first use: the 8x8 digits by their own builder, the others as configs of one builder,
`ImageSets` (like `parallel.py`'s pairs), whose modules only say where their examples come from and how they are
stored. Images stored as 8-bit bytes are scaled to [0, 1] as they are read.

    python -m experiments.data.images --names=fashion_mnist,mnist,shapes,nuclei [--data_dir=DIR]

builds the named sets (into $TFDS_DATA_DIR or ~/tensorflow_datasets unless --data_dir says otherwise) and prints
the examples per split.
"""
import dataclasses
import functools
import sys
import time
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from decoders.errors import ConfigError
from experiments.data import digits, fashion_mnist, mnist, nuclei, shapes
from experiments.data.prepare import prepared
from experiments.errors import USER_ERRORS


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  load: Callable[[str, str], dict[str, np.ndarray]]  # (data_dir, split) -> {"image": ..., "label" or "mask": ...}
  image_shape: tuple[int, int, int]  # height, width, channels
  num_classes: int  # of the labels, or of the mask's pixels
  targets: str = "label"  # "label" or "mask"
  train_split: str = "train"
  eval_split: str = "test"


# name -> its module: VERSION, RELEASE_NOTES, FEATURES (stored form) and examples(source_dir, download_dir) giving
# each split's (key, example) pairs; each is one config of the one builder below.
SOURCES = {"fashion_mnist": fashion_mnist, "mnist": mnist, "shapes": shapes, "nuclei": nuclei}


# `python -m experiments.data.images` runs this file as __main__ and imports it again: only the imported copy
# registers the dataset name.
class ImageSets(tfds.core.GeneratorBasedBuilder, skip_registration=__name__ == "__main__"):
  """One config per entry of SOURCES, versioned on its own; `source_dir` replaces a config's download."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=name, version=source.VERSION, release_notes=source.RELEASE_NOTES)
      for name, source in SOURCES.items()
  ]

  def __init__(self, *, source_dir: str = "", **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    source = SOURCES[self.builder_config.name]
    features = tfds.features.FeaturesDict(source.FEATURES)
    return tfds.core.DatasetInfo(builder=self, description=source.__doc__, features=features)

  def _split_generators(self, dl_manager):
    splits = SOURCES[self.builder_config.name].examples(self._source_dir, dl_manager.download_dir)
    return {split: self._generate_examples(examples) for split, examples in splits.items()}

  def _generate_examples(self, examples):
    yield from examples


def prepared_builder(name: str, data_dir: str = "", source_dir: str = "") -> ImageSets:
  """The builder of the SOURCES entry `name` with its dataset on disk, built on first use (once, under a file lock)."""
  return prepared(
      lambda: ImageSets(config=name, data_dir=data_dir or None, source_dir=source_dir, file_format="array_record")
  )


def as_arrays(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
  """A prepared split as the arrays the module docstring describes."""
  source = builder.as_data_source(split=split)
  examples = source.__getitems__(range(len(source)))
  arrays = {key: np.stack([example[key] for example in examples]) for key in examples[0]}
  image = arrays.pop("image")
  scale = 255 if image.dtype == np.uint8 else 1
  return {"image": image.astype(np.float32) / scale, **{key: value.astype(np.int32) for key, value in arrays.items()}}


def load_source(name: str, data_dir: str, split: str) -> dict[str, np.ndarray]:
  """`split` of the SOURCES entry `name` as arrays, building it on first use."""
  return as_arrays(prepared_builder(name, data_dir), split)


def _from_source(name: str, num_classes: int, targets: str = "label") -> ImageDataset:
  return ImageDataset(functools.partial(load_source, name), SOURCES[name].IMAGE_SHAPE, num_classes, targets)


DATASETS = {
    "sklearn_digits": ImageDataset(digits.load_split, digits.IMAGE_SHAPE, num_classes=10),
    "fashion_mnist": _from_source("fashion_mnist", len(fashion_mnist.CLASS_NAMES)),
    "mnist": _from_source("mnist", mnist.NUM_CLASSES),
    "shapes": _from_source("shapes", len(shapes.CLASSES), targets="mask"),
    "nuclei": _from_source("nuclei", len(nuclei.CLASSES), targets="mask"),
}


def check_names(names: list[str]) -> None:
  unknown = [name for name in names if name not in DATASETS]
  if unknown:
    raise ConfigError(f"unknown image data set {', '.join(unknown)}; known: {', '.join(DATASETS)}")


def summary(name: str, data_dir: str = "") -> str:
  """One line per split of `name`, built on first use: examples, image range, and the classes its targets hold."""
  dataset = DATASETS[name]
  lines = [f"{name}: image {dataset.image_shape}, {dataset.num_classes} classes per {dataset.targets}"]
  for split in (dataset.train_split, dataset.eval_split):
    arrays = dataset.load(data_dir, split)
    image, targets = arrays["image"], arrays[dataset.targets]
    counts = np.bincount(targets.ravel(), minlength=dataset.num_classes)
    lines.append(
        f"  {split}: {len(image):,} examples, image in [{image.min():.3f}, {image.max():.3f}] "
        f"(mean {image.mean():.3f}), {dataset.targets} counts {counts.tolist()}"
    )
  return "\n".join(lines)


def main(argv, names: list[str], data_dir: str) -> None:
  """Builds and summarises `names`; a problem the user can fix ends the command with one line, as run.py does."""
  del argv
  logging.set_verbosity(logging.WARNING)  # TFDS logs every file it touches at INFO
  try:
    check_names(names)
    for name in names:
      start = time.perf_counter()
      print(summary(name, data_dir) + f"\n  ({time.perf_counter() - start:.0f} s)", flush=True)
  except USER_ERRORS as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  from absl import app, flags

  _NAMES = flags.DEFINE_list("names", ["fashion_mnist", "mnist", "shapes", "nuclei"], f"Any of {', '.join(DATASETS)}.")
  _DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets.")
  from experiments.data import images  # the registered copy

  app.run(lambda argv: images.main(argv, _NAMES.value, _DATA_DIR.value))
