"""Normalisation of names, document numbers and country codes into the stable forms match keys are built from.

Exact matching (OPRF-PSI) only finds a traveller if both sides derive byte-identical keys, so every rule
here trades a little precision for stability across the ways the same identity is written: MRZ/API manifests
(ICAO Doc 9303 upper-case Latin) versus sanctions lists (mixed case, diacritics, original scripts, particles,
titles). The rules and their reasoning are in ``docs/data-model.md``; changing any of them changes every key,
so they are versioned with the key prefix (``fedcheck/v1``).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from anyascii import anyascii

from fedcheck.errors import InvalidRecord
from fedcheck.records._countries import ICAO_SPECIAL_CODES, ISO_ALPHA3

__all__ = [
    "ABD_PREFIXES",
    "DROPPED_PARTICLES",
    "HONORIFICS",
    "JOINED_PARTICLES",
    "detect_script",
    "document_class",
    "name_tokens",
    "normalise_document_number",
    "normalise_name",
    "transliterate",
    "validate_country",
]

# ICAO Doc 9303 Part 3, transliteration of multinational Latin characters: the letters whose recommended
# transliteration is not simply "drop the diacritic". We take ICAO's first option (Ä->AE, not A) because the
# querier side reads MRZs that follow it; lists written "Muller" still meet "MUELLER" on the phonetic key.
_LATIN_SPECIAL = {
    "Ä": "AE", "Å": "AA", "Æ": "AE", "Ö": "OE", "Ø": "OE", "Œ": "OE", "Ü": "UE", "ß": "SS", "ẞ": "SS",
    "Þ": "TH", "Ð": "D", "Đ": "D", "Ħ": "H", "Ł": "L", "Ŋ": "N", "ı": "I", "Ŧ": "T", "Ĳ": "IJ",
}  # fmt: skip

# ICAO Doc 9303 Part 3 Cyrillic table (upper case; accented forms arrive here already reduced by NFD, e.g.
# Й->И, Ё->Е, Ї->І, Ў->У, Ѓ->Г, Ќ->К, which gives the same results as the table's own rows).
_CYRILLIC = {
    "А": "A", "Б": "B", "В": "V", "Г": "G", "Ґ": "G", "Д": "D", "Ђ": "D", "Е": "E", "Є": "IE", "Ж": "ZH",
    "З": "Z", "Ѕ": "DZ", "И": "I", "І": "I", "Ј": "J", "К": "K", "Л": "L", "Љ": "LJ", "М": "M", "Н": "N",
    "Њ": "NJ", "О": "O", "П": "P", "Р": "R", "С": "S", "Т": "T", "Ћ": "C", "У": "U", "Ф": "F", "Х": "KH",
    "Ц": "TS", "Ч": "CH", "Џ": "DZ", "Ш": "SH", "Щ": "SHCH", "Ъ": "IE", "Ы": "Y", "Ь": "", "Э": "E",
    "Ю": "IU", "Я": "IA",
}  # fmt: skip

# Greek, ELOT 743 / ICAO-compatible single-letter values (accents removed by NFD first).
_GREEK = {
    "Α": "A", "Β": "V", "Γ": "G", "Δ": "D", "Ε": "E", "Ζ": "Z", "Η": "I", "Θ": "TH", "Ι": "I", "Κ": "K",
    "Λ": "L", "Μ": "M", "Ν": "N", "Ξ": "X", "Ο": "O", "Π": "P", "Ρ": "R", "Σ": "S", "Τ": "T", "Υ": "Y",
    "Φ": "F", "Χ": "CH", "Ψ": "PS", "Ω": "O",
}  # fmt: skip

# Arabic (and Persian/Urdu letters): consonant values as in ICAO Doc 9303 Part 3's Arabic table where they are
# unambiguous (ayn is written A, as Latin spellings of Abd/Ali/Umar do). Short vowels (harakat) and hamza
# carriers are removed by the mark filter below, so vocalised and unvocalised spellings of one name agree;
# alif/waw/ya keep their consonant/long-vowel letter.
_ARABIC = {
    "ا": "A", "ب": "B", "ت": "T", "ث": "TH", "ج": "J", "ح": "H", "خ": "KH", "د": "D", "ذ": "DH", "ر": "R",
    "ز": "Z", "س": "S", "ش": "SH", "ص": "S", "ض": "D", "ط": "T", "ظ": "Z", "ع": "A", "غ": "GH", "ف": "F",
    "ق": "Q", "ك": "K", "ل": "L", "م": "M", "ن": "N", "ه": "H", "و": "W", "ي": "Y", "ى": "A", "ة": "A",
    "ء": "", "ـ": "", "پ": "P", "چ": "CH", "ژ": "ZH", "گ": "G", "ک": "K", "ی": "Y", "ۀ": "H", "ہ": "H",
    "ھ": "H", "ے": "Y", "ٹ": "T", "ڈ": "D", "ڑ": "R", "ں": "N",
}  # fmt: skip

_LATIN_TABLE = str.maketrans(_LATIN_SPECIAL)
_SCRIPT_TABLE = str.maketrans({**_CYRILLIC, **_GREEK, **_ARABIC})
# Marks removed after NFD: Latin/Greek/Cyrillic combining diacritics and Arabic harakat/hamza. Other scripts'
# marks (Devanagari vowel signs ...) are kept because anyascii needs them.
_MARKS_RE = re.compile("[\u0300-\u036f\u0483-\u0489\u064b-\u065f\u0670\u06d6-\u06ed]")
_APOSTROPHES_RE = re.compile("['`´‘’ʼʻʹ]")
_NON_ALPHA_RE = re.compile(r"[^A-Z]+")

#: Titles and honorifics dropped wherever they occur: they are not part of the identity and lists vary in
#: whether they carry them ("Maulavi", "Haji", "Sheikh", "Dr").
HONORIFICS = frozenset({
    "MR", "MRS", "MS", "MISS", "MSTR", "MASTER", "DR", "DOCTOR", "PROF", "PROFESSOR", "SIR", "DAME", "LORD",
    "REV", "FR", "SHEIKH", "SHEIKHA", "SHAIKH", "SHAYKH", "SHEIK", "CHEIKH", "SHK", "HAJJI", "HAJI", "HADJI",
    "HAJ", "HAJJ", "HADJ", "HAJIA", "HAJJA", "ALHAJI", "ALHAJJI", "ALHAJ", "MAULVI", "MAULAVI", "MAWLAWI",
    "MOULAVI", "MAWLAVI", "MAULANA", "MAWLANA", "MOULANA", "MULLAH", "MULLA", "MOLLAH", "MOLLA", "IMAM",
    "QARI", "QAZI", "GEN", "GENERAL", "COL", "COLONEL", "MAJ", "CAPT", "CAPTAIN", "LT", "ENG", "ENGR",
})  # fmt: skip

#: Particles dropped: the Arabic article and patronymic connectors. They are transliteration noise ("AL-",
#: "EL-", "UL-"; "BIN"/"IBN"/"BEN") and are often omitted by one side, while carrying little identity.
DROPPED_PARTICLES = frozenset({"AL", "EL", "UL", "BIN", "BINT", "BINTI", "IBN", "BEN", "BENT"})

#: Particles joined to the following token: they are part of the name ("ABU BAKR" is not "BAKR"; "VAN DER
#: BERG" is not "BERG"), and lists and MRZs disagree on whether they are written apart, hyphenated or fused.
#: Short particles that are also common East-Asian surnames (LE, LA, DI, DU, DA) are deliberately absent.
JOINED_PARTICLES = frozenset({
    "ABU", "ABOU", "ABO", "UMM", "UM", "ABD", "VAN", "VON", "DER", "DEN", "TER", "TEN", "DE", "DEL",
    "DELLA", "DOS", "DAS", "DES",
})  # fmt: skip

#: Spellings of the "Abd" (servant of) prefix canonicalised to ``ABD`` so that ABDUL RAHMAN, ABD AL-RAHMAN,
#: ABDEL RAHMAN and ABDULRAHMAN give one token (ABDRAHMAN). Longest first.
ABD_PREFIXES = ("ABDOUL", "ABDUL", "ABDEL", "ABDOL", "ABDAL", "ABDUR", "ABDUS", "ABDU", "ABDE")
_ABD_STANDALONE = frozenset({*ABD_PREFIXES, "ABD"})


def transliterate(text: str) -> str:
    """Latin transliteration (upper case, may contain punctuation): NFKC, ICAO tables, then ``anyascii``."""
    s = unicodedata.normalize("NFKC", text).upper()
    if s.isascii():
        return s
    s = s.translate(_LATIN_TABLE)
    s = unicodedata.normalize("NFC", _MARKS_RE.sub("", unicodedata.normalize("NFD", s)))
    s = s.translate(_SCRIPT_TABLE)
    if not s.isascii():
        s = anyascii(s).upper()
    return s


@lru_cache(maxsize=1 << 17)
def normalise_name(text: str) -> str:
    """Upper-case A-Z tokens separated by single spaces, in written order.

    Apostrophes are removed (O'NEIL -> ONEIL, ayn marks disappear); every other non-letter, including hyphens
    and digits, separates tokens. Idempotent: the output is a fixed point.
    """
    s = transliterate(text)
    s = _APOSTROPHES_RE.sub("", s)
    return " ".join(_NON_ALPHA_RE.sub(" ", s).split())


@lru_cache(maxsize=1 << 17)
def name_tokens(text: str) -> tuple[str, ...]:
    """Name tokens for key derivation: honorifics and dropped particles removed, joined particles fused.

    Order is the written order (keys sort them). If the rules would remove every token, the normalised tokens
    are returned unchanged so that a name never vanishes.
    """
    raw = normalise_name(text).split()
    out: list[str] = []
    pending = ""
    for tok in raw:
        if tok in HONORIFICS or tok in DROPPED_PARTICLES:
            continue
        if tok in _ABD_STANDALONE:
            tok = "ABD"
        if tok in JOINED_PARTICLES:
            pending += tok
            continue
        out.append(_canon_abd(pending + tok))
        pending = ""
    if pending:
        out.append(pending)
    return tuple(out) if out else tuple(raw)


def _canon_abd(tok: str) -> str:
    while tok.startswith("ABD"):
        for p in ABD_PREFIXES:
            if tok.startswith(p) and len(tok) - len(p) >= 3:
                tok = "ABD" + tok[len(p) :]
                break
        else:
            return tok
    return tok


_DOC_DROP_RE = re.compile(r"[^A-Z0-9]+")


def normalise_document_number(text: str) -> str:
    """Upper-case A-Z0-9 only (spaces, hyphens, dots, MRZ fillers removed), with letter O folded to digit 0.

    The O/0 fold absorbs the commonest OCR and keying confusion; numbers differing only in O/0 under one
    issuer are not distinct documents in practice.
    """
    s = unicodedata.normalize("NFKC", text).upper()
    if not s.isascii():
        s = anyascii(s).upper()
    return _DOC_DROP_RE.sub("", s).replace("O", "0")


_PASSPORT_WORDS = ("PASSPORT", "PASSEPORT", "PASAPORTE", "PASSAPORTO", "REISEPASS", "PASPOORT", "PASSAPORTE")
_ID_WORDS = ("IDENT", "IDCARD", "NATIONALID", "CEDULA", "CARTE", "DNI", "PERSONALAUSWEIS", "NIN")


def document_class(doc_type: str) -> str:
    """Coarse document class from a free type text or an ICAO/PAXLST code: ``P``, ``I``, ``V`` or ``O``."""
    s = _DOC_DROP_RE.sub("", anyascii(unicodedata.normalize("NFKC", doc_type)).upper())
    if not s:
        return "O"
    if len(s) <= 2:
        first = s[0]
        if first == "P":
            return "P"
        if first in "IAC":
            return "I"
        return "V" if first == "V" else "O"
    if any(w in s for w in _PASSPORT_WORDS):
        return "P"
    if any(w in s for w in _ID_WORDS):
        return "I"
    return "V" if s.startswith("VISA") else "O"


def validate_country(code: str, *, field: str = "country") -> str:
    """Canonical alpha-3 code, or :class:`InvalidRecord`.

    Accepts the 249 current ISO 3166-1 alpha-3 codes and the ICAO Doc 9303 Part 3 codes for other
    nationalities (GBD/GBN/GBO/GBP/GBS, UNO/UNA/UNK, EUE, XBA ... XXA/XXB/XXC/XXX). ICAO's one-letter ``D``
    (Germany, written ``D<<`` in an MRZ) is canonicalised to ``DEU`` so German MRZs meet lists. Case and
    surrounding spaces/MRZ fillers are ignored.
    """
    if not isinstance(code, str):
        raise InvalidRecord(f"{field}: must be a string", reason="wrong_type")
    c = code.strip().strip("<").upper()
    if c == "D":
        return "DEU"
    if c in ISO_ALPHA3 or c in ICAO_SPECIAL_CODES:
        return c
    raise InvalidRecord(f"{field}: not an ISO 3166-1 alpha-3 or ICAO 9303 code", reason="bad_country")


_SCRIPT_PREFIXES = (
    ("LATIN", "Latn"), ("CYRILLIC", "Cyrl"), ("ARABIC", "Arab"), ("GREEK", "Grek"), ("HEBREW", "Hebr"),
    ("CJK", "Hani"), ("HANGUL", "Hang"), ("HIRAGANA", "Hira"), ("KATAKANA", "Kana"), ("DEVANAGARI", "Deva"),
    ("THAI", "Thai"), ("GEORGIAN", "Geor"), ("ARMENIAN", "Armn"), ("ETHIOPIC", "Ethi"), ("BENGALI", "Beng"),
    ("TAMIL", "Taml"), ("KHMER", "Khmr"), ("MYANMAR", "Mymr"),
)  # fmt: skip


def detect_script(text: str) -> str:
    """ISO 15924 code of the first non-Latin letter's script (``"Latn"`` if all letters are Latin).

    ``"Zyyy"`` (undetermined) when no letter is recognised.
    """
    seen_latin = False
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        for prefix, code in _SCRIPT_PREFIXES:
            if name.startswith(prefix):
                if code != "Latn":
                    return code
                seen_latin = True
                break
    return "Latn" if seen_latin else "Zyyy"
