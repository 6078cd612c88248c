"""bfloat16 compute leaves the train state float32: what the step returns is what a checkpoint holds."""
import jax
import jax.numpy as jnp

from experiments.data.pipeline import BatchIterator
from experiments.train import setup


def test_a_bfloat16_train_step_keeps_parameters_and_optimizer_state_float32(lm_config, tmp_path):
  lm_config.model.dtype = "bfloat16"
  task, trainer, _ = setup(lm_config, str(tmp_path))
  batch = next(BatchIterator(task.train_batches(lm_config.seed, 0, 1)))
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=trainer.batch_sharding), batch)

  # The shapes and dtypes the compiled step returns, without compiling it.
  state, metrics = jax.eval_shape(trainer.train_step, trainer.abstract_state, batch)

  assert task.model_config.dtype == "bfloat16"
  floats = {x.dtype.name for x in jax.tree.leaves((state.params, state.opt_states)) if jnp.issubdtype(x.dtype, jnp.floating)}
  assert floats == {"float32"}
  assert metrics["loss"].dtype == jnp.float32 and metrics["grad_norm"].dtype == jnp.float32
