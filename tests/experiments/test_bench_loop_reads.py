"""The loop_reads benchmark: the decode loop's state parsed from optimised HLO, and the weights it carries."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from decoders.models import decoder_lm
from experiments.bench import decode, loop_reads, smollm2_decode

# A hand-made module: a small loop inside the decode loop's body, which converts its [2, 3, 6] cache twice.
HLO = """HloModule jit__generate

%b2 (arg: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %inner = (s32[], f32[2]{0}) while(%t), condition=%c, body=%b
  %wrapped_convert.4 = f32[2,3,6]{2,1,0} fusion(%g), kind=kLoop, calls=%w4
  %wrapped_convert.5 = bf16[2,3,6]{2,1,0} fusion(%s), kind=kLoop, calls=%w5
  %convert.1 = f32[4,8]{1,0} convert(%h)
}

ENTRY %main (p0: bf16[4,8], p1: f32[2,3]) -> f32[1,5] {
  %convert = f32[4,8]{1,0} convert(%p0)
  %small.1 = (s32[], f32[3]{0}) while(%t1), condition=%c1, body=%b1
  %while.7 = (s32[], f32[1,5]{1,0}, f32[2,3,6]{2,1,0}, /*index=3*/f32[4,8]{1,0}, s8[2,3]{1,0}, f32[6]{0}) while(%t2), condition=%c2, body=%b2
}
"""


def test_the_decode_loops_state_is_the_entry_computations_largest_loop():
  state = loop_reads.decode_loop_state(HLO)
  assert state == [("s32", ()), ("f32", (1, 5)), ("f32", (2, 3, 6)), ("f32", (4, 8)), ("s8", (2, 3)), ("f32", (6,))]
  # Matrices of 32 and 6 elements: the cache of 36 is none of them, and a 1-D array of 6 is no matrix.
  carried = loop_reads.carried_weights(state, [32, 6])
  assert carried == [("f32", 32), ("s8", 6)]
  assert loop_reads.summary(carried) == (32 * 4 + 6, "f32 x 1, s8 x 1")
  assert loop_reads.cache_conversions(HLO, (2, 3, 6)) == 2 and loop_reads.cache_conversions(HLO, (9,)) == 0
  with pytest.raises(ValueError, match="no while loop"):
    loop_reads.decode_loop_state("HloModule m\n\nENTRY %main () -> f32[] {\n}\n")


@pytest.mark.parametrize("weights, carried_dtype", [("f32", "f32"), ("int8", "s8")])
def test_a_compiled_decode_loop_carries_the_weights_as_stored(weights, carried_dtype):
  cfg = decoder_lm.preset("gpt2", vocab_size=37, num_layers=2, width=32, num_heads=4, mlp_dim=64,
                          max_len=decode.PROMPT_TOKENS + loop_reads.NEW_TOKENS)
  model = decoder_lm.DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  model, params = smollm2_decode.ours_in(weights, model, params)
  kernels = [x for x in jax.tree.leaves(params) if x.ndim > 1 and x.dtype == jnp.dtype(weights.replace("f32", "float32"))]
  state = loop_reads.decode_loop_state(loop_reads.compiled_decode_text(model, params))
  carried = loop_reads.carried_weights(state, [x.size for x in kernels])
  assert len(carried) == len(kernels) and {dtype for dtype, _ in carried} == {carried_dtype}


def test_a_float32_cache_spares_a_bfloat16_model_the_conversions_of_the_whole_cache():
  cfg = decoder_lm.preset("gpt2", vocab_size=37, num_layers=2, width=32, num_heads=4, mlp_dim=64,
                          max_len=decode.PROMPT_TOKENS + loop_reads.NEW_TOKENS)
  model = decoder_lm.DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  model, params = smollm2_decode.ours_in("bf16", model, params)
  shape = loop_reads.cache_shape(cfg)
  assert shape == (cfg.num_layers, 1, cfg.kv_heads, decode.PROMPT_TOKENS + loop_reads.NEW_TOKENS, cfg.head_dim)
  assert loop_reads.cache_conversions(loop_reads.compiled_decode_text(model, params, "float32"), shape) == 0
  if jax.default_backend() == "cpu":  # why the float32 cache exists: XLA:CPU converts a bfloat16 one to write into it
    assert loop_reads.cache_conversions(loop_reads.compiled_decode_text(model, params), shape) > 0
