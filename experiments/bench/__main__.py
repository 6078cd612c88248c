"""`python -m experiments.bench <name> [flags] [--record]`: runs one benchmark module."""
import sys

from absl import app, flags, logging

from experiments.bench import attention, common
from experiments.bench import compile as compile_time
from experiments.bench import (
    bandwidth, beam, cache_memory, decode, hf_gpt2, kv_cache, loop_reads, smollm2_decode, speculative, streaming_llm,
    train,
)

# name -> module with run() -> lines; each module defines its own flags.
BENCHMARKS = {
    "train": train, "compile": compile_time, "attention": attention, "hf_gpt2": hf_gpt2, "kv_cache": kv_cache,
    "bandwidth": bandwidth, "decode": decode, "smollm2_decode": smollm2_decode, "cache_memory": cache_memory,
    "streaming_llm": streaming_llm, "speculative": speculative, "beam": beam, "loop_reads": loop_reads,
}

_RECORD = flags.DEFINE_bool("record", False, "Append the result to BENCHMARKS.md.")


def main(argv):
  if len(argv) != 2 or argv[1] not in BENCHMARKS:
    raise app.UsageError(f"usage: python -m experiments.bench {{{'|'.join(BENCHMARKS)}}} [flags] [--record]")
  logging.set_verbosity(logging.WARNING)
  lines = [f"machine: {common.machine()}", *BENCHMARKS[argv[1]].run()]
  print("\n".join(lines))
  if _RECORD.value:
    common.record("python -m experiments.bench " + " ".join(sys.argv[1:]), lines)


if __name__ == "__main__":
  app.run(main)
