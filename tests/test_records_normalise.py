"""Normalisation: idempotence and stability under the variants it claims to absorb (hypothesis)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcheck.records import name_tokens, normalise_document_number, normalise_name, transliterate
from fedcheck.records.normalise import DROPPED_PARTICLES, HONORIFICS, JOINED_PARTICLES

# Realistic name tokens: upper-case A-Z words that are not particles/titles and do not start with ABD.
_RESERVED = HONORIFICS | DROPPED_PARTICLES | JOINED_PARTICLES
plain_token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=10).filter(
    lambda t: t not in _RESERVED and not t.startswith("ABD")
)
plain_tokens = st.lists(plain_token, min_size=1, max_size=5)


@given(st.text(max_size=60))
@settings(max_examples=500)
def test_normalise_name_idempotent(text: str) -> None:
    once = normalise_name(text)
    assert normalise_name(once) == once
    assert once == "" or (once.replace(" ", "").isalpha() and once.isascii() and once.isupper())


@given(st.text(max_size=40))
def test_document_number_idempotent(text: str) -> None:
    once = normalise_document_number(text)
    assert normalise_document_number(once) == once
    assert "O" not in once and once.isascii() and (once == "" or once.isalnum())


@given(plain_tokens)
def test_tokens_fixed_point_on_plain_names(tokens: list[str]) -> None:
    assert name_tokens(" ".join(tokens)) == tuple(tokens)


@given(plain_tokens, st.randoms(use_true_random=False))
def test_case_and_separator_variants(tokens: list[str], rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    seps = [" ", "-", "  ", ", ", ".", "\t", " - "]
    variant = tokens[0]
    for t in tokens[1:]:
        variant += rnd.choice(seps) + t
    variant = "".join(c.lower() if rnd.random() < 0.5 else c for c in variant)
    assert name_tokens(variant) == tuple(tokens)


@given(plain_tokens, st.sampled_from(sorted(HONORIFICS)), st.sampled_from(sorted(DROPPED_PARTICLES)))
def test_honorifics_and_dropped_particles(tokens: list[str], title: str, particle: str) -> None:
    with_noise = f"{title.title()}. {' '.join(tokens[:-1])} {particle.lower()}-{tokens[-1]}"
    assert name_tokens(with_noise) == tuple(tokens)


@given(plain_tokens, st.sampled_from(sorted(JOINED_PARTICLES - {"ABD"})))
def test_joined_particles_spacing(tokens: list[str], particle: str) -> None:
    head = " ".join(tokens[:-1])
    apart = f"{head} {particle} {tokens[-1]}"
    hyphen = f"{head} {particle.lower()}-{tokens[-1].lower()}"
    fused = f"{head} {particle}{tokens[-1]}"
    assert name_tokens(apart) == name_tokens(hyphen) == name_tokens(fused)


# Diacritics: ICAO's plain letters (diacritic dropped) versus the written form.
_DIACRITIC = {"A": "ÁÀÂÃĀĂĄ", "C": "ÇĆČĊ", "E": "ÉÈÊËĚĖĒĘ", "I": "ÍÌÎÏĪĮ", "N": "ÑŃŇŅ", "O": "ÓÒÔÕŌŐ",
              "S": "ŚŠŞȘ", "U": "ÚÙÛŨŪŮŰŲ", "Z": "ŹŽŻ", "Y": "ÝŸ", "R": "ŘŔ", "T": "ŤŢȚ"}  # fmt: skip


@given(plain_tokens, st.randoms(use_true_random=False))
def test_diacritics_dropped(tokens: list[str], rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    written = " ".join(
        "".join(rnd.choice(_DIACRITIC[c]) if c in _DIACRITIC and rnd.random() < 0.5 else c for c in t).lower()
        for t in tokens
    )
    assert name_tokens(written) == tuple(tokens)
    # decomposed input (NFD) gives the same result as composed
    assert normalise_name(unicodedata.normalize("NFD", written)) == normalise_name(written)


@pytest.mark.parametrize(
    ("written", "icao"),
    [("Müller", "MUELLER"), ("Jürgen Groß", "JUERGEN GROSS"), ("Åse Ærø", "AASE AEROE"), ("Øster", "OESTER"),
     ("Þór", "THOR"), ("Łódź", "LODZ"), ("Ðorđe", "DORDE"), ("İlkay", "ILKAY"), ("Œuvre", "OEUVRE"),
     ("José Ñúñez", "JOSE NUNEZ"), ("Ｍｏｈａｍｍｅｄ", "MOHAMMED"), ("ﬁfi", "FIFI")],
)  # fmt: skip
def test_icao_latin_specials(written: str, icao: str) -> None:
    assert normalise_name(written) == icao


# ICAO Doc 9303 Part 3 Cyrillic table, used as the oracle for generated Cyrillic names.
_ICAO_CYR = {
    "А": "A", "Б": "B", "В": "V", "Г": "G", "Д": "D", "Е": "E", "Ё": "E", "Ж": "ZH", "З": "Z", "И": "I",
    "Й": "I", "К": "K", "Л": "L", "М": "M", "Н": "N", "О": "O", "П": "P", "Р": "R", "С": "S", "Т": "T",
    "У": "U", "Ф": "F", "Х": "KH", "Ц": "TS", "Ч": "CH", "Ш": "SH", "Щ": "SHCH", "Ъ": "IE", "Ы": "Y",
    "Ь": "", "Э": "E", "Ю": "IU", "Я": "IA", "Є": "IE", "І": "I", "Ї": "I", "Ґ": "G", "Ў": "U",
}  # fmt: skip
cyr_word = st.text(alphabet="".join(k for k, v in _ICAO_CYR.items() if v), min_size=2, max_size=9)


@given(st.lists(cyr_word, min_size=1, max_size=4))
def test_cyrillic_equals_icao_transliteration(words: list[str]) -> None:
    icao = " ".join("".join(_ICAO_CYR[c] for c in w) for w in words)
    written = " ".join(w.lower() if i % 2 else w for i, w in enumerate(words))
    assert normalise_name(written) == normalise_name(icao)


@pytest.mark.parametrize(
    ("cyrillic", "latin"),
    [("Юлия Щербакова", "IULIIA SHCHERBAKOVA"), ("Пётр Ильич Чайковский", "PETR ILICH CHAIKOVSKII"),
     ("Андрій Шевченко", "ANDRII SHEVCHENKO"), ("Євген", "IEVGEN")],
)  # fmt: skip
def test_cyrillic_known(cyrillic: str, latin: str) -> None:
    assert normalise_name(cyrillic) == latin


def test_arabic_vocalised_equals_unvocalised_and_table() -> None:
    # harakat, shadda and hamza carriers are marks: they never change the key
    assert normalise_name("مُحَمَّد") == normalise_name("محمد") == "MHMD"
    assert normalise_name("أحمد") == normalise_name("احمد") == "AHMD"
    # ICAO-style consonant values
    assert normalise_name("خالد") == "KHALD"
    assert normalise_name("شريف") == "SHRYF"
    assert name_tokens("عبد الله") == name_tokens("عبدالله")


def test_other_scripts_fall_back_to_anyascii() -> None:
    assert normalise_name("Σωκράτης") == "SOKRATIS"
    assert transliterate("毛泽东").isascii()
    assert normalise_name("김정은") == "GIMJEONGEUN"


@pytest.mark.parametrize(
    ("a", "b"),
    [("Abd al-Rahman", "ABDUL RAHMAN"), ("Abdulrahman", "Abdel Rahman"), ("ABDALLAH", "Abdullah"),
     ("Abd Allah", "Abdullah"), ("Abu Bakr", "ABUBAKR"), ("abou-bakr", "ABOU BAKR"),
     ("van der Berg", "VANDERBERG"), ("O'Neil", "ONEIL"), ("Sheikh Usama bin Laden", "USAMA LADEN"),
     ("al-Zawahiri", "EL ZAWAHIRI")],
)  # fmt: skip
def test_claimed_equivalences(a: str, b: str) -> None:
    assert name_tokens(a) == name_tokens(b)


def test_name_never_vanishes() -> None:
    assert name_tokens("Al Bin") == ("AL", "BIN")
    assert name_tokens("Dr") == ("DR",)
    assert name_tokens("") == ()


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("ab-12 34", "AB1234"), ("C01X00T47<<", "C01X00T47"), ("o12", "012"), (" 381310014", "381310014"),
     ("Ｐ１２３", "P123")],
)  # fmt: skip
def test_document_numbers(raw: str, norm: str) -> None:
    assert normalise_document_number(raw) == norm
