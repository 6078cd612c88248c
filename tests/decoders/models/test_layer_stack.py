"""BlockStack: rematerialisation and nn.scan change how the layers run, never what they compute."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import decoders
from decoders import losses
from decoders.layers.partitioning import LAYERS
from decoders.models import decoder_lm
from tests.decoders.models.test_decoder_lm import operand_dtypes

CONFIG = decoder_lm.DecoderLMConfig(
    vocab_size=13, num_layers=2, width=16, num_heads=4, num_kv_heads=2, mlp_dim=32, max_len=8, positions="rope"
)
# Remat and scan repeat the same float32 operations in the same order (on this CPU the results
# are bit-identical); the bound only leaves XLA room to fuse a recomputation differently.
TOLERANCE = dict(rtol=1e-6, atol=1e-7)
TOKENS = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, CONFIG.max_len + 1)).astype(np.int32)


def _init(config):
  """Boxed parameters (with their logical axis names), initialised by one compiled call."""
  model = decoder_lm.DecoderLM(config)
  return jax.jit(lambda rng: model.init(rng, jnp.zeros((1, config.max_len), jnp.int32))["params"])(jax.random.key(0))


def _loss(config):
  """A jitted (loss, grads) of next-token cross-entropy on TOKENS."""

  def loss(params):
    logits = decoder_lm.DecoderLM(config).apply({"params": params}, TOKENS[:, :-1])
    total, count = losses.cross_entropy(logits, TOKENS[:, 1:])
    return total / count

  return jax.jit(jax.value_and_grad(loss))


@pytest.fixture(scope="module")
def looped():
  """Random parameters of the looped stack (any values serve; no initialiser to compile), their loss and gradients."""
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(lambda: nn.unbox(_init(CONFIG)))
  params = jax.tree.map(lambda x: rng.normal(0.0, 0.3, x.shape).astype(np.float32), shapes)
  return params, _loss(CONFIG)(params)


def _primitives(config, params) -> set[str]:
  """The primitives the loss and gradient of `config` run, nested ones (jit, scan, checkpoint) included."""
  return set(operand_dtypes(jax.make_jaxpr(_loss(config))(params).jaxpr))


@pytest.mark.parametrize("remat", ["full", "save_dots"])
def test_every_remat_policy_gives_the_same_parameters_loss_and_gradients(looped, remat):
  params, (loss, grads) = looped
  config = dataclasses.replace(CONFIG, remat=remat)
  # The same tree: a checkpoint does not care which policy wrote it.
  abstract = jax.eval_shape(lambda: nn.unbox(_init(config)))
  assert jax.tree.map(lambda x: x.shape, abstract) == jax.tree.map(lambda x: x.shape, params)

  remat_loss, remat_grads = _loss(config)(params)

  np.testing.assert_allclose(remat_loss, loss, **TOLERANCE)
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, **TOLERANCE), remat_grads, grads)
  # And the recomputation is really there (jax.checkpoint's primitive is named remat2).
  assert "remat2" in _primitives(config, params) and "remat2" not in _primitives(CONFIG, params)


def test_a_scanned_stack_computes_what_the_loop_computes(looped):
  params, (loss, grads) = looped
  # With remat too: the two transforms compose (tests/experiments/test_sharding.py shards a scan without it).
  config = dataclasses.replace(CONFIG, scan_layers=True, remat="save_dots")
  scanned = decoder_lm.stack_layers(params)
  # The converted tree is the one the scanned model initialises.
  abstract = jax.eval_shape(lambda: nn.unbox(_init(config)))
  assert jax.tree.map(lambda x: x.shape, scanned) == jax.tree.map(lambda x: x.shape, abstract)

  scan_loss, scan_grads = _loss(config)(scanned)

  np.testing.assert_allclose(scan_loss, loss, **TOLERANCE)
  unstacked = decoder_lm.unstack_layers(scan_grads)
  assert jax.tree.structure(unstacked) == jax.tree.structure(grads)
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, **TOLERANCE), unstacked, grads)
  assert "scan" in _primitives(config, scanned)


def test_stacking_and_unstacking_round_trip(looped):
  params, _ = looped
  round_trip = decoder_lm.unstack_layers(decoder_lm.stack_layers(params))
  jax.tree.map(np.testing.assert_array_equal, round_trip, params)


def test_a_scanned_stack_initialises_each_layer_apart_and_runs_dropout():
  config = dataclasses.replace(CONFIG, scan_layers=True, remat="full", dropout_rate=0.5)
  boxed = _init(config)
  # The stacked axis is named, so the sharding rules can keep it whole.
  specs = nn.get_partition_spec(boxed)["layers"]
  assert {spec[0] for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))} == {LAYERS}
  params = nn.unbox(boxed)
  kernels = params["layers"]["attention"]["query"]["kernel"]
  assert kernels.shape[0] == CONFIG.num_layers and not np.allclose(kernels[0], kernels[1])
  # `deterministic` reaches every block as a Python bool, through nn.scan and nn.remat.
  model, tokens = decoder_lm.DecoderLM(config), TOKENS[:, :-1]


  @jax.jit
  def logits():
    train = model.apply({"params": params}, tokens, train=True, rngs={"dropout": jax.random.key(1)})
    return train, model.apply({"params": params}, tokens)

  train, evaluation = logits()
  assert not np.allclose(train, evaluation)


def test_an_unknown_remat_policy_is_named():
  with pytest.raises(decoders.ConfigError, match=r"model\.remat='some' is not one of \('none', 'full', 'save_dots'\)"):
    dataclasses.replace(CONFIG, remat="some")
