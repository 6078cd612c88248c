"""A language model's `sample` config section -> a decoding strategy, and the text it generates.

    python run.py --config=configs/smollm2.py --mode=sample --prompt="The capital of France is"
    python run.py --config=configs/smollm2.py --mode=sample --prompts_file=prompts.txt \
        --config.sample.strategy=beam --config.sample.beam_width=4
    python run.py --config=configs/shakespeare_char.py --workdir=... --mode=sample \
        --config.sample.top_p=0.9 --config.sample.repetition_penalty=1.2

Every setting is a key of `sample` (so `--config.sample.KEY=VALUE` sets it, and the sample at
the end of training uses it too); the defaults switch every filter off.
"""
import math

from experiments.config_rules import TEXT, Rule, integer, number, one_of

STRATEGIES = ("sample", "beam", "contrastive")

SCHEMA = {
    "prompt": TEXT,
    "num_tokens": integer(1),
    "chat": Rule(bool, "true or false"),  # the prompt as a user's message in the tokenizer's chat template
    "strategy": one_of(STRATEGIES),
    "temperature": number(0),  # 0: greedy
    "top_k": integer(0),  # 0: off
    "top_p": number(0, 1, low_open=True),  # 1: off
    "min_p": number(0, 1),  # 0: off
    "typical": number(0, 1, low_open=True),  # 1: off
    "repetition_penalty": number(0, low_open=True),  # 1: off
    "no_repeat_ngram": integer(0),  # 0: off
    "beam_width": integer(1),
    "length_penalty": Rule(float, "a finite number", math.isfinite),  # < 0 favours short hypotheses
    "contrastive_k": integer(1),
    "contrastive_alpha": number(0, 1),
}
