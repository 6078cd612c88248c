"""The decoding seam: what the generation loops (generation.py, beam.py, contrastive.py) ask of a model.

Any Flax model of this codebase that offers these methods decodes with every strategy:

    decoding_cache(batch, capacity, spec, encoder_tokens, encoder_lengths) -> cache
    tokens_to_logits(tokens, cache, valid_lengths=None) -> (logits [batch, t, vocab], cache)
    tokens_to_hidden / unembed_hidden          (contrastive search only)

and whose cache (a pytree) offers `select_rows(rows)` (beam search reorders beams with it)
and `lengths` [batch] (decoder tokens each row has seen). A decoder-only LM's cache is its
keys and values; an encoder-decoder's, Transformer or RNN, also holds its source, encoded
once in `decoding_cache`: that is the whole difference the loops see.
"""
import functools

from decoders.layers import kv_cache


def start_cache(
    model, params, batch: int, capacity: int, spec: kv_cache.CacheSpec = kv_cache.CacheSpec(), sources=None,
    source_lengths=None,
):
  """The model's cache before the prompts: empty, or (an encoder-decoder's) holding its encoded `sources`.

  A spec the model cannot follow fails here, while tracing: before anything compiles."""
  return model.apply({"params": params}, batch, capacity, spec, sources, source_lengths, method="decoding_cache")


def method(model, params, name: str):
  """`model.<name>` with `params` bound: a function of the method's own arguments."""
  return functools.partial(model.apply, {"params": params}, method=name)
