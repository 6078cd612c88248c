"""The generation driver: prefill every prompt in one call, then one `lax.while_loop` step per token.

    out = generate(model, params, [[5, 9, 2], [7]], strategy=Greedy(), max_new_tokens=32, eos_id=2)
    out.tokens[b, :out.num_generated[b]]       # row b's new tokens; out.log_probs likewise
    out = generate(model, params, prompts, strategy=Beam(4, num_returned=2), max_new_tokens=32)
    out.nbest()                                # per row: [(tokens, score), ...], best first

The model is seen only through its decoding seam (seam.py): `tokens_to_logits(tokens, cache)
-> (logits, cache)` with an explicit cache from `decoding_cache`. A decoder-only model's
cache is its keys and values (decoders/layers/kv_cache.py); an encoder-decoder's
(Transformer or RNN) also holds its source, encoded once, so the same loop, beam search
included, translates: its prompts are the decoder's start tokens and `encoder_tokens` the
sources. The prompts, right-padded,
fill the cache in one forward pass, and each iteration then feeds every row its last token.
Rows stop at their own EOS, and the loop stops as soon as every row has. The whole
generation is one compiled call; calls with the same shapes and settings reuse it.

The loop keeps each row's tokens so far (prompt, then generated) for strategies that look
back (repetition penalty, n-gram blocking: strategies.History). `Beam` and `Contrastive`
run loops of their own (beam.py, contrastive.py) behind the same call.
"""
import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from decoders.decoding import beam, contrastive, seam
from decoders.decoding.strategies import History
from decoders.errors import ConfigError
from decoders.layers import kv_cache

# (logits [batch, vocab], rng, history) -> tokens [batch], hashable (a frozen dataclass): see strategies.py.
Strategy = Callable[[jax.Array, jax.Array, History], jax.Array]


@dataclasses.dataclass(frozen=True)
class Generation:
  tokens: np.ndarray  # [batch, max_new_tokens] int32; after a row's end: its EOS (or 0 without one)
  log_probs: np.ndarray  # [batch, max_new_tokens] float32: log p(token) under the model's own distribution
  num_generated: np.ndarray  # [batch] int32: tokens generated per row, its EOS included
  # Beam search only (the fields above then hold each row's best hypothesis), best first:
  scores: np.ndarray | None = None  # [batch, num_returned] float32: length-normalised log-likelihoods
  nbest_tokens: np.ndarray | None = None  # [batch, num_returned, max_new_tokens] int32, filled as `tokens`
  nbest_lengths: np.ndarray | None = None  # [batch, num_returned] int32

  def rows(self) -> list[list[int]]:
    return [row[:count].tolist() for row, count in zip(self.tokens, self.num_generated)]

  def nbest(self) -> list[list[tuple[list[int], float]]]:
    """Beam search's hypotheses per row as (tokens, score), best first."""
    if self.scores is None:
      raise ConfigError("nbest() needs beam search: generate(..., strategy=Beam(...))")
    return [
        [(tokens[:length].tolist(), float(score)) for tokens, length, score in zip(*row)]
        for row in zip(self.nbest_tokens, self.nbest_lengths, self.scores)
    ]


