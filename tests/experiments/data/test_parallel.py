"""The ParallelText TFDS builder on a tiny fake LibreOffice tree: stable hash splits, array_record round trip, errors.

`write_fake_corpus` (shared with the vocabulary tests) adds a few hundred made-up UI strings to the fake help pages
of test_libreoffice, so that each split holds pairs.
"""
import glob
import hashlib
import os
import random
import subprocess
import sys

import pytest

from decoders.errors import ConfigError
from experiments.data import libreoffice, parallel
from experiments.errors import MissingDataError
from tests.conftest import REPO, subprocess_env
from tests.experiments.data.test_libreoffice import UI_STRINGS, write_fake_packages

ENGLISH_TO_GERMAN = dict(
    zip(
        "the file menu opens saves prints closes selected table cell row column page style document text chart image "
        "shape frame field list window dialog button option value number date time name color size font line".split(),
        "die Datei Menü öffnet speichert druckt schließt ausgewählte Tabelle Zelle Zeile Spalte Seite Vorlage Dokument "
        "Text Diagramm Bild Form Rahmen Feld Liste Fenster Dialog Schaltfläche Option Wert Zahl Datum Zeit Name Farbe "
        "Größe Schrift Linie".split(),
    )
)
TWICE_TRANSLATED = ("Close the window.", ("Schließen Sie das Fenster.", "Fenster schließen."))


def fake_ui_strings(count: int, seed: int = 0) -> list[tuple[str, str]]:
  """`count` made-up UI strings, translated word for word."""
  rng = random.Random(seed)
  strings = []
  for _ in range(count):
    words = [rng.choice(list(ENGLISH_TO_GERMAN)) for _ in range(rng.randint(3, 9))]
    german = [ENGLISH_TO_GERMAN[word] for word in words]
    strings.append((" ".join(words).capitalize() + ".", " ".join(german).capitalize() + "."))
  return strings


def write_fake_corpus(root: str) -> str:
  source, translations = TWICE_TRANSLATED
  return write_fake_packages(root, UI_STRINGS + fake_ui_strings(400) + [(source, t) for t in translations])


@pytest.fixture(scope="module")
def fake_dataset(tmp_path_factory):
  """(source dir, TFDS data dir) of the fake corpus, built once."""
  root = tmp_path_factory.mktemp("fake_parallel")
  source, data_dir = write_fake_corpus(str(root / "source")), str(root / "tfds")
  parallel.load_pairs("libreoffice_en_de", "train", data_dir, source)
  return source, data_dir


def _bucket(sentence: str) -> int:  # the documented rule, written out independently
  return int(hashlib.sha256(sentence.encode("utf-8")).hexdigest()[:16], 16) % 1000


def test_the_split_is_a_stable_hash_of_the_source_sentence():
  sentences = [f"fake sentence number {i}" for i in range(10_000)]
  splits = [parallel.split_of(s) for s in sentences]
  for sentence, split in zip(sentences[:500], splits):
    bucket = _bucket(sentence)
    assert split == ("test" if bucket < 30 else "validation" if bucket < 60 else "train")
  # Pinned values: a change of the rule (or Python's salted hash() sneaking in) would move them.
  assert [parallel.split_of(s) for s in ("Sentence 43.", "Sentence 7.", "Find Bar")] == ["test", "validation", "train"]
  for split, fraction in (("test", 0.03), ("validation", 0.03), ("train", 0.94)):
    assert splits.count(split) / len(splits) == pytest.approx(fraction, abs=0.006)


def test_the_split_is_the_same_in_another_process_with_another_hash_seed():
  code = "from experiments.data import parallel; "
  code += "print([parallel.split_of(f'fake sentence number {i}') for i in range(200)])"
  env = {**subprocess_env(), "PYTHONHASHSEED": "12345"}
  other = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
  assert other.stdout.strip() == str([parallel.split_of(f"fake sentence number {i}") for i in range(200)])


def test_the_builder_writes_array_records_that_read_back_as_the_corpus_split_by_source(fake_dataset):
  source_dir, data_dir = fake_dataset
  corpus = libreoffice.pairs("de", source_dir, cache_dir="")
  splits = {split: parallel.load_pairs("libreoffice_en_de", split, data_dir, source_dir) for split in parallel.SPLITS}

  version = str(parallel.ParallelText.VERSION)
  records = glob.glob(os.path.join(data_dir, "parallel_text", "libreoffice_en_de", version, "*.array_record*"))
  assert {os.path.basename(r).split(".")[0] for r in records} == {f"parallel_text-{s}" for s in parallel.SPLITS}
  for split, pairs in splits.items():
    assert pairs == [pair for pair in corpus if parallel.split_of(pair[0]) == split]  # corpus order within a split
    assert len(pairs) >= 5
  assert sum(map(len, splits.values())) == len(corpus) > 400


def test_a_source_with_two_translations_lands_in_one_split_with_both(fake_dataset):
  source_dir, data_dir = fake_dataset
  source, translations = TWICE_TRANSLATED
  holding = {
      split: [t for s, t in parallel.load_pairs("libreoffice_en_de", split, data_dir, source_dir) if s == source]
      for split in parallel.SPLITS
  }
  assert sorted(holding.values(), key=len) == [[], [], list(translations)]


def test_a_prepared_pair_is_read_without_its_source(fake_dataset, tmp_path):
  source_dir, data_dir = fake_dataset
  assert parallel.load_pairs("libreoffice_en_de", "test", data_dir, str(tmp_path / "gone")) == parallel.load_pairs(
      "libreoffice_en_de", "test", data_dir, source_dir
  )


def test_an_unknown_pair_or_split_is_a_config_error_listing_the_known_ones(fake_dataset):
  _, data_dir = fake_dataset
  with pytest.raises(ConfigError, match="unknown translation pair 'libreoffice_en_xx'; known pairs: libreoffice_en_de, "
                     "libreoffice_en_fr, bible_en_es"):
    parallel.load_pairs("libreoffice_en_xx", "train", data_dir)
  with pytest.raises(ConfigError, match="unknown split 'dev'; splits: train, validation, test"):
    parallel.load_pairs("libreoffice_en_de", "dev", data_dir)


def test_a_missing_source_is_a_missing_data_error_naming_the_packages(tmp_path):
  with pytest.raises(MissingDataError, match="libreoffice-help-en-us, libreoffice-help-de, libreoffice-l10n-de unpacked"):
    parallel.load_pairs("libreoffice_en_de", "train", str(tmp_path / "tfds"), str(tmp_path / "nowhere"))
