"""One SentencePiece vocabulary shared by a translation pair's two languages, trained on its train split.

A shared subword vocabulary lets one embedding table serve the encoder, the decoder and the output layer, as in
Vaswani et al. (2017, section 5.1: "a shared source-target vocabulary"), and lets names and numbers that both
languages write alike be copied piece for piece. The model is SentencePiece's unigram language model (Kudo 2018;
Kudo and Richardson 2018): of the two it trains, it is the one that scores segmentations by probability, so it can
also sample them (subword regularisation) should a task want that later; BPE (Sennrich et al. 2016) would serve too.
Settings: `character_coverage` 0.9995 (SentencePiece's advice for alphabetic languages), `byte_fallback` so no
character is ever unknown, and the `identity` normalisation so that `decode(encode(text)) == text` for text whose
whitespace is already collapsed, as the corpora's is: NFKC would turn "…" into "..." and cost BLEU against the
untouched references. Ids 0-3 are <pad>, <unk>, <s>, </s>.

Only the train split is read, so nothing of the validation or test sentences leaks into the vocabulary. The model is
trained once, under a file lock, and kept beside the dataset (`<data_dir>/parallel_text/<pair>/<version>/
spm_<size>.model`, a protobuf); training reads the sentences in corpus order, single-threaded, so the same data gives
the same file byte for byte.
"""
import fcntl
import io
import os

import sentencepiece as spm

from experiments.data import parallel

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
CHARACTER_COVERAGE = 0.9995


class Vocabulary:
  """Text <-> piece ids with a trained SentencePiece model."""

  def __init__(self, model_proto: bytes):
    self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
    special = (self._processor.pad_id(), self._processor.unk_id(), self._processor.bos_id(), self._processor.eos_id())
    if special != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
      raise ValueError(f"a model with special ids {special}, not {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}")

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    with open(path, "rb") as f:
      return cls(f.read())

  @property
  def size(self) -> int:
    return self._processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """The ids of `text`'s pieces, without <s> or </s>."""
    return self._processor.encode(text, out_type=int)

  def pieces(self, ids) -> list[str]:
    """Each id's piece as SentencePiece writes it ("▁" marks a word's start), e.g. for the axes of a picture."""
    return [self._processor.id_to_piece(int(i)) for i in ids]

  def decode(self, ids) -> str:
    """The text of `ids` up to the first </s>, <pad> and <s> skipped."""
    ids = [int(i) for i in ids]
    if EOS_ID in ids:
      ids = ids[: ids.index(EOS_ID)]
    return self._processor.decode([i for i in ids if i not in (PAD_ID, BOS_ID)])


def train(sentences: list[str], size: int) -> bytes:
  """A unigram SentencePiece model of `size` pieces trained on `sentences`, as its serialised protobuf."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=model,
      model_type="unigram",
      vocab_size=size,
      character_coverage=CHARACTER_COVERAGE,
      byte_fallback=True,
      normalization_rule_name="identity",
      pad_id=PAD_ID,
      unk_id=UNK_ID,
      bos_id=BOS_ID,
      eos_id=EOS_ID,
      num_threads=1,  # one thread, one order of floating-point sums: the same file from the same data
      minloglevel=2,
  )
  return model.getvalue()


def shared_vocabulary(pair: str, data_dir: str = "", size: int = 8000, source_dir: str = "") -> Vocabulary:
  """The vocabulary of `pair` (sources and targets of its train split), trained on first use and cached."""
  builder = parallel.prepared_builder(pair, data_dir, source_dir)
  path = os.path.join(builder.data_dir, f"spm_{size}.model")
  if not os.path.exists(path):
    with open(os.path.join(builder.data_dir, f".spm_{size}.lock"), "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or its process ends
      if not os.path.exists(path):
        sentences = [sentence for pair in parallel.read_split(builder, "train") for sentence in pair]
        with open(path + ".incomplete", "wb") as f:
          f.write(train(sentences, size))
        os.replace(path + ".incomplete", path)  # readers never see half a file
  return Vocabulary.load(path)
