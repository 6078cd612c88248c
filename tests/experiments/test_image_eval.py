"""Image evaluation: the Fréchet distance against scipy's matrix square root and closed forms, AUROC against
scikit-learn (ties, and an autoencoder's anomaly scores on Fashion-MNIST), PNG grids read back pixel by pixel, and
classifier features restored from a trained run's workdir."""
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
import sklearn.metrics

from decoders.errors import ConfigError
from decoders.models import autoencoder
from experiments import image_eval, train
from experiments.data import fashion_mnist, images
from experiments.errors import UserError


def _correlated(rng, count, dim, shift=0.0):
  """Gaussian features with a random full covariance."""
  mixing = rng.normal(size=(dim, dim))
  return rng.normal(size=(count, dim)) @ mixing + shift


def _scipy_frechet(a, b):
  mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
  cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
  root = scipy.linalg.sqrtm(cov_a @ cov_b).real
  return np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)


def test_the_frechet_distance_matches_scipys_matrix_square_root():
  rng = np.random.default_rng(0)
  for dim in (1, 3, 8):
    a, b = _correlated(rng, 200, dim), _correlated(rng, 150, dim, shift=0.5)
    expected = _scipy_frechet(a, b)
    assert expected > 0.1
    np.testing.assert_allclose(image_eval.frechet_distance(a, b), expected, rtol=1e-8)


def test_in_one_dimension_it_is_the_squared_differences_of_means_and_deviations():
  rng = np.random.default_rng(1)
  a, b = rng.normal(1.0, 2.0, size=(300, 1)), rng.normal(-0.5, 0.7, size=(100, 1))
  expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
  np.testing.assert_allclose(image_eval.frechet_distance(a, b), expected, rtol=1e-10)


def test_it_is_zero_for_one_set_symmetric_and_a_shift_adds_its_squared_length():
  rng = np.random.default_rng(2)
  a, b = _correlated(rng, 120, 6), _correlated(rng, 90, 6)
  scale = np.trace(np.cov(a, rowvar=False))
  assert abs(image_eval.frechet_distance(a, a)) < 1e-9 * scale
  np.testing.assert_allclose(image_eval.frechet_distance(a, b), image_eval.frechet_distance(b, a), rtol=1e-9)
  direction = rng.normal(size=6)
  distances = [image_eval.frechet_distance(a, a + length * direction) for length in (0.5, 1.0, 2.0)]
  np.testing.assert_allclose(distances, np.array([0.25, 1.0, 4.0]) * (direction @ direction), rtol=1e-7, atol=1e-8)


def test_fewer_examples_than_features_give_a_finite_distance():
  # Singular covariances (rank 4 in 10 dimensions): the clipped eigenvalues keep the square roots real.
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(5, 10)), rng.normal(size=(5, 10)) + 1.0
  distance = image_eval.frechet_distance(a, b)
  assert np.isfinite(distance) and distance > 0
  # The square root of an eigenvalue that rounding left at 1e-16 instead of 0 is 1e-8: zero to that precision.
  assert abs(image_eval.frechet_distance(a, a)) < 1e-6 * np.trace(np.cov(a, rowvar=False))


@pytest.mark.parametrize("a, b, message", [
    (np.zeros((4, 3)), np.zeros((4, 2)), "features_a have 3 features and features_b 2"),
    (np.zeros((1, 3)), np.zeros((4, 3)), "features_a of shape (1, 3) must be [examples >= 2, features >= 1]"),
    (np.zeros((4, 3)), np.zeros(4), "features_b of shape (4,) must be"),
    (np.zeros((4, 3)), np.full((4, 3), np.nan), "features_b holds NaN or Inf"),
])
def test_bad_features_are_one_line(a, b, message):
  with pytest.raises(ConfigError) as raised:
    image_eval.frechet_distance(a, b)
  assert message in str(raised.value) and "\n" not in str(raised.value)


