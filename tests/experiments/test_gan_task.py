"""The GAN task through the one trainer: two parameter groups, each objective moving only its own, the losses and
the evaluation against hand computations, a few dozen finite steps on the 8x8 digits, the full run loop
(experiments/train.py) logging each objective's loss, and one-line config errors."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import gan as gan_configs
from decoders.errors import ConfigError
from decoders.image_metrics import checkerboard_score
from decoders.models import dcgan
from experiments import sharding, train
from experiments.tasks.gan import EVAL_SEED, GanTask
from experiments.trainer import Trainer

STEPS = 30


def _config(data_dir):
  config = gan_configs.get_config("dcgan,test")
  config.data.data_dir = data_dir
  return config


def _trainer(task, objective_names=("discriminator", "generator")):
  """A one-device trainer of `task`, keeping only the named objectives (in the task's order)."""
  task.objectives = lambda: [o for o in GanTask.objectives(task) if o.name in objective_names]
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  return Trainer(task, task.config, mesh)


def _batch(trainer, task, index=0):
  return sharding.global_batch(task.train_batches(0, 0, 1)[index], trainer.batch_sharding)


@pytest.fixture(scope="module")
def task(data_dir):
  return GanTask(_config(data_dir))


@pytest.fixture(scope="module")
def trainer(task):
  return _trainer(task)


@pytest.fixture(scope="module")
def params(trainer):
  return jax.device_get(trainer.init(jax.random.key(0)).params)


def _changed(before, after) -> set[str]:
  """The top-level groups of which some parameter differs."""
  return {group for group in before if not all(jax.tree.leaves(jax.tree.map(np.array_equal, before[group],
                                                                               after[group])))}


def test_the_parameters_split_into_two_groups_each_with_its_optimizer(trainer):
  state = trainer.abstract_state
  assert set(state.params) == {"generator", "discriminator"} and len(state.opt_states) == 2
  assert [o.params_key for o in trainer.objectives] == ["discriminator", "generator"]


@pytest.mark.parametrize("active, frozen", [("discriminator", "generator"), ("generator", "discriminator")])
def test_each_objective_moves_only_its_own_group(data_dir, active, frozen):
  alone = _trainer(GanTask(_config(data_dir)), objective_names=(active,))
  state = alone.init(jax.random.key(0))
  before = jax.device_get(state.params)
  state, metrics = alone.train_step(state, _batch(alone, alone.task))
  assert int(metrics["nonfinite"]) == 0
  assert _changed(before, jax.device_get(state.params)) == {active}


def test_the_discriminator_objective_sends_no_gradient_into_the_generator(task, params):
  # Beyond what the trainer's params_key enforces: the generated images are stop-gradient'ed, so the
  # discriminator's backward pass never runs through the generator.
  batch = {"image": jnp.asarray(task.train_images[:8])}
  d_grads = jax.jit(jax.grad(lambda p: task.discriminator_loss(p, batch, jax.random.key(1), True)[0]))(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(d_grads["generator"]))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(d_grads["discriminator"]))
  g_grads = jax.jit(jax.grad(lambda p: task.generator_loss(p, batch, jax.random.key(1), True)[0]))(params)
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g_grads["generator"]))


def _sigmoid(x):
  return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def _separately(task, params, images, rng):
  """(real logits, generated images, their logits), each network applied on its own (no shared pass)."""
  model = task.model
  fake = model.apply({"params": params}, dcgan.sample_latents(rng, len(images), model.config.latent_dim),
                     method="generate")
  real_logits = model.apply({"params": params}, images, method="discriminate")
  return real_logits, fake, model.apply({"params": params}, fake, method="discriminate")


def test_the_losses_are_the_binary_cross_entropies_of_the_discriminators_logits(task, params):
  images = jnp.asarray(task.train_images[:8])
  rng = jax.random.key(7)
  real_logits, _, fake_logits = _separately(task, params, images, rng)
  d_loss, d_metrics = task.discriminator_loss(params, {"image": images}, rng, True)
  expected = -np.mean(np.log(_sigmoid(real_logits))) - np.mean(np.log(1 - _sigmoid(fake_logits)))
  np.testing.assert_allclose(d_loss, expected, rtol=1e-5)
  np.testing.assert_allclose(d_metrics["real_accuracy"], np.mean(np.asarray(real_logits) > 0))
  np.testing.assert_allclose(d_metrics["fake_accuracy"], np.mean(np.asarray(fake_logits) < 0))
  g_loss, _ = task.generator_loss(params, {"image": images}, rng, True)
  np.testing.assert_allclose(g_loss, -np.mean(np.log(_sigmoid(fake_logits))), rtol=1e-5)
  assert task.loss_fn(params, {"image": images}, rng, True)[0] == d_loss  # a one-objective caller's: D's


