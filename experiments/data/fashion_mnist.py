"""Fashion-MNIST (Xiao et al. 2017) from the Debian package `dataset-fashion-mnist`, as a TFDS dataset.

70,000 grayscale 28x28 images of ten kinds of clothing, in the official 60,000 train / 10,000 test split, stored as
the four gzipped IDX files of the original MNIST (LeCun et al. 1998): a big-endian header (magic number
0x0000080D, where D is the number of dimensions, then D sizes) followed by unsigned bytes, so the images start at
byte 16 and the labels at byte 8. The package is fetched with `apt-get download` and unpacked without root
(`debian_packages.py`); a folder holding it unpacked, or "/" where it is installed, can be passed as `source_dir`.
Images are stored as the source's bytes (`images.py` reads them as float32 in [0, 1]).
"""
import gzip
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from experiments.data import debian_packages
from experiments.errors import MissingDataError

IMAGE_SHAPE = (28, 28, 1)  # height, width, channels
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
PACKAGE = "dataset-fashion-mnist"
IDX_DIR = os.path.join("usr", "share", "datasets", "fashion-mnist")
SPLIT_FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SOURCE_HINT = (
    f"pass source_dir=DIR holding {PACKAGE} unpacked (`apt-get download {PACKAGE}`, then `dpkg-deb -x FILE DIR`), "
    f"or source_dir=/ where it is installed (`apt-get install {PACKAGE}`)"
)
_UNSIGNED_BYTES = 0x08  # the IDX type code of uint8 data
VERSION = "1.0.0"
RELEASE_NOTES = {VERSION: f"Debian {PACKAGE} 0.0~git20200523.55506a9-1; the official 60,000/10,000 split."}
FEATURES = {
    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
}


def read_idx(path: str, item_shape: tuple[int, ...]) -> np.ndarray:
  """The uint8 array [n, *item_shape] of a gzipped IDX file; a missing, corrupt or mis-sized file raises a one-line
  MissingDataError naming it."""
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError as e:
    raise MissingDataError(f"{path} not found: {SOURCE_HINT}") from e
  except (OSError, EOFError, zlib.error) as e:  # not gzip, truncated, or a bad checksum
    raise MissingDataError(f"{path} is not a readable gzip file ({e}); download {PACKAGE} again") from e
  dimensions = 1 + len(item_shape)
  header_size = 4 + 4 * dimensions
  magic = data[:4]
  if magic != bytes([0, 0, _UNSIGNED_BYTES, dimensions]):
    raise MissingDataError(f"{path} starts with {magic.hex()}, not the IDX magic number 000008{dimensions:02x}")
  shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=dimensions, offset=4))
  if shape[1:] != item_shape:
    raise MissingDataError(f"{path} holds items of shape {shape[1:]}, expected {item_shape}")
  if len(data) != header_size + int(np.prod(shape)):
    raise MissingDataError(f"{path} holds {len(data) - header_size} bytes of data, its header says {np.prod(shape)}")
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def read_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [n, 28, 28, 1], labels uint8 [n]) of `split` from the package's files under `root`."""
  images_file, labels_file = (os.path.join(root, IDX_DIR, name) for name in SPLIT_FILES[split])
  images = read_idx(images_file, IMAGE_SHAPE[:2])[..., None]
  labels = read_idx(labels_file, ())
  if len(labels) != len(images) or labels.max(initial=0) >= len(CLASS_NAMES):
    raise MissingDataError(f"{labels_file} holds {len(labels)} labels up to {labels.max(initial=0)}, expected "
                           f"{len(images)} (one per image) below {len(CLASS_NAMES)}")
  return images, labels


def examples(source_dir: str, download_dir: str) -> dict[str, list[tuple[int, dict]]]:
  """(key, example) of each split, from `source_dir`, or else from the package downloaded into `download_dir`."""
  cache_dir = os.path.join(download_dir, "debian")
  root = source_dir or debian_packages.unpacked([PACKAGE], cache_dir, SOURCE_HINT)
  splits = {split: read_split(root, split) for split in SPLIT_FILES}
  return {
      split: [(index, {"image": image, "label": int(label)}) for index, (image, label) in enumerate(zip(*arrays))]
      for split, arrays in splits.items()
  }
