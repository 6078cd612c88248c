"""Evaluating image models: the Fréchet distance in a trained classifier's feature space, AUROC, and image grids.

Fréchet distance (Heusel et al. 2017's FID; the closed form between Gaussians is Dowson & Landau 1982's): each set
of features is summarised by its mean μ and covariance C, and

    d² = ||μ_a - μ_b||² + Tr(C_a + C_b - 2 (C_a C_b)^{1/2}).

Heusel et al.'s features are Inception-v3's 2,048-d pool3 activations. No Inception weights can be had offline,
so ours are the penultimate layer of a small CNN trained on the same data (decoders/models/classifier.py), restored
from its run's workdir by `FeatureExtractor`: our numbers compare with each other under one classifier checkpoint,
never with published FIDs, and a report must say so.

Tr((C_a C_b)^{1/2}) is computed from the symmetric matrix C_a^{1/2} C_b C_a^{1/2}, which is similar to C_a C_b
and so has the same eigenvalues: the sum of their square roots, by `eigh`, with the tiny negative eigenvalues that
rounding leaves in a (near-)singular covariance clipped to zero. This avoids the general, non-symmetric matrix square
root (scipy.linalg.sqrtm), whose result can turn complex on such matrices.

AUROC: the probability that a positive outscores a negative, ties counting one half: the Mann-Whitney U statistic
divided by the number of pairs (Mann & Whitney 1947; Hanley & McNeil 1982), from midranks in O(n log n).

"""
import json
import os

import jax
import ml_collections
import numpy as np

from decoders.errors import ConfigError
from experiments import train
from experiments import workdir as workdir_lib
from experiments.errors import UserError

CLASSIFIER_TASK = "image_classifier"


def _feature_matrix(features, name: str) -> np.ndarray:
  """`features` [n, d] as float64, n >= 2 (a covariance needs two); one-line ConfigError otherwise."""
  array = np.asarray(features, dtype=np.float64)
  if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
    raise ConfigError(f"{name} of shape {array.shape} must be [examples >= 2, features >= 1]")
  if not np.isfinite(array).all():
    raise ConfigError(f"{name} holds NaN or Inf")
  return array


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  """The symmetric square root of a positive semi-definite matrix, eigenvalues clipped at 0."""
  eigenvalues, eigenvectors = np.linalg.eigh(matrix)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(features_a, features_b) -> float:
  """The Fréchet distance d² between Gaussians fitted to two sets of features [n_a, d] and [n_b, d] (docstring)."""
  a, b = _feature_matrix(features_a, "features_a"), _feature_matrix(features_b, "features_b")
  if a.shape[1] != b.shape[1]:
    raise ConfigError(f"features_a have {a.shape[1]} features and features_b {b.shape[1]}: they must be the same")
  covariance_a, covariance_b = (np.atleast_2d(np.cov(x, rowvar=False)) for x in (a, b))  # [d, d], also for d = 1
  root_a = _sqrt_psd(covariance_a)
  middle = root_a @ covariance_b @ root_a
  eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetric up to rounding: make it exactly so
  trace_of_root = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
  mean_term = np.sum(np.square(a.mean(axis=0) - b.mean(axis=0)))
  return float(mean_term + np.trace(covariance_a) + np.trace(covariance_b) - 2.0 * trace_of_root)


def _scores(scores, name: str) -> np.ndarray:
  array = np.asarray(scores, dtype=np.float64)
  if array.ndim != 1 or not array.size:
    raise ConfigError(f"{name} of shape {array.shape} must be a non-empty vector of scores")
  if np.isnan(array).any():
    raise ConfigError(f"{name} holds NaN")
  return array


def _midranks(values: np.ndarray) -> np.ndarray:
  """Ranks 1..n of `values`, ties sharing the mean of the ranks they span."""
  _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
  last_rank = np.cumsum(counts)
  return (last_rank - (counts - 1) / 2.0)[inverse]


def auroc(scores_negative, scores_positive) -> float:
  """The area under the ROC curve of scores where positives should score higher (1: perfect, 0.5: chance)."""
  negative, positive = _scores(scores_negative, "scores_negative"), _scores(scores_positive, "scores_positive")
  ranks = _midranks(np.concatenate([negative, positive]))
  u_statistic = ranks[len(negative):].sum() - len(positive) * (len(positive) + 1) / 2.0
  return float(u_statistic / (len(negative) * len(positive)))


