"""Greedy decoding tokens/s on the GPT-2 benchmark shape, beside Hugging Face `generate`, against the memory bound.

    make bench-hf     # the reference extra (torch, transformers) into .venv
    python -m experiments.bench decode [--decode_new_tokens=256] [--decode_batches=1,8,32] [--record]

The model is configs/gpt2_bench.py's shape (6 layers, width 384, 6 heads, MLP 1536,
vocabulary 8,192) with positions for the 32-token prompt and every new token, random
float32 weights (speed does not depend on their values). Hugging Face's GPT2LMHeadModel
gets the same weights through our exporter (decoders.interop.save_hf_checkpoint) and
runs `generate(do_sample=False)` in PyTorch on the same 2 threads. Each batch size is
timed on the same random prompts, ours and theirs in alternation (a neighbour's burst
on a shared machine then slows both), each call generating exactly the new tokens:
  ours:  decoders.decoding.generate with Greedy(): one compiled call (prefill + while_loop);
         its first call compiles, reported apart, and is not timed
  HF:    model.generate(do_sample=False, max_new_tokens=N, min_new_tokens=N)
tokens/s = batch x new tokens / the median seconds of a whole call (the prefill included,
for both). Greedy tokens must agree; the report counts the rows that do.

The bound (experiments/bench/bandwidth.py): batch-1 decoding reads every weight once per
token, so tokens/s <= read bandwidth / (weight bytes + KV cache bytes read), with the
bandwidth measured in the same run; "of bound" is measured tokens/s over that.
"""
import dataclasses
import json
import os
import statistics
import tempfile
import time

import numpy as np
from absl import flags

from experiments.bench import bandwidth

_NEW_TOKENS = flags.DEFINE_integer("decode_new_tokens", 256, "Tokens each row generates after its 32-token prompt.")
_BATCHES = flags.DEFINE_list("decode_batches", ["1", "8", "32"], "Batch sizes to time.")
_REPEATS = flags.DEFINE_integer("decode_repeats", 3, "Timed calls per engine and batch (after one untimed call).")

PROMPT_TOKENS = 32
THREADS = 2  # PyTorch's intra-op threads, as XLA:CPU uses every core of this 2-core machine
COLUMNS = ("engine", "weights", "batch", "tokens/s", "ratio", "of bound", "first call (s)")


@dataclasses.dataclass(frozen=True)
class Timing:
  """One engine's greedy generation of `tokens` [batch, new] in a median of `seconds` per call."""

  engine: str
  weights: str
  tokens: np.ndarray
  seconds: float
  first_call: float | None = None  # seconds of the call that compiled (ours only)

  @property
  def tokens_per_second(self) -> float:
    return self.tokens.size / self.seconds


def seconds(call) -> tuple[float, object]:
  start = time.perf_counter()
  result = call()
  return time.perf_counter() - start, result


def time_alternating(calls: dict, repeats: int) -> dict:
  """{name: (first-call seconds, median seconds, output)} of each call, timed in turns after one untimed call each."""
  first = {name: seconds(call) for name, call in calls.items()}
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      times[name].append(seconds(call)[0])
  return {name: (first[name][0], statistics.median(times[name]), first[name][1]) for name in calls}


def ours_greedy(model, params, prompts: np.ndarray, new_tokens: int, cache_dtype: str = ""):
  """A call returning our greedy tokens [batch, new_tokens], with a KV cache of `cache_dtype` ("": compute dtype)."""
  from decoders.decoding import generation, strategies
  from decoders.layers import kv_cache

  greedy, cache = strategies.Greedy(), kv_cache.CacheSpec(dtype=cache_dtype)
  return lambda: generation.generate(
      model, params, prompts, strategy=greedy, max_new_tokens=new_tokens, cache=cache
  ).tokens


def import_reference():
  """torch and transformers, or a one-line SystemExit saying how to install them."""
  try:
    import torch
    import transformers
  except ImportError as error:
    raise SystemExit(
        f"this benchmark needs {error.name}, of the reference extra (requirements-reference.txt): `make reference`"
    ) from None
  return torch, transformers


def hf_model(model, params, dtype: str):
  """Hugging Face's model of our `model` with our float32 `params`, through our exporter, in torch's `dtype`."""
  torch, transformers = import_reference()
  from decoders import interop

  torch.set_num_threads(THREADS)
  transformers.utils.logging.disable_progress_bar()
  with tempfile.TemporaryDirectory() as directory:
    interop.save_hf_checkpoint(model, params, directory)
    # No BOS/EOS, like ours without eos_id: every row generates all its tokens (and GPT-2's
    # default ids, 50256, would lie outside a smaller vocabulary).
    config_path = os.path.join(directory, "config.json")
    with open(config_path, encoding="utf-8") as f:
      config = json.load(f)
    with open(config_path, "w", encoding="utf-8") as f:
      json.dump({**config, "bos_token_id": None, "eos_token_id": None, "pad_token_id": 0}, f)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype))
  return hf.eval()


