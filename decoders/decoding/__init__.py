"""Generation: the compiled decoding loops, sampling strategies and logits filters.

    from decoders.decoding import generate, strategies, top_k
    out = generate(model, params, [[1, 2, 3]], strategy=strategies.Temperature(0.0), max_new_tokens=16)
    filtered = top_k(logits, 40)           # each filter: (logits, ...) -> logits, removed entries -inf
"""
from decoders.decoding.filters import (
    FILTERS,
    apply_filters,
    min_p,
    no_repeat_ngram,
    repetition_penalty,
    temperature,
    top_k,
    top_p,
    typical,
)
from decoders.decoding.generation import Generation, generate

__all__ = [
    "FILTERS",
    "Generation",
    "apply_filters",
    "generate",
    "min_p",
    "no_repeat_ngram",
    "repetition_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical",
]
