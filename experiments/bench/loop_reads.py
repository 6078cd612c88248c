"""In what dtype the compiled decode loop holds its weights, for float32, bfloat16 and int8 weights.

    python -m experiments.bench loop_reads [--record]

Batch-1 decoding is bound by the bytes of weights read per token, so weights stored in bfloat16 or int8 pay
off only if the loop reads them as stored. This compiles greedy decoding of the GPT-2 benchmark shape
(decode.py) in each weight format and reads, from XLA's optimised HLO, the state of the decode `while` loop:
the weight matrices it carries from one token to the next, their dtypes and bytes. A matrix converted before
the loop (loop-invariant code motion hoists a conversion that does not depend on the token) is read in its
converted dtype every token, whatever the stored format.
"""
import collections
import re

import numpy as np

from experiments.bench import decode, smollm2_decode

NEW_TOKENS = 16  # the loop's shapes, not its length, decide what it carries
FORMATS = ("f32", "bf16", "int8")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "f64": 8}

_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_WHILE = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = \((.*)\) while\(.*body=%?([\w.\-]+)")
_CONVERSION = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]*convert[\w.\-]* = (\w+)\[([\d,]*)\]")


def _decode_loop(hlo_text: str) -> tuple[str, str]:
  """(state types, body computation name) of the entry computation's largest while loop."""
  entry = hlo_text[hlo_text.index("\nENTRY ") :] if "\nENTRY " in hlo_text else hlo_text
  loops = [match.groups() for match in map(_WHILE.match, entry.splitlines()) if match]
  if not loops:
    raise ValueError("the module's entry computation has no while loop")
  return max(loops, key=lambda loop: len(_ARRAY.findall(loop[0])))


def decode_loop_state(hlo_text: str) -> list[tuple[str, tuple[int, ...]]]:
  """(HLO dtype, shape) of each element of the state of the entry computation's largest while loop."""
  state, _ = _decode_loop(hlo_text)
  return [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _ARRAY.findall(state)]


def cache_conversions(hlo_text: str, cache_shape: tuple[int, ...]) -> int:
  """How many conversions of a whole `cache_shape` array (every layer's keys or values) the decode loop's body runs
  per step: XLA's conversion instructions and fusions are named after them."""
  _, body = _decode_loop(hlo_text)
  lines = hlo_text[hlo_text.index(f"\n%{body} (") :].split("\n}\n", 1)[0].splitlines()[1:]
  conversions = [match.groups() for match in map(_CONVERSION.match, lines) if match]
  return sum(tuple(int(d) for d in dims.split(",") if d) == cache_shape for _, dims in conversions)


def carried_weights(state, weight_sizes) -> list[tuple[str, int]]:
  """(dtype, elements) of the loop-state arrays that are weight matrices: matched by element count against
  `weight_sizes` (each matrix's element count; a reshape before the loop keeps it), each size matched once."""
  unmatched = collections.Counter(weight_sizes)
  carried = []
  for dtype, shape in state:
    size = int(np.prod(shape))
    if len(shape) >= 2 and unmatched[size] > 0:
      unmatched[size] -= 1
      carried.append((dtype, size))
  return carried


def summary(carried) -> tuple[float, str]:
  """(bytes, 'f32 x 37'): what the carried matrices weigh, and how many there are of each dtype."""
  nbytes = sum(size * DTYPE_BYTES[dtype] for dtype, size in carried)
  counts = collections.Counter(dtype for dtype, _ in carried)
  return nbytes, ", ".join(f"{dtype} x {count}" for dtype, count in counts.most_common())


def cache_shape(config) -> tuple[int, ...]:
  """The shape of the keys of the KV cache the decode loop of `compiled_decode_text` carries, as the model lays it out
  (allocated nowhere)."""
  import jax

  from decoders.models import decoder_lm

  capacity = decode.PROMPT_TOKENS + NEW_TOKENS
  return jax.eval_shape(lambda: decoder_lm.init_cache(config, 1, capacity)).key.shape


def compiled_decode_text(model, params, cache_dtype: str = "") -> str:
  """The optimised HLO of greedy decoding of one 32-token prompt by NEW_TOKENS (generation.generate's loop), with a
  cache of `cache_dtype` ("": the compute dtype)."""
  import jax

  from decoders.decoding import generation, strategies
  from decoders.layers import kv_cache

  prompts = np.zeros((1, decode.PROMPT_TOKENS), np.int32)
  lengths = np.full((1,), decode.PROMPT_TOKENS, np.int32)
  capacity = decode.PROMPT_TOKENS + NEW_TOKENS
  lowered = generation._generate.lower(  # the one compiled call generate() makes for a sampling strategy
      model, strategies.Greedy(), NEW_TOKENS, None, None, kv_cache.CacheSpec(dtype=cache_dtype), capacity, params,
      prompts, lengths,
      jax.random.key(0), None, None,  # no encoder sources
  )
  return lowered.compile().as_text()


def run() -> list[str]:
  import jax

  model, params = decode.gpt2_bench_model(NEW_TOKENS)
  shape = cache_shape(model.config)
  lines = [
      f"GPT-2 bench shape (6 layers, width 384, vocabulary 8192), greedy decoding, batch 1, jax {jax.__version__} on "
      f"{jax.default_backend()}: the weight matrices in the decode loop's state, and the conversions of a whole "
      "KV cache array in its body, from XLA's optimised HLO",
      "| weights | KV cache | stored matrices | carried by the decode loop | as | whole-cache conversions per step |",
      "| --- | --- | ---: | ---: | --- | ---: |",
  ]
  for name, cache_dtype in (*((name, "") for name in FORMATS), ("bf16", "float32")):
    made = smollm2_decode.ours_in(name, model, params)
    if made is None:
      continue
    formatted_model, formatted_params = made
    matrices = [x for x in jax.tree.leaves(formatted_params) if x.ndim > 1]
    stored = sum(x.size * x.dtype.itemsize for x in matrices)
    text = compiled_decode_text(formatted_model, formatted_params, cache_dtype)
    carried_bytes, kinds = summary(carried_weights(decode_loop_state(text), [x.size for x in matrices]))
    cache = cache_dtype or formatted_model.config.dtype
    lines.append(f"| {name} | {cache} | {stored / 1e6:.1f} MB | {carried_bytes / 1e6:.1f} MB | {kinds} | "
                 f"{cache_conversions(text, shape)} |")
  lines.append("a matrix carried in another dtype than stored was converted once before the loop; every token "
               "reads it in that dtype")
  lines.append("a whole-cache conversion reads and writes every layer's keys or values: XLA:CPU converts a bfloat16 "
               "cache to float32 and back to write one token into it, where a float32 cache is written in place")
  return lines
