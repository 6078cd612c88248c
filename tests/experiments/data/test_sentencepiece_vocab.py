"""The shared SentencePiece vocabulary on the fake LibreOffice corpus: train split only, cached, deterministic, ids."""
import os

import pytest

from experiments.data import parallel, sentencepiece_vocab
from experiments.data.sentencepiece_vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from tests.experiments.data.test_parallel import write_fake_corpus

SIZE = 400  # the fake corpus holds about 60 distinct characters; byte fallback adds 256 pieces


@pytest.fixture(scope="module")
def fake_vocabulary(tmp_path_factory):
  """(source dir, TFDS data dir, vocabulary) of the fake corpus, trained once."""
  root = tmp_path_factory.mktemp("fake_vocabulary")
  source, data_dir = write_fake_corpus(str(root / "source")), str(root / "tfds")
  return source, data_dir, sentencepiece_vocab.shared_vocabulary("libreoffice_en_de", data_dir, SIZE, source)


def _model_path(data_dir):
  version = str(parallel.ParallelText.VERSION)
  return os.path.join(data_dir, "parallel_text", "libreoffice_en_de", version, f"spm_{SIZE}.model")


def test_the_model_is_trained_on_the_train_split_only_and_cached_beside_the_dataset(tmp_path, monkeypatch):
  source = write_fake_corpus(str(tmp_path / "source"))
  data_dir = str(tmp_path / "tfds")
  seen = []
  train = sentencepiece_vocab.train
  monkeypatch.setattr(sentencepiece_vocab, "train", lambda lines, size: seen.append(lines) or train(lines, size))

  first = sentencepiece_vocab.shared_vocabulary("libreoffice_en_de", data_dir, SIZE, source)
  again = sentencepiece_vocab.shared_vocabulary("libreoffice_en_de", data_dir, SIZE, source)

  train_pairs = parallel.load_pairs("libreoffice_en_de", "train", data_dir, source)
  assert seen == [[sentence for pair in train_pairs for sentence in pair]]  # once, sources and targets, in order
  assert os.path.exists(_model_path(data_dir)) and first.size == again.size == SIZE


def test_training_is_deterministic(fake_vocabulary, tmp_path):
  source, data_dir, _ = fake_vocabulary
  with open(_model_path(data_dir), "rb") as f:
    cached = f.read()
  sentences = [s for pair in parallel.load_pairs("libreoffice_en_de", "train", data_dir, source) for s in pair]
  assert sentencepiece_vocab.train(sentences, SIZE) == cached
  # A fresh data dir builds the dataset and trains again: the same file, byte for byte.
  sentencepiece_vocab.shared_vocabulary("libreoffice_en_de", str(tmp_path), SIZE, source)
  with open(_model_path(str(tmp_path)), "rb") as f:
    assert f.read() == cached


def test_special_ids_and_decoding_stop_at_eos_skipping_pad_and_bos(fake_vocabulary):
  *_, vocabulary = fake_vocabulary
  assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
  pieces = vocabulary._processor  # the special pieces' names, as a reader of the .model file sees them
  assert [pieces.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
  ids = vocabulary.encode("Selected table cell.")
  assert ids and not {PAD_ID, UNK_ID, BOS_ID, EOS_ID} & set(ids)
  assert vocabulary.decode([BOS_ID, *ids, EOS_ID, *vocabulary.encode("Garbage after the end."), PAD_ID]) == (
      "Selected table cell."
  )
  assert vocabulary.decode([*ids, PAD_ID, PAD_ID]) == "Selected table cell."


def test_every_sentence_round_trips_and_unseen_characters_fall_back_to_bytes(fake_vocabulary):
  source, data_dir, vocabulary = fake_vocabulary
  for split in parallel.SPLITS:
    for pair in parallel.load_pairs("libreoffice_en_de", split, data_dir, source):
      for sentence in pair:
        assert vocabulary.decode(vocabulary.encode(sentence)) == sentence
  unseen = "Grüße aus 東京 ✓ … „quoted“"
  ids = vocabulary.encode(unseen)
  assert UNK_ID not in ids and vocabulary.decode(ids) == unseen
  # Frequent words are single pieces: the vocabulary learned the corpus's words, not just its characters.
  assert [len(vocabulary.encode(word)) for word in ("the", "die", "table")] == [1, 1, 1]


def test_summary_reports_each_split_and_tokens_per_sentence(fake_vocabulary):
  source, data_dir, _ = fake_vocabulary
  lines = parallel.summary("libreoffice_en_de", data_dir, source, SIZE)
  counts = {split: len(parallel.load_pairs("libreoffice_en_de", split, data_dir, source)) for split in parallel.SPLITS}
  assert lines[0] == "libreoffice_en_de: " + ", ".join(f"{split} {n:,}" for split, n in counts.items())
  assert "tokens per source sentence" in lines[1] and f"vocabulary of {SIZE:,} pieces" in lines[1]
