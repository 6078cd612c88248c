"""English-to-X sentence pairs from LibreOffice's translated help pages and user-interface strings (Debian packages).

LibreOffice's documentation is translated paragraph by paragraph: every help page exists in each language under the
same path, and each paragraph or heading carries the same `id="par_…"` / `id="hd_…"` in every language, so pairing
paragraphs by (page path, id) aligns them without a sentence aligner. The user interface adds short strings: the
`.mo` catalogues of `libreoffice-l10n-<xx>` map each English source string (msgid) to its translation (msgstr).
Both come from Debian bookworm's 7.4 packages (MPL-2.0): shared/DATA.md counts 48,149 en–de pairs.

Cleaning keeps what a translator would translate: whitespace collapsed, menu accelerators (`~`, `_`) and HTML line
or font tags removed, the product-name placeholders replaced by "LibreOffice"; the per-OS variants of a help
paragraph ("Command" on macOS, "Ctrl" elsewhere) reduced to the default one. Other placeholders (`%1`, `$(ARG1)`)
stay: they are the same on both sides and a model learns to copy them. Pairs with an empty side, or whose two sides
are the same (names, numbers, code), are dropped, and each exact pair is kept once, in a fixed order.
"""
import glob
import html.parser
import os
import re

from experiments.data import debian_packages
from experiments.errors import MissingDataError

SOURCE_LANGUAGE = "en-US"
HELP_DIR = os.path.join("usr", "share", "libreoffice", "help")
UI_DIR = os.path.join("usr", "lib", "libreoffice", "program", "resource")
PARAGRAPH_ID = re.compile(r"^(par|hd)_")


def packages(language: str) -> list[str]:
  return ["libreoffice-help-en-us", f"libreoffice-help-{language.lower()}", f"libreoffice-l10n-{language.lower()}"]


def source_hint(language: str) -> str:
  return (
      f"pass source_dir=DIR holding {', '.join(packages(language))} unpacked (`apt-get download` them, then "
      "`dpkg-deb -x FILE DIR` each), or source_dir=/ where they are installed"
  )


_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})


class _Element:
  def __init__(self, tag: str, attrs: dict[str, str | None]):
    self.tag, self.attrs, self.children = tag, attrs, []

  def text(self) -> str:
    """The text a reader sees: of a per-OS/per-module switch only the default variant (else the first)."""
    children = self.children
    if self.attrs.get("class") == "switchinline":
      variants = [child for child in children if isinstance(child, _Element)]
      default = [v for v in variants if (v.attrs.get("id") or "").startswith("default")]
      children = (default or variants)[:1]
    if self.tag == "br":
      return " "
    return "".join(child if isinstance(child, str) else child.text() for child in children)


