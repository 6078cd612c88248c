"""The reproductions `python -m experiments.reproduce NAME` runs: each a paper's claims beside our runs.

A reproduction is an `Ablation` (base.py): a base config, named runs that override
it, the published claims and the test (claims.py) that judges each from our numbers.
REPRODUCTIONS.md has one section per entry of ABLATIONS, in this order; a new one is
a module here and a line below.
"""
from experiments.errors import UserError
from experiments.reproductions import (
    image_decoders, rnn_translation, shakespeare_char, smollm2_shakespeare, transformer_translation,
    transformer_variants,
)
from experiments.reproductions.base import Ablation

ABLATIONS: dict[str, Ablation] = {
    ablation.name: ablation
    for ablation in (
        shakespeare_char.ABLATION, transformer_variants.ABLATION, smollm2_shakespeare.ABLATION,
        rnn_translation.BAHDANAU, rnn_translation.LUONG, rnn_translation.SUTSKEVER, rnn_translation.BENGIO,
        transformer_translation.VASWANI, transformer_translation.BEAM, transformer_translation.T5,
        image_decoders.ODENA, image_decoders.RONNEBERGER, image_decoders.KINGMA,
        image_decoders.VINCENT, image_decoders.ROMBACH,
    )
}


def lookup(name: str) -> Ablation:
  if name not in ABLATIONS:
    raise UserError(f"unknown reproduction {name!r}; expected one of: {', '.join(ABLATIONS)}")
  return ABLATIONS[name]
