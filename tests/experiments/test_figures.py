"""Figures: PNG grids of images, and the task hook that writes them into the workdir."""
import os

import jax
import numpy as np
import PIL.Image
import pytest

from decoders.errors import ConfigError
from experiments import figures


def _read_png(path):
  with PIL.Image.open(path) as image:
    return image.mode, np.asarray(image)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_a_grid_reads_back_tile_by_tile(tmp_path, channels, mode):
  tiles = np.random.default_rng(5).uniform(size=(5, 4, 3, channels))
  path = figures.save_grid(str(tmp_path / "figures" / "grid.png"), tiles, columns=2)
  read_mode, pixels = _read_png(path)
  pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
  assert read_mode == mode and pixels.shape == (3 * 5 + 1, 2 * 4 + 1, channels)  # 3 rows of 2, 1-pixel borders
  for index, tile in enumerate(tiles):
    top, left = 1 + (index // 2) * 5, 1 + (index % 2) * 4
    np.testing.assert_array_equal(pixels[top : top + 4, left : left + 3], np.round(tile * 255).astype(np.uint8))
  assert (pixels[0] == 255).all() and (pixels[:, 0] == 255).all() and (pixels[5] == 255).all()  # the borders
  assert (pixels[11:15, 5:8] == 255).all()  # the sixth cell, which has no image


@pytest.mark.parametrize("tiles, columns, message", [
    (np.full((2, 4, 4, 1), 2.0), 2, "images must be in [0, 1]: they span [2, 2]"),
    (np.zeros((2, 4, 4, 2)), 2, "images of shape (2, 4, 4, 2) must be [n >= 1, height, width, 1 or 3 channels]"),
    (np.zeros((2, 4, 4)), 2, "images of shape (2, 4, 4) must be"),
    (np.zeros((2, 4, 4, 1)), 0, "columns=0 must be a positive integer"),
])
def test_a_grid_of_bad_images_is_one_line(tmp_path, tiles, columns, message):
  with pytest.raises(ConfigError) as raised:
    figures.save_grid(str(tmp_path / "grid.png"), tiles, columns)
  assert message in str(raised.value) and not os.path.exists(tmp_path / "grid.png")


class _PaintingTask:
  """A task whose one figure is 2 rows of 3 images, each filled with its own grey level."""

  def figures(self, params, rng):
    del rng
    levels = np.linspace(0.0, 1.0, 6).reshape(2, 3, 1, 1, 1, 1) * params["scale"]
    return {"greys": np.broadcast_to(levels, (2, 3, 1, 4, 4, 1)).reshape(2, 3, 4, 4, 1)}


def test_each_figure_of_a_task_is_written_as_a_grid_in_the_workdir(tmp_path):
  (path,) = figures.write_figures(_PaintingTask(), {"scale": 1.0}, jax.random.key(0), str(tmp_path))
  assert path == str(tmp_path / figures.FOLDER / "greys.png")
  _, pixels = _read_png(path)
  assert pixels.shape == (2 * 5 + 1, 3 * 5 + 1)  # 2 rows of 3 tiles of 4x4, 1-pixel borders
  assert pixels[1, 1] == 0 and pixels[6, 11] == 255 and pixels[1, 6] == round(0.2 * 255)  # row by row


def test_a_figure_that_is_not_a_grid_of_images_is_one_line(tmp_path):
  class Flat:
    def figures(self, params, rng):
      return {"flat": np.zeros((4, 4, 4, 1))}

  with pytest.raises(ConfigError, match=r"figure 'flat' of shape \(4, 4, 4, 1\) is not \[rows, columns"):
    figures.write_figures(Flat(), {}, jax.random.key(0), str(tmp_path))
