"""A language model's `sample` config section -> a decoding strategy, and the text it generates.

    python run.py --config=configs/smollm2.py --mode=sample --prompt="The capital of France is"
    python run.py --config=configs/smollm2.py --mode=sample --prompts_file=prompts.txt \
        --config.sample.strategy=beam --config.sample.beam_width=4
    python run.py --config=configs/shakespeare_char.py --workdir=... --mode=sample \
        --config.sample.top_p=0.9 --config.sample.repetition_penalty=1.2

Every setting is a key of `sample` (so `--config.sample.KEY=VALUE` sets it, and the sample at
the end of training uses it too); the defaults switch every filter off.
"""
import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from decoders import decoding
from decoders.decoding import sampling, timing
from decoders.models import decoder_lm
from decoders.errors import ConfigError
from experiments.config_rules import TEXT, Rule, integer, number, one_of

STRATEGIES = ("sample", "beam", "contrastive")

SCHEMA = {
    "prompt": TEXT,
    "num_tokens": integer(1),
    "chat": Rule(bool, "true or false"),  # the prompt as a user's message in the tokenizer's chat template
    "strategy": one_of(STRATEGIES),
    "temperature": number(0),  # 0: greedy
    "top_k": integer(0),  # 0: off
    "top_p": number(0, 1, low_open=True),  # 1: off
    "min_p": number(0, 1),  # 0: off
    "typical": number(0, 1, low_open=True),  # 1: off
    "repetition_penalty": number(0, low_open=True),  # 1: off
    "no_repeat_ngram": integer(0),  # 0: off
    "beam_width": integer(1),
    "length_penalty": Rule(float, "a finite number", math.isfinite),  # < 0 favours short hypotheses
    "contrastive_k": integer(1),
    "contrastive_alpha": number(0, 1),
}

# The settings that only strategy "sample" reads, with the value that switches each off.
FILTER_DEFAULTS = {
    "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical": 1.0, "repetition_penalty": 1.0, "no_repeat_ngram": 0
}


def check(sample) -> None:
  """A ConfigError for a filter that is on while the strategy is one that does not read it."""
  if sample.strategy == "sample":
    return
  for key, off in FILTER_DEFAULTS.items():
    if sample[key] != off:
      raise ConfigError(
          f"sample.{key}={sample[key]} applies to sample.strategy='sample' only, not {sample.strategy!r}"
      )


def strategy(sample):
  """The decoding strategy `sample` (the config section) asks for."""
  if sample.strategy == "beam":
    return decoding.Beam(width=sample.beam_width, length_penalty=sample.length_penalty)
  if sample.strategy == "contrastive":
    return decoding.Contrastive(k=sample.contrastive_k, alpha=sample.contrastive_alpha)
  on = {key: sample[key] for key, off in FILTER_DEFAULTS.items() if sample[key] != off}
  history = {key: on.pop(key) for key in ("repetition_penalty", "no_repeat_ngram") if key in on}
  if sample.temperature == 0:
    if on:
      key, value = next(iter(on.items()))
      raise ConfigError(f"sample.{key}={value} has no effect with temperature=0 (greedy)")
    return decoding.Greedy(**history)
  return decoding.Sample(temperature=sample.temperature, **on, **history)


@dataclasses.dataclass(frozen=True)
class Texts:
  texts: list[str]  # each prompt followed by its continuation
  new_tokens: int  # generated over all rows
  clock: timing.Stopwatch
  streamed: bool = False  # the one text went to `stream` as it was made

  def speed(self) -> str:
    """'N tokens in S s: T tokens/s (compiling: C s)', the run alone counted in tokens/s."""
    rate = self.new_tokens / self.clock.run_seconds if self.clock.run_seconds else float("nan")
    return (
        f"{self.new_tokens} tokens in {self.clock.run_seconds:.2f} s: {rate:,.1f} tokens/s "
        f"(compiling: {self.clock.compile_seconds:.1f} s)"
    )


