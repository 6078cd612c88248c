"""LibreOffice help + UI pairs, on a tiny hand-made package tree: two help pages per language and one .mo catalogue.

`write_fake_packages` is shared with the builder and vocabulary tests. The download path is exercised with a fake
`apt-get` on PATH (it copies .deb files built here with dpkg-deb), so nothing is fetched from the network.
"""
import os
import shutil
import stat
import subprocess

import polib
import pytest

from experiments.data import debian_packages, libreoffice
from experiments.errors import MissingDataError

PAGE = """<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8"><title>Find Bar</title></head>
<body><header id="TopLeftHeader"><p dir="auto">LibreOffice 7.4 Help</p></header>
<div id="DisplayArea">
{paragraphs}
</div></body></html>
"""
ENGLISH_PAGE_A = """
  <h1 id="hd_id701" dir="auto">Find Bar</h1>
  <p id="par_id3147762" class="paragraph">The <span class="menuitem">Find</span>
     toolbar searches $[officename] documents.</p>
  <div class="tip"><div class="noteicon"><img src="tip.svg" alt="tip"></div>
  <div class="notetext"><p id="par_id211" dir="auto">Use the shortcut <span id="sw_1" class="switchinline"><span
  hidden="true" id="MACtext_1" class="MAC"><span class="keycode">Command</span></span><span hidden="true"
  id="defaulttext_1"><span class="keycode">Ctrl</span></span></span><span class="keycode"> + F</span>
  to search.</p></div>
  </div><br>
  <p id="par_id300" class="paragraph">Line one<br>line two.</p>
  <p id="par_id301" class="paragraph">LibreOffice</p>
  <p id="par_id302" class="paragraph">   </p>
  <p id="par_id303" class="paragraph">Only in English.</p>
  <p id="par_id304" class="paragraph">Press <span class="switchinline"><span hidden="true" id="WRITERtext_2">Writer
  key</span><span hidden="true" id="CALCtext_2">Calc key</span></span>.</p>
  <h2 id="hd_id304" dir="auto">Find Text</h2>
  <p id="par_id305" class="embedded">Shared paragraph.</p>
  <p id="par_id305" class="embedded">Shared paragraph, again.</p>
"""
GERMAN_PAGE_A = """
  <h1 id="hd_id701" dir="auto">Suchleiste</h1>
  <p id="par_id3147762" class="paragraph">Die Symbolleiste <span class="menuitem">Suchen</span>
     durchsucht $[officename]-Dokumente.</p>
  <div class="tip"><div class="notetext"><p id="par_id211" dir="auto">Verwenden Sie <span id="sw_1"
  class="switchinline"><span hidden="true" id="MACtext_1" class="MAC"><span class="keycode">Befehl</span></span><span
  hidden="true" id="defaulttext_1"><span class="keycode">Strg</span></span></span><span class="keycode"> + F</span>
  zum Suchen.</p></div></div>
  <p id="par_id300" class="paragraph">Zeile eins<br>Zeile zwei.</p>
  <p id="par_id301" class="paragraph">LibreOffice</p>
  <p id="par_id302" class="paragraph"></p>
  <p id="par_id304" class="paragraph">Drücken Sie <span class="switchinline"><span hidden="true"
  id="WRITERtext_2">Writer-Taste</span><span hidden="true" id="CALCtext_2">Calc-Taste</span></span>.</p>
  <h2 id="hd_id304" dir="auto">Text suchen</h2>
  <p id="par_id305" class="embedded">Gemeinsamer Absatz.</p>
  <p id="par_id305" class="embedded">Gemeinsamer Absatz, noch einmal.</p>
"""
# A second page embedding a paragraph of the first: the same pair again, kept once.
ENGLISH_PAGE_B = '<p id="par_id305" class="embedded">Shared paragraph.</p>'
GERMAN_PAGE_B = '<p id="par_id305" class="embedded">Gemeinsamer Absatz.</p>'
UI_STRINGS = [  # (msgid, msgstr) as the .mo catalogues hold them
    ("~Open", "Ö~ffnen"),
    ("R_ows:", "Z_eilen:"),
    ("_OK", "_OK"),  # the same once the accelerators are gone: dropped
    ("%PRODUCTNAME Help", "%PRODUCTNAME-Hilfe"),
    ("STDDEV_POP of %FILE_NAME", "STDDEV_POP von %FILE_NAME"),
    ("First line\nsecond<BR>line", "Erste Zeile\nzweite<BR>Zeile"),
    ("Untranslated", ""),
    ("Shared paragraph.", "Gemeinsamer Absatz."),  # a help pair again: kept once
]
EXPECTED_PAIRS = [
    # help, in sorted page order (shared/a.html, then shared/b.html), then the UI strings in the .mo's order (by msgid)
    ("Find Bar", "Suchleiste"),
    ("The Find toolbar searches LibreOffice documents.", "Die Symbolleiste Suchen durchsucht LibreOffice-Dokumente."),
    ("Use the shortcut Ctrl + F to search.", "Verwenden Sie Strg + F zum Suchen."),
    ("Line one line two.", "Zeile eins Zeile zwei."),
    ("Press Writer key.", "Drücken Sie Writer-Taste."),
    ("Find Text", "Text suchen"),
    ("Shared paragraph.", "Gemeinsamer Absatz."),
    ("Shared paragraph, again.", "Gemeinsamer Absatz, noch einmal."),
    ("LibreOffice Help", "LibreOffice-Hilfe"),
    ("First line second line", "Erste Zeile zweite Zeile"),
    ("Rows:", "Zeilen:"),
    ("STDDEV_POP of %FILE_NAME", "STDDEV_POP von %FILE_NAME"),
    ("Open", "Öffnen"),
]