def test_evaluation_sums_the_real_rows_and_their_generated_partners(task, params):
  images = np.asarray(task.eval_images[:8])
  weight = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)  # the last three: padding
  sums = task.eval_fn(params, {"image": jnp.asarray(images), "weight": jnp.asarray(weight)})
  real_logits, fake, fake_logits = _separately(task, params, jnp.asarray(images), jax.random.key(EVAL_SEED))
  kept = slice(0, 5)
  real, generated = _sigmoid(real_logits)[kept], _sigmoid(fake_logits)[kept]
  expected = {
      "loss": -np.log(real) - np.log(1 - generated),
      "generator_loss": -np.log(generated),
      "real_accuracy": real > 0.5,
      "fake_accuracy": generated < 0.5,
      "checkerboard": np.asarray(checkerboard_score(fake))[kept],
  }
  summary = task.summarize_eval({name: float(value) for name, value in sums.items()})
  assert float(sums["examples"]) == 5 and summary.keys() == expected.keys()
  for name, values in expected.items():
    np.testing.assert_allclose(summary[name], np.mean(values), rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_few_dozen_steps_train_both_players_with_finite_losses(task, trainer):
  state = trainer.init(jax.random.key(0))
  initial = trainer.evaluate(state.params, task.eval_batches())
  batches = task.train_batches(0, 0, 1)
  history = []
  for index in range(STEPS):
    state, metrics = trainer.train_step(state, sharding.global_batch(batches[index], trainer.batch_sharding))
    history.append(jax.device_get(metrics))
  assert {"discriminator/loss", "discriminator/real_accuracy", "generator/loss", "generator/grad_norm"} <= set(
      history[0])
  assert all(np.isfinite(value) and int(step["nonfinite"]) == 0 for step in history for value in step.values())
  final = trainer.evaluate(state.params, task.eval_batches())
  assert all(np.isfinite(value) for value in final.values()), final
  assert all(0 <= final[name] <= 1 for name in ("real_accuracy", "fake_accuracy", "checkerboard"))
  # The discriminator learns first: from about log 4 (it cannot tell) to below it, and the generator's loss rises.
  assert final["loss"] < initial["loss"] - 0.1 and final["generator_loss"] > initial["generator_loss"]
  assert int(state.step) == STEPS


def test_the_run_loop_trains_both_objectives_and_logs_each_loss(data_dir, tmp_path):
  config = _config(data_dir)
  config.train.update(num_steps=4, log_every=2, eval_every=4, checkpoint_every=4)
  final = train.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train_rows = [row for row in rows if row["split"] == "train"]
  assert [row["step"] for row in train_rows] == [2, 4]
  assert all(np.isfinite(row["discriminator/loss"]) and np.isfinite(row["generator/loss"]) for row in train_rows)
  assert np.isfinite(final["loss"]) and np.isfinite(final["generator_loss"])
  assert os.listdir(tmp_path / "figures") == ["samples.png"]  # an 8 x 8 grid of the generator's images


def test_the_final_evaluation_scores_the_generated_images_in_a_classifiers_features(data_dir, trained_classifier, tmp_path):
  config = _config(data_dir)
  config.train.update(num_steps=4, eval_every=4, checkpoint_every=4)
  config.evaluation.classifier_workdir = trained_classifier[0]
  final = train.train_and_evaluate(config, str(tmp_path))
  # Four steps make digits of nothing: the generated images lie far further from the test images than train images do.
  assert 0.0 <= final["frechet_distance_train"] < final["frechet_distance"] / 10
  # Without a classifier, no distance.
  config.evaluation.classifier_workdir = ""
  assert "frechet_distance" not in train.train_and_evaluate(config, str(tmp_path / "none"))


def test_a_classifier_of_another_data_set_is_refused_before_training(data_dir, trained_classifier):
  config = gan_configs.get_config("dcgan")  # Fashion-MNIST, against the classifier's 8x8 digits
  config.data.data_dir = "/nonexistent/tfds"  # refused before any data is read
  config.evaluation.classifier_workdir = trained_classifier[0]
  with pytest.raises(ConfigError, match="was trained on data.name='sklearn_digits', not 'fashion_mnist'"):
    GanTask(config)


def test_both_sizes_of_the_config_check():
  for variant in ("", "test", "dcgan", "dcgan,test"):
    assert train.check_config(gan_configs.get_config(variant)) is GanTask


def test_the_model_is_described_without_reading_the_data():
  config = gan_configs.get_config("dcgan")
  config.data.data_dir = "/nonexistent/tfds"
  shapes = nn.unbox(jax.eval_shape(GanTask.describe(config).init_params, jax.random.key(0)))
  assert set(shapes) == {"generator", "discriminator"}
  assert shapes["generator"]["project"]["kernel"].shape == (100, 7 * 7 * 128)  # 28x28 Fashion-MNIST in two doublings


def test_an_unknown_variant_names_the_variants():
  with pytest.raises(ValueError, match="unknown variant 'wgan' of gan; expected one of \\('dcgan',\\)"):
    gan_configs.get_config("wgan")


CASES = {  # name: (overrides, a fragment of the message)
    "too many doublings for 8x8": (
        {"model.generator_channels": (32, 16, 8, 4)}, "images of 8x8 cannot be reached by doubling"
    ),
    "an unknown upsampling": ({"model.upsampling": "deconv"}, "model.upsampling='deconv' is not one of"),
    "batch normalisation": ({"model.generator_norm": "batch"}, "model.generator_norm='batch' is not one of"),
    "a kernel of 0": ({"model.kernel_size": 0}, "model.kernel_size=0 must be a positive integer"),
    "the autoencoder's channels": ({"model.channels": (8,)}, "model.channels"),
    "an unknown data set": ({"data.name": "cifar10"}, "data.name='cifar10' must be one of"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_impossible_setting_is_one_line_before_anything_runs(case):
  overrides, fragment = CASES[case]
  tree = gan_configs.get_config("dcgan,test").to_dict()
  for key, value in overrides.items():
    section, name = key.split(".")
    tree[section][name] = value
  with pytest.raises(ConfigError) as raised:
    train.check_config(ml_collections.ConfigDict(tree))
  assert fragment in str(raised.value) and "\n" not in str(raised.value)
