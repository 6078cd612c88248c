"""Synthetic shapes for segmentation: seeded 64x64 grayscale scenes of ellipses and polygons with per-pixel masks.

A stand-in for the cell images U-Net was made for (Ronneberger et al. 2015): no sizeable real segmentation set ships
in a package registry (shared/DATA.md), so this one is drawn with numpy. A scene lays 2-6 filled shapes over a
textured background (a base level plus three random sinusoidal gratings), then adds Gaussian noise; the mask gives
each pixel its class: 0 background, 1 ellipse, 2 polygon. A later shape paints over earlier ones, in the image and in
the mask alike. A third of the shapes are thin (an ellipse 1-2 pixels across, a polygon squashed to a sliver), so a
decoder that blurs boundaries loses them: what the U-Net skip-connection ablation measures. Both kinds draw their
brightness from one distribution, so only the outline tells an ellipse from a polygon.

Example i is drawn by `np.random.default_rng((SEED, i))`, independently of every other example; 0-3,999 are `train`,
4,000-4,499 `test`. Images are stored as 8-bit intensities, like a camera's.
"""
import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

SIZE = 64
IMAGE_SHAPE = (SIZE, SIZE, 1)  # height, width, channels
CLASSES = ("background", "ellipse", "polygon")
SEED = 20150518  # U-Net's arXiv date
SPLIT_INDICES = {"train": range(0, 4000), "test": range(4000, 4500)}
SHAPES_PER_SCENE = (2, 6)  # inclusive
THIN_FRACTION = 1 / 3
MIN_CONTRAST = 0.3  # a shape is at least this much brighter than the background's base level
MAX_TEXTURE = 0.05  # amplitude of each of the three gratings
VERSION = "1.0.0"
RELEASE_NOTES = {VERSION: f"Ellipses and polygons over textured noise, seed {SEED}; 4,000 train, 500 test."}
FEATURES = {
    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
    "mask": tfds.features.Tensor(shape=IMAGE_SHAPE[:2], dtype=np.uint8),
}


