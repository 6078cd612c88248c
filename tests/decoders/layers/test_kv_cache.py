"""Key/value cache variants against independent references: the model's full forward pass (under an explicit
mask of what an evicting cache keeps), a numpy H2O, the arrays' own bytes, and the decoding step's jaxpr."""
import dataclasses

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.layers import kv_cache
from decoders.layers.kv_cache import CacheSpec
from decoders.models import decoder_lm

VOCAB, LENGTH = 37, 30
PROMPT_LENGTHS = (6, 11)  # rows of different lengths, both longer than the small caches below
EXACT = 1e-5  # float32 rounding: the cache sums over its slots, the full pass over the sequence
# Relative logit error of a quantised cache against the float32 full pass (max |difference| / max |logit|) on the
# models below, weights at twice their initial scale: measured <= 0.009 (int8) and <= 0.10 (int4) at every step.
QUANTISED = {"none": EXACT, "int8": 0.02, "int4": 0.25}
MODELS = {
    "mha": ("gpt2", {}),
    "gqa": ("llama", dict(num_kv_heads=2)),
    "mqa": ("llama", dict(num_kv_heads=1)),
}


def tiny(name: str, scale: float = 2.0, scan_layers: bool = False, **overrides):
  preset, shape = MODELS[name]
  sizes = dict(vocab_size=VOCAB, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=32, scan_layers=scan_layers)
  cfg = decoder_lm.preset(preset, **{**sizes, **shape, **overrides})
  model = decoder_lm.DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * scale, params)


def forward_under_mask(module, tokens, mask):
  """The model's full forward pass with an explicit attention mask [1, 1, length, length] in place of its own."""
  positions = jnp.arange(tokens.shape[1])[None]
  return module.logits(module.blocks(module.embed_inputs(tokens, positions), mask, positions, deterministic=True))


def decoding_errors(model, params, spec: CacheSpec, capacity: int, mask=None, steps: int = 14) -> np.ndarray:
  """Relative logit errors [1 + steps] of a cached prefill (right-padded rows) and of each decoding step after it
  against the full forward pass (under `mask` if given). One compiled call: prefill, then a scan over the steps."""
  tokens = jax.random.randint(jax.random.key(1), (2, LENGTH), 0, VOCAB)
  lengths = jnp.array(PROMPT_LENGTHS)
  prompt = jnp.where(jnp.arange(max(PROMPT_LENGTHS))[None] < lengths[:, None], tokens[:, : max(PROMPT_LENGTHS)], 3)
  relative = lambda ours, reference: jnp.max(jnp.abs(ours - reference)) / jnp.max(jnp.abs(reference))

  @jax.jit
  def errors(params):
    variables = {"params": params}
    if mask is None:
      full = model.apply(variables, tokens)
    else:
      full = model.apply(variables, tokens, mask, method=forward_under_mask)
    step = lambda *args: model.apply(variables, *args, method=model.tokens_to_logits)
    logits, cache = step(prompt, decoder_lm.init_cache(model.config, 2, capacity, spec), lengths)
    real = (jnp.arange(prompt.shape[1]) < lengths[:, None])[..., None]
    prefill = relative(jnp.where(real, logits, 0.0), jnp.where(real, full[:, : prompt.shape[1]], 0.0))

    def decode(cache, offset):
      logits, cache = step(tokens[jnp.arange(2), lengths + offset][:, None], cache)
      return cache, relative(logits[:, 0], full[jnp.arange(2), lengths + offset])

    cache, decoded = jax.lax.scan(decode, cache, jnp.arange(steps))
    return jnp.concatenate([prefill[None], decoded]), cache

  result, cache = errors(params)
  np.testing.assert_array_equal(cache.lengths, lengths + steps)
  assert cache.capacity == capacity
  return np.asarray(result)


# Exact float32 caches of every attention shape: tests/decoders/decoding/test_generation.py; GQA here as a baseline.
@pytest.mark.parametrize(
    "name, quantization", [("gqa", "none"), ("mha", "int8"), ("gqa", "int8"), ("mqa", "int4"), ("gqa", "int4")]
)
def test_cached_decoding_equals_the_full_forward_pass_at_every_step(name, quantization):
  model, params = tiny(name, scan_layers=name == "gqa")
  assert max(decoding_errors(model, params, CacheSpec(quantization=quantization), 32)) < QUANTISED[quantization]


