"""Generation: the compiled decoding loops, decoding strategies and logits filters.

    from decoders.decoding import Beam, Contrastive, Greedy, Sample, generate, top_k
    out = generate(model, params, [[1, 2, 3]], strategy=Greedy(), max_new_tokens=16)
    out = generate(model, params, prompts, strategy=Sample(top_p=0.9, repetition_penalty=1.2), max_new_tokens=16)
    out = generate(model, params, prompts, strategy=Greedy(no_repeat_ngram=3), max_new_tokens=16)
    out = generate(model, params, prompts, strategy=Beam(4, num_returned=2), max_new_tokens=16, eos_id=2)
    out.rows(), out.nbest()                # the best hypothesis per row; beam search's n-best with scores
    out = generate(model, params, prompts, strategy=Contrastive(k=4, alpha=0.6), max_new_tokens=16)
    out = speculative_generate(target, target_params, draft, draft_params, prompts, gamma=4, max_new_tokens=64)
    out = speculative_generate(target, target_params, PromptLookup(ngram=3), None, prompts, gamma=4, max_new_tokens=64)
    out.acceptance_rate                    # accepted draft tokens / proposed
    filtered = top_k(logits, 40)           # each filter: (logits, ...) -> logits, removed entries -inf
"""
from decoders.decoding import strategies
from decoders.decoding.beam import Beam
from decoders.decoding.contrastive import Contrastive
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
from decoders.decoding.drafts import PromptLookup, early_exit_draft
from decoders.decoding.generation import Generation, generate
from decoders.decoding.speculative import SpeculativeGeneration, speculative_generate
from decoders.decoding.strategies import Greedy, History, Sample

__all__ = [
    "FILTERS",
    "Beam",
    "Contrastive",
    "Generation",
    "Greedy",
    "History",
    "PromptLookup",
    "Sample",
    "SpeculativeGeneration",
    "apply_filters",
    "early_exit_draft",
    "generate",
    "min_p",
    "no_repeat_ngram",
    "repetition_penalty",
    "speculative_generate",
    "strategies",
    "temperature",
    "top_k",
    "top_p",
    "typical",
]
