"""Packed rows: documents side by side in one row give each document what it gets alone.

With segment ids (no attention across documents) and positions restarting at each
document, a packed row is several independent sequences that share a row only to
waste no padding (Krell et al. 2021). This pins it for every kind of position and
for a sliding window: the same logits and the same per-token losses as each
document alone in its own row, so training on packed rows
(experiments/data/pipeline.packed_windows) trains on the documents themselves.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders import losses
from decoders.models import decoder_lm

CONFIG = decoder_lm.DecoderLMConfig(vocab_size=13, num_layers=2, width=16, num_heads=4, mlp_dim=32, max_len=12)
# Float32 forward passes whose only difference is which keys are masked out (they add exactly 0):
# equal up to the order in which the kernels sum.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
VARIANTS = {
    "learned": dict(),
    "sinusoidal": dict(positions="sinusoidal", attention="einsum"),  # and the other attention kernel
    "rope": dict(positions="rope"),
    # Mistral-like: a window shorter than every document, grouped-query attention.
    "sliding window": dict(positions="rope", num_kv_heads=2, sliding_window=3, norm="rmsnorm", activation="swiglu"),
}
LENGTHS = (7, 5, 3, 6)
ROWS = ((0, 1), (2, 3))  # the documents each row holds: 7 + 5 fill the first, 3 + 6 leave 3 padding tokens


def _documents() -> list[np.ndarray]:
  rng = np.random.default_rng(0)
  return [rng.integers(0, CONFIG.vocab_size, n).astype(np.int32) for n in LENGTHS]


def _pack(documents):
  """tokens, segment_ids, positions [rows, max_len] and where each document lies: (row, slice)."""
  tokens, segment_ids, positions = (np.zeros((len(ROWS), CONFIG.max_len), np.int32) for _ in range(3))
  spans = {}
  for row, members in enumerate(ROWS):
    start = 0
    for segment, index in enumerate(members, start=1):
      span = slice(start, start + len(documents[index]))
      tokens[row, span], segment_ids[row, span], positions[row, span] = documents[index], segment, np.arange(span.stop - start)
      spans[index], start = (row, span), span.stop
  return tokens, segment_ids, positions, spans


def _token_nll(logits, targets):
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_packed_batch_gives_each_document_its_logits_and_losses_alone(variant):
  config = dataclasses.replace(CONFIG, **VARIANTS[variant])
  model = decoder_lm.DecoderLM(config)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, config.max_len), jnp.int32))["params"])
  forward = jax.jit(functools.partial(model.apply, {"params": params}))  # (tokens, positions=, segment_ids=)
  documents = _documents()
  tokens, segment_ids, positions, spans = _pack(documents)

  packed = forward(tokens, positions=positions, segment_ids=segment_ids)
  # Each document alone at the start of its own row (what follows it cannot matter to a causal
  # model), and the packed rows without their segment ids and positions: one call, one compile.
  plain = np.concatenate([np.zeros((len(documents), CONFIG.max_len), np.int32), tokens])
  for index, document in enumerate(documents):
    plain[index, : len(document)] = document
  alone_logits, unmasked = np.split(forward(plain), [len(documents)])

  packed_nll = _token_nll(packed[:, :-1], tokens[:, 1:])  # position t predicts token t + 1
  alone_total = 0.0
  for index, document in enumerate(documents):
    alone = alone_logits[index, : len(document)]
    row, span = spans[index]
    np.testing.assert_allclose(packed[row, span], alone, **TOLERANCE)
    alone_nll = _token_nll(alone[:-1], document[1:])
    np.testing.assert_allclose(packed_nll[row, span.start : span.stop - 1], alone_nll, **TOLERANCE)
    alone_total += alone_nll.sum()
  # The loss as a task takes it: weight 0 on a target in another document or in the padding.
  weights = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0)
  total, count = losses.cross_entropy(packed[:, :-1], tokens[:, 1:], weights)
  assert count == sum(LENGTHS) - len(LENGTHS)
  np.testing.assert_allclose(total, alone_total, rtol=1e-5)
  # Without the segment ids and positions the second document of a row sees the first: the test can fail.
  row, span = spans[1]
  assert not np.allclose(unmasked[row, span], packed[row, span], **TOLERANCE)
