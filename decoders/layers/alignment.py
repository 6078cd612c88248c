"""The attention score functions of the RNN encoder-decoders: how much a decoder state reads each source state.

A decoder state s (the query, [batch, d_q]) scores every encoder output h_j (the keys, [batch, src, d_k]);
a softmax over the real source positions gives the alignment weights a_j, and the context is
sum_j a_j h_j (Bahdanau et al. 2015, eqs. 5-6; Luong et al. 2015, sec. 3.1):

    additive    v^T tanh(W s + U h_j)               Bahdanau et al. 2015, appendix A.1.2
    concat      v^T tanh(W [s; h_j])                Luong et al. 2015, eq. 8
    dot         s^T h_j                             Luong et al. 2015, eq. 8
    general     s^T W h_j                           Luong et al. 2015, eq. 8
    scaled_dot  s^T h_j / sqrt(d_k)                 Vaswani et al. 2017, eq. 1 (one head, no projections)

Luong's concat is Bahdanau's additive score: W [s; h] = W_s s + W_h h with W's columns split by
input, so one module computes both. The key side does not change while a sentence is decoded, so
every module splits its work: `project_keys(keys)` (U h_j, W h_j, or the keys themselves) once per
source, then each step passes the result back as `projected_keys`.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from decoders.layers import quantization
from decoders.layers.partitioning import EMBED, MLP, with_axes

SCORES = ("additive", "dot", "general", "concat", "scaled_dot")


def masked_softmax(scores: jax.Array, key_mask: jax.Array) -> jax.Array:
  """Float32 softmax of scores [batch, src] over the keys where `key_mask` is true; exactly 0 elsewhere."""
  scores = jnp.where(key_mask, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  return jnp.where(key_mask, jax.nn.softmax(scores, axis=-1), 0.0)


def _dense(features: int, dtype: Any, name: str) -> nn.Module:
  """A bias-free projection to `features` (the papers' score functions have no biases)."""
  init = nn.initializers.lecun_normal()
  return quantization.dense("float", features, (EMBED, MLP), use_bias=False, dtype=dtype, kernel_init=init, name=name)


class Alignment(nn.Module):
  """(query [b, d_q], keys [b, s, d_k], key_mask [b, s]) -> (context [b, d_k], weights [b, s] float32).

  The keys are also the values: every RNN paper reads back the encoder outputs it scored.
  Subclasses define `score` and, if it has a key-side matmul, `project_keys`.
  """

  features: int = 0  # additive/concat: the score's hidden size; general: the query's width; dot kinds: unused
  dtype: Any = jnp.float32

  def project_keys(self, keys: jax.Array) -> jax.Array:
    """The per-source part of the score, computed once: here nothing, the keys themselves."""
    return keys

  def score(self, query: jax.Array, projected_keys: jax.Array) -> jax.Array:
    """Scores [b, s] (float32) of `query` against `project_keys(keys)`."""
    raise NotImplementedError

  def __call__(self, query, keys, key_mask, projected_keys=None) -> tuple[jax.Array, jax.Array]:
    projected_keys = self.project_keys(keys) if projected_keys is None else projected_keys
    weights = masked_softmax(self.score(query, projected_keys), key_mask)
    context = jnp.einsum("bs,bsd->bd", weights.astype(keys.dtype), keys)
    return context, weights


def _dot_scores(query: jax.Array, keys: jax.Array) -> jax.Array:
  return jnp.einsum("bd,bsd->bs", query, keys.astype(query.dtype), preferred_element_type=jnp.float32)


class Dot(Alignment):
  """s^T h_j (Luong et al. 2015): the decoder and encoder states must have the same width."""

  def score(self, query, projected_keys):
    return _dot_scores(query, projected_keys)


class ScaledDot(Alignment):
  """s^T h_j / sqrt(d_k) (Vaswani et al. 2017, eq. 1): the dot score at unit variance for unit-variance inputs."""

  def score(self, query, projected_keys):
    return _dot_scores(query, projected_keys) / jnp.sqrt(jnp.float32(projected_keys.shape[-1]))


class General(Alignment):
  """s^T W h_j (Luong et al. 2015): W h_j [b, s, features] is the projection; `features` is the query's width."""

  def setup(self):
    self.key_projection = _dense(self.features, self.dtype, "key_projection")

  def project_keys(self, keys):
    return self.key_projection(keys)

  def score(self, query, projected_keys):
    return _dot_scores(query, projected_keys)


class Additive(Alignment):
  """v^T tanh(W s + U h_j) (Bahdanau et al. 2015, appendix A.1.2); U h_j [b, s, features] is the projection."""

  def setup(self):
    self.query_projection = _dense(self.features, self.dtype, "query_projection")  # W
    self.key_projection = _dense(self.features, self.dtype, "key_projection")  # U
    self.v = self.param("v", with_axes(nn.initializers.normal(stddev=self.features**-0.5), MLP), (self.features,))

  def project_keys(self, keys):
    return self.key_projection(keys)

  def score(self, query, projected_keys):
    hidden = jnp.tanh(self.query_projection(query)[:, None, :] + projected_keys.astype(self.dtype))
    return jnp.einsum("bsa,a->bs", hidden, jnp.asarray(self.v, self.dtype), preferred_element_type=jnp.float32)


KINDS = {"additive": Additive, "concat": Additive, "dot": Dot, "general": General, "scaled_dot": ScaledDot}


def make(kind: str, features: int, dtype: Any = jnp.float32, name: str | None = None) -> Alignment:
  """The score module of `kind` (one of SCORES)."""
  if kind not in KINDS:
    raise ValueError(f"unknown attention score {kind!r}; expected one of {SCORES}")
  return KINDS[kind](features, dtype, name=name)