@pytest.mark.parametrize("scan_layers, quantization", [(False, "none"), (True, "none"), (False, "int8")])
def test_a_window_ring_buffer_equals_the_sliding_window_model_at_every_step(scan_layers, quantization):
  # Prompts of 6 and 11 tokens into 5 slots: the prefill's early queries need keys the ring will not keep.
  model, params = tiny("mqa", scan_layers=scan_layers, sliding_window=5)
  errors = decoding_errors(model, params, CacheSpec(quantization, eviction="window"), 5)
  assert max(errors) < QUANTISED[quantization]


def _sinks_mask(sinks: int, window: int) -> jax.Array:
  """Xiao et al. 2023: query i sees keys j <= i with j < sinks or i - j < window."""
  i, j = np.arange(LENGTH)[:, None], np.arange(LENGTH)[None]
  return jnp.asarray((j <= i) & ((j < sinks) | (i - j < window)))[None, None]


def test_a_sinks_cache_equals_the_model_under_a_mask_of_sinks_and_a_recent_window():
  sinks, window = 2, 4
  mask = _sinks_mask(sinks, window)
  model, params = tiny("gqa", scale=8.0)
  errors = decoding_errors(model, params, CacheSpec(eviction="sinks", sinks=sinks), sinks + window, mask)
  assert max(errors) < EXACT


def test_an_h2o_cache_that_never_evicts_equals_the_full_forward_pass():
  model, params = tiny("gqa", scale=8.0, scan_layers=True)
  assert max(decoding_errors(model, params, CacheSpec(eviction="h2o", recent=3), 32)) < EXACT


# Queries and keys of 4 per head, values of 8 (Vaswani et al. 2017, Table 3 (B)): every cache keeps each at its size.
@pytest.mark.parametrize("spec, capacity, window, tolerance", [
    (CacheSpec(), 32, 0, EXACT),
    (CacheSpec("int8"), 32, 0, QUANTISED["int8"]),
    (CacheSpec("int4"), 32, 0, QUANTISED["int4"]),
    (CacheSpec(eviction="window"), 5, 5, EXACT),
    (CacheSpec(eviction="sinks", sinks=2), 6, 0, EXACT),
    (CacheSpec("int8", eviction="h2o", recent=3), 32, 0, QUANTISED["int8"]),
], ids=["none", "int8", "int4", "window", "sinks", "h2o"])
def test_every_cache_decodes_a_model_with_a_separate_key_size_as_its_full_pass(spec, capacity, window, tolerance):
  model, params = tiny("gqa", scale=8.0 if spec.eviction == "sinks" else 2.0, key_size=4, sliding_window=window)
  assert model.config.key_dim == 4 and model.config.head_dim == 8
  cache = decoder_lm.init_cache(model.config, 2, capacity, spec)
  assert cache.key.shape[-1] == (2 if spec.quantization == "int4" else 4)
  assert cache.value.shape[-1] == (4 if spec.quantization == "int4" else 8)
  mask = _sinks_mask(2, 4) if spec.eviction == "sinks" else None
  assert max(decoding_errors(model, params, spec, capacity, mask)) < tolerance


def h2o_reference(query, key, value, lengths, budget: int, recent: int):
  """Zhang et al. 2023, Alg. 1 in numpy, one row and KV head at a time, token after token: outputs
  [batch, length, heads, d] and the positions each row and KV head keeps at the end."""
  batch, length, heads, depth = query.shape
  kv_heads = key.shape[2]
  group = heads // kv_heads
  out = np.zeros(query.shape, np.float64)
  kept_at_end = {}
  for b in range(batch):
    for n in range(kv_heads):
      kept = []  # [position, score]
      for p in range(lengths[b]):
        kept.append([p, 0.0])
        keys = np.stack([key[b, q, n] for q, _ in kept])
        values = np.stack([value[b, q, n] for q, _ in kept])
        for g in range(group):
          logits = keys @ query[b, p, n * group + g] / np.sqrt(depth)
          weights = np.exp(logits - logits.max())
          weights /= weights.sum()
          out[b, p, n * group + g] = weights @ values
          for entry, weight in zip(kept, weights):
            entry[1] += weight
        if len(kept) > budget:
          candidates = [entry for entry in kept if entry[0] <= p - recent]
          kept.remove(min(candidates, key=lambda entry: entry[1]))
      kept_at_end[b, n] = sorted(q for q, _ in kept)
  return out, kept_at_end