@dataclasses.dataclass(frozen=True)
class Ellipse:
  center: tuple[float, float]  # (y, x) in pixels; pixel (i, j) has its centre at (i, j)
  semi_axes: tuple[float, float]  # along the rotated x axis, then across it
  angle: float  # radians, counter-clockwise from the x axis
  intensity: float
  kind: int = CLASSES.index("ellipse")

  def covers(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    dy, dx = ys - self.center[0], xs - self.center[1]
    along = dx * np.cos(self.angle) + dy * np.sin(self.angle)
    across = -dx * np.sin(self.angle) + dy * np.cos(self.angle)
    return (along / self.semi_axes[0]) ** 2 + (across / self.semi_axes[1]) ** 2 <= 1


@dataclasses.dataclass(frozen=True)
class Polygon:
  vertices: tuple[tuple[float, float], ...]  # (y, x) of each corner, in order around a simple polygon
  intensity: float
  kind: int = CLASSES.index("polygon")

  def covers(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Even-odd rule: a point is inside when a ray from it to the right crosses the outline an odd number of times."""
    inside = np.zeros(ys.shape, bool)
    for (y1, x1), (y2, x2) in zip(self.vertices, self.vertices[1:] + self.vertices[:1]):
      straddles = (y1 > ys) != (y2 > ys)
      with np.errstate(divide="ignore", invalid="ignore"):  # a horizontal edge straddles nothing
        crossing_x = x1 + (ys - y1) * (x2 - x1) / (y2 - y1)
      inside ^= straddles & (xs < crossing_x)
    return inside


@dataclasses.dataclass(frozen=True)
class Scene:
  background: np.ndarray  # float [SIZE, SIZE]: base level plus texture, before noise
  shapes: tuple[Ellipse | Polygon, ...]  # in painting order
  noise: np.ndarray  # float [SIZE, SIZE], added after the shapes are painted


def _texture(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
  """Three sinusoidal gratings of random orientation, period (6-32 pixels) and phase."""
  texture = np.zeros(ys.shape)
  for _ in range(3):
    angle, period, phase = rng.uniform(0, np.pi), rng.uniform(6, 32), rng.uniform(0, 2 * np.pi)
    along = xs * np.cos(angle) + ys * np.sin(angle)
    texture += rng.uniform(0.01, MAX_TEXTURE) * np.sin(2 * np.pi * along / period + phase)
  return texture


def _ellipse(rng: np.random.Generator, center: np.ndarray, intensity: float) -> Ellipse:
  semi_major = rng.uniform(4, 14)
  semi_minor = rng.uniform(0.8, 2) if rng.random() < THIN_FRACTION else rng.uniform(3, semi_major)
  return Ellipse(tuple(center), (semi_major, semi_minor), rng.uniform(0, np.pi), intensity)


def _polygon(rng: np.random.Generator, center: np.ndarray, intensity: float) -> Polygon:
  """3-6 corners at jittered, increasing angles around the centre (so the outline never crosses itself), then
  squashed (thin ones), rotated and moved."""
  corners = rng.integers(3, 7)
  angles = 2 * np.pi * (np.arange(corners) + rng.uniform(-0.3, 0.3, corners)) / corners
  radii = rng.uniform(5, 14) * rng.uniform(0.6, 1, corners)
  squash = rng.uniform(0.12, 0.25) if rng.random() < THIN_FRACTION else 1.0
  local = np.stack([radii * np.sin(angles) * squash, radii * np.cos(angles)], axis=1)  # (y, x)
  turn = rng.uniform(0, np.pi)
  rotation = np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
  return Polygon(tuple(map(tuple, local @ rotation + center)), intensity)


def scene(index: int) -> Scene:
  """Everything random about example `index`, drawn from its own seeded generator."""
  rng = np.random.default_rng((SEED, index))
  ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(float)
  base = rng.uniform(0.1, 0.35)
  background = base + _texture(rng, ys, xs)
  shapes = []
  for _ in range(rng.integers(SHAPES_PER_SCENE[0], SHAPES_PER_SCENE[1] + 1)):
    draw = _ellipse if rng.random() < 0.5 else _polygon
    shapes.append(draw(rng, rng.uniform(4, SIZE - 4, 2), base + rng.uniform(MIN_CONTRAST, 0.55)))
  noise = rng.normal(0, rng.uniform(0.02, 0.05), (SIZE, SIZE))
  return Scene(background, tuple(shapes), noise)


def paint(background: np.ndarray, shapes: tuple[Ellipse | Polygon, ...]) -> tuple[np.ndarray, np.ndarray]:
  """(image, mask): `shapes` filled in order over `background`, each over the ones before it."""
  ys, xs = np.mgrid[0:background.shape[0], 0:background.shape[1]]
  image, mask = background.copy(), np.zeros(background.shape, np.uint8)
  for shape in shapes:
    covered = shape.covers(ys, xs)
    image[covered] = shape.intensity
    mask[covered] = shape.kind
  return image, mask


def example(index: int) -> tuple[np.ndarray, np.ndarray]:
  """(image uint8 [SIZE, SIZE, 1], mask uint8 [SIZE, SIZE]) of example `index`."""
  drawn = scene(index)
  image, mask = paint(drawn.background, drawn.shapes)
  return np.round(np.clip(image + drawn.noise, 0, 1) * 255).astype(np.uint8)[..., None], mask


def _drawn(indices: range) -> Iterator[tuple[int, dict]]:
  for index in indices:
    image, mask = example(index)
    yield index, {"image": image, "mask": mask}


def examples(source_dir: str, download_dir: str) -> dict[str, Iterator[tuple[int, dict]]]:
  """(key, example) of each split, drawn as they are read; the scenes need no source and no download."""
  del source_dir, download_dir
  return {split: _drawn(indices) for split, indices in SPLIT_INDICES.items()}
