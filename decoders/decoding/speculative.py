"""Speculative decoding: a cheap draft proposes γ tokens, the target scores them all in one forward pass.

    out = speculative_generate(target, target_params, draft, draft_params, prompts, gamma=4, max_new_tokens=64)
    out.rows(), out.acceptance_rate, out.target_calls

Leviathan et al. 2023 ("Fast Inference from Transformers via Speculative Decoding", Alg. 1) and Chen et al. 2023
("Accelerating Large Language Model Decoding with Speculative Sampling", Alg. 2). One round, for every row at once:

    x_i ~ q_i = q(. | context, x_1 .. x_{i-1}),  i = 1 .. γ          the draft, γ cheap calls
    p_1 .. p_{γ+1} = p(. | context, x_1 .. x_{i-1})                   the target, ONE call on [last, x_1 .. x_γ]
    accept x_i while u_i < p_i(x_i) / q_i(x_i), u_i ~ U(0, 1)          (Leviathan sec. 2.3: accept w.p. min(1, p/q))
    first rejection at n + 1: emit t ~ norm(max(0, p_{n+1} - q_{n+1}))  (Leviathan sec. 2.3, p')
    all γ accepted: emit a bonus t ~ p_{γ+1}                           (q_{γ+1} = 0 makes it the same formula)

Every emitted token is distributed exactly as the target alone would sample it (Leviathan et al. 2023, appendix
A.1; Chen et al. 2023, Theorem 1), for the distribution the strategy samples from: softmax of the filtered logits
(`distribution`). Greedy decoding (`Greedy()`) accepts x_i while it equals argmax p_i, then
emits argmax p_{n+1}: the target's own greedy output, token for token.

Rows accept different numbers of tokens. Each keeps its tokens in one buffer with its own length; both caches are
rewound at the start of every round by lowering their per-row lengths (the target's to all but the row's last
token, which it feeds first), since an entry past a row's length is invisible to the attention mask. The whole
generation is one compiled `lax.while_loop` of rounds; calls with the same shapes and settings reuse it.
"""
import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from decoders.decoding import filters, strategies
from decoders.decoding.drafts import ModelDraft, PromptLookup
from decoders.decoding.generation import pad_prompts
from decoders.errors import ConfigError
from decoders.models import decoder_lm


@dataclasses.dataclass(frozen=True)
class SpeculativeGeneration:
  tokens: np.ndarray  # [batch, max_new_tokens] int32; after a row's end: its EOS (or 0 without one)
  num_generated: np.ndarray  # [batch] int32: tokens generated per row, its EOS included
  accepted: np.ndarray  # [batch] int32: draft tokens the target accepted
  proposed: np.ndarray  # [batch] int32: draft tokens proposed (γ per round the row took part in)
  target_calls: int  # rounds, each one target forward pass (the prompt's prefill not counted)

  def rows(self) -> list[list[int]]:
    return [row[:count].tolist() for row, count in zip(self.tokens, self.num_generated)]

  @property
  def row_acceptance_rates(self) -> np.ndarray:
    return self.accepted / np.maximum(self.proposed, 1)

  @property
  def acceptance_rate(self) -> float:
    return float(self.accepted.sum() / max(int(self.proposed.sum()), 1))


def _is_greedy(strategy) -> bool:
  """Greedy drafts and verifies by argmax equality: its distribution is one-hot, with no temperature to divide by."""
  return isinstance(strategy, strategies.Greedy)


def _check_strategy(strategy) -> None:
  """Speculation needs the distribution the strategy samples from given the logits alone (no history)."""
  if not isinstance(strategy, (strategies.Greedy, strategies.Sample)):
    raise ConfigError(f"speculative decoding needs a Greedy or Sample strategy, not {strategy!r}")
  for setting in ("repetition_penalty", "no_repeat_ngram"):
    if getattr(strategy, setting, None) is not None:
      raise ConfigError(f"speculative decoding does not support {setting}: its target distribution needs the history")


def distribution(strategy, logits: jax.Array) -> jax.Array:
  """The probabilities [..., vocab] `strategy` samples from: softmax of its filtered logits."""
  settings = {name: getattr(strategy, name) for name in filters.FILTERS}
  return jax.nn.softmax(filters.apply_filters(logits, **settings), axis=-1)