def test_h2o_keeps_heavy_hitters_and_the_recent_window_as_the_reference_rule_does():
  batch, length, heads, kv_heads, depth, budget, recent = 2, 20, 4, 2, 8, 6, 2
  rng = np.random.default_rng(0)
  query = rng.normal(size=(batch, length, heads, depth)).astype(np.float32)
  key, value = rng.normal(size=(2, batch, length, kv_heads, depth)).astype(np.float32)
  spec = CacheSpec(eviction="h2o", recent=recent)
  cache = kv_cache.KVCache.zeros(1, batch, budget, kv_heads, depth, spec=spec)

  @jax.jit
  def attend(cache, query, key, value, valid):
    positions = cache.lengths[:, None] + jnp.arange(query.shape[1])[None]
    out, layer_cache = kv_cache.LayerCache(cache, jnp.int32(0), positions, valid).attend(query, key, value, None)
    return out, layer_cache.cache.replace(lengths=cache.lengths + valid)

  prompt = np.array([5, 9])  # a prefill of different lengths, then one token per call
  outputs = np.zeros(query.shape, np.float32)
  out, cache = attend(cache, query[:, :9], key[:, :9], value[:, :9], jnp.asarray(prompt))
  outputs[0, :5], outputs[1, :9] = out[0, :5], out[1, :9]
  for step in range(length - 5):
    at = np.minimum(prompt + step, length - 1)  # row 1 is done first; its last calls are padding
    pick = lambda x: x[np.arange(batch), at][:, None]
    valid = (prompt + step < length).astype(np.int32)
    out, cache = attend(cache, pick(query), pick(key), pick(value), jnp.asarray(valid))
    for b in np.flatnonzero(valid):
      outputs[b, at[b]] = out[b, 0]
      held = np.asarray(cache.slot_positions[0, b])  # [budget, kv_heads]
      assert ((held >= 0).sum(axis=0) == min(at[b] + 1, budget)).all()  # never more than the budget
      for n in range(kv_heads):
        assert set(range(at[b] - recent + 1, at[b] + 1)) <= set(held[:, n])  # the R most recent are always kept
  reference, kept = h2o_reference(query, key, value, [length, length], budget, recent)
  np.testing.assert_allclose(outputs, reference, rtol=1e-4, atol=1e-5)
  for (b, n), positions in kept.items():
    assert sorted(np.asarray(cache.slot_positions[0, b, :, n]).tolist()) == positions
  assert len({tuple(p) for p in kept.values()}) > 1  # the KV heads kept different keys: eviction is per head


@pytest.mark.parametrize("quantization, levels", [("int8", 127), ("int4", 7)])
def test_quantisation_rounds_to_the_nearest_level_of_a_per_vector_scale(quantization, levels):
  x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32) * np.float32(4.0)
  x[0, 0] = 0.0  # a zero vector has scale 0 and comes back as zeros
  values, scale = kv_cache.quantize(jnp.asarray(x), quantization)
  assert values.shape == (3, 5, 8 if quantization == "int8" else 4) and scale.shape == (3, 5)
  np.testing.assert_allclose(scale, np.abs(x).max(axis=-1) / levels, rtol=1e-6)
  back = np.asarray(kv_cache.dequantize(values, scale, quantization, jnp.float32))
  assert (np.abs(back - x) <= np.asarray(scale)[..., None] * 0.5 * (1 + 1e-5)).all()
  np.testing.assert_array_equal(back[0, 0], 0.0)
  np.testing.assert_allclose(np.abs(back).max(axis=-1), np.abs(x).max(axis=-1), rtol=1e-6)  # absmax hits +-levels


