"""Parallel text for translation: one TFDS builder, one config per language pair, held-out splits by source hash.

Pairs (shared/DATA.md, "Parallel text for translation"): LibreOffice's help and UI in English and German or French
(`libreoffice.py`, technical documentation) and the Bible in English and Spanish (`bible.py`). Each config's
records are {id, source, target}, numbered in the source corpus's fixed order.

The splits are fixed by a stable hash of the source sentence, never by position: the first 8 bytes of the SHA-256 of
its UTF-8, as a big-endian integer, modulo 1000 give a bucket; buckets 0-29 are `test` (3 %), 30-59 `validation`
(3 %), the rest `train` (94 %). The same source always lands in the same split, in every run and on every machine,
and a source that occurs twice (with two translations) is never in both train and test, so test BLEU measures
translation of unseen sentences. Small fractions suit these corpora's size: 3 % of LibreOffice en-de is ~1,400
pairs, enough for BLEU's corpus-level statistics.

`python -m experiments.data.parallel --pairs=libreoffice_en_de,bible_en_es` prepares the pairs and their shared
SentencePiece vocabularies and prints their sizes.
"""
import functools
import hashlib
import os
import time

import numpy as np
import tensorflow_datasets as tfds

from decoders.errors import ConfigError
from experiments.data import bible, libreoffice
from experiments.data.prepare import prepared
from experiments.errors import MissingDataError

PAIRS = {
    "libreoffice_en_de": "LibreOffice 7.4 help paragraphs and UI strings, English -> German (~49 k pairs)",
    "libreoffice_en_fr": "LibreOffice 7.4 help paragraphs and UI strings, English -> French",
    "bible_en_es": "Bible verses, World English Bible -> Reina-Valera 1909 Spanish (~31 k pairs)",
}
# name -> (source_dir, cache_dir) -> [(source, target)] in a fixed order
_READERS = {
    "libreoffice_en_de": functools.partial(libreoffice.pairs, "de"),
    "libreoffice_en_fr": functools.partial(libreoffice.pairs, "fr"),
    "bible_en_es": bible.pairs,
}
SPLITS = ("train", "validation", "test")
HASH_BUCKETS, TEST_BUCKETS, VALIDATION_BUCKETS = 1000, 30, 30


def split_of(source: str) -> str:
  """The split a pair belongs to, from its source sentence alone (see the module docstring)."""
  bucket = int.from_bytes(hashlib.sha256(source.encode("utf-8")).digest()[:8], "big") % HASH_BUCKETS
  if bucket < TEST_BUCKETS:
    return "test"
  return "validation" if bucket < TEST_BUCKETS + VALIDATION_BUCKETS else "train"


def check_pair(pair: str) -> None:
  if pair not in PAIRS:
    raise ConfigError(f"unknown translation pair {pair!r}; known pairs: {', '.join(PAIRS)}")


