"""English-to-Spanish verse pairs: the World English Bible against the Reina-Valera 1909 (SWORD modules, Debian).

Bible translations number their verses the same way, so aligning by (book, chapter, verse) pairs them without a
sentence aligner, as the Bible corpus of Christodouloupoulos and Steedman (2015) does. The texts are SWORD modules in
the Debian packages `sword-text-web` (engWEB2015eb) and `sword-text-sparv` (spaRV1909eb), both public domain, read
with PyPI `pysword`. The verses are OSIS XML; pysword's own cleaner deletes tags without leaving the space a footnote
or a word boundary stood for (glueing "God" and "created" in Genesis 1:1), so `osis_to_text` strips the markup here:
footnotes and editorial headings go with their content, tags between two words part them (except a pronoun the
translators attached to a verb), inline word markup goes and line or paragraph milestones become spaces. The
RV 1909 prints each chapter's first word in capitals ("EN el principio"); that word gets the case it has elsewhere.
The two versifications differ in a few places (the WEB follows NRSVA, the RV 1909 the KJV), so a handful of verses
pair with a neighbour. Of 31,077 aligned verses (shared/DATA.md's count) 30,897 pairs are distinct; repeated pairs
("Yahweh spoke to Moses, saying,") are kept once.
"""
import collections
import re

from experiments.data import debian_packages
from experiments.errors import MissingDataError

PACKAGES = ["sword-text-web", "sword-text-sparv"]
SOURCE_MODULE, TARGET_MODULE = "engWEB2015eb", "spaRV1909eb"
SWORD_DIR = "usr/share/sword"
SOURCE_HINT = (
    f"pass source_dir=DIR holding {', '.join(PACKAGES)} unpacked (`apt-get download` them, then `dpkg-deb -x FILE DIR` "
    "each), or source_dir=/ where they are installed; reading them needs `pip install pysword==0.2.8`"
)

VerseKey = tuple[str, int, int]  # (OSIS book name, chapter, verse)

_DROPPED = re.compile(  # footnotes, speakers and editorial (non-canonical) titles, with their content
    r"<(note|speaker)\b[^>]*>.*?</\1>|<title\b(?![^>]*canonical=\"true\")[^>]*>.*?</title>", re.DOTALL
)
_TAGS_BETWEEN_WORDS = re.compile(r"(?<=[\w.,;:!?”)\]])(?:<[^>]*>)+(?=\w)")  # after a letter or closing mark
_ADDED_ENCLITIC = re.compile(r"(?:lo|la|los|las|le|les|me|te|se|nos|os)</transChange>")
_INLINE_TAG = re.compile(r"</?(?:w|transChange|q|name|seg|rdg|reference|catchWord|title|divineName|foreign|hi)\b[^>]*>")
_OTHER_TAG = re.compile(r"<[^>]*>")
_CHAPTER_END = re.compile(r"<chapter\b[^>]*\beID=")
_SPACE_BEFORE_CLOSING = re.compile(r"\s+(?=[,.;:!?’”)\]])")
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W\d_]{2,}")  # two or more letters
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s)\W*$")


def _separate_words(match: re.Match) -> str:
  """Tags between a word (or a closing quotation mark) and a letter part two words, except a pronoun the RV 1909's
  translators added to a verb ("sáca" + <transChange>"lo"</transChange> is "sácalo")."""
  added_enclitic = match.group().endswith(">") and match.group().rsplit("<", 1)[-1].startswith("transChange")
  return "" if added_enclitic and _ADDED_ENCLITIC.match(match.string, match.end()) else " "


def osis_to_text(osis: str) -> str:
  """A verse's OSIS XML as plain text: footnotes, speakers and editorial headings removed, words kept apart."""
  osis = _CHAPTER_END.split(osis, maxsplit=1)[0]  # what follows the end of a chapter is no verse (the WEB's glossary)
  osis = _TAGS_BETWEEN_WORDS.sub(_separate_words, _DROPPED.sub(" ", osis))
  text = _OTHER_TAG.sub(" ", _INLINE_TAG.sub("", osis))
  return _SPACE_BEFORE_CLOSING.sub("", _WHITESPACE.sub(" ", text)).strip()


def word_forms(texts) -> collections.Counter:
  """How often each word appears in `texts` as written, words in capitals left out."""
  return collections.Counter(word for text in texts for word in _WORD.findall(text) if not word.isupper())


def undo_drop_capital(text: str, forms: collections.Counter) -> str:
  """A chapter's first word is printed in capitals ("EN el principio", "Y HABLÓ Jehová", after a psalm's title
  "¡OH Jehová"): the verse's first all-capital word as it is written elsewhere in the book ("habló"), capitalised
  where it starts a sentence ("En el principio")."""
  for match in _WORD.finditer(text):
    word = match.group()
    if word.isupper():
      starts_sentence = _SENTENCE_START.search(text, 0, match.start())
      cased = word.capitalize() if starts_sentence or forms[word.capitalize()] > forms[word.lower()] else word.lower()
      return text[: match.start()] + cased + text[match.end() :]
  return text


def verse_texts(verses: dict[VerseKey, str]) -> dict[VerseKey, str]:
  """Each verse's plain text, the drop capital of each chapter's first verse undone."""
  texts = {key: osis_to_text(osis) for key, osis in verses.items()}
  forms = word_forms(texts.values())
  return {key: undo_drop_capital(text, forms) if key[2] == 1 else text for key, text in texts.items()}


def align(source: dict[VerseKey, str], target: dict[VerseKey, str]) -> list[tuple[str, str]]:
  """(source, target) texts of the verses both sides hold and neither leaves empty, in the source's verse order."""
  source, target = verse_texts(source), verse_texts(target)
  return [(text, target[key]) for key, text in source.items() if text and target.get(key)]


def read_module(sword_dir: str, module: str) -> dict[VerseKey, str]:
  """{(book, chapter, verse): OSIS text} of every verse slot of a SWORD Bible module, in canonical order."""
  try:
    from pysword.modules import SwordModules
  except ImportError as e:
    raise MissingDataError(f"the Bible modules are read with pysword: {SOURCE_HINT}") from e
  modules = SwordModules(sword_dir)
  if module not in modules.parse_modules():
    raise MissingDataError(f"no SWORD module {module} in {sword_dir!r}: {SOURCE_HINT}")
  bible = modules.get_bible_from_module(module)
  verses = {}
  for books in bible.get_structure().get_books().values():
    for book in books:
      for chapter, length in enumerate(book.chapter_lengths, start=1):
        for verse in range(1, length + 1):
          osis = bible.get(books=book.osis_name, chapters=chapter, verses=verse, clean=False)
          verses[(book.osis_name, chapter, verse)] = osis
  return verses


def pairs(source_dir: str, cache_dir: str) -> list[tuple[str, str]]:
  """(English, Spanish) verse pairs, from `source_dir`, or else from the packages downloaded to and unpacked in
  `cache_dir`; 80-110 s, mostly pysword decompressing verse by verse."""
  root = source_dir or debian_packages.unpacked(PACKAGES, cache_dir, SOURCE_HINT)
  sword_dir = f"{root.rstrip('/')}/{SWORD_DIR}"
  try:
    source, target = read_module(sword_dir, SOURCE_MODULE), read_module(sword_dir, TARGET_MODULE)
  except FileNotFoundError as e:
    raise MissingDataError(f"no SWORD modules in {sword_dir!r} ({e.strerror}): {SOURCE_HINT}") from e
  return list(dict.fromkeys(align(source, target)))