@pytest.mark.parametrize(
    "spec, bytes_per_slot",
    [  # per layer, row, slot and KV head: key + value (head_dim 8), their scales, H2O's position and score
        (CacheSpec(), 2 * 8 * 4),
        (CacheSpec("int8"), 2 * (8 + 4)),
        (CacheSpec("int4", eviction="window"), 2 * (4 + 4)),
        (CacheSpec("int8", eviction="h2o", recent=2), 2 * (8 + 4) + 4 + 4),
    ],
)
def test_nbytes_counts_every_array_the_cache_allocates(spec, bytes_per_slot):
  layers, batch, capacity, kv_heads = 2, 3, 5, 2
  cache = kv_cache.KVCache.zeros(layers, batch, capacity, kv_heads, 8, spec=spec)
  assert cache.nbytes() == layers * batch * capacity * kv_heads * bytes_per_slot + 4 * batch  # + lengths (int32)
  assert cache.nbytes() == sum(x.nbytes for x in jax.tree.leaves(cache))
  assert jax.eval_shape(lambda: cache).nbytes() == cache.nbytes()
  jax.jit(lambda cache: cache, donate_argnums=0)(cache)  # every array its own buffer: a fresh cache can be donated


@pytest.mark.parametrize(
    "spec, bytes_per_slot",
    [  # per layer, row, slot and KV head: a key of 2 and a value of 8, their scales
        (CacheSpec(), (2 + 8) * 4),
        (CacheSpec("int8"), (2 + 4) + (8 + 4)),
        (CacheSpec("int4"), (1 + 4) + (4 + 4)),
    ],
)
def test_nbytes_counts_keys_at_their_own_size(spec, bytes_per_slot):
  layers, batch, capacity, kv_heads = 2, 3, 5, 2
  cache = kv_cache.KVCache.zeros(layers, batch, capacity, kv_heads, 8, spec=spec, key_dim=2)
  assert cache.nbytes() == layers * batch * capacity * kv_heads * bytes_per_slot + 4 * batch  # + lengths (int32)
  assert cache.nbytes() == sum(x.nbytes for x in jax.tree.leaves(cache))


def test_a_float32_cache_gives_a_bfloat16_model_the_logits_of_its_bfloat16_cache_at_twice_the_bytes():
  model, params = tiny("gqa")
  model = decoder_lm.DecoderLM(dataclasses.replace(model.config, dtype="bfloat16"))
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, VOCAB)
  lengths = jnp.array([5, 8])
  runs = {}
  for dtype in ("", "float32"):
    cache = decoder_lm.init_cache(model.config, 2, 16, CacheSpec(dtype=dtype))
    step = lambda *args: model.apply({"params": params}, *args, method=model.tokens_to_logits)
    prefill, cache = step(tokens[:, :8], cache, lengths)
    decoded, cache = step(tokens[jnp.arange(2), lengths][:, None], cache)
    runs[dtype] = (prefill, decoded, cache)
  assert runs[""][2].key.dtype == jnp.bfloat16 and runs["float32"][2].key.dtype == jnp.float32
  # The keys and values are the model's bfloat16 ones either way: a float32 cache holds them exactly.
  np.testing.assert_array_equal(runs["float32"][0], runs[""][0])
  np.testing.assert_array_equal(runs["float32"][1], runs[""][1])
  np.testing.assert_array_equal(runs["float32"][2].key.astype(jnp.bfloat16), runs[""][2].key)
  assert runs["float32"][2].key.nbytes == 2 * runs[""][2].key.nbytes


def test_select_rows_takes_every_field_of_the_rows():
  cache = kv_cache.KVCache.zeros(2, 3, 4, 2, 8, spec=CacheSpec("int4", eviction="h2o", recent=1))
  leaves, treedef = jax.tree.flatten(cache)
  rng = np.random.default_rng(0)
  cache = jax.tree.unflatten(treedef, [rng.integers(0, 100, x.shape).astype(x.dtype) for x in leaves])
  rows = np.array([2, 2, 0])
  selected = cache.select_rows(jnp.asarray(rows))
  assert selected.spec == cache.spec
  np.testing.assert_array_equal(selected.lengths, np.asarray(cache.lengths)[rows])
  for name in ("key", "value", "key_scale", "value_scale", "slot_positions", "scores"):
    np.testing.assert_array_equal(getattr(selected, name), np.asarray(getattr(cache, name))[:, rows])


