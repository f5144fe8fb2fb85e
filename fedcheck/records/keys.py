"""Match keys: typed, domain-separated byte strings derived from a record, the items exact PSI intersects.

Both parties derive keys with the same code, so a traveller is found exactly when one of its keys equals one
of a listed person's keys. Each key is ``b"fedcheck/v1/key/" + type + b"\\x00" + fields joined by
b"\\x1f"``; fields are built from ``[A-Z0-9 ]`` only, so no field can contain a separator and keys of
different types never collide.
The byte layout is a wire contract (``docs/data-model.md``): change it only together with the ``v1`` prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from metaphone import doublemetaphone

from fedcheck.errors import InvalidInput
from fedcheck.records.model import BirthDate, PersonRecord
from fedcheck.records.normalise import name_tokens, normalise_document_number

__all__ = [
    "ALL_KEY_TYPES",
    "DEFAULT_KEY_TYPES",
    "KEY_PREFIX",
    "MAX_RANGE_KEY_YEARS",
    "MIN_DOCUMENT_NUMBER_LEN",
    "KeyType",
    "MatchKey",
    "match_keys",
    "match_keys_many",
    "parse_key_types",
    "phonetic_codes",
]

KEY_PREFIX = b"fedcheck/v1/key/"
_SEP = b"\x1f"
#: Year ranges wider than this (inclusive count of years) produce no year-based keys: a 30-year range would
#: multiply keys and match almost anyone with the name.
MAX_RANGE_KEY_YEARS = 5
#: Shortest normalised number used for the issuer-less DOCUMENT_NUMBER key.
MIN_DOCUMENT_NUMBER_LEN = 6


class KeyType(StrEnum):
    """Key families. The first four are the contract; ``DOCUMENT_NUMBER`` is an opt-in extra."""

    DOCUMENT = "document"
    NAME_DOB = "name_dob"
    NAME_YOB_NAT = "name_yob_nat"
    PHONETIC_YOB = "phonetic_yob"
    #: number only, for lists that omit the issuing State (about a third of UN documents); weaker, opt-in.
    DOCUMENT_NUMBER = "document_number"


DEFAULT_KEY_TYPES: tuple[KeyType, ...] = (
    KeyType.DOCUMENT,
    KeyType.NAME_DOB,
    KeyType.NAME_YOB_NAT,
    KeyType.PHONETIC_YOB,
)
ALL_KEY_TYPES: tuple[KeyType, ...] = tuple(KeyType)

_PREFIXES = {kt: KEY_PREFIX + kt.value.encode("ascii") + b"\x00" for kt in KeyType}


@dataclass(frozen=True, slots=True)
class MatchKey:
    """One key: its family (so a hit can say *why* it hit) and the domain-separated bytes."""

    key_type: KeyType
    value: bytes


def parse_key_types(spec: str | Iterable[str]) -> tuple[KeyType, ...]:
    """``"document,name_dob"`` (or an iterable of names) -> key types in the given order, deduplicated."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[KeyType] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        try:
            kt = KeyType(name)
        except ValueError:
            raise InvalidInput("key_types: unknown key type", reason="unknown_key_type") from None
        if kt not in out:
            out.append(kt)
    if not out:
        raise InvalidInput("key_types: empty", reason="empty_key_types")
    return tuple(out)


@lru_cache(maxsize=1 << 16)
def _phonetic(token: str) -> str:
    return str(doublemetaphone(token)[0])


def phonetic_codes(tokens: Sequence[str]) -> tuple[str, ...]:
    """Double Metaphone primary code per token, empty codes dropped, sorted."""
    return tuple(sorted(c for c in map(_phonetic, tokens) if c))


@lru_cache(maxsize=1 << 17)
def _name_fields(full_name: str) -> tuple[bytes, bytes, int]:
    """(sorted tokens, sorted phonetic codes, token count) as bytes, cached per written name."""
    toks = name_tokens(full_name)
    return (
        " ".join(sorted(toks)).encode("ascii"),
        " ".join(phonetic_codes(toks)).encode("ascii"),
        len(toks),
    )