class TextStream:
  """generate's `on_token` for one row: each new token's text passed to `write` once it is whole.

  A token's text depends on the tokens before it (a SentencePiece piece drops its leading space at the start
  of a text; a byte-level token may hold half a UTF-8 character), so the new tokens are decoded after the last
  CONTEXT written ones and that context's own text is cut off: constant work per token, where decoding the whole
  text after every token would grow quadratically with its length. Text that ends inside a character waits.
  """

  CONTEXT = 4

  def __init__(self, tokenizer, prompt: np.ndarray, write: Callable[[str], None]):
    self.tokenizer, self.tokens, self.write = tokenizer, [int(t) for t in prompt], write
    self.written = len(self.tokens)  # the tokens whose text has gone to `write`
    self.pieces = [self._decode(0)]
    write(self.pieces[0])

  @property
  def shown(self) -> str:
    return "".join(self.pieces)

  def _decode(self, start: int, stop: int | None = None) -> str:
    return self.tokenizer.decode(np.asarray(self.tokens[start:stop], np.int32))

  def __call__(self, tokens: np.ndarray, ended: np.ndarray) -> None:
    if ended[0]:
      return
    self.tokens.append(int(tokens[0]))
    start = max(0, self.written - self.CONTEXT)
    context, text = self._decode(start, self.written), self._decode(start)
    if text.startswith(context) and not text.endswith("\ufffd"):
      self.pieces.append(text[len(context) :])
      self.write(self.pieces[-1])
      self.written = len(self.tokens)


def generate_texts(
    model: decoder_lm.DecoderLM, params, tokenizer, prompts: list[np.ndarray], sample, rng,
    stream: Callable[[str], None] | None = None,
) -> Texts:
  """Continues each tokenized prompt by up to sample.num_tokens, as `sample` says, in one batch.

  With `stream`, a single prompt's text goes to it piece by piece as it is generated (a host
  callback from inside the compiled loop), when the strategy and the cache allow it.

  With the key/value cache (decoders.decoding.generate) when the longest prompt and its
  continuation fit in model.max_len; past that, only a model that can slide its context
  over a longer text (learned positions cannot) goes on, one prompt at a time and without
  a cache, each token seeing the last max_len.
  """
  chosen = strategy(sample)
  # The tokenizer's ids may be fewer than the model's rows (model.vocab_size for a benchmark's
  # shape): the same parameters, with every row past the tokenizer's masked like vocabulary padding.
  cfg = model.config
  model = decoder_lm.DecoderLM(dataclasses.replace(cfg, vocab_size=tokenizer.vocab_size, vocab_multiple=cfg.padded_vocab_size))
  eos_id = getattr(tokenizer, "eos_id", None)
  longest = max(len(p) for p in prompts)
  streams = stream is not None and len(prompts) == 1 and sample.strategy == "sample"
  on_token = TextStream(tokenizer, prompts[0], stream) if streams else None
  with timing.Stopwatch() as clock:
    if longest + sample.num_tokens <= cfg.max_len:
      out = decoding.generate(
          model, params, [p.tolist() for p in prompts], strategy=chosen, max_new_tokens=sample.num_tokens, rng=rng,
          eos_id=eos_id, on_token=on_token,
      )
      continuations = out.rows()
    else:
      continuations = [_without_cache(model, params, p, sample, chosen, rng) for p in prompts]
  texts = [tokenizer.decode(np.concatenate([p, c]).astype(np.int32)) for p, c in zip(prompts, continuations)]
  if streams and texts[0] != on_token.shown:  # the window loop streams nothing; the rest of the text, if any
    stream(texts[0][len(on_token.shown) :] if texts[0].startswith(on_token.shown) else "\n" + texts[0])
  return Texts(texts, sum(len(c) for c in continuations), clock, streamed=streams)


def _without_cache(model, params, prompt: np.ndarray, sample, chosen, rng) -> list[int]:
  """One prompt's continuation by the cache-free window loop (decoding/sampling.py)."""
  plain = isinstance(chosen, (decoding.Greedy, decoding.Sample))
  if not plain or chosen.repetition_penalty is not None or chosen.no_repeat_ngram is not None:
    raise ConfigError(
        f"sample.num_tokens={sample.num_tokens} after a {len(prompt)}-token prompt exceeds model.max_len="
        f"{model.config.max_len}: past it only strategy='sample' without repetition_penalty or no_repeat_ngram goes on"
    )
  tokens = _window_loop(model, params, jnp.asarray(prompt)[None], sample.num_tokens, chosen, rng)
  return np.asarray(tokens[0, len(prompt) :]).tolist()


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _window_loop(model, params, prompt, num_tokens, chosen, rng):
  def next_token_logits(context, length):
    return model.apply({"params": params}, context, length, method=decoder_lm.DecoderLM.next_token_logits)

  return sampling.generate(next_token_logits, prompt, num_tokens, chosen, rng, model.config.max_len)
