"""Pictures of what an image model makes — samples, reconstructions, interpolations — as PNG grids in the workdir.

A task's `figures(params, rng)` returns named grids [rows, columns, height, width, channels] in [0, 1];
`write_figures` saves each as <workdir>/figures/NAME.png at the end of training and for --mode=sample, since
researchers look at samples rather than read numbers about them.
"""
import math
import os

import jax
import numpy as np
import PIL.Image

from decoders.errors import ConfigError

FOLDER = "figures"
GRID_BACKGROUND = 1.0  # white lines between the images of a grid


def save_grid(path: str, images, columns: int, padding: int = 1) -> str:
  """Writes images [n, h, w, c] in [0, 1] (c: 1 grayscale or 3 RGB) as one PNG, row by row, `columns` to a row,
  `padding` white pixels around each; returns `path`."""
  array = np.asarray(images, dtype=np.float64)
  if array.ndim != 4 or not array.shape[0] or array.shape[-1] not in (1, 3):
    raise ConfigError(f"images of shape {array.shape} must be [n >= 1, height, width, 1 or 3 channels]")
  if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
    raise ConfigError(f"images must be in [0, 1]: they span [{np.nanmin(array):g}, {np.nanmax(array):g}]")
  if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
    raise ConfigError(f"columns={columns!r} must be a positive integer")
  if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
    raise ConfigError(f"padding={padding!r} must be an integer >= 0")
  count, height, width, channels = array.shape
  rows = math.ceil(count / columns)
  step_y, step_x = height + padding, width + padding
  canvas = np.full((rows * step_y + padding, columns * step_x + padding, channels), GRID_BACKGROUND)
  for index, image in enumerate(array):
    top, left = padding + (index // columns) * step_y, padding + (index % columns) * step_x
    canvas[top : top + height, left : left + width] = image
  pixels = np.round(canvas * 255).astype(np.uint8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  PIL.Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode="L" if channels == 1 else "RGB").save(path)
  return path


def write_figures(task, params, rng: jax.Array, workdir: str) -> list[str]:
  """Saves each of `task.figures(params, rng)` as <workdir>/figures/NAME.png (on the first process); the paths."""
  paths = []
  for name, grid in task.figures(params, rng).items():
    grid = np.asarray(grid)
    if grid.ndim != 5:
      raise ConfigError(f"figure {name!r} of shape {grid.shape} is not [rows, columns, height, width, channels]")
    rows, columns, *image = grid.shape
    path = os.path.join(workdir, FOLDER, f"{name}.png")
    if jax.process_index() == 0:
      save_grid(path, grid.reshape(rows * columns, *image), columns)
    paths.append(path)
  return paths
