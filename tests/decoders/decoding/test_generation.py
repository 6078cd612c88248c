"""The cached generation driver against the model's own full forward pass."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.decoding import Beam, Contrastive, generate, strategies
from decoders.decoding import generation as generation_lib
from decoders.errors import ConfigError
from decoders.layers.kv_cache import CacheSpec
from decoders.models import decoder_lm

VOCAB = 37
SHAPES = {
    "gpt2": {},
    "llama": dict(num_kv_heads=2),  # GQA
    "mistral": dict(num_kv_heads=1, sliding_window=5),  # MQA, a window shorter than the sequences
}


def tiny(preset: str, scan_layers: bool = False):
  cfg = decoder_lm.preset(
      preset, vocab_size=VOCAB, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=32, scan_layers=scan_layers,
      **SHAPES[preset],
  )
  model = decoder_lm.DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = jax.tree.map(lambda x: x * 8.0, params)  # greedy choices well above rounding level
  return model, params


def assert_close(ours, reference):
  """Equal up to float32 rounding: the cache sums over its capacity, the full pass over the sequence, in other
  orders; weights at 8x their initial scale make the attention nearly one-hot, which magnifies the difference (at
  most 2.5e-5 measured, gpt2 scanned). A wrong key, slot or mask moves a logit by far more."""
  assert float(jnp.max(jnp.abs(ours - reference)) / jnp.max(jnp.abs(reference))) < 5e-5


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_cached_logits_equal_the_full_forward_pass_at_every_step(preset, scan_layers):
  model, params = tiny(preset, scan_layers)
  tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, VOCAB)
  full = model.apply({"params": params}, tokens)
  lengths = jnp.array([6, 11])  # rows of different lengths, right-padded with garbage
  prompt = jnp.where(jnp.arange(12)[None] < lengths[:, None], tokens[:, :12], 3)
  cache = decoder_lm.init_cache(model.config, 2, 32)
  tokens_to_logits = jax.jit(lambda *args: model.apply({"params": params}, *args, method=model.tokens_to_logits))
  logits, cache = tokens_to_logits(prompt, cache, lengths)
  for row in range(2):
    assert_close(logits[row, : lengths[row]], full[row, : lengths[row]])
  for step in range(12):
    token = tokens[jnp.arange(2), lengths + step][:, None]  # each row continues with its own next token
    logits, cache = tokens_to_logits(token, cache)
    assert_close(logits[:, 0], full[jnp.arange(2), lengths + step])
  np.testing.assert_array_equal(cache.lengths, lengths + 12)


def full_forward_greedy(model, params, prompt: list[int], steps: int) -> list[int]:
  """Greedy without a cache: the whole sequence through the model for every token (one fixed-size buffer,
  so one compilation; causal attention keeps the zeros after the sequence out of its logits)."""
  forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
  buffer = np.zeros((1, model.config.max_len), np.int32)
  buffer[0, : len(prompt)] = prompt
  for length in range(len(prompt), len(prompt) + steps):
    buffer[0, length] = int(jnp.argmax(forward(buffer)[0, length - 1]))
  return buffer[0, len(prompt) : len(prompt) + steps].tolist()


@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_batched_greedy_generation_equals_each_row_alone_without_a_cache(preset):
  model, params = tiny(preset)
  prompts = [[5, 9, 2, 11], [7], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
  out = generate(model, params, prompts, strategy=strategies.Greedy(), max_new_tokens=12)
  for row, prompt in enumerate(prompts):
    assert out.rows()[row] == full_forward_greedy(model, params, prompt, 12)
  np.testing.assert_array_equal(out.num_generated, [12, 12, 12])
  # The log-probabilities are those of the model's own distribution at each chosen token.
  logits = model.apply({"params": params}, jnp.asarray([prompts[1] + out.rows()[1]]))
  expected = jax.nn.log_softmax(logits[0, :-1])[jnp.arange(len(prompts[1]) - 1, 12), jnp.asarray(out.rows()[1])]
  np.testing.assert_allclose(out.log_probs[1], expected, rtol=1e-4, atol=1e-5)


def test_each_row_stops_at_its_eos_and_the_loop_at_the_last():
  model, params = tiny("llama")
  prompts = [[5, 9, 2, 11], [7]]
  free = generate(model, params, prompts, strategy=strategies.Greedy(), max_new_tokens=10).rows()
  eos = free[0][2]  # the first row ends by its third token at the latest
  out = generate(model, params, prompts, strategy=strategies.Greedy(), max_new_tokens=10, eos_id=eos)
  for row in range(2):
    end = free[row].index(eos) + 1 if eos in free[row] else 10
    assert out.rows()[row] == free[row][:end]
    assert (out.tokens[row, end:] == eos).all() and (out.log_probs[row, end:] == 0).all()
  assert out.num_generated[0] <= 3


def test_a_second_call_with_the_same_shapes_does_not_compile_again():
  model, params = tiny("gpt2")
  strategy = strategies.Sample(temperature=0.7)
  generate(model, params, [[1, 2], [3, 4]], strategy=strategy, max_new_tokens=5, rng=jax.random.key(1))
  compiled = generation_lib._generate._cache_size()
  generate(model, params, [[5, 6], [7, 8]], strategy=strategy, max_new_tokens=5, rng=jax.random.key(2))
  assert generation_lib._generate._cache_size() == compiled


def test_padded_prompts_with_their_lengths_generate_what_the_lists_do():
  model, params = tiny("llama")
  lists = [[5, 6, 7], [8]]
  padded = np.array([[5, 6, 7, 0, 0], [8, 99, 0, 0, 0]])  # junk past a row's length is never read
  options = dict(strategy=strategies.Greedy(), max_new_tokens=4)
  expected = generate(model, params, lists, **options)
  out = generate(model, params, padded, prompt_lengths=np.array([3, 1]), **options)
  np.testing.assert_array_equal(out.tokens, expected.tokens)
  np.testing.assert_allclose(out.log_probs, expected.log_probs, rtol=1e-5)


@pytest.mark.parametrize("prompts, max_new, match", [
    ([], 4, "no prompts"),
    ([[1], []], 4, "prompt 1 is empty"),
    ([[1, VOCAB]], 4, f"token id {VOCAB}, outside the model's vocabulary of {VOCAB}"),
    ([[1]], -1, "max_new_tokens=-1"),
    ([[1] * 30], 4, "exceeds model.max_len=32"),
])
def test_bad_input_is_named_before_compiling(prompts, max_new, match):
  model, params = tiny("gpt2")
  with pytest.raises(ConfigError, match=match):
    generate(model, params, prompts, strategy=strategies.Greedy(), max_new_tokens=max_new)


@pytest.mark.parametrize("sources, match", [
    ([[4, 5]], "a decoder-only model takes no encoder_tokens"),
    ([[4, 5], [6]], "2 sources for 1 prompts"),
    ([[]], "source 0 is empty"),
    ([[4, VOCAB]], f"source 0 has token id {VOCAB}, outside the model's vocabulary"),
    ((np.array([[4, 5, 0]]), np.array([4])), "padded sources of shape \\(1, 3\\) need lengths"),
    ((np.array([[4, VOCAB, 0]]), np.array([2])), f"source 0 has token id {VOCAB}, outside the model's vocabulary"),
    ((np.array([[4, 5, VOCAB]]), np.array([0])), "source 0 is empty"),
])
def test_sources_are_checked_and_a_decoder_only_model_refuses_them(sources, match):
  model, params = tiny("gpt2")
  tokens, lengths = sources if isinstance(sources, tuple) else (sources, None)
  with pytest.raises(ConfigError, match=match):
    generate(
        model, params, [[1]], strategy=strategies.Greedy(), max_new_tokens=2, encoder_tokens=tokens,
        encoder_lengths=lengths,
    )


def test_sampling_with_top_k_1_is_greedy_and_top_p_keeps_to_the_nucleus():
  model, params = tiny("llama")
  prompts = [[5, 9, 2, 11], [7]]
  greedy = generate(model, params, prompts, strategy=strategies.Greedy(), max_new_tokens=6)
  top1 = generate(model, params, prompts, strategy=strategies.Sample(top_k=1), max_new_tokens=6, rng=jax.random.key(3))
  assert top1.rows() == greedy.rows()
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  draws = jax.vmap(lambda key: strategies.Sample(top_p=0.75)(logits, key))(jax.random.split(jax.random.key(0), 400))
  assert set(np.asarray(draws).ravel().tolist()) == {0, 1}  # 0.5 + 0.3 covers 0.75


@pytest.mark.parametrize("settings, match", [
    (dict(temperature=0.0), "t=0"), (dict(top_k=0), "k=0"), (dict(top_p=1.5), "p=1.5"), (dict(typical=0.0), "mass=0"),
])
def test_a_sampling_setting_that_cannot_work_is_named_when_the_strategy_is_made(settings, match):
  with pytest.raises(ConfigError, match=match):
    strategies.Sample(**settings)


@pytest.mark.parametrize("strategy", [strategies.Greedy(no_repeat_ngram=2), Beam(2), Contrastive(3, 0.5)])
def test_every_strategy_gets_the_same_input_checks_and_an_empty_generation(strategy):
  model, params = tiny("gpt2")
  with pytest.raises(ConfigError, match="exceeds model.max_len=32"):
    generate(model, params, [[1] * 30], strategy=strategy, max_new_tokens=4)
  with pytest.raises(ConfigError, match="prompt 1 is empty"):
    generate(model, params, [[1], []], strategy=strategy, max_new_tokens=4)
  out = generate(model, params, [[1, 2], [3]], strategy=strategy, max_new_tokens=0)
  assert out.rows() == [[], []] and out.tokens.shape == (2, 0)
  if isinstance(strategy, Beam):
    assert out.nbest() == [[([], 0.0)], [([], 0.0)]]
  else:
    with pytest.raises(ConfigError, match="nbest\\(\\) needs beam search"):
      out.nbest()


def test_a_ring_of_the_window_generates_what_the_full_cache_does():
  # Mistral's window is 5: a 5-slot ring holds every key any query may see, whatever the length.
  model, params = tiny("mistral")
  prompts = [[5, 9, 2, 11, 3, 8, 1], [7]]
  full = generate(model, params, prompts, strategy=strategies.Greedy(), max_new_tokens=16)
  ring = generate(
      model, params, prompts, strategy=strategies.Greedy(), max_new_tokens=16, cache=CacheSpec(eviction="window"),
      cache_capacity=5,
  )
  assert ring.rows() == full.rows()
  np.testing.assert_allclose(ring.log_probs, full.log_probs, rtol=1e-4, atol=1e-4)  # sums in another order


def test_every_step_is_streamed_to_the_host_in_order():
  model, params = tiny("llama")
  steps = []
  out = generate(
      model, params, [[5, 9], [7]], strategy=strategies.Greedy(), max_new_tokens=6, eos_id=4,
      on_token=lambda tokens, ended: steps.append((np.asarray(tokens).copy(), np.asarray(ended).copy())),
  )
  assert len(steps) == out.tokens.shape[1] or not np.all(steps[-1][1] | (steps[-1][0] == 4))
  np.testing.assert_array_equal(np.stack([tokens for tokens, _ in steps], axis=1), out.tokens[:, : len(steps)])
  ended = np.stack([e for _, e in steps], axis=1)  # a row has ended from the step after its EOS
  np.testing.assert_array_equal(ended.sum(axis=1), len(steps) - out.num_generated)


@pytest.mark.parametrize("options, match", [
    (dict(cache_capacity=4), "cache_capacity=4 cannot hold the longest prompt plus max_new_tokens \\(6 tokens\\)"),
    (dict(cache=CacheSpec(quantization="int4"), strategy=Beam(2)), "Beam keeps a plain cache of its own"),
    (dict(cache=CacheSpec(eviction="sinks", sinks=4), cache_capacity=4), "capacity=4 must exceed sinks=4"),
])
def test_a_cache_that_cannot_serve_is_named_before_compiling(options, match):
  model, params = tiny("llama")
  options = {"strategy": strategies.Greedy(), **options}
  with pytest.raises(ConfigError, match=match):
    generate(model, params, [[1, 2]], max_new_tokens=4, **options)
