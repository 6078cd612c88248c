"""Attention score functions against numpy transcriptions of their papers' equations; the softmax over real keys."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from decoders.layers import alignment

BATCH, SOURCE, QUERY_DIM, KEY_DIM, FEATURES = 3, 5, 6, 4, 7
KEY_MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def _inputs(seed, key_dim=KEY_DIM):
  rng = np.random.default_rng(seed)
  query = rng.normal(size=(BATCH, QUERY_DIM)).astype(np.float32)
  return query, rng.normal(size=(BATCH, SOURCE, key_dim)).astype(np.float32)


def _reference_scores(kind, params, query, keys):
  """Each score as its paper writes it, one query and one key at a time."""
  scores = np.zeros((BATCH, SOURCE), np.float32)
  for b in range(BATCH):
    for j in range(SOURCE):
      s, h = query[b], keys[b, j]
      if kind == "additive":  # Bahdanau et al. 2015, A.1.2: v^T tanh(W s + U h)
        w, u = params["query_projection"]["kernel"].T, params["key_projection"]["kernel"].T
        score = params["v"] @ np.tanh(w @ s + u @ h)
      elif kind == "concat":  # Luong et al. 2015, eq. 8: v^T tanh(W [s; h]), W the two kernels side by side
        w = np.concatenate([params["query_projection"]["kernel"], params["key_projection"]["kernel"]], axis=0).T
        score = params["v"] @ np.tanh(w @ np.concatenate([s, h]))
      elif kind == "dot":
        score = s @ h
      elif kind == "general":  # s^T W h
        score = s @ params["key_projection"]["kernel"].T @ h
      else:  # scaled_dot, Vaswani et al. 2017, eq. 1
        score = s @ h / np.sqrt(h.shape[-1])
      scores[b, j] = score
  return scores


def _module(kind):
  features = QUERY_DIM if kind == "general" else FEATURES
  return alignment.make(kind, features)


def _key_dim(kind):
  return QUERY_DIM if kind in ("dot", "scaled_dot") else KEY_DIM  # the dot scores need equal widths


@pytest.mark.parametrize("kind", alignment.SCORES)
def test_each_score_equals_its_papers_equation(kind):
  module = _module(kind)
  query, keys = _inputs(0, _key_dim(kind))
  params = nn.unbox(module.init(jax.random.key(0), query, keys, KEY_MASK)).get("params", {})
  context, weights = module.apply({"params": params}, query, keys, KEY_MASK)
  scores = np.where(KEY_MASK, _reference_scores(kind, params, query, keys), -np.inf)
  expected = np.exp(scores - scores.max(axis=1, keepdims=True))
  expected /= expected.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(weights, expected, **TOLERANCE)
  np.testing.assert_allclose(context, np.einsum("bs,bsd->bd", expected, keys), **TOLERANCE)


@pytest.mark.parametrize("kind", alignment.SCORES)
def test_weights_sum_to_one_over_real_keys_and_padding_keys_are_never_read(kind):
  module = _module(kind)
  query, keys = _inputs(1, _key_dim(kind))
  params = nn.unbox(module.init(jax.random.key(1), query, keys, KEY_MASK)).get("params", {})
  context, weights = module.apply({"params": params}, query, keys, KEY_MASK)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(weights)[~KEY_MASK], 0.0)
  changed = keys.copy()
  changed[~KEY_MASK] = 1e3
  other_context, _ = module.apply({"params": params}, query, changed, KEY_MASK)
  np.testing.assert_allclose(other_context, context, **TOLERANCE)


@pytest.mark.parametrize("kind", ["additive", "general"])
def test_keys_projected_once_give_the_same_alignment(kind):
  module = _module(kind)
  query, keys = _inputs(2)
  params = nn.unbox(module.init(jax.random.key(2), query, keys, KEY_MASK))["params"]
  projected = module.apply({"params": params}, keys, method="project_keys")
  assert projected.shape == (BATCH, SOURCE, FEATURES if kind == "additive" else QUERY_DIM)
  precomputed = module.apply({"params": params}, query, keys, KEY_MASK, projected)
  direct = module.apply({"params": params}, query, keys, KEY_MASK)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOLERANCE), precomputed, direct)


def test_an_unknown_score_is_refused():
  with pytest.raises(ValueError, match="unknown attention score 'cosine'"):
    alignment.make("cosine", FEATURES)