def _write(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def write_fake_packages(root: str, ui_strings=UI_STRINGS, language: str = "de") -> str:
  """The files of libreoffice-help-en-us, -help-<language> and -l10n-<language> as dpkg-deb -x lays them out."""
  help_dir = os.path.join(root, "usr", "share", "libreoffice", "help")
  pages = {
      "en-US": {"a": ENGLISH_PAGE_A, "b": ENGLISH_PAGE_B, "only_english": ENGLISH_PAGE_B},
      language: {"a": GERMAN_PAGE_A, "b": GERMAN_PAGE_B},
  }
  for lang, lang_pages in pages.items():
    for name, paragraphs in lang_pages.items():
      page = PAGE.format(lang=lang, paragraphs=paragraphs)
      _write(os.path.join(help_dir, lang, "text", "shared", f"{name}.html"), page)
  catalogue = polib.POFile()
  catalogue.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
  for msgid, msgstr in ui_strings:
    catalogue.append(polib.POEntry(msgid=msgid, msgstr=msgstr))
  messages = os.path.join(root, "usr", "lib", "libreoffice", "program", "resource", language, "LC_MESSAGES")
  os.makedirs(messages, exist_ok=True)
  catalogue.save_as_mofile(os.path.join(messages, "sw.mo"))
  return root


def test_help_paragraphs_and_ui_strings_align_clean_and_dedupe(tmp_path):
  root = write_fake_packages(str(tmp_path))
  assert libreoffice.pairs("de", source_dir=root, cache_dir="") == EXPECTED_PAIRS


def test_help_paragraphs_are_keyed_by_id_and_occurrence_with_the_default_variant_of_a_switch(tmp_path):
  root = write_fake_packages(str(tmp_path))
  page = os.path.join(root, "usr", "share", "libreoffice", "help", "en-US", "text", "shared", "a.html")
  paragraphs = libreoffice.help_paragraphs(page)
  assert ("par_id305", 1) in paragraphs and "TopLeftHeader" not in str(paragraphs)
  assert libreoffice.clean_help_text(paragraphs[("par_id211", 0)]) == "Use the shortcut Ctrl + F to search."


@pytest.mark.parametrize(
    "raw, clean",
    [("~Open", "Open"), ("Z_eilen:", "Zeilen:"), ("_underline_ text", "_underline_ text"), ("VAR_SAMP", "VAR_SAMP"),
     ("$(ARG1)_x ~", "$(ARG1)_x"), ("<font size=1>small</font>", "small"), ("a <= b", "a <= b")],
)
def test_ui_cleaning_removes_accelerators_and_markup_but_keeps_identifiers(raw, clean):
  assert libreoffice.clean_ui_text(raw) == clean


def test_a_missing_source_dir_names_the_packages_and_the_folder(tmp_path):
  with pytest.raises(MissingDataError, match=r"no LibreOffice help in .*nowhere.*: pass source_dir=DIR holding libreoffice-help-en-us"):
    libreoffice.pairs("de", source_dir=str(tmp_path / "nowhere"), cache_dir="")


def _fake_apt_get(bin_dir, script: str) -> None:
  path = os.path.join(bin_dir, "apt-get")
  _write(path, "#!/bin/sh\n" + script)
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def test_a_failed_download_says_to_update_the_package_lists_or_pass_source_dir(tmp_path, monkeypatch):
  _fake_apt_get(str(tmp_path / "bin"), 'echo "E: Unable to locate package $2" >&2; exit 100\n')
  monkeypatch.setenv("PATH", str(tmp_path / "bin"))
  with pytest.raises(MissingDataError) as error:
    libreoffice.pairs("xx", source_dir="", cache_dir=str(tmp_path / "cache"))
  message = str(error.value)
  assert "Unable to locate package libreoffice-help-en-us" in message and "apt-get update" in message
  assert "source_dir" in message and "\n" not in message


def test_without_apt_get_the_error_says_what_to_pass(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))
  with pytest.raises(MissingDataError, match="apt-get not found.*source_dir"):
    libreoffice.pairs("de", source_dir="", cache_dir=str(tmp_path / "cache"))


