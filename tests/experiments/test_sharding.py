"""The sharded train step computes what the single-device step computes (DESIGN.md, convention 8)."""
import jax
import numpy as np
import pytest

from experiments import sharding, tasks
from experiments.data.pipeline import BatchIterator
from experiments.trainer import Trainer

# Sharding changes only the order of float32 reductions (per-shard partial sums, then an
# all-reduce): after 3 steps parameters agree to ~5e-8 here, losses to ~1e-7 relative.
# One step moves a parameter by ~lr = 1e-3, so a wrong sharding (a missed all-reduce, a
# mis-split batch) would be off by orders of magnitude more than these bounds.
RTOL, ATOL = 1e-5, 1e-6
# Except the attention key bias: it adds q.b_k to every logit of a softmax row, so its
# gradient is exactly 0 in exact arithmetic and ~1e-10 of rounding noise in float32. Adam
# divides that noise by its own RMS, so the bias holds lr-sized noise (|b_k| < 1e-6 here)
# that differs with the summation order. Bounded at 1 % of one step's update instead.
KEY_BIAS_ATOL = 1e-5
NUM_STEPS = 3

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (virtual) devices: see tests/conftest.py")


def _train(task, config, mesh, batches):
  trainer = Trainer(task, config, mesh)
  state = trainer.init(jax.random.key(config.seed))
  losses = []
  for batch in batches:
    state, metrics = trainer.train_step(state, sharding.global_batch(batch, trainer.batch_sharding))
    losses.append(float(metrics["loss"]))
  return losses, state.params


@pytest.fixture(scope="module")
def single_device_run(data_dir):
  from configs import shakespeare_char

  config = shakespeare_char.get_config("test")
  config.data.data_dir = data_dir
  config.model.num_heads = 4  # so the heads split over a tensor axis of 4, as the 88-row padded vocabulary does
  task = tasks.build(config)
  iterator = BatchIterator(task.train_batches(config.seed, 0, 1))
  batches = [next(iterator) for _ in range(NUM_STEPS)]
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  losses, params = _train(task, config, mesh, batches)
  return task, config, batches, losses, jax.device_get(params)


@pytest.mark.parametrize(
    "mesh_shape", [dict(data=4, fsdp=2, tensor=1), dict(data=2, fsdp=2, tensor=2), dict(data=1, fsdp=2, tensor=4)]
)
def test_sharded_steps_match_the_single_device_steps(single_device_run, mesh_shape):
  task, config, batches, expected_losses, expected_params = single_device_run
  assert config.data.batch_size % (mesh_shape["data"] * mesh_shape["fsdp"]) == 0
  mesh = sharding.make_mesh(mesh_shape, devices=jax.devices()[:8])

  losses, params = _train(task, config, mesh, batches)

  # The test is only worth something if the weights really are split across devices.
  embedding = params["embed"]["embedding"]
  assert not embedding.sharding.is_fully_replicated
  np.testing.assert_allclose(losses, expected_losses, rtol=RTOL, atol=ATOL)
  assert expected_losses[0] != expected_losses[-1]  # the parameters did move
  for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(expected_params)):
    name = jax.tree_util.keystr(path)
    atol = KEY_BIAS_ATOL if name.endswith("['key']['bias']") else ATOL
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=atol, err_msg=name)


def test_an_untied_output_projection_is_sharded_too(data_dir):
  from configs import llama

  config = llama.get_config("test")
  config.data.data_dir = data_dir
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2), devices=jax.devices()[:8])
  trainer = Trainer(tasks.build(config), config, mesh)
  spec = trainer.state_shardings.params["unembed"]["kernel"].spec
  assert tuple(spec) == ("fsdp", "tensor")  # embed x vocab, like the tied table