class _HelpParagraphs(html.parser.HTMLParser):
  """Collects the text of each element whose id marks a translatable paragraph or heading."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.paragraphs: list[tuple[str, str]] = []  # (id, text) in document order
    self._open: list[_Element] = []  # the paragraph being read and the elements open inside it

  def handle_starttag(self, tag, attrs):
    element = _Element(tag, dict(attrs))
    if self._open:
      self._open[-1].children.append(element)
    elif not PARAGRAPH_ID.match(element.attrs.get("id") or ""):
      return
    if tag not in _VOID_TAGS:
      self._open.append(element)

  def handle_endtag(self, tag):
    if not any(element.tag == tag for element in self._open):
      return
    while self._open:  # also closes elements whose end tag the page left out
      element = self._open.pop()
      if not self._open:
        self.paragraphs.append((element.attrs["id"], element.text()))
      if element.tag == tag:
        return

  def handle_data(self, data):
    if self._open:
      self._open[-1].children.append(data)


def help_paragraphs(path: str) -> dict[tuple[str, int], str]:
  """{(paragraph id, occurrence): raw text} of one help page; an id the page repeats is told apart by its count."""
  parser = _HelpParagraphs()
  with open(path, encoding="utf-8") as f:
    parser.feed(f.read())
  parser.close()
  seen: dict[str, int] = {}
  paragraphs = {}
  for paragraph_id, text in parser.paragraphs:
    seen[paragraph_id] = seen.get(paragraph_id, -1) + 1
    paragraphs[(paragraph_id, seen[paragraph_id])] = text
  return paragraphs


_WHITESPACE = re.compile(r"\s+")
_PRODUCT_NAME = re.compile(r"%PRODUCTNAME|\$\[officename\]")
_TOKEN = re.compile(r"\S+")
_IDENTIFIER = re.compile(r"[%$]|[A-Z0-9]_[A-Z0-9]|_.*_")  # %FILE_NAME, STDDEV_POP, _underline_: not accelerators
_HTML_TAG = re.compile(r"</?(?:br|font|b|i|u|p|span)\b[^<>]*>", re.IGNORECASE)


def clean_help_text(text: str) -> str:
  return _WHITESPACE.sub(" ", _PRODUCT_NAME.sub("LibreOffice", text)).strip()


def without_accelerators(text: str) -> str:
  """Menu accelerator marks removed: "~Open", "_OK", "Z_eilen" -> "Open", "OK", "Zeilen"; identifiers kept."""
  def token(match: re.Match) -> str:
    word = match.group().replace("~", "")
    return word if _IDENTIFIER.search(word) else re.sub(r"_(?=[^\W_])", "", word)

  return _TOKEN.sub(token, text)


def clean_ui_text(text: str) -> str:
  return clean_help_text(_HTML_TAG.sub(" ", without_accelerators(text)))


def help_pairs(root: str, language: str) -> list[tuple[str, str]]:
  """(English, translation) of every help paragraph found under the same page path and id in both languages."""
  source_dir, target_dir = (os.path.join(root, HELP_DIR, lang) for lang in (SOURCE_LANGUAGE, language))
  for path in (source_dir, target_dir):
    if not os.path.isdir(os.path.join(path, "text")):
      raise MissingDataError(f"no LibreOffice help in {path!r}: {source_hint(language)}")
  pairs = []
  for source_path in sorted(glob.glob(os.path.join(source_dir, "text", "**", "*.html"), recursive=True)):
    target_path = os.path.join(target_dir, os.path.relpath(source_path, source_dir))
    if not os.path.exists(target_path):
      continue
    targets = help_paragraphs(target_path)
    for key, source in help_paragraphs(source_path).items():
      if key in targets:
        pairs.append((clean_help_text(source), clean_help_text(targets[key])))
  return pairs


def ui_pairs(root: str, language: str) -> list[tuple[str, str]]:
  """(English msgid, translated msgstr) of every translated user-interface string, catalogues in name order."""
  try:
    import polib  # only needed while the dataset is built
  except ImportError as e:
    raise MissingDataError("the UI catalogues are read with polib: pip install polib==1.2.0") from e
  messages = os.path.join(root, UI_DIR, language, "LC_MESSAGES")
  paths = sorted(glob.glob(os.path.join(messages, "*.mo")))
  if not paths:
    raise MissingDataError(f"no .mo files in {messages!r}: {source_hint(language)}")
  pairs = []
  for path in paths:
    for entry in polib.mofile(path):
      translation = entry.msgstr_plural.get(0, "") if entry.msgid_plural else entry.msgstr
      pairs.append((clean_ui_text(entry.msgid), clean_ui_text(translation)))
  return pairs


def usable(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
  """`pairs` without empty or untranslated ones, each exact pair once, in first-seen order."""
  return list(dict.fromkeys((source, target) for source, target in pairs if source and target and source != target))


def pairs(language: str, source_dir: str, cache_dir: str) -> list[tuple[str, str]]:
  """Help pairs then UI pairs, cleaned and deduplicated; from `source_dir`, or else from the packages downloaded to and
  unpacked in `cache_dir`."""
  root = source_dir or debian_packages.unpacked(packages(language), cache_dir, source_hint(language))
  return usable(help_pairs(root, language) + ui_pairs(root, language))