def test_auroc_counts_ties_one_half_as_scikit_learn_and_a_pair_count_do():
  rng = np.random.default_rng(4)
  negative, positive = rng.integers(0, 5, size=40), rng.integers(1, 6, size=30)  # many ties across the classes
  scores, labels = np.concatenate([negative, positive]), np.r_[np.zeros(40), np.ones(30)]
  pairs = (positive[:, None] > negative[None]).mean() + 0.5 * (positive[:, None] == negative[None]).mean()
  value = image_eval.auroc(negative, positive)
  assert value == pytest.approx(sklearn.metrics.roc_auc_score(labels, scores), abs=1e-12)
  assert value == pytest.approx(pairs, abs=1e-12)
  assert image_eval.auroc([0.0, 1.0], [2.0, 3.0]) == 1.0 and image_eval.auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
  assert image_eval.auroc([1.0, 1.0], [1.0]) == 0.5


@pytest.mark.parametrize("negative, positive, message", [
    ([], [1.0], "scores_negative of shape (0,) must be a non-empty vector"),
    ([1.0], [[1.0]], "scores_positive of shape (1, 1) must be"),
    ([np.nan], [1.0], "scores_negative holds NaN"),
])
def test_bad_scores_are_one_line(negative, positive, message):
  with pytest.raises(ConfigError) as raised:
    image_eval.auroc(negative, positive)
  assert message in str(raised.value) and "\n" not in str(raised.value)


def _fashion_mnist(split):
  builder = images.ImageSets(config="fashion_mnist", file_format="array_record")
  if not builder.is_prepared():
    pytest.skip("Fashion-MNIST is not built here: python -m experiments.data.images --names=fashion_mnist")
  return images.as_arrays(builder, split)


def _train_autoencoder(config, train_images, steps=150, batch_size=64):
  """Adam on the Bernoulli reconstruction loss, all steps in one compiled scan."""
  model = autoencoder.Autoencoder(config)
  params = nn.unbox(model.init(jax.random.key(0), train_images[:1]))["params"]
  optimizer = optax.adam(3e-3)
  rows = jax.random.randint(jax.random.key(1), (steps, batch_size), 0, len(train_images))

  def loss_of(params, batch_rows):
    return -model.apply({"params": params}, train_images[batch_rows])[1].mean()

  def step(carry, batch_rows):
    params, opt_state = carry
    updates, opt_state = optimizer.update(jax.grad(loss_of)(params, batch_rows), opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.jit(lambda p, r: jax.lax.scan(step, (p, optimizer.init(p)), r))(params, rows)
  return model, params


def test_auroc_of_an_autoencoders_anomaly_scores_on_fashion_mnist_is_scikit_learns():
  # Trained on trousers alone, it reconstructs other clothes worse: their error is the anomaly score.
  trousers = fashion_mnist.CLASS_NAMES.index("Trouser")
  train_split, test_split = _fashion_mnist("train"), _fashion_mnist("test")
  normal = jnp.asarray(train_split["image"][train_split["label"] == trousers][:2000])
  # An MLP autoencoder: the conv one trains about 20 times slower per step on these CPUs, for the same check.
  config = autoencoder.AutoencoderConfig(image_shape=(28, 28, 1), architecture="mlp", hidden_sizes=(64,), latent_dim=8)
  model, params = _train_autoencoder(config, normal)
  test_images, test_labels = test_split["image"][:1000], test_split["label"][:1000]
  outputs, _ = model.apply({"params": params}, test_images)
  errors = np.square(np.asarray(autoencoder.pixel_means("bernoulli", outputs)) - test_images).mean(axis=(1, 2, 3))
  anomalous = test_labels != trousers
  value = image_eval.auroc(errors[~anomalous], errors[anomalous])
  assert value == pytest.approx(sklearn.metrics.roc_auc_score(anomalous, errors), abs=1e-12)
  assert value > 0.9  # far from chance: the scores rank what the model never saw as anomalous


def test_features_come_back_from_the_workdir_of_the_trained_classifier(trained_classifier, data_dir):
  workdir, config, final = trained_classifier
  test = images.DATASETS["sklearn_digits"].load(data_dir, "test")
  extractor = image_eval.FeatureExtractor(workdir, batch_size=64)
  features = extractor(test["image"])
  assert extractor.step == config.train.num_steps
  assert features.shape == (len(test["image"]), config.model.feature_dim) and features.dtype == np.float32
  # The restored parameters are the trained ones: their predictions score the run's final accuracy.
  head = extractor.params["to_logits"]
  logits = features @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
  assert np.mean(logits.argmax(-1) == test["label"]) == pytest.approx(final["accuracy"], abs=1e-6)
  # Batches of 7 (a padded last batch) and the one-call helper give the same features.
  in_sevens = image_eval.classifier_features(workdir, test["image"], batch_size=7)
  np.testing.assert_allclose(in_sevens, features, rtol=1e-5, atol=1e-6)
  # A sanity check of the feature space: two halves of the test digits are nearer each other than to noise.
  noise = np.random.default_rng(6).uniform(size=test["image"].shape).astype(np.float32)
  half = len(features) // 2
  between_halves = image_eval.frechet_distance(features[:half], features[half:])
  assert between_halves < image_eval.frechet_distance(features, extractor(noise))


def test_images_the_classifier_cannot_read_are_one_line(trained_classifier):
  extractor = image_eval.FeatureExtractor(trained_classifier[0])
  with pytest.raises(ConfigError, match=r"images of shape \(2, 28, 28, 1\) do not fit the classifier's \[n, 8, 8, 1\]"):
    extractor(np.zeros((2, 28, 28, 1)))
  with pytest.raises(ConfigError, match=r"images must be in \[0, 1\]"):
    extractor(np.full((2, 8, 8, 1), 255.0))


def test_a_missing_or_foreign_workdir_is_one_line_naming_it(trained_classifier, tmp_path):
  missing = str(tmp_path / "missing")
  with pytest.raises(UserError, match=f"workdir {missing} holds no config.json"):
    image_eval.FeatureExtractor(missing)
  garbled = tmp_path / "garbled"
  garbled.mkdir()
  (garbled / "config.json").write_text("{not json")
  with pytest.raises(UserError, match=f"{garbled / 'config.json'} cannot be read as a config"):
    image_eval.FeatureExtractor(str(garbled))
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "config.json").write_text(json.dumps({"task": "autoencoder"}))
  with pytest.raises(ConfigError, match=f"workdir {foreign} holds a run of task='autoencoder', not 'image_classifier'"):
    image_eval.FeatureExtractor(str(foreign))


