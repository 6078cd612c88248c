"""The one trainer: train state, compiled train and eval steps, for any `Task`.

`train_step(state, batch) -> (state, metrics)` is compiled once with `jax.jit`:
input and output shardings come from the parameters' logical axis names and the
mesh, and the incoming state is donated so its buffers are reused in place.
"""
from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import optimizers, sharding
from experiments.tasks.base import Task


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_states: tuple  # one per objective
  rng: jax.Array  # raw uint32 key data, so checkpoints hold a plain array; step keys are fold_in(rng, step)


def all_finite(tree) -> jax.Array:
  """True iff no floating-point leaf of `tree` holds a NaN or an Inf.

  One reduction over the concatenated leaves: a reduction per leaf compiled with
  ~270 MB more host memory for the small LM here.
  """
  leaves = [jnp.ravel(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.isfinite(jnp.concatenate(leaves)))


def _select(params, key):
  return params if key is None else params[key]


def _replace(params, key, part):
  return part if key is None else {**params, key: part}


class Trainer:
  """Builds the train state and the compiled steps of `task` on `mesh`."""

  def __init__(self, task: Task, config, mesh: jax.sharding.Mesh):
    self.task = task
    self.mesh = mesh
    self.objectives = tuple(task.objectives())
    made = [optimizers.make(config.optimizer, config.train.num_steps) for _ in self.objectives]
    self.optimizers = tuple(optimizer for optimizer, _ in made)
    self.schedule = made[0][1]

    abstract_boxed = jax.eval_shape(self._init_boxed, jax.random.key(0))
    self.state_shardings = sharding.logical_shardings(nn.get_partition_spec(abstract_boxed), mesh)
    self.abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(abstract_boxed), self.state_shardings
    )
    sharding.check_shardings(self.abstract_state, self.state_shardings)
    self.batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    self.init = jax.jit(lambda rng: nn.unbox(self._init_boxed(rng)), out_shardings=self.state_shardings)
    self._init_around = jax.jit(self._new_state, out_shardings=self.state_shardings)
    self.train_step = jax.jit(
        self._train_step,
        in_shardings=(self.state_shardings, self.batch_sharding),
        out_shardings=(self.state_shardings, replicated),
        donate_argnums=0,
    )
    # Checked before every save, not every step: an infinite learning rate turns finite
    # gradients into NaN parameters without the step's loss showing it, and a pass over
    # the whole state each step cost ~8 % of the small LM's step time (experiments/bench/train.py).
    self.state_is_finite = jax.jit(
        lambda state: all_finite((state.params, state.opt_states)), in_shardings=(self.state_shardings,), out_shardings=replicated
    )
    self._eval_step = jax.jit(
        task.eval_fn, in_shardings=(self.state_shardings.params, self.batch_sharding), out_shardings=replicated
    )

  def init_from(self, rng: jax.Array, params) -> TrainState:
    """A fresh train state (step 0, new optimizer state) around given parameters, e.g. pretrained ones."""
    expected = self.abstract_state.params
    if jax.tree.structure(params) != jax.tree.structure(expected):
      raise ValueError(f"the parameters' tree is not the model's: {jax.tree.structure(params)} != {jax.tree.structure(expected)}")
    for (path, given), wanted in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(expected)):
      if given.shape != wanted.shape:
        raise ValueError(f"parameter {jax.tree_util.keystr(path)} has shape {given.shape}; the model needs {wanted.shape}")
    return self._init_around(params, jax.random.split(rng)[1])

  def _init_boxed(self, rng: jax.Array) -> TrainState:
    init_rng, train_rng = jax.random.split(rng)
    return self._new_state(self.task.init_params(init_rng), train_rng)

  def _new_state(self, params, train_rng: jax.Array) -> TrainState:
    opt_states = tuple(
        optimizer.init(_select(params, objective.params_key))
        for objective, optimizer in zip(self.objectives, self.optimizers)
    )
    return TrainState(step=jnp.int32(0), params=params, opt_states=opt_states, rng=jax.random.key_data(train_rng))

  def _train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    params, opt_states, metrics, scalars = state.params, [], {}, []
    # Objectives are applied in order, each seeing the parameters the previous one updated
    # (a GAN's generator step, listed second, sees the discriminator its first step just updated).
    for index, (objective, optimizer, opt_state) in enumerate(zip(self.objectives, self.optimizers, state.opt_states)):

      def loss_of_part(part, params=params, objective=objective, index=index):
        full = _replace(params, objective.params_key, part)
        return objective.loss_fn(full, batch, jax.random.fold_in(step_rng, index), True)

      part = _select(params, objective.params_key)
      (loss, aux), grads = jax.value_and_grad(loss_of_part, has_aux=True)(part)
      updates, opt_state = optimizer.update(grads, opt_state, part)
      params = _replace(params, objective.params_key, optax.apply_updates(part, updates))
      opt_states.append(opt_state)
      grad_norm = optax.global_norm(grads)
      scalars += [loss, grad_norm]
      prefix = "" if len(self.objectives) == 1 else f"{objective.name}/"
      metrics.update({prefix + k: v for k, v in aux.items()})
      metrics[prefix + "grad_norm"] = grad_norm
    metrics["learning_rate"] = self.schedule(state.step)
    finite = all_finite(scalars)
    metrics["nonfinite"] = (~finite).astype(jnp.int32)
    new_state = state.replace(step=state.step + 1, params=params, opt_states=tuple(opt_states))
    # A step with a NaN/Inf loss or gradient leaves the state untouched; the loop then
    # stops. (The updated state itself is checked before each save: state_is_finite.)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, metrics

  def evaluate(self, params, batches: Sequence[dict], max_batches: int = 0) -> dict[str, float]:
    """Sums the task's eval metrics over `batches` (the first `max_batches` if > 0) and summarises them."""
    if max_batches > 0:
      batches = batches[:max_batches]
    sums: dict[str, float] = {}
    for batch in batches:
      local = jax.tree.map(lambda x: np.array_split(x, jax.process_count())[jax.process_index()], batch)
      out = jax.device_get(self._eval_step(params, sharding.global_batch(local, self.batch_sharding)))
      for name, value in out.items():
        sums[name] = sums.get(name, 0.0) + float(np.asarray(value, np.float64))
    return self.task.summarize_eval(sums)
