"""The decoding benchmarks on tiny models: their rows, their bounds, and greedy tokens that agree across engines."""
import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.models import decoder_lm
from experiments.bench import bandwidth, decode, smollm2_decode

pytest.importorskip("transformers")
LLAMACPP_PYTHON = os.path.join(os.path.dirname(__file__), "..", "..", ".venv-llamacpp", "bin", "python")
NEW_TOKENS = 3


def tiny(preset: str, **overrides):
  """A tiny model with weights large enough that greedy choices sit well above rounding (as test_generation.py)."""
  cfg = decoder_lm.preset(
      preset, vocab_size=37, num_layers=2, width=32, num_heads=4, mlp_dim=64,
      max_len=decode.PROMPT_TOKENS + NEW_TOKENS, **overrides,
  )
  model = decoder_lm.DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * 8.0, params)


def test_the_bound_divides_the_bandwidth_by_the_bytes_a_step_reads():
  # batch 4 reads the weights once and each row's cache: 4 * 100 / (60 + 4 * 10) = 4 tokens/s.
  assert bandwidth.bound_tokens_per_second(60, 10, 4, 100) == pytest.approx(4.0)
  assert bandwidth.tree_bytes({"a": jnp.zeros((3, 5), jnp.float32), "b": jnp.zeros(7, jnp.bfloat16)}) == 60 + 14


def test_the_read_bandwidth_is_a_plausible_rate():
  rate = bandwidth.read_bandwidth(gib=1 / 64, repeats=3)
  assert 1e8 < rate < 1e13  # bytes/s: any CPU of this century, any memory system of it


def test_gpt2_decode_rows_time_ours_and_hf_and_their_tokens_agree():
  model, params = tiny("gpt2")
  rows, notes = decode.compare(model, params, [2], NEW_TOKENS, repeats=1, bytes_per_second=1e10)
  assert [(row["engine"], row["batch"]) for row in rows] == [("ours", "2"), ("HF transformers", "2")]
  assert all(float(row["tokens/s"].replace(",", "")) > 0 for row in rows)
  assert rows[0]["ratio"].endswith("x HF") and rows[0]["of bound"].endswith("%") and rows[0]["first call (s)"]
  assert notes[0] == "batch 2: our greedy tokens equal HF's in 2/2 rows"
  assert notes[1].startswith("bound: ") and notes[1].endswith(" tokens/s")
  lines = decode.table(rows)
  assert lines[0].startswith("| engine | weights | batch | tokens/s |") and len(lines) == 2 + len(rows)


def test_agreement_names_the_first_differing_token():
  ours = np.array([[1, 2, 3], [4, 5, 6]])
  assert decode.agreement(ours, ours) == "2/2 rows"
  assert decode.agreement(ours, np.array([[1, 2, 3], [4, 0, 6]])) == "1/2 rows (row 1 differs from token 1 on)"


def smollm2_setup(engines, batches=(2,)):
  return smollm2_decode.Setup(
      prompt=list(range(1, 9)), new_tokens=NEW_TOKENS, batches=list(batches), engines=engines, repeats=1,
      bytes_per_second=1e10,
  )


def test_a_llama_format_row_matches_hf_and_bf16_stores_its_matrices_in_bfloat16():
  model, params = tiny("llama", num_kv_heads=2, tie_embeddings=True)
  rows, notes = smollm2_decode.compare_format("f32", model, params, None, smollm2_setup(["ours", "hf"], (2,)))
  assert [(row["engine"], row["weights"], row["batch"]) for row in rows] == [
      ("ours", "f32", "2"), ("HF transformers", "float32", "2")
  ]
  assert rows[0]["ratio"].endswith("x HF") and rows[1]["of bound"].endswith("%")
  assert notes == ["f32 batch 2: ours = HF's greedy tokens in 2/2 rows"]
  bf16_model, bf16_params = smollm2_decode.ours_in("bf16", model, params)
  assert bf16_model.config.dtype == "bfloat16"
  assert bandwidth.tree_bytes(bf16_params) < 0.6 * bandwidth.tree_bytes(params)  # the matrices: 2 bytes a weight
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(bf16_params) if leaf.ndim == 1)  # norm scales
  # Our bf16 row decodes with a float32 cache (by default), and says so.
  rows, notes = smollm2_decode.compare_format("bf16", model, params, None, smollm2_setup(["ours"], (2,)))
  assert [(row["engine"], row["weights"]) for row in rows] == [("ours", "bf16")]
  assert notes == ["bf16: our KV cache holds float32 (--smollm2_bf16_cache)"]


def test_the_int8_row_is_ours_with_int8_weights_or_a_note_saying_why_not():
  model, params = tiny("llama", num_kv_heads=2, tie_embeddings=True)
  rows, notes = smollm2_decode.compare_format("int8", model, params, None, smollm2_setup(["ours", "hf"]))
  if smollm2_decode.int8_weights(model, params) is None:
    assert rows == [] and "no row of ours" in notes[0]
  else:
    assert [(row["engine"], row["weights"]) for row in rows] == [("ours", "int8")]  # HF has no int8 counterpart
    int8_model, int8_params = smollm2_decode.int8_weights(model, params)
    assert any(leaf.dtype == jnp.int8 for leaf in jax.tree.leaves(int8_params))
    assert int8_model.config.weights == "int8"


@pytest.mark.skipif(not os.path.exists(LLAMACPP_PYTHON), reason="no .venv-llamacpp (make llamacpp)")
def test_llamacpp_greedy_on_smollm2_f32_matches_ours_through_hf():
  """llama.cpp on the shipped file made F32 against HF's greedy tokens on our import of it (HF: no compile)."""
  from experiments import pretrained

  loaded = pretrained.load(smollm2_decode.SPEC)
  prompt = loaded.tokenizer.encode("The capital of France is")
  setup = dataclasses.replace(smollm2_setup(["llamacpp"]), prompt=prompt)
  cache = os.path.expanduser("~/.cache/decoders/llamacpp")  # the benchmark's: made once, 540 MB
  runs = smollm2_decode.llamacpp_runs(LLAMACPP_PYTHON, cache, ["f32"], setup)
  assert runs["f32"]["file_type"] == "F32" and runs["f32"]["call_s"] > 0
  hf = decode.hf_model(loaded.model, loaded.params, "float32")
  theirs = decode.hf_greedy(hf, np.array([prompt]), NEW_TOKENS)()
  assert runs["f32"]["tokens"] == theirs[0].tolist()