def _pick(strategy, vocab_size: int, logits: jax.Array, rng: jax.Array):
  """The draft's choice under `strategy` and the distribution q it came from (None: deterministic, one-hot)."""
  logits = logits[..., :vocab_size]
  if _is_greedy(strategy):
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), None
  q = distribution(strategy, logits)
  return jax.random.categorical(rng, jnp.log(q), axis=-1).astype(jnp.int32), q


def _verify(strategy, drafted, q, logits, rng):
  """(accepted drafts n [batch], the token after them [batch]) from the target's logits [batch, γ+1, vocab]."""
  batch, gamma = drafted.shape
  rows = jnp.arange(batch)
  if _is_greedy(strategy):
    choice = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    accepted = jnp.sum(jnp.cumprod(drafted == choice[:, :gamma], axis=1), axis=1)
    return accepted, choice[rows, accepted]
  p = distribution(strategy, logits)
  q = jax.nn.one_hot(drafted, p.shape[-1]) if q is None else q
  accept_rng, correct_rng = jax.random.split(rng)
  p_drafted = jnp.take_along_axis(p[:, :gamma], drafted[..., None], axis=-1)[..., 0]
  q_drafted = jnp.take_along_axis(q, drafted[..., None], axis=-1)[..., 0]
  u = jax.random.uniform(accept_rng, (batch, gamma))
  accepted = jnp.sum(jnp.cumprod(u * q_drafted < p_drafted, axis=1), axis=1)  # u < p / q, without dividing
  q_after = jnp.concatenate([q, jnp.zeros_like(q[:, :1])], axis=1)  # q_{γ+1} = 0: the bonus token samples p
  residual = jnp.maximum(p[rows, accepted] - q_after[rows, accepted], 0.0)
  # A rejection implies p > q somewhere, so the residual has mass; float rounding can still leave none.
  residual = jnp.where(jnp.sum(residual, axis=-1, keepdims=True) > 0, residual, p[rows, accepted])
  return accepted, jax.random.categorical(correct_rng, jnp.log(residual), axis=-1).astype(jnp.int32)


def _emitted(new, taken, room, eos_id):
  """How many of a round's `new` tokens [batch, γ+1] each row emits (its `taken` accepted drafts and the target's
  token, up to its EOS and the `room` left), and whether that ends the row with its EOS (eos_id -1: none)."""
  offsets = jnp.arange(new.shape[1])[None]
  is_eos = (new == eos_id) & (offsets <= taken[:, None])
  first_eos = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1), new.shape[1])
  emit = jnp.minimum(jnp.minimum(taken + 1, room), first_eos + 1)
  return emit, first_eos < emit


def speculative_generate(
    target: decoder_lm.DecoderLM,
    target_params,
    draft: decoder_lm.DecoderLM | PromptLookup,
    draft_params,
    prompts: Sequence[Sequence[int]],
    *,
    gamma: int,
    max_new_tokens: int,
    strategy=strategies.Greedy(),
    rng: jax.Array | None = None,
    eos_id: int | None = None,
) -> SpeculativeGeneration:
  """Continues each prompt by up to `max_new_tokens` as `target` alone would under `strategy`, `draft` proposing
  `gamma` tokens per target call: a smaller DecoderLM (with its params), `early_exit_draft`'s, or a PromptLookup."""
  vocab = target.config.vocab_size
  if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
    raise ConfigError(f"gamma={gamma!r} must be an integer >= 1 (draft tokens per target call)")
  if max_new_tokens < 0:
    raise ConfigError(f"max_new_tokens={max_new_tokens} must be >= 0")
  _check_strategy(strategy)
  if isinstance(draft, decoder_lm.DecoderLM):
    if draft.config.vocab_size != vocab:
      raise ConfigError(f"draft vocab_size={draft.config.vocab_size} differs from the target's vocab_size={vocab}")
    if draft_params is None:
      raise ConfigError("a DecoderLM draft needs its draft_params")
    source, models = ModelDraft(draft), {"target": target, "draft": draft}
  elif isinstance(draft, PromptLookup):
    source, models = draft, {"target": target}
  else:
    raise ConfigError(f"draft must be a DecoderLM or a PromptLookup, not {type(draft).__name__}")
  tokens, lengths = pad_prompts(prompts, vocab)
  capacity = int(lengths.max()) + max_new_tokens + gamma  # the target checks γ + 1 tokens past the last one
  for name, model in models.items():
    if capacity > model.config.max_len:
      raise ConfigError(
          f"the longest prompt ({int(lengths.max())} tokens) + max_new_tokens={max_new_tokens} + gamma={gamma} "
          f"exceeds the {name}'s max_len={model.config.max_len}"
      )
  if eos_id is not None and not 0 <= eos_id < vocab:
    raise ConfigError(f"eos_id={eos_id} is outside the target's vocabulary of {vocab}")
  rng = jax.random.key(0) if rng is None else rng
  eos = np.int32(-1 if eos_id is None else eos_id)
  out = _speculate(target, source, strategy, gamma, max_new_tokens, target_params, draft_params, tokens, lengths, rng,
                   eos)
  tokens_out, counts, accepted, proposed, rounds = jax.device_get(out)
  return SpeculativeGeneration(tokens_out, counts, accepted, proposed, int(rounds))