def test_a_workdir_whose_checkpoints_are_all_corrupt_is_one_line_naming_them(trained_classifier, tmp_path):
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(trained_classifier[0], workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  for step in os.listdir(checkpoints):
    os.remove(os.path.join(checkpoints, step, "state", "_METADATA"))
  with pytest.raises(UserError) as raised:
    image_eval.FeatureExtractor(workdir)
  assert str(raised.value) == f"no checkpoint in {checkpoints}: train first (--mode=train)"


def test_a_vaes_prior_samples_are_scored_against_the_test_images(trained_classifier, data_dir, tmp_path):
  from configs import autoencoder as autoencoder_configs

  config = autoencoder_configs.get_config("vae,test")
  config.data.data_dir = data_dir
  config.train.update(num_steps=10, eval_every=10, checkpoint_every=10)
  config.evaluation.classifier_workdir = trained_classifier[0]
  final = train.train_and_evaluate(config, str(tmp_path))
  # 10 steps of training: its samples are far from the digits, the train digits (the floor) close to them.
  assert 0.0 <= final["frechet_distance_train"] < final["frechet_distance"]
  test_images = images.DATASETS["sklearn_digits"].load(data_dir, "test")["image"]
  scorer = image_eval.FrechetScorer(trained_classifier[0], test_images, "sklearn_digits")
  assert abs(scorer(test_images)) < 1e-6  # the reference set itself


def test_a_classifier_of_another_data_set_or_task_is_refused_before_training(trained_classifier, data_dir, tmp_path):
  from configs import autoencoder as autoencoder_configs

  with pytest.raises(ConfigError, match="was trained on data.name='sklearn_digits', not 'fashion_mnist': its features"):
    image_eval.check_classifier_run(trained_classifier[0], "fashion_mnist")
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "config.json").write_text(autoencoder_configs.get_config("conv,test").to_json())
  config = autoencoder_configs.get_config("vae,test")
  config.data.data_dir = data_dir
  config.evaluation.classifier_workdir = str(foreign)
  with pytest.raises(ConfigError, match="holds a run of task='autoencoder', not 'image_classifier'"):
    train.build(config, train.check_config(config))  # the task checks it as it is built: before any step