# `python -m experiments.data.parallel` runs this file as __main__ and imports it again (through sentencepiece_vocab):
# only the imported copy registers the dataset name.
class ParallelText(tfds.core.GeneratorBasedBuilder, skip_registration=__name__ == "__main__"):
  """Sentence pairs {id, source, target}; splits train/validation/test by a hash of the source."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "LibreOffice 7.4 en-de/en-fr (Debian bookworm), WEB/RV1909 en-es; splits by source hash."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=description) for name, description in PAIRS.items()]
  DEFAULT_CONFIG_NAME = "libreoffice_en_de"

  def __init__(self, *, source_dir: str = "", **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(
            {
                "id": tfds.features.Scalar(np.int64, doc="position of the pair in the corpus's fixed order"),
                "source": tfds.features.Text(),
                "target": tfds.features.Text(),
            }
        ),
        supervised_keys=("source", "target"),
    )

  def _split_generators(self, dl_manager):
    cache_dir = os.path.join(dl_manager.download_dir, "debian")  # the .deb files, when source_dir is not given
    pairs = _READERS[self.builder_config.name](source_dir=self._source_dir, cache_dir=cache_dir)
    if not pairs:
      where = self._source_dir or cache_dir
      raise MissingDataError(f"no sentence pairs found for {self.builder_config.name} in {where!r}")
    rows = {split: [] for split in SPLITS}
    for index, (source, target) in enumerate(pairs):
      rows[split_of(source)].append((index, source, target))
    return {split: self._generate_examples(split_rows) for split, split_rows in rows.items()}

  def _generate_examples(self, rows: list[tuple[int, str, str]]):
    for index, source, target in rows:
      yield index, {"id": index, "source": source, "target": target}


def prepared_builder(pair: str, data_dir: str = "", source_dir: str = "") -> ParallelText:
  """The builder of `pair` with its dataset on disk, built on first use (once, under a file lock)."""
  check_pair(pair)
  return prepared(
      lambda: ParallelText(config=pair, data_dir=data_dir or None, source_dir=source_dir, file_format="array_record")
  )


def read_split(builder: ParallelText, split: str) -> list[tuple[str, str]]:
  """The (source, target) pairs of a prepared builder's `split`, in corpus order."""
  if split not in SPLITS:
    raise ConfigError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
  records = builder.as_data_source(split=split)
  rows = sorted((int(r["id"]), r["source"], r["target"]) for r in records.__getitems__(range(len(records))))
  return [(source.decode("utf-8"), target.decode("utf-8")) for _, source, target in rows]


def load_pairs(pair: str, split: str, data_dir: str = "", source_dir: str = "") -> list[tuple[str, str]]:
  """(source, target) sentences of `split` of `pair`, building the dataset on first use."""
  return read_split(prepared_builder(pair, data_dir, source_dir), split)


def summary(pair: str, data_dir: str = "", source_dir: str = "", vocabulary_size: int = 8000) -> list[str]:
  """Lines describing `pair` once prepared with its shared vocabulary: pairs per split, words, tokens per sentence."""
  from experiments.data import sentencepiece_vocab  # it imports this module

  builder = prepared_builder(pair, data_dir, source_dir)
  vocabulary = sentencepiece_vocab.shared_vocabulary(pair, data_dir, vocabulary_size, source_dir)
  splits = {split: read_split(builder, split) for split in SPLITS}
  everything = [pair for split_pairs in splits.values() for pair in split_pairs]
  tokens = [len(vocabulary.encode(source)) for source, _ in everything]
  return [
      f"{pair}: " + ", ".join(f"{split} {len(split_pairs):,}" for split, split_pairs in splits.items()),
      f"  {sum(len(source.split()) for source, _ in everything):,} source words; vocabulary of {vocabulary.size:,} "
      f"pieces: {np.mean(tokens):.1f} tokens per source sentence; in {builder.data_dir}",
  ]


def main(argv, pairs: list[str], data_dir: str, source_dir: str, vocabulary_size: int) -> None:
  del argv
  for pair in pairs:
    check_pair(pair)
  for pair in pairs:
    start = time.perf_counter()
    lines = summary(pair, data_dir, source_dir, vocabulary_size)
    print("\n".join(lines) + f"\n  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  from absl import app, flags

  _PAIRS = flags.DEFINE_list("pairs", ["libreoffice_en_de", "bible_en_es"], f"Any of {', '.join(PAIRS)}.")
  _DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets.")
  _SOURCE_DIR = flags.DEFINE_string("source_dir", "", "Folder holding the unpacked packages; '' = download them.")
  _VOCABULARY_SIZE = flags.DEFINE_integer("vocabulary_size", 8000, "Pieces in each pair's shared vocabulary.")
  from experiments.data import parallel  # the registered copy, the one sentencepiece_vocab uses

  app.run(lambda argv: parallel.main(argv, _PAIRS.value, _DATA_DIR.value, _SOURCE_DIR.value, _VOCABULARY_SIZE.value))