# eos_id is data (-1 for none), not part of the program: generating with or without one compiles once.
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _speculate(target, draft, strategy, gamma, max_new_tokens, target_params, draft_params, prompts, lengths, rng,
               eos_id):
  batch, longest = prompts.shape
  vocab = target.config.vocab_size
  capacity = longest + max_new_tokens + gamma
  fill = jnp.maximum(eos_id, 0)
  target_logits = functools.partial(
      target.apply, {"params": target_params}, method=decoder_lm.DecoderLM.tokens_to_logits
  )
  _, cache = target_logits(prompts, decoder_lm.init_cache(target.config, batch, capacity), lengths)
  draft_state = draft.start(draft_params, prompts, lengths, capacity)
  pick = functools.partial(_pick, strategy, vocab)
  # Room for γ + 1 tokens written past a finished row's end: no write is ever clamped onto real tokens.
  sequence = jnp.zeros((batch, capacity + 1), jnp.int32).at[:, :longest].set(prompts)
  offsets = jnp.arange(gamma + 1)[None]
  zeros = jnp.zeros((batch,), jnp.int32)

  def round_(state):
    step, sequence, length, count, done, cache, draft_state, accepted, proposed = state
    draft_rng, verify_rng = jax.random.split(jax.random.fold_in(rng, step))
    drafted, q, draft_state = draft.propose(draft_params, draft_state, sequence, length, gamma, pick, draft_rng)
    last = jnp.take_along_axis(sequence, (length - 1)[:, None], axis=1)
    cache = cache.rewind(length - 1)  # drop whatever was rejected
    logits, cache = target_logits(jnp.concatenate([last, drafted], axis=1), cache)
    taken, token = _verify(strategy, drafted, q, logits[..., :vocab], verify_rng)
    new = jnp.where(offsets == taken[:, None], token[:, None], jnp.pad(drafted, ((0, 0), (0, 1))))
    emit, ends = _emitted(new, taken, max_new_tokens - count, eos_id)
    emit = jnp.where(done, 0, emit)
    sequence = jax.vmap(lambda row, new, at: jax.lax.dynamic_update_slice(row, new, (at,)))(sequence, new, length)
    count = count + emit
    accepted = accepted + jnp.where(done, 0, taken)
    proposed = proposed + jnp.where(done, 0, gamma)
    done = done | ends | (count >= max_new_tokens)
    return step + 1, sequence, length + emit, count, done, cache, draft_state, accepted, proposed

  done = zeros >= max_new_tokens
  state = (jnp.int32(0), sequence, jnp.asarray(lengths), zeros, done, cache, draft_state, zeros, zeros)
  state = jax.lax.while_loop(lambda state: ~jnp.all(state[4]), round_, state)
  rounds, sequence, _, count, _, _, _, accepted, proposed = state
  generated = jnp.arange(max_new_tokens)[None]
  tokens = jnp.take_along_axis(sequence, jnp.asarray(lengths)[:, None] + generated, axis=1)
  return jnp.where(generated < count[:, None], tokens, fill), count, accepted, proposed, rounds