def _key_years(d: BirthDate) -> range:
    yrs = d.years()
    return yrs if len(yrs) <= MAX_RANGE_KEY_YEARS else range(0)


def match_keys(
    record: PersonRecord,
    key_types: Sequence[KeyType] = DEFAULT_KEY_TYPES,
    *,
    include_low_quality: bool = True,
) -> list[MatchKey]:
    """All keys of ``record`` for the requested families, over every name/alias, deduplicated in order.

    - DOCUMENT: issuer + normalised number, for documents with a known issuer. The document type is left out:
      lists and manifests disagree on type codes and a third of UN documents have none.
    - NAME_DOB: sorted name tokens + exact date (``YYYY-MM-DD``); partial dates and ranges give none.
    - NAME_YOB_NAT: sorted tokens (at least two) + birth year + nationality; one key per year (ranges of at
      most :data:`MAX_RANGE_KEY_YEARS` years) and per nationality.
    - PHONETIC_YOB: sorted Double Metaphone codes (at least two tokens) + birth year.
    - DOCUMENT_NUMBER (opt-in): normalised number alone, if at least :data:`MIN_DOCUMENT_NUMBER_LEN` long.
    """
    wanted = frozenset(key_types)
    out: dict[bytes, KeyType] = {}

    if KeyType.DOCUMENT in wanted or KeyType.DOCUMENT_NUMBER in wanted:
        for doc in record.documents:
            num = normalise_document_number(doc.number).encode("ascii")
            if KeyType.DOCUMENT in wanted and doc.issuer is not None:
                v = _PREFIXES[KeyType.DOCUMENT] + doc.issuer.encode("ascii") + _SEP + num
                out.setdefault(v, KeyType.DOCUMENT)
            if KeyType.DOCUMENT_NUMBER in wanted and len(num) >= MIN_DOCUMENT_NUMBER_LEN:
                out.setdefault(_PREFIXES[KeyType.DOCUMENT_NUMBER] + num, KeyType.DOCUMENT_NUMBER)

    want_dob = KeyType.NAME_DOB in wanted
    want_nat = KeyType.NAME_YOB_NAT in wanted and bool(record.nationalities)
    want_pho = KeyType.PHONETIC_YOB in wanted
    if not (want_dob or want_nat or want_pho) or not record.birth_dates or not record.names:
        return [MatchKey(kt, v) for v, kt in out.items()]

    exact = [str(d).encode("ascii") for d in record.birth_dates if d.is_exact]
    years: list[bytes] = []
    seen_years: set[int] = set()
    for d in record.birth_dates:
        for y in _key_years(d):
            if y not in seen_years:
                seen_years.add(y)
                years.append(b"%04d" % y)
    nats = [n.encode("ascii") for n in record.nationalities]

    for name in record.names:
        if not include_low_quality and name.quality == "low":
            continue
        toks, codes, count = _name_fields(name.full_name)
        if not count:
            continue
        if want_dob:
            p = _PREFIXES[KeyType.NAME_DOB] + toks + _SEP
            for e in exact:
                out.setdefault(p + e, KeyType.NAME_DOB)
        if count < 2:
            continue
        if want_nat:
            p = _PREFIXES[KeyType.NAME_YOB_NAT] + toks + _SEP
            for yb in years:
                for nb in nats:
                    out.setdefault(p + yb + _SEP + nb, KeyType.NAME_YOB_NAT)
        if want_pho and codes.count(b" ") >= 1:
            p = _PREFIXES[KeyType.PHONETIC_YOB] + codes + _SEP
            for yb in years:
                out.setdefault(p + yb, KeyType.PHONETIC_YOB)
    return [MatchKey(kt, v) for v, kt in out.items()]


def match_keys_many(
    records: Iterable[PersonRecord],
    key_types: Sequence[KeyType] = DEFAULT_KEY_TYPES,
    *,
    include_low_quality: bool = True,
) -> list[list[MatchKey]]:
    """:func:`match_keys` for each record, in order (one call for batch callers and benchmarks)."""
    return [match_keys(r, key_types, include_low_quality=include_low_quality) for r in records]
