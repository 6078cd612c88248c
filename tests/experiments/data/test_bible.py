"""Bible verse pairs: OSIS markup cleaning, drop capitals and verse alignment, on verses as the SWORD modules hold them.

The strings below are copied from the modules of sword-text-web and sword-text-sparv (shortened), so the cleaning is
checked against the markup it has to handle; reading the modules themselves is pysword's part, kept thin.
"""
import collections

import pytest

from experiments.data import bible
from experiments.errors import MissingDataError

GENESIS_1_1_WEB = (
    '<w lemma="strong:H0430">In</w> <w lemma="strong:H0853">the</w> <w lemma="strong:H7225">beginning</w>, '
    '<w lemma="strong:H0430">God</w><note placement="foot"><reference type="annotateRef">1:1 </reference>'
    "The Hebrew word rendered “God” is “אֱלֹהִ֑ים” (Elohim).</note>"
    '<w lemma="strong:H1254">created</w> <w lemma="strong:H0853">the</w> '
    '<w lemma="strong:H8064">heavens</w> <w lemma="strong:H0430">and</w> <w lemma="strong:H0853">the</w> '
    '<w lemma="strong:H0776">earth</w>. '
)
PSALM_3_1_WEB = (
    '<div type="x-milestone" subType="x-preverse" sID="pv4877"/><title canonical="true" type="psalm">A Psalm by David, '
    'when he fled from Absalom his son.</title> <lg sID="gen7860"/> <l level="1" sID="gen7861"/>'
    '<div type="x-milestone" subType="x-preverse" eID="pv4877"/>Yahweh, how <w lemma="strong:H1732">my</w> adversaries '
    '<w lemma="strong:H1121">have</w> increased!<l eID="gen7861" level="1"/> <l level="2" sID="gen7862"/>Many '
    '<w lemma="strong:H1121">are</w> against me. <l eID="gen7862" level="2"/>'
)
SONG_1_2_WEB = (
    '<div type="x-milestone" subType="x-preverse" sID="pv8242"/><speaker>Beloved</speaker> <lg sID="gen15617"/> <l '
    'level="1" sID="gen15618"/>Let <w lemma="strong:H3588">him</w> kiss me;<l eID="gen15618" level="1"/>'
)
MATTHEW_3_15_WEB = (
    '<w lemma="strong:G2424">Jesus</w>, <w lemma="strong:G3004">said</w> <w lemma="strong:G0846">to him</w>, '
    '<q marker="" who="Jesus">“<w lemma="strong:G0863">Allow</w> <w lemma="strong:G0846">it</w> now.”</q>'
    '<w lemma="strong:G0846">Then</w> he allowed him.'
)
REVELATION_22_21_WEB = (
    'The grace of the Lord Jesus Christ be with all the saints. Amen.  <chapter eID="Rev.22"/>'
    '<div eID="gen35836" type="x-p"/> <div canonical="true" eID="gen35575" osisID="Rev" type="book"/> '
    '<div sID="gen35837" type="glossary"/> <milestone n="Glossary" type="x-usfm-h"/> '
    "This companion glossary to the World English Bible is in the Public Domain."
)
LUKE_19_1_RV = (
    '<w lemma="strong:G2532">Y</w> <w lemma="strong:G1525">HABIENDO entrado</w><transChange type="added">Jesús'
    '</transChange>, <w lemma="strong:G1330">iba pasando</w> <w lemma="strong:G2410">por Jericó</w>; '
)
GENESIS_24_37_RV = (
    '<w lemma="strong:H7650">Y mi amo me hizo jurar</w>, diciendo: <w lemma="strong:H3947">No tomarás</w> mujer; '
    '<w lemma="strong:H7650">Júrame</w><transChange type="added">lo</transChange> <w>ahora</w>.'
)


@pytest.mark.parametrize(
    "osis, text",
    [
        (GENESIS_1_1_WEB, "In the beginning, God created the heavens and the earth."),  # pysword's clean=True glues
        (  # a psalm's title is canonical, and the RV 1909 has it in verse 1 too
            PSALM_3_1_WEB,
            "A Psalm by David, when he fled from Absalom his son. Yahweh, how my adversaries have increased! "
            "Many are against me.",
        ),
        (SONG_1_2_WEB, "Let him kiss me;"),  # speakers are the WEB's editorial headings
        (MATTHEW_3_15_WEB, "Jesus, said to him, “Allow it now.” Then he allowed him."),  # no space in the markup
        (REVELATION_22_21_WEB, "The grace of the Lord Jesus Christ be with all the saints. Amen."),
        (LUKE_19_1_RV, "Y HABIENDO entrado Jesús, iba pasando por Jericó;"),
        (GENESIS_24_37_RV, "Y mi amo me hizo jurar, diciendo: No tomarás mujer; Júramelo ahora."),  # an added enclitic
    ],
)
def test_osis_markup_is_stripped_keeping_words_apart(osis, text):
  assert bible.osis_to_text(osis) == text


@pytest.mark.parametrize(
    "text, undone",
    [
        ("EN el principio crió Dios", "En el principio crió Dios"),
        ("Y HABLÓ Jehová á Moisés", "Y habló Jehová á Moisés"),  # "habló" is how the book writes it mid-sentence
        ("Y SARAI, mujer de Abram", "Y Sarai, mujer de Abram"),  # a name keeps its capital
        ("Salmo de David. ¡OH Jehová, cuánto", "Salmo de David. ¡Oh Jehová, cuánto"),  # after a psalm's title
        ("In the beginning, God created", "In the beginning, God created"),
    ],
)
def test_a_chapters_drop_capital_gets_the_case_the_word_has_elsewhere(text, undone):
  forms = collections.Counter({"habló": 40, "Habló": 3, "Sarai": 12, "Oh": 5, "oh": 1})
  assert bible.undo_drop_capital(text, forms) == undone


def test_verses_align_by_book_chapter_and_verse_skipping_those_one_side_lacks_or_leaves_empty():
  english = {
      ("Gen", 1, 1): GENESIS_1_1_WEB,
      ("Gen", 1, 2): "The earth was formless and empty.",
      ("3John", 1, 15): "Peace be to you.",  # NRSVA numbering: the KJV has no 3 John 1:15
      ("Tob", 1, 1): "The book of the words of Tobit,",  # deuterocanon: not in the RV 1909
      ("Gen", 1, 3): '<div type="x-milestone" subType="x-preverse" sID="pv1"/>',  # an empty slot
  }
  spanish = {
      ("Gen", 1, 1): '<w lemma="strong:H7225">EN el principio</w> <w lemma="strong:H1254">crió</w> Dios los cielos.',
      ("Gen", 1, 2): "Y la tierra estaba desordenada y vacía.",
      ("Gen", 1, 3): "Y dijo Dios: Sea la luz.",
      ("3John", 1, 14): "Porque espero verte en breve.",
  }
  assert bible.align(english, spanish) == [
      ("In the beginning, God created the heavens and the earth.", "En el principio crió Dios los cielos."),
      ("The earth was formless and empty.", "Y la tierra estaba desordenada y vacía."),
  ]


def test_missing_modules_name_the_packages(tmp_path):
  with pytest.raises(MissingDataError, match=r"no SWORD modules in .*nowhere.*sword-text-web, sword-text-sparv unpacked"):
    bible.pairs(source_dir=str(tmp_path / "nowhere"), cache_dir="")
