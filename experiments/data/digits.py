"""scikit-learn's 1,797 handwritten 8x8 digits (UCI optdigits test set) as a TFDS dataset.

Small enough to build in a second, real enough to show an image model learning:
the fixture for the second, deliberately different task the trainer must serve.
The test split is every sample whose index hashes into the last 10 %, so it
never depends on the order the source happens to list them in.
"""
import numpy as np
import tensorflow_datasets as tfds

from experiments.data.prepare import prepared
from experiments.data.splits import hash_bucket
from experiments.errors import MissingDataError

IMAGE_SHAPE = (8, 8, 1)  # height, width, channels


def _is_test(index: int) -> bool:
  return hash_bucket(str(index), 10) == 0


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "sklearn.datasets.load_digits, test = hash(index) % 10 == 0."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(
            {"image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32), "label": tfds.features.ClassLabel(num_classes=10)}
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    try:
      from sklearn.datasets import load_digits
    except ImportError as e:
      raise MissingDataError("the 8x8 digits come with scikit-learn: pip install scikit-learn") from e
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    test = np.array([_is_test(i) for i in range(len(images))])
    return {
        "train": self._generate_examples(images[~test], digits.target[~test]),
        "test": self._generate_examples(images[test], digits.target[test]),
    }

  def _generate_examples(self, images, labels):
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image, "label": int(label)}


def load_split(data_dir: str, split: str) -> dict[str, np.ndarray]:
  """{"image": [n, 8, 8, 1] in [0, 1], "label": [n]}, building the dataset on first use."""
  builder = prepared(lambda: SklearnDigits(data_dir=data_dir or None, file_format="array_record"))
  source = builder.as_data_source(split=split)
  examples = [source[i] for i in range(len(source))]
  return {
      "image": np.stack([example["image"] for example in examples]),
      "label": np.array([example["label"] for example in examples], np.int32),
  }
