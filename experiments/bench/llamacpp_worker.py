"""llama.cpp's side of the SmolLM2 decoding benchmark (smollm2_decode.py), run by .venv-llamacpp's interpreter:

    .venv-llamacpp/bin/python experiments/bench/llamacpp_worker.py '<JSON request>'

The request names the shipped GGUF file, a folder for the re-quantised files, the llama.cpp file types to time, the
prompt's token ids, the new tokens, the threads and the repeats; each file type's result is printed as one JSON line.
llama_model_quantize with allow_requantize makes each file type from the shipped Q4_1 file (its values dequantised, so
F32 and BF16 hold what our loader reads); greedy is the argmax of the last logits. Only the standard library, numpy
and llama_cpp are imported: the main venv never imports this file.
"""
import ctypes
import json
import os
import statistics
import sys
import time


def requantised(llama_cpp, request: dict, file_type: str) -> str:
  """The path of the source model in `file_type`, made once and kept in the request's cache folder."""
  file_types = {
      "F32": llama_cpp.LLAMA_FTYPE_ALL_F32, "BF16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
      "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
  }
  name = os.path.basename(request["source"]).rsplit(".", 2)[0]
  path = os.path.join(request["cache"], f"{name}.{file_type}.gguf")
  if not os.path.exists(path):
    os.makedirs(request["cache"], exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_types[file_type]
    params.allow_requantize, params.nthread = True, request["threads"]
    if llama_cpp.llama_model_quantize(request["source"].encode(), (path + ".tmp").encode(), ctypes.byref(params)):
      raise SystemExit(f"llama_model_quantize to {file_type} failed")
    os.replace(path + ".tmp", path)
  return path


def greedy(llm, prompt: list[int], new_tokens: int) -> tuple[list[int], float, float]:
  """(the new tokens, seconds of prompt processing, seconds of decoding) of one greedy continuation."""
  import numpy as np

  llm.reset()
  start = time.perf_counter()
  llm.eval(prompt)
  prompted = time.perf_counter()
  tokens = []
  while True:
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    tokens.append(int(np.argmax(logits)))
    if len(tokens) == new_tokens:
      return tokens, prompted - start, time.perf_counter() - prompted
    llm.eval([tokens[-1]])


def main(request: dict) -> None:
  import llama_cpp

  prompt, new_tokens, threads = request["prompt"], request["new_tokens"], request["threads"]
  for file_type in request["file_types"]:
    path = requantised(llama_cpp, request, file_type)
    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=path, n_ctx=len(prompt) + new_tokens + 8, n_batch=512, n_threads=threads,
        n_threads_batch=threads, verbose=False,
    )
    load = time.perf_counter() - start
    tokens, *_ = greedy(llm, prompt, new_tokens)  # warm-up
    runs = [greedy(llm, prompt, new_tokens)[1:] for _ in range(request["repeats"])]
    print(json.dumps({
        "file_type": file_type, "file_bytes": os.path.getsize(path), "load_s": load, "tokens": tokens,
        "prompt_s": statistics.median(r[0] for r in runs), "decode_s": statistics.median(r[1] for r in runs),
        "call_s": statistics.median(r[0] + r[1] for r in runs), "version": llama_cpp.__version__,
    }), flush=True)


if __name__ == "__main__":
  main(json.loads(sys.argv[1]))