def _tuples(value):
  """JSON's lists back into the tuples a config holds (model.channels, ...)."""
  if isinstance(value, dict):
    return {key: _tuples(item) for key, item in value.items()}
  return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run saved in `workdir` (its config.json); one-line UserError if there is none."""
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"workdir {workdir} holds no {workdir_lib.CONFIG_FILE}: it is not a training run's workdir")
  try:
    with open(path, encoding="utf-8") as f:
      return ml_collections.ConfigDict(_tuples(json.load(f)))
  except (OSError, ValueError) as e:
    raise UserError(f"{path} cannot be read as a config: {' '.join(str(e).split())[:200]}") from None


class FeatureExtractor:
  """The penultimate-layer features of the classifier an image_classifier run in `workdir` trained.

  Its newest readable checkpoint is restored with the run's own config (train.restore_for_inference: Orbax, from
  the abstract train state); features are computed `batch_size` images at a time by one compiled function, the
  last batch padded, so any number of images compiles once.
  """

  def __init__(self, workdir: str, batch_size: int = 400):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
      raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
    config = run_config(workdir)
    if config.get("task") != CLASSIFIER_TASK:
      raise ConfigError(f"workdir {workdir} holds a run of task={config.get('task')!r}, not {CLASSIFIER_TASK!r}")
    task, _, state = train.restore_for_inference(config, workdir)
    self.model, self.params, self.step = task.model, state.params, int(state.step)
    self.image_shape = tuple(task.model.config.image_shape)
    self.batch_size = batch_size
    self._features = jax.jit(lambda params, images: self.model.apply({"params": params}, images, method="features"))

  @property
  def feature_dim(self) -> int:
    return self.model.config.feature_dim

  def __call__(self, images) -> np.ndarray:
    """Features [n, feature_dim] (float32) of images [n, h, w, c] in [0, 1], of the classifier's image shape."""
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or tuple(array.shape[1:]) != self.image_shape:
      expected = ", ".join(map(str, self.image_shape))
      raise ConfigError(f"images of shape {array.shape} do not fit the classifier's [n, {expected}]")
    if not np.isfinite(array).all() or (array.size and (array.min() < 0.0 or array.max() > 1.0)):
      raise ConfigError("images must be in [0, 1], as the classifier was trained on them")
    batches = []
    for start in range(0, len(array), self.batch_size):
      batch = array[start : start + self.batch_size]
      padded = np.concatenate([batch, np.zeros((self.batch_size - len(batch), *self.image_shape), np.float32)])
      batches.append(np.asarray(self._features(self.params, padded))[: len(batch)])
    return np.concatenate(batches) if batches else np.zeros((0, self.feature_dim), np.float32)


def classifier_features(workdir: str, images, batch_size: int = 400) -> np.ndarray:
  """Features [n, feature_dim] of `images` under the classifier trained in `workdir` (FeatureExtractor)."""
  return FeatureExtractor(workdir, batch_size)(images)


def check_classifier_run(workdir: str, data_name: str) -> None:
  """One-line errors unless `workdir` holds an image_classifier run on `data_name`: read from its config.json alone,
  so a task checks the run it will measure with before it trains (the checkpoint is restored only to measure)."""
  config = run_config(workdir)
  if config.get("task") != CLASSIFIER_TASK:
    raise ConfigError(f"workdir {workdir} holds a run of task={config.get('task')!r}, not {CLASSIFIER_TASK!r}")
  if config.data.name != data_name:
    raise ConfigError(
        f"the classifier in {workdir} was trained on data.name={config.data.name!r}, not {data_name!r}: its "
        "features would measure the wrong images"
    )


class FrechetScorer:
  """Fréchet distances of image sets to `reference_images` (a data set's test split), in the features of the
  classifier trained on that data set in `workdir`; the reference's features are computed once."""

  def __init__(self, workdir: str, reference_images, data_name: str):
    check_classifier_run(workdir, data_name)
    self.extract = FeatureExtractor(workdir)
    self.reference = self.extract(reference_images)

  def __call__(self, images) -> float:
    return frechet_distance(self.extract(images), self.reference)
