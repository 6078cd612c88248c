"""Draft sources for speculative decoding (speculative.py): who proposes the γ tokens the target then checks.

- `ModelDraft`: a separate small DecoderLM with its own key/value cache (Leviathan et al. 2023, sec. 3;
  Chen et al. 2023, sec. 2).
- `PromptLookup`: no model at all; the tokens that followed the most recent earlier occurrence of the context's
  last n-gram (Saxena 2023, "Prompt Lookup Decoding"), which pays off where outputs copy their input.
- `early_exit_draft`: self-speculation; the target's own first layers, final norm and unembedding make the draft
  (Elhoushi et al. 2024, "LayerSkip", sec. 4: early exit to draft, the full model to verify). LayerSkip also reuses
  the draft's keys and values of those first layers in verification; here the draft keeps a cache of its own.

Every source offers the same two functions, both traced inside the one compiled generation:
    start(params, prompts, lengths, capacity) -> state
    propose(params, state, sequence, length, gamma, pick, rng) -> (tokens [batch, γ], q [batch, γ, vocab], state)
`sequence` [batch, capacity] holds each row's prompt and accepted tokens, `length` [batch] how many there are.
`pick(logits, rng) -> (token, q | None)` chooses a token as the strategy would and says from which distribution.
q None means each proposal was deterministic (q one-hot at it), as greedy drafts and prompt lookup are.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp

from decoders.errors import ConfigError
from decoders.models import decoder_lm


def _stack_steps(first, rest):
  """A first step's [batch, ...] and a scan's [steps, batch, ...] outputs -> [batch, 1 + steps, ...]."""
  return jnp.concatenate([first[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)


@dataclasses.dataclass(frozen=True)
class ModelDraft:
  """A DecoderLM drafting autoregressively from its own cache: γ calls per round.

  The cache is rewound every round to hold all but the row's last two tokens: after a round in which all γ drafts
  were accepted, the last draft was proposed but never fed, so the first call of the next round feeds the last two
  tokens at once ([batch, 2], one call), whatever the previous round accepted.
  """

  model: decoder_lm.DecoderLM

  def _logits(self, params, tokens, cache, valid_lengths=None):
    return self.model.apply(
        {"params": params}, tokens, cache, valid_lengths, method=decoder_lm.DecoderLM.tokens_to_logits
    )

  def start(self, params, prompts, lengths, capacity):
    cache = decoder_lm.init_cache(self.model.config, prompts.shape[0], capacity)
    return self._logits(params, prompts, cache, lengths)[1]

  def propose(self, params, cache, sequence, length, gamma, pick, rng):
    rows = jnp.arange(sequence.shape[0])
    start = jnp.maximum(length - 2, 0)  # a one-token row feeds its token and a stale slot its first draft overwrites
    cache = cache.rewind(start)
    last_two = jnp.take_along_axis(sequence, start[:, None] + jnp.arange(2), axis=1)
    logits, cache = self._logits(params, last_two, cache, length - start)
    keys = jax.random.split(rng, gamma)
    first, first_q = pick(logits[rows, length - 1 - start], keys[0])

    def draft_one(carry, key):
      cache, token = carry
      logits, cache = self._logits(params, token[:, None], cache)
      token, q = pick(logits[:, 0], key)
      return (cache, token), (token, q)

    (cache, _), (rest, rest_q) = jax.lax.scan(draft_one, (cache, first), keys[1:])
    q = None if first_q is None else _stack_steps(first_q, rest_q)
    return _stack_steps(first, rest), q, cache


@dataclasses.dataclass(frozen=True)
class PromptLookup:
  """Proposes the γ tokens that followed the most recent earlier occurrence of the last `ngram` tokens.

  Saxena 2023 ("Prompt Lookup Decoding", as in Hugging Face's `prompt_lookup_num_tokens`): the longest n-gram from
  `ngram` down to `min_ngram` that occurs earlier wins. The copy continues periodically past the row's end (the
  match says the text repeats with period length - continuation start), and a row with no match proposes its last
  token γ times: a proposal is never wrong, only rejected. Pass it as speculative_generate's draft with
  draft_params None.
  """

  ngram: int = 3
  min_ngram: int = 1

  def __post_init__(self):
    if not 1 <= self.min_ngram <= self.ngram:
      raise ConfigError(f"PromptLookup: need 1 <= min_ngram={self.min_ngram} <= ngram={self.ngram}")

  def start(self, params, prompts, lengths, capacity):
    return ()

  def _continuation_start(self, sequence, length):
    """[batch]: where the copied text starts (just after the chosen earlier n-gram), or -1 without a match."""
    capacity = sequence.shape[1]
    found = jnp.full(length.shape, -1)
    for n in range(self.min_ngram, self.ngram + 1):  # longer n-grams come later and override shorter ones
      suffix = jnp.take_along_axis(sequence, jnp.maximum(length[:, None] - n + jnp.arange(n), 0), axis=1)
      starts = capacity - n + 1
      matches = functools.reduce(
          jnp.logical_and, [sequence[:, k : k + starts] == suffix[:, k : k + 1] for k in range(n)]
      )
      # Earlier than the suffix itself, with at least one token after it; the most recent such start.
      earlier = (jnp.arange(starts)[None] + n < length[:, None]) & (length[:, None] >= n)
      latest = jnp.max(jnp.where(matches & earlier, jnp.arange(starts)[None], -1), axis=1)
      found = jnp.where(latest >= 0, latest + n, found)
    return found

  def propose(self, params, state, sequence, length, gamma, pick, rng):
    start = self._continuation_start(sequence, length)
    period = jnp.maximum(length - start, 1)[:, None]
    copied = start[:, None] + jnp.arange(gamma)[None] % period
    positions = jnp.where(start[:, None] >= 0, copied, (length - 1)[:, None])
    return jnp.take_along_axis(sequence, positions, axis=1), None, state


def early_exit_draft(model: decoder_lm.DecoderLM, params, num_layers: int):
  """(draft, draft_params): the target's first `num_layers` blocks, its final norm and unembedding as a DecoderLM.

  Elhoushi et al. 2024 (LayerSkip, sec. 4.1): exit after layer E and read the logits with the model's own head.
  The parameters are shared, not copied: looped ones keep block_0 .. block_{E-1}, scanned ones the first E
  entries of `layers`.
  """
  total = model.config.num_layers
  if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= total:
    raise ConfigError(f"early_exit_draft: num_layers={num_layers!r} must be an integer in [1, {total}]")
  draft = decoder_lm.DecoderLM(dataclasses.replace(model.config, num_layers=num_layers))
  if decoder_lm.SCANNED_LAYERS in params:
    first = jax.tree.map(lambda x: x[:num_layers], params[decoder_lm.SCANNED_LAYERS])
    return draft, {**params, decoder_lm.SCANNED_LAYERS: first}
  dropped = {f"{decoder_lm.BLOCK_PREFIX}{i}" for i in range(num_layers, total)}
  return draft, {name: value for name, value in params.items() if name not in dropped}