def hf_greedy(hf, prompts: np.ndarray, new_tokens: int):
  """A call returning Hugging Face's greedy tokens [batch, new_tokens]."""
  torch, _ = import_reference()
  inputs = torch.tensor(prompts, dtype=torch.long)

  def call():
    with torch.inference_mode():
      out = hf.generate(
          inputs, attention_mask=torch.ones_like(inputs), do_sample=False, max_new_tokens=new_tokens,
          min_new_tokens=new_tokens,
      )
    return out[:, prompts.shape[1]:].numpy()

  return call


def agreement(ours: np.ndarray, theirs: np.ndarray) -> str:
  """'k/B rows' of identical greedy tokens, and where the first differing row first differs."""
  same = (ours == theirs).all(axis=1)
  text = f"{int(same.sum())}/{len(same)} rows"
  if not same.all():
    row = int(np.argmin(same))
    text += f" (row {row} differs from token {int(np.argmax(ours[row] != theirs[row]))} on)"
  return text


def table(rows: list[dict]) -> list[str]:
  """Markdown lines of result rows: dicts with the keys of COLUMNS."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + " |"]
  return lines + ["| " + " | ".join(result[column] for column in COLUMNS) + " |" for result in rows]


def row(timing: Timing, batch: int, ratio: str, bound: float | None) -> dict:
  """A table row: `ratio` says to what, `bound` is the tokens/s the bandwidth allows this batch."""
  return {
      "engine": timing.engine,
      "weights": timing.weights,
      "batch": str(batch),
      "tokens/s": f"{timing.tokens_per_second:,.0f}",
      "ratio": ratio,
      "of bound": "" if bound is None else f"{timing.tokens_per_second / bound:.0%}",
      "first call (s)": "" if timing.first_call is None else f"{timing.first_call:.1f}",
  }


def gpt2_bench_model(new_tokens: int):
  """configs/gpt2_bench.py's shape with room for the prompt and `new_tokens`, and random float32 params."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from configs import gpt2_bench
  from decoders.models import decoder_lm

  config = decoder_lm.preset(
      "gpt2", vocab_size=gpt2_bench.VOCAB_SIZE, num_layers=6, width=384, num_heads=6, mlp_dim=1536,
      max_len=PROMPT_TOKENS + new_tokens,
  )
  model = decoder_lm.DecoderLM(config)
  return model, nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])


def compare(
    model, params, batches: list[int], new_tokens: int, repeats: int, bytes_per_second: float
) -> tuple[list[dict], list[str]]:
  """Table rows (ours and HF's per batch) and agreement lines, with bounds at `bytes_per_second`."""
  hf = hf_model(model, params, "float32")
  weight_bytes = bandwidth.tree_bytes(params)
  kv_bytes = model.config.kv_cache_bytes_per_token() * (PROMPT_TOKENS + new_tokens / 2)  # the mean context read
  rows, notes = [], []
  for batch in batches:
    prompts = np.random.default_rng(batch).integers(0, model.config.vocab_size, (batch, PROMPT_TOKENS), np.int32)
    timed = time_alternating(
        {"ours": ours_greedy(model, params, prompts, new_tokens), "hf": hf_greedy(hf, prompts, new_tokens)}, repeats
    )
    ours = Timing("ours", "f32", timed["ours"][2], timed["ours"][1], first_call=timed["ours"][0])
    theirs = Timing("HF transformers", "f32", timed["hf"][2], timed["hf"][1])
    bound = bandwidth.bound_tokens_per_second(weight_bytes, kv_bytes, batch, bytes_per_second)
    rows.append(row(ours, batch, f"{ours.tokens_per_second / theirs.tokens_per_second:.2f}x HF", bound))
    rows.append(row(theirs, batch, "1.00x HF", bound))
    notes.append(f"batch {batch}: our greedy tokens equal HF's in {agreement(ours.tokens, theirs.tokens)}")
  notes.append(
      f"bound: {weight_bytes / 1e6:.1f} MB of weights + {kv_bytes / 1e6:.2f} MB of KV cache per row per token, "
      f"read at {bytes_per_second / 1e9:.1f} GB/s (bandwidth.py, this run): "
      + ", ".join(
          f"batch {b} {bandwidth.bound_tokens_per_second(weight_bytes, kv_bytes, b, bytes_per_second):,.0f} tokens/s"
          for b in batches
      )
  )
  return rows, notes


def run() -> list[str]:
  torch, transformers = import_reference()
  batches = [int(batch) for batch in _BATCHES.value]
  new_tokens = _NEW_TOKENS.value
  model, params = gpt2_bench_model(new_tokens)
  rows, notes = compare(model, params, batches, new_tokens, _REPEATS.value, bandwidth.read_bandwidth())
  cfg = model.config
  return [
      f"GPT-2 bench shape: {cfg.num_layers} layers, width {cfg.width}, {cfg.num_heads} heads, MLP {cfg.mlp_dim}, "
      f"vocabulary {cfg.vocab_size}, {cfg.num_params(include_embeddings=True):,} parameters, random float32 weights; "
      f"greedy, {PROMPT_TOKENS}-token prompts, {new_tokens} new tokens per row; median of {_REPEATS.value} calls; "
      f"HF: torch {torch.__version__}, transformers {transformers.__version__}, {THREADS} threads "
      f"(this machine: {os.cpu_count()} cores)",
      *table(rows),
      *notes,
  ]