def _build_deb(files_root: str, name: str, out_dir: str) -> None:
  """A .deb of the files under `files_root`, named as apt-get download names them."""
  control = f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
  _write(os.path.join(files_root, "DEBIAN", "control"), control)
  deb = os.path.join(out_dir, f"{name}_1.0_all.deb")
  subprocess.run(["dpkg-deb", "--build", "-Zgzip", files_root, deb], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_packages_are_downloaded_once_then_unpacked_and_read(tmp_path, monkeypatch):
  fake = write_fake_packages(str(tmp_path / "fake"))
  repository = str(tmp_path / "repository")
  os.makedirs(repository)
  for name, subtree in [
      ("libreoffice-help-en-us", "usr/share/libreoffice/help/en-US"),
      ("libreoffice-help-de", "usr/share/libreoffice/help/de"),
      ("libreoffice-l10n-de", "usr/lib/libreoffice/program/resource/de"),
  ]:
    shutil.copytree(os.path.join(fake, subtree), str(tmp_path / name / subtree))
    _build_deb(str(tmp_path / name), name, repository)
  calls = tmp_path / "calls"
  # `apt-get download NAME...` run in the cache folder: copies each NAME_*.deb there and logs the call.
  copy = f'for n in "$@"; do cp {repository}/"$n"_*.deb .; done'
  _fake_apt_get(str(tmp_path / "bin"), f'shift; echo "$@" >> {calls}; {copy}\n')
  monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
  cache = str(tmp_path / "cache")

  assert libreoffice.pairs("de", source_dir="", cache_dir=cache) == EXPECTED_PAIRS
  shutil.rmtree(os.path.join(cache, "unpacked"))  # unpacked again from the cached .deb files, not downloaded
  assert libreoffice.pairs("de", source_dir="", cache_dir=cache) == EXPECTED_PAIRS
  assert calls.read_text().splitlines() == [" ".join(libreoffice.packages("de"))]
  assert os.path.isdir(os.path.join(debian_packages.unpacked(libreoffice.packages("de"), cache, ""), "usr"))
