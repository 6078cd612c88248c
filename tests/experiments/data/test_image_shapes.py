"""The synthetic shapes: rasterisation against independent references, painting order, determinism, the built set.

Polygons are checked against matplotlib's point-in-path test and ellipses against their focal definition (a point is
inside when its distances to the two foci sum to at most the major axis), neither of which the generator uses.
"""
import hashlib
import subprocess
import sys

import matplotlib.path
import numpy as np
import pytest

from experiments.data import images, shapes
from tests.conftest import REPO, subprocess_env

PIXELS = np.stack(np.mgrid[0:shapes.SIZE, 0:shapes.SIZE], axis=-1).reshape(-1, 2).astype(float)  # (y, x) centres
SCENES = [shapes.scene(index) for index in range(40)]


def _reference_covers(shape) -> np.ndarray:
  """Which pixel centres `shape` covers, [SIZE, SIZE], by a method the generator does not use."""
  if isinstance(shape, shapes.Polygon):
    path = matplotlib.path.Path(np.array(shape.vertices)[:, ::-1])  # matplotlib wants (x, y)
    inside = path.contains_points(PIXELS[:, ::-1])
  else:
    a, b = shape.semi_axes
    direction = np.array([np.sin(shape.angle), np.cos(shape.angle)])  # (y, x) of the first semi-axis
    if b > a:
      a, b, direction = b, a, np.array([direction[1], -direction[0]])
    focus_offset = np.sqrt(a**2 - b**2) * direction
    center = np.array(shape.center)
    distances = [np.linalg.norm(PIXELS - (center + sign * focus_offset), axis=1) for sign in (1, -1)]
    inside = distances[0] + distances[1] <= 2 * a
  return inside.reshape(shapes.SIZE, shapes.SIZE)


def test_each_shape_covers_the_pixels_an_independent_test_finds():
  drawn = [shape for scene in SCENES for shape in scene.shapes]
  assert {type(shape) for shape in drawn} == {shapes.Ellipse, shapes.Polygon}
  ys, xs = np.mgrid[0:shapes.SIZE, 0:shapes.SIZE]
  for shape in drawn:
    np.testing.assert_array_equal(shape.covers(ys, xs), _reference_covers(shape), err_msg=str(shape))


def test_later_shapes_paint_over_earlier_ones_in_image_and_mask():
  overlaps = 0
  for scene in SCENES:
    expected_image, expected_mask = scene.background.copy(), np.zeros((shapes.SIZE, shapes.SIZE), int)
    coverages = [_reference_covers(shape) for shape in scene.shapes]
    for y, x in np.ndindex(shapes.SIZE, shapes.SIZE):
      covering = [shape for shape, covers in zip(scene.shapes, coverages) if covers[y, x]]
      overlaps += len(covering) > 1
      if covering:
        expected_image[y, x], expected_mask[y, x] = covering[-1].intensity, covering[-1].kind
    image, mask = shapes.paint(scene.background, scene.shapes)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(image, expected_image)
  assert overlaps > 0  # the scenes do exercise the order


def test_an_example_is_its_painted_scene_plus_noise_in_8_bits():
  for index, scene in enumerate(SCENES[:10]):
    image, mask = shapes.example(index)
    painted, painted_mask = shapes.paint(scene.background, scene.shapes)
    np.testing.assert_array_equal(mask, painted_mask)
    assert image.shape == shapes.IMAGE_SHAPE and image.dtype == np.uint8
    assert np.abs(image[..., 0] / 255 - np.clip(painted + scene.noise, 0, 1)).max() <= 0.5 / 255 + 1e-9


def test_shapes_stand_out_from_the_background_where_the_mask_says_they_are():
  for scene in SCENES:
    painted, mask = shapes.paint(scene.background, scene.shapes)
    assert np.all(painted[mask == 0] == scene.background[mask == 0])
    # Shapes are MIN_CONTRAST above the base level; the three gratings move the background by at most 3 MAX_TEXTURE.
    assert np.all(painted[mask > 0] - scene.background[mask > 0] >= shapes.MIN_CONTRAST - 3 * shapes.MAX_TEXTURE)


def test_scenes_hold_both_classes_and_thin_shapes():
  masks = np.stack([shapes.paint(scene.background, scene.shapes)[1] for scene in SCENES])
  assert set(np.unique(masks)) == {0, 1, 2}
  ys, xs = np.mgrid[0:shapes.SIZE, 0:shapes.SIZE]
  widths = []  # area over the longer side of the bounding box: about how many pixels across the shape is
  for shape in (shape for scene in SCENES for shape in scene.shapes):
    covered = shape.covers(ys, xs)
    if covered.any():
      widths.append(covered.sum() / max(np.ptp(np.nonzero(covered)[0]) + 1, np.ptp(np.nonzero(covered)[1]) + 1))
  assert 0.15 < np.mean(np.array(widths) <= 3) < 0.6


def _digest(indices) -> str:
  digest = hashlib.sha256()
  for index in indices:
    for array in shapes.example(index):
      digest.update(array.tobytes())
  return digest.hexdigest()


def test_examples_are_the_same_in_another_process():
  script = "from tests.experiments.data.test_image_shapes import _digest; print(_digest(range(4000, 4020)))"
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, check=True)
  assert result.stdout.strip() == _digest(range(4000, 4020))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  images.prepared_builder("shapes", data_dir)
  return data_dir


def test_the_built_splits_hold_exactly_the_generated_examples(built):
  dataset = images.DATASETS["shapes"]
  for split, indices in shapes.SPLIT_INDICES.items():
    arrays = dataset.load(built, split)
    assert arrays["image"].shape == (len(indices), *dataset.image_shape) and arrays["image"].dtype == np.float32
    assert arrays["mask"].dtype == np.int32 and arrays["mask"].max() < dataset.num_classes
    stored = sorted(
        (np.round(image * 255).astype(np.uint8).tobytes(), mask.astype(np.uint8).tobytes())
        for image, mask in zip(arrays["image"], arrays["mask"])
    )
    generated = sorted((image.tobytes(), mask.tobytes()) for image, mask in map(shapes.example, indices))
    assert stored == generated
  assert (len(shapes.SPLIT_INDICES["train"]), len(shapes.SPLIT_INDICES["test"])) == (4000, 500)
