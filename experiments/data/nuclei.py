"""Real nuclei masks for segmentation: stardist's test image, normalised and tiled into 64x64 crops, as a TFDS dataset.

stardist 0.9.2's wheel (PyPI, BSD-3) ships `stardist/data/images/img2d.tif`, one 512x512 16-bit fluorescence image of
cell nuclei from the 2018 Data Science Bowl (Caicedo et al. 2019), and `mask2d.tif`, its 125 nuclei labelled one by
one. The wheel is fetched with `pip download --no-deps` for one fixed platform, so every machine reads the same file,
and read with zipfile and Pillow, never installed (`registry_packages.py`); a folder holding it can be passed as
`source_dir`. The image is normalised as stardist does (Schmidt et al. 2018, csbdeep's `normalize`): its 1st
percentile maps to 0 and its 99.8th to 1, then it is clipped to [0, 1]. The mask keeps nucleus vs background
(label > 0). Both are tiled into non-overlapping 64x64 crops (64 of them); a crop is in `test` when the SHA-256 of its
position "row,column" (counted in crops) falls in 1 of 4 buckets (~25 %), so the split depends on where a crop is,
not on the order crops are listed in.
"""
import io
import os
import zipfile

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from experiments.data import registry_packages
from experiments.data.splits import hash_bucket
from experiments.errors import MissingDataError

CROP = 64
IMAGE_SHAPE = (CROP, CROP, 1)  # height, width, channels
CLASSES = ("background", "nucleus")
REQUIREMENT = "stardist==0.9.2"
# Any wheel of 0.9.2 holds the same images: pin one, so that pip fetches it on every machine and Python version.
PIP_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11")
IMAGE_MEMBER, MASK_MEMBER = "stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif"
SOURCE_HINT = f"pass source_dir=DIR holding the wheel of {REQUIREMENT} (`pip download --no-deps {REQUIREMENT} -d DIR`)"
PERCENTILES = (1.0, 99.8)  # stardist's normalisation
TEST_BUCKETS = 4  # 1 of 4: ~25 % test
VERSION = "1.0.0"
RELEASE_NOTES = {VERSION: f"{REQUIREMENT} img2d/mask2d normalised 1-99.8 %, 64x64 crops, test = hash(position) % 4."}
FEATURES = {
    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32),
    "mask": tfds.features.Tensor(shape=IMAGE_SHAPE[:2], dtype=np.uint8),
}


def _read_tiff(wheel: zipfile.ZipFile, member: str) -> np.ndarray:
  try:
    with PIL.Image.open(io.BytesIO(wheel.read(member))) as tiff:
      return np.array(tiff)
  except KeyError as e:
    raise MissingDataError(f"{wheel.filename} has no {member}: {SOURCE_HINT}") from e
  except (OSError, ValueError) as e:
    raise MissingDataError(f"{member} in {wheel.filename} is not a readable TIFF: {e}") from e


def read_wheel(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(image, instance labels), two 2-D integer arrays of the same shape, read out of the wheel at `path`."""
  try:
    with zipfile.ZipFile(path) as wheel:
      image, labels = _read_tiff(wheel, IMAGE_MEMBER), _read_tiff(wheel, MASK_MEMBER)
  except zipfile.BadZipFile as e:
    raise MissingDataError(f"{path} is not a readable wheel (zip file): {e}") from e
  if image.ndim != 2 or image.shape != labels.shape or not np.issubdtype(labels.dtype, np.integer):
    raise MissingDataError(f"{path}: expected a 2-D image and integer mask of one shape, got {image.shape} and "
                           f"{labels.shape} {labels.dtype}")
  return image, labels


def normalised(image: np.ndarray) -> np.ndarray:
  """`image` as float32 in [0, 1]: its 1st percentile to 0, its 99.8th to 1, clipped (stardist's normalisation)."""
  low, high = np.percentile(image, PERCENTILES)
  return np.clip((image.astype(np.float32) - low) / max(high - low, 1e-20), 0, 1).astype(np.float32)


def crops(array: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
  """The non-overlapping CROP x CROP crops of a 2-D array, by position (row, column) counted in crops."""
  height, width = array.shape
  if height % CROP or width % CROP:
    raise MissingDataError(f"an image of {height}x{width} pixels does not tile into {CROP}x{CROP} crops")
  return {
      (row, column): array[row * CROP:(row + 1) * CROP, column * CROP:(column + 1) * CROP]
      for row in range(height // CROP)
      for column in range(width // CROP)
  }


def is_test(row: int, column: int) -> bool:
  """Whether the crop at (row, column) is in the test split (see the module docstring)."""
  return hash_bucket(f"{row},{column}", TEST_BUCKETS) == 0


def _wheel(source_dir: str, download_dir: str) -> str:
  """The wheel in `source_dir`, or else the one downloaded into `download_dir`."""
  if not source_dir:
    return registry_packages.pypi_wheel(REQUIREMENT, os.path.join(download_dir, "pypi"), SOURCE_HINT, PIP_PLATFORM)
  wheel = registry_packages.wheel_in(source_dir, REQUIREMENT)
  if not wheel:
    raise MissingDataError(f"no wheel of {REQUIREMENT} in {source_dir!r}: {SOURCE_HINT}")
  return wheel


def examples(source_dir: str, download_dir: str) -> dict[str, list[tuple[str, dict]]]:
  """(key, example) of each split: the crops of the wheel in `source_dir`, or else of the one downloaded."""
  image, labels = read_wheel(_wheel(source_dir, download_dir))
  image_crops, mask_crops = crops(normalised(image)), crops((labels > 0).astype(np.uint8))
  splits = {"train": [], "test": []}
  for (row, column), image_crop in image_crops.items():
    example = {"image": image_crop[..., None], "mask": mask_crops[row, column]}
    splits["test" if is_test(row, column) else "train"].append((f"{row},{column}", example))
  return splits