def pad_prompts(
    prompts: Sequence[Sequence[int]] | np.ndarray, vocab_size: int, what: str = "prompt", lengths=None
) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded int32 prompts [batch, longest] and their lengths [batch]; a ConfigError for an impossible one.

  Prompts already padded ([batch, width] with their `lengths`) keep their width: a caller that pads every batch
  to one width compiles one loop. `what` names them in the errors ("prompt", or "source" for an encoder's input)."""
  if len(prompts) == 0:
    raise ConfigError(f"no {what}s: generation needs at least one")
  if lengths is None:
    lengths = np.array([len(p) for p in prompts], np.int32)
    padded = np.zeros((len(prompts), max(lengths)), np.int32)
    for row, prompt in enumerate(prompts):
      padded[row, : len(prompt)] = prompt
  else:
    padded, lengths = np.asarray(prompts, np.int32), np.asarray(lengths, np.int32)
    if padded.ndim != 2 or lengths.shape != padded.shape[:1] or np.any(lengths > padded.shape[1]):
      raise ConfigError(f"padded {what}s of shape {padded.shape} need lengths [batch] of at most {padded.shape[-1]}")
  if lengths.min() == 0:
    raise ConfigError(f"{what} {int(np.argmin(lengths))} is empty: generation needs at least one token")
  valid = np.arange(padded.shape[1])[None] < lengths[:, None]
  bad = valid & ((padded < 0) | (padded >= vocab_size))
  if np.any(bad):
    row, column = np.argwhere(bad)[0]
    raise ConfigError(
        f"{what} {row} has token id {padded[row, column]}, outside the model's vocabulary of {vocab_size}"
    )
  return padded, lengths


def pad_sources(encoder_tokens, encoder_lengths, batch: int, vocab_size: int):
  """(tokens, lengths) of an encoder-decoder's sources, padded as the prompts; (None, None) without them."""
  if encoder_tokens is None:
    return None, None
  if len(encoder_tokens) != batch:
    raise ConfigError(f"{len(encoder_tokens)} sources for {batch} prompts: an encoder-decoder needs one per prompt")
  return pad_prompts(encoder_tokens, vocab_size, "source", encoder_lengths)


def generate(
    model,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    strategy: Strategy | beam.Beam | contrastive.Contrastive,
    max_new_tokens: int,
    rng: jax.Array | None = None,
    eos_id: int | None = None,
    cache: kv_cache.CacheSpec = kv_cache.CacheSpec(),
    cache_capacity: int | None = None,
    on_token: Callable[[np.ndarray, np.ndarray], None] | None = None,
    encoder_tokens: Sequence[Sequence[int]] | np.ndarray | None = None,
    encoder_lengths: np.ndarray | None = None,
    prompt_lengths: np.ndarray | None = None,
) -> Generation:
  """Continues each prompt (a list of token ids) by up to `max_new_tokens`, as `strategy` picks them.

  `model` is any model with the decoding seam (module docstring): a decoder-only LM, or an
  encoder-decoder given `encoder_tokens`, one source (a list of token ids) per prompt. Prompts and
  sources may also come padded, [batch, width] arrays with their `prompt_lengths` / `encoder_lengths`.

  `cache` says how the key/value cache stores and evicts (kv_cache.CacheSpec; quantised or
  evicting caches serve the sampling strategies); it has `cache_capacity` slots, by default
  the longest prompt plus max_new_tokens, which an evicting cache may undercut. `on_token(tokens, ended)`
  is called on the host after every step with the step's tokens [batch] and which rows had
  already ended [batch] (streaming; each new function compiles a new loop).
  """
  cfg = model.config
  if max_new_tokens < 0:
    raise ConfigError(f"max_new_tokens={max_new_tokens} must be >= 0")
  if isinstance(strategy, beam.Beam) and strategy.width > cfg.vocab_size:
    raise ConfigError(f"beam width={strategy.width} exceeds the model's vocabulary of {cfg.vocab_size}")
  tokens, lengths = pad_prompts(prompts, cfg.vocab_size, lengths=prompt_lengths)
  sources = pad_sources(encoder_tokens, encoder_lengths, len(prompts), cfg.vocab_size)
  total = int(lengths.max()) + max_new_tokens
  if total > cfg.max_len:
    raise ConfigError(
        f"the longest prompt ({int(lengths.max())} tokens) plus max_new_tokens={max_new_tokens} exceeds "
        f"model.max_len={cfg.max_len}"
    )
  capacity = total if cache_capacity is None else cache_capacity
  if cache.eviction == "none" and capacity < total:
    raise ConfigError(
        f"cache_capacity={capacity} cannot hold the longest prompt plus max_new_tokens ({total} tokens) "
        "without eviction"
    )
  looped = isinstance(strategy, (beam.Beam, contrastive.Contrastive))
  if looped and (cache != kv_cache.CacheSpec() or cache_capacity is not None or on_token is not None):
    raise ConfigError(f"{type(strategy).__name__} keeps a plain cache of its own and streams nothing: "
                      "cache, cache_capacity and on_token are for the sampling strategies")
  if max_new_tokens == 0:
    return _nothing_generated(len(prompts), strategy)
  if isinstance(strategy, beam.Beam):
    nbest, log_probs, nbest_lengths, scores = jax.device_get(
        beam.search(model, strategy, max_new_tokens, eos_id, params, tokens, lengths, *sources)
    )
    return Generation(nbest[:, 0], log_probs[:, 0], nbest_lengths[:, 0], scores, nbest, nbest_lengths)
  if isinstance(strategy, contrastive.Contrastive):
    out = contrastive.search(model, strategy, max_new_tokens, eos_id, params, tokens, lengths, *sources)
    return Generation(*jax.device_get(out))
  rng = jax.random.key(0) if rng is None else rng
  out = _generate(
      model, strategy, max_new_tokens, eos_id, on_token, cache, capacity, params, tokens, lengths, rng, *sources
  )
  return Generation(*jax.device_get(out))


def _nothing_generated(batch: int, strategy) -> Generation:
  """max_new_tokens=0: empty rows (and for beam search, `num_returned` empty hypotheses of score 0) per prompt."""
  rows = Generation(np.zeros((batch, 0), np.int32), np.zeros((batch, 0), np.float32), np.zeros((batch,), np.int32))
  if not isinstance(strategy, beam.Beam):
    return rows
  n = strategy.num_returned
  return dataclasses.replace(
      rows, scores=np.zeros((batch, n), np.float32), nbest_tokens=np.zeros((batch, n, 0), np.int32),
      nbest_lengths=np.zeros((batch, n), np.int32),
  )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _generate(
    model, strategy, max_new_tokens, eos_id, on_token, spec, capacity, params, prompts, lengths, rng, sources,
    source_lengths,
):
  batch, total = prompts.shape[0], prompts.shape[1] + max_new_tokens
  cache = seam.start_cache(model, params, batch, capacity, spec, sources, source_lengths)
  step_logits = seam.method(model, params, "tokens_to_logits")
  logits, cache = step_logits(prompts, cache, lengths)
  last = logits[jnp.arange(batch), lengths - 1]  # each row's logits after its own last prompt token
  history = jnp.zeros((batch, total), jnp.int32).at[:, : prompts.shape[1]].set(prompts)
  fill = 0 if eos_id is None else eos_id

  def running(state):
    step, _, _, _, _, _, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def step_once(state):
    step, last, cache, history, out, log_probs, done, counts = state
    seen = History(history, lengths + step)  # row b's tokens so far: its prompt and `step` generated tokens
    token = jnp.where(done, fill, strategy(last, jax.random.fold_in(rng, step), seen))
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(last), token[:, None], axis=-1)[:, 0]
    history = history.at[jnp.arange(batch), lengths + step].set(token)
    out = out.at[:, step].set(token)
    log_probs = log_probs.at[:, step].set(jnp.where(done, 0.0, log_prob))
    counts = counts + (~done).astype(jnp.int32)
    if on_token is not None:
      jax.debug.callback(on_token, token, done, ordered=True)
    if eos_id is not None:
      done = done | (token == eos_id)
    logits, cache = step_logits(token[:, None], cache)
    return step + 1, logits[:, 0], cache, history, out, log_probs, done, counts

  state = (
      jnp.int32(0),
      last,
      cache,
      history,
      jnp.full((batch, max_new_tokens), fill, jnp.int32),
      jnp.zeros((batch, max_new_tokens), jnp.float32),
      jnp.zeros((batch,), jnp.bool_),
      jnp.zeros((batch,), jnp.int32),
  )
  _, _, _, _, out, log_probs, _, counts = jax.lax.while_loop(running, step_once, state)
  return out, log_probs, counts