def test_rewinding_a_quantised_cache_forgets_what_came_after():
  model, params = tiny("gqa")
  step = jax.jit(lambda *args: model.apply({"params": params}, *args, method=model.tokens_to_logits))
  prompt, cache = jnp.array([[4, 8, 15]]), decoder_lm.init_cache(model.config, 1, 12, CacheSpec("int4"))
  _, cache = step(prompt, cache)
  _, straight = step(jnp.array([[16]]), cache)
  _, detour = step(jnp.array([[16, 23, 30]]), cache)
  expected, _ = step(jnp.array([[7]]), straight)
  rewound, _ = step(jnp.array([[7]]), detour.rewind(detour.lengths - 2))
  np.testing.assert_allclose(rewound, expected, rtol=EXACT, atol=EXACT)  # the same values, summed in another order
  with pytest.raises(ConfigError, match="cannot rewind"):
    decoder_lm.init_cache(model.config, 1, 12, CacheSpec(eviction="window")).rewind(jnp.zeros(1, jnp.int32))


def _cache_sized(jaxpr, shape, sizes: list):
  """Walks `jaxpr` (nested ones too) and records (primitive, role) of every value of the cache's `shape`."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      xs = eqn.invars[eqn.params["num_consts"] + eqn.params["num_carry"]:]
      sizes += [("scan", "scanned input") for var in xs if var.aval.shape == shape]
    sizes += [(eqn.primitive.name, "output") for var in eqn.outvars if var.aval.shape == shape]
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      _cache_sized(sub, shape, sizes)
  return sizes


@pytest.mark.parametrize("scan_layers", [False, True])
def test_a_decoding_step_writes_into_the_cache_instead_of_rebuilding_it(scan_layers):
  # Slicing each layer's cache out and stacking (or scanning) it back copies the whole cache per token.
  model, params = tiny("gqa", scan_layers=scan_layers)
  cache = decoder_lm.init_cache(model.config, 2, 8)
  token = jnp.zeros((2, 1), jnp.int32)
  step = lambda cache: model.apply({"params": params}, token, cache, method=model.tokens_to_logits)
  sizes = _cache_sized(jax.make_jaxpr(step)(cache).jaxpr, cache.key.shape, [])
  in_place = {"scatter", "dynamic_update_slice", "scan", "pjit", "closed_call", "checkpoint", "remat"}
  assert sizes and all(primitive in in_place and role == "output" for primitive, role in sizes), sizes


def test_bad_caches_fail_in_one_line_before_compiling():
  model, params = tiny("mha")
  checks = [
      (lambda: CacheSpec(quantization="int3"), "quantization"),
      (lambda: CacheSpec(eviction="lru"), "eviction"),
      (lambda: CacheSpec(eviction="sinks"), "sinks"),
      (lambda: CacheSpec(sinks=2), "sinks"),
      (lambda: CacheSpec(eviction="h2o"), "recent"),
      (lambda: decoder_lm.init_cache(model.config, 1, 4, CacheSpec(eviction="sinks", sinks=4)), "exceed sinks"),
      (lambda: decoder_lm.init_cache(model.config, 1, 4, CacheSpec(eviction="h2o", recent=4)), "exceed recent"),
      (lambda: decoder_lm.init_cache(tiny("mha", width=36)[0].config, 1, 4, CacheSpec("int4")), "head_dim=9"),
      (lambda: decoder_lm.init_cache(dataclasses.replace(model.config, key_size=3), 1, 4, CacheSpec("int4")),
       "key size key_dim=3 must be even"),
      (lambda: kv_cache.KVCache.zeros(1, 1, 4, 2, 8, key_dim=-1), "key_dim=-1"),
      (lambda: CacheSpec(dtype="float16"), "cache dtype='float16' is not one of"),
      (lambda: CacheSpec("int8", dtype="float32"), "cache dtype='float32' is for quantization='none'"),
      (lambda: model.apply(  # a prompt longer than a cache that does not evict
          {"params": params}, jnp.zeros((1, 6), jnp.int32), decoder_lm.init_cache(model.config, 1, 5),
          method=model.tokens_to_logits,
      ), "6 tokens do not fit"),
  ]
  for make, message in checks:
    with pytest.raises(ConfigError, match=message) as error:
      make()
    assert "\n" not in str(error.value)
