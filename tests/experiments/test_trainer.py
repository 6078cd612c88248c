"""The trainer serves a task with two objectives over two parameter groups (a GAN's shape)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import sharding
from experiments.tasks.base import Objective, Task
from experiments.trainer import Trainer

INIT = 0.5


class TwoQuadratics(Task):
  """Objective "a" pulls params["a"] to 1, objective "b" pulls params["b"] to -2.

  Each loss also depends on the other group, so a trainer that let an objective update
  every parameter would move both groups; `batch` weights switch each loss on or off.
  """

  def init_params(self, rng):
    del rng
    # Not zero: each loss's gradient with respect to the other group is that group's value.
    return {name: nn.Partitioned(jnp.full((4,), INIT), names=(None,)) for name in ("a", "b")}

  def objectives(self):
    return (Objective("a", self._loss_a, params_key="a"), Objective("b", self._loss_b, params_key="b"))

  def _loss_a(self, params, batch, rng, train):
    loss = jnp.mean(batch["weight_a"]) * (jnp.sum((params["a"] - 1.0) ** 2) + jnp.sum(params["a"] * params["b"]))
    return loss, {"loss": loss}

  def _loss_b(self, params, batch, rng, train):
    loss = jnp.mean(batch["weight_b"]) * (jnp.sum((params["b"] + 2.0) ** 2) + jnp.sum(params["a"] * params["b"]))
    return loss, {"loss": loss}

  def loss_fn(self, params, batch, rng, train):
    raise NotImplementedError("the trainer must use objectives()")

  def eval_fn(self, params, batch):
    return {}

  def summarize_eval(self, sums):
    return {}

  def train_batches(self, seed, process_index, process_count):
    raise NotImplementedError

  def eval_batches(self):
    return []

  def units_per_step(self):
    return 1


@pytest.fixture(scope="module")
def trainer():
  config = ml_collections.ConfigDict(
      dict(
          optimizer=dict(
              learning_rate=0.05, schedule="constant", warmup_steps=0, final_lr_fraction=1.0,
              b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=100.0,
          ),
          train=dict(num_steps=100),
      )
  )
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  return Trainer(TwoQuadratics(config), config, mesh)


def _batch(weight_a, weight_b):
  return {"weight_a": np.full((1,), weight_a, np.float32), "weight_b": np.full((1,), weight_b, np.float32)}


def _step(trainer, state, weight_a, weight_b):
  return trainer.train_step(state, sharding.global_batch(_batch(weight_a, weight_b), trainer.batch_sharding))


@pytest.mark.parametrize("active, frozen", [("a", "b"), ("b", "a")])
def test_each_objective_changes_only_its_own_parameter_group(trainer, active, frozen):
  state = trainer.init(jax.random.key(0))
  state, _ = _step(trainer, state, float(active == "a"), float(active == "b"))
  params = jax.device_get(state.params)
  assert np.all(params[active] != INIT)
  np.testing.assert_array_equal(params[frozen], np.full(4, INIT))


def test_both_objectives_decrease_and_metrics_are_prefixed(trainer):
  state = trainer.init(jax.random.key(0))
  history = []
  for _ in range(30):
    state, metrics = _step(trainer, state, 1.0, 1.0)
    history.append(jax.device_get(metrics))
  assert {"a/loss", "b/loss", "a/grad_norm", "b/grad_norm", "learning_rate", "nonfinite"} <= set(history[0])
  assert "loss" not in history[0]
  for name in ("a/loss", "b/loss"):
    assert history[-1][name] < history[0][name] - 0.5
  assert len(state.opt_states) == 2
  assert int(state.step) == 30


class OnlyA(TwoQuadratics):
  """One objective: nothing after its update can see (and stumble on) what the update did."""

  def objectives(self):
    return (Objective("a", self._loss_a, params_key="a"),)


def test_a_finite_loss_can_hide_a_non_finite_state_which_the_save_check_sees(trainer):
  # An infinite learning rate (refused by the config checks; here the trainer is built
  # directly) turns finite gradients into non-finite parameters while the loss and the
  # gradient norm the step sees stay finite: only a look at the state itself finds it.
  config = ml_collections.ConfigDict(trainer.task.config.to_dict())
  config.optimizer.learning_rate = float("inf")
  reckless = Trainer(OnlyA(config), config, trainer.mesh)
  state = reckless.init(jax.random.key(0))
  assert bool(reckless.state_is_finite(state))

  state, metrics = _step(reckless, state, 1.0, 0.0)

  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"]) and int(metrics["nonfinite"]) == 0
  assert not bool(reckless.state_is_finite(state))


def test_a_step_with_a_non_finite_loss_is_not_applied(trainer):
  state = trainer.init(jax.random.key(0))
  before = jax.device_get(state)
  state, metrics = _step(trainer, state, float("nan"), 1.0)
  assert int(metrics["nonfinite"]) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), before)  # untouched, step included
