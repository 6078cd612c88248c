"""The sharded train step computes what the single-device step computes (DESIGN.md, convention 8).

Each layout (data, FSDP and tensor parallelism, alone and mixed; GQA's key/value heads
split over the tensor axis; a scanned layer stack) gives the loss and the gradients of
one device; one layout also trains for a few steps through the trainer, optimizer
state included, and ends with the single-device parameters.
"""
import jax
import numpy as np
import pytest

from experiments import sharding, tasks
from experiments.data.pipeline import BatchIterator
from experiments.trainer import Trainer

# Sharding changes only the order of float32 reductions (per-shard partial sums, then an
# all-reduce): losses agree to ~2e-7 relative, gradients (the largest ~5e-2) to ~1e-8
# absolute, parameters after 3 steps to ~5e-8. A wrong sharding (a missed all-reduce, a
# mis-split batch or head) would be off by a fraction of a gradient, or of one step's
# move of ~lr = 1e-3: orders of magnitude more than these bounds.
RTOL, ATOL = 1e-5, 1e-6
# Except the attention key bias: it adds q.b_k to every logit of a softmax row, so its
# gradient is exactly 0 in exact arithmetic and ~1e-10 of rounding noise in float32. Adam
# divides that noise by its own RMS, so the bias holds lr-sized noise (|b_k| < 1e-6 here)
# that differs with the summation order. Bounded at 1 % of one step's update instead.
KEY_BIAS_ATOL = 1e-5
NUM_STEPS = 3

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (virtual) devices: see tests/conftest.py")

# Model overrides of the tiny LM config (heads=4, so they split over a tensor axis of 4, as
# the 88-row padded vocabulary does).
MODELS = {
    "mha": dict(num_heads=4),
    "gqa": dict(num_heads=4, num_kv_heads=2, positions="rope"),  # 2 KV heads: one per tensor shard below
    "scanned": dict(num_heads=4, num_layers=2, scan_layers=True),
}
LAYOUTS = {
    "data": ("mha", dict(data=8, fsdp=1, tensor=1)),
    "fsdp": ("mha", dict(data=1, fsdp=8, tensor=1)),
    "tensor": ("mha", dict(data=2, fsdp=1, tensor=4)),
    "data x fsdp x tensor, GQA": ("gqa", dict(data=2, fsdp=2, tensor=2)),
    "scanned layers, fsdp x tensor": ("scanned", dict(data=1, fsdp=2, tensor=4)),
}


def _config(data_dir, model):
  from configs import shakespeare_char

  config = shakespeare_char.get_config("test")
  config.data.data_dir = data_dir
  config.model.update(MODELS[model])
  return config


def _mesh(shape):
  devices = jax.devices()[: shape["data"] * shape["fsdp"] * shape["tensor"]]
  return sharding.make_mesh(shape, devices=devices)


def _first_batch(task, config):
  return next(BatchIterator(task.train_batches(config.seed, 0, 1)))


def _loss_and_grads(task, config, mesh, params, batch):
  """The loss and gradients of `params` laid out on `mesh` as the trainer lays them out."""
  trainer = Trainer(task, config, mesh)
  shardings = trainer.state_shardings.params

  def loss(params, batch):
    return task.loss_fn(params, batch, jax.random.key(0), True)[0]

  grad = jax.jit(
      jax.value_and_grad(loss), in_shardings=(shardings, trainer.batch_sharding), out_shardings=(None, shardings)
  )
  value, grads = grad(jax.device_put(params, shardings), sharding.global_batch(batch, trainer.batch_sharding))
  return float(value), grads, shardings


@pytest.fixture(scope="module")
def single_device_grads(data_dir):
  """model -> (task, config, params, batch, loss, grads) on one device, computed once per model."""
  results = {}

  def get(model):
    if model not in results:
      config = _config(data_dir, model)
      task = tasks.build(config)
      # Random values, not the initialiser's: any parameters serve, and there is no init to compile.
      rng = np.random.default_rng(0)
      shapes = jax.eval_shape(task.init_params, jax.random.key(0))
      params = jax.tree.map(lambda x: rng.normal(0.0, 0.1, x.shape).astype(np.float32), shapes)
      batch = _first_batch(task, config)
      mesh = _mesh(dict(data=1, fsdp=1, tensor=1))
      loss, grads, _ = _loss_and_grads(task, config, mesh, params, batch)
      results[model] = task, config, params, batch, loss, jax.device_get(grads)
    return results[model]

  return get


def _assert_trees_close(got, want, atol=ATOL):
  for (path, leaf), expected in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    name = jax.tree_util.keystr(path)
    np.testing.assert_allclose(np.asarray(leaf), expected, rtol=RTOL, atol=atol, err_msg=name)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_gives_the_single_device_loss_and_gradients(single_device_grads, layout):
  model, mesh_shape = LAYOUTS[layout]
  task, config, params, batch, expected_loss, expected_grads = single_device_grads(model)

  loss, grads, shardings = _loss_and_grads(task, config, _mesh(mesh_shape), params, batch)

  np.testing.assert_allclose(loss, expected_loss, rtol=RTOL, atol=ATOL)
  _assert_trees_close(grads, expected_grads)
  # The test is only worth something if the weights really are split as the layout says.
  specs = {jax.tree_util.keystr(path): tuple(s.spec) for path, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}
  scanned = task.model_config.scan_layers
  attention = "['layers']['attention']" if scanned else "['block_0']['attention']"
  if mesh_shape["fsdp"] > 1:
    assert specs["['embed']['embedding']"] == ("tensor", "fsdp")  # vocab x embed
  if mesh_shape["tensor"] > 1:
    # Megatron: query/key/value split by (KV) heads, the output projection by its input heads.
    assert "tensor" in specs[attention + "['key']['kernel']"] and "tensor" in specs[attention + "['out']['kernel']"]
  if scanned:  # the stacked axis stays whole: scan takes one layer at a time
    assert all(spec[0] is None for name, spec in specs.items() if "['layers']" in name)


@pytest.fixture(scope="module")
def single_device_run(data_dir):
  config = _config(data_dir, "mha")
  task = tasks.build(config)
  iterator = BatchIterator(task.train_batches(config.seed, 0, 1))
  batches = [next(iterator) for _ in range(NUM_STEPS)]
  trainer = Trainer(task, config, _mesh(dict(data=1, fsdp=1, tensor=1)))
  initial = jax.device_get(trainer.init(jax.random.key(config.seed)))
  losses, params = _train(trainer, initial, batches)
  return task, config, initial, batches, losses, jax.device_get(params)


def _train(trainer, state, batches):
  """Losses and final parameters of the trainer's steps from `state`, laid out as the trainer lays it out."""
  state = jax.device_put(state, trainer.state_shardings)
  losses = []
  for batch in batches:
    state, metrics = trainer.train_step(state, sharding.global_batch(batch, trainer.batch_sharding))
    losses.append(float(metrics["loss"]))
  return losses, state.params


def test_sharded_training_steps_end_with_the_single_device_parameters(single_device_run):
  task, config, initial, batches, expected_losses, expected_params = single_device_run

  losses, params = _train(Trainer(task, config, _mesh(dict(data=2, fsdp=2, tensor=2))), initial, batches)

  assert not params["embed"]["embedding"].sharding.is_fully_replicated
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
