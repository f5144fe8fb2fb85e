"""The canonical identity record: one frozen shape every reader produces and every matcher consumes.

Validation happens at construction so that nothing downstream (key derivation, index building, the wire) has
to re-check. Errors are :class:`fedcheck.errors.InvalidRecord` naming the offending *field* only; they never
echo the value, because the value is an identity.
"""

from __future__ import annotations

import calendar
import itertools
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcheck.errors import InvalidRecord

__all__ = [
    "KNOWN_FLAGS",
    "MAX_NAME_CHARS",
    "MAX_RANGE_YEARS",
    "BirthDate",
    "Label",
    "PersonName",
    "PersonRecord",
    "TravelDocument",
]

#: Longest accepted name or free-text field; longer values are data errors, not people.
MAX_NAME_CHARS = 512
#: Widest accepted birth-year range (``YYYY/YYYY``).
MAX_RANGE_YEARS = 100
#: Earliest/latest plausible birth years.
_MIN_YEAR, _MAX_YEAR = 1850, 2150
_MAX_EMBEDDING_DIM = 4096
_SCRIPT_RE = re.compile(r"^[A-Z][a-z]{3}$")  # ISO 15924 code, e.g. Latn, Cyrl, Arab
_FLAG_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ID_MAX = 128
_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_RANGE_RE = re.compile(r"^(\d{4})/(\d{4})$")
_LISTING_DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_LABEL_RESERVED = frozenset({"category", "reference", "listing_date"})

#: Querier-side flags with a defined meaning. Other lower-case identifiers are accepted and carried as-is.
KNOWN_FLAGS = frozenset({"refugee", "asylum_seeker", "stateless", "minor", "diplomat"})


def _check_text(value: object, where: str, *, required: bool = False, max_chars: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str):
        raise InvalidRecord(f"{where}: must be a string", reason="wrong_type")
    if required and not value.strip():
        raise InvalidRecord(f"{where}: must not be empty", reason="empty_field")
    if len(value) > max_chars:
        raise InvalidRecord(f"{where}: too long (max {max_chars} characters)", reason="too_long")
    if any(ord(ch) < 0x20 and ch not in "\t" for ch in value):
        raise InvalidRecord(f"{where}: contains control characters", reason="control_characters")
    return value


def _tuple(value: object, where: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidRecord(f"{where}: must be a sequence", reason="wrong_type")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class PersonName:
    """One name of a person: the primary name or an alias, as written in its source.

    ``full_name`` is what keys are derived from; ``given_names``/``surname`` are kept when the source splits
    them (MRZ, API) so later stages can use the split, and are used to build ``full_name`` when it is empty.
    """

    full_name: str
    given_names: str = ""
    surname: str = ""
    script: str = "Latn"
    quality: str = "good"

    def __post_init__(self) -> None:
        _check_text(self.given_names, "name.given_names")
        _check_text(self.surname, "name.surname")
        _check_text(self.full_name, "name.full_name")
        if not self.full_name.strip():
            built = " ".join(p for p in (self.given_names.strip(), self.surname.strip()) if p)
            if not built:
                raise InvalidRecord("name.full_name: must not be empty", reason="empty_field")
            object.__setattr__(self, "full_name", built)
        if not isinstance(self.script, str) or not _SCRIPT_RE.match(self.script):
            raise InvalidRecord("name.script: must be an ISO 15924 code such as 'Latn'", reason="bad_script")
        if self.quality not in ("good", "low"):
            raise InvalidRecord("name.quality: must be 'good' or 'low'", reason="bad_quality")


@dataclass(frozen=True, slots=True)
class BirthDate:
    """A date of birth as precise as the source knows it: exact, year-month, year, or a year range.

    ``year_to`` (inclusive) marks a range and excludes month/day. Key derivation uses :meth:`years` for
    year-based keys and only exact dates for the name+date key.
    """

    year: int
    month: int | None = None
    day: int | None = None
    year_to: int | None = None

    def __post_init__(self) -> None:
        for name in ("year", "month", "day", "year_to"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidRecord(f"birth_date.{name}: must be an integer", reason="wrong_type")
        if not _MIN_YEAR <= self.year <= _MAX_YEAR:
            raise InvalidRecord("birth_date.year: out of range", reason="bad_date")
        if self.day is not None and self.month is None:
            raise InvalidRecord("birth_date.day: given without month", reason="bad_date")
        if self.month is not None and not 1 <= self.month <= 12:
            raise InvalidRecord("birth_date.month: out of range", reason="bad_date")
        if (
            self.day is not None
            and self.month is not None
            and not 1 <= self.day <= calendar.monthrange(self.year, self.month)[1]
        ):
            raise InvalidRecord("birth_date.day: not a calendar date", reason="bad_date")
        if self.year_to is not None:
            if self.month is not None:
                raise InvalidRecord("birth_date.year_to: a range cannot have month/day", reason="bad_date")
            if not self.year < self.year_to <= self.year + MAX_RANGE_YEARS:
                raise InvalidRecord("birth_date.year_to: range empty or too wide", reason="bad_date")

    @classmethod
    def parse(cls, text: str) -> BirthDate:
        """Parse ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY/YYYY`` (inclusive range)."""
        if not isinstance(text, str):
            raise InvalidRecord("birth_date: must be a string", reason="wrong_type")
        s = text.strip()
        m = _RANGE_RE.match(s)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            return cls(a) if a == b else cls(a, year_to=b)
        m = _DATE_RE.match(s)
        if not m:
            raise InvalidRecord(
                "birth_date: expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY/YYYY", reason="bad_date"
            )
        return cls(
            int(m.group(1)),
            int(m.group(2)) if m.group(2) else None,
            int(m.group(3)) if m.group(3) else None,
        )

    @property
    def is_exact(self) -> bool:
        return self.day is not None

    @property
    def precision(self) -> str:
        """``"exact"``, ``"year_month"``, ``"year"`` or ``"range"``."""
        if self.year_to is not None:
            return "range"
        if self.day is not None:
            return "exact"
        return "year_month" if self.month is not None else "year"

    def years(self) -> range:
        """Every possible birth year (inclusive range)."""
        return range(self.year, (self.year_to if self.year_to is not None else self.year) + 1)

    def __str__(self) -> str:
        if self.year_to is not None:
            return f"{self.year:04d}/{self.year_to:04d}"
        if self.day is not None:
            return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"
        if self.month is not None:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}"


@dataclass(frozen=True, slots=True)
class TravelDocument:
    """A travel or identity document as written: free type text/code, number, issuing State (alpha-3)."""

    doc_type: str
    number: str
    issuer: str | None = None

    def __post_init__(self) -> None:
        from fedcheck.records.normalise import normalise_document_number, validate_country

        _check_text(self.doc_type, "document.doc_type", max_chars=64)
        _check_text(self.number, "document.number", required=True, max_chars=64)
        if not normalise_document_number(self.number):
            raise InvalidRecord("document.number: no letters or digits", reason="empty_field")
        if self.issuer is not None:
            object.__setattr__(self, "issuer", validate_country(self.issuer, field="document.issuer"))

    @property
    def doc_class(self) -> str:
        """Coarse class: ``"P"`` passport, ``"I"`` identity card, ``"V"`` visa, ``"O"`` other/unknown."""
        from fedcheck.records.normalise import document_class

        return document_class(self.doc_type)


@dataclass(frozen=True, slots=True)
class Label:
    """Holder-side metadata returned to a querier on a hit. Never matched on; short and non-personal."""

    category: str = ""
    reference: str = ""
    listing_date: str = ""
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_text(self.category, "label.category", max_chars=128)
        _check_text(self.reference, "label.reference", max_chars=128)
        _check_text(self.listing_date, "label.listing_date", max_chars=10)
        if self.listing_date and not _LISTING_DATE_RE.match(self.listing_date):
            raise InvalidRecord("label.listing_date: expected YYYY[-MM[-DD]]", reason="bad_date")
        extra = _tuple(self.extra, "label.extra")
        seen: set[str] = set()
        for i, item in enumerate(extra):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise InvalidRecord(f"label.extra[{i}]: must be a (key, value) pair", reason="wrong_type")
            k, v = item
            _check_text(k, f"label.extra[{i}].key", required=True, max_chars=64)
            _check_text(v, f"label.extra[{i}].value", max_chars=256)
            if k in _LABEL_RESERVED or k in seen:
                raise InvalidRecord(f"label.extra[{i}].key: reserved or duplicate", reason="duplicate_key")
            seen.add(k)
        object.__setattr__(self, "extra", extra)

    def to_dict(self) -> dict[str, str]:
        """Flat ``str -> str`` mapping (the shape PSI index labels carry); empty standard fields included."""
        out = {"category": self.category, "reference": self.reference, "listing_date": self.listing_date}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> Label:
        """Inverse of :meth:`to_dict`; unknown keys go to ``extra`` in sorted order."""
        if not isinstance(data, Mapping):
            raise InvalidRecord("label: must be a mapping", reason="wrong_type")
        extra = tuple(sorted((k, v) for k, v in data.items() if k not in _LABEL_RESERVED))
        return cls(
            category=data.get("category", ""),
            reference=data.get("reference", ""),
            listing_date=data.get("listing_date", ""),
            extra=extra,
        )


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """A person on a watchlist (holder side) or a traveller (querier side).

    Sequences are stored as tuples (lists are accepted and converted). ``names[0]`` is the primary name.
    ``nationalities`` are canonical alpha-3 codes (``"D"`` becomes ``"DEU"``), deduplicated in order.
    ``label`` is holder-side and never matched on; ``flags`` are querier-side (e.g. ``{"refugee"}``) and never
    leave the querier.
    """

    record_id: str
    names: tuple[PersonName, ...]
    birth_dates: tuple[BirthDate, ...] = ()
    sex: str | None = None
    nationalities: tuple[str, ...] = ()
    place_of_birth: str = ""
    documents: tuple[TravelDocument, ...] = ()
    face_embedding: tuple[float, ...] | None = None
    label: Label = field(default_factory=Label)
    flags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        from fedcheck.records.normalise import validate_country

        _check_text(self.record_id, "record_id", required=True, max_chars=_ID_MAX)
        names = _tuple(self.names, "names")
        for i, n in enumerate(names):
            if not isinstance(n, PersonName):
                raise InvalidRecord(f"names[{i}]: must be a PersonName", reason="wrong_type")
        object.__setattr__(self, "names", names)
        dates = _tuple(self.birth_dates, "birth_dates")
        for i, d in enumerate(dates):
            if not isinstance(d, BirthDate):
                raise InvalidRecord(f"birth_dates[{i}]: must be a BirthDate", reason="wrong_type")
        object.__setattr__(self, "birth_dates", tuple(dict.fromkeys(dates)))
        if self.sex not in (None, "M", "F", "X"):
            raise InvalidRecord("sex: must be 'M', 'F', 'X' or None", reason="bad_sex")
        nats = _tuple(self.nationalities, "nationalities")
        canon = [validate_country(c, field=f"nationalities[{i}]") for i, c in enumerate(nats)]
        object.__setattr__(self, "nationalities", tuple(dict.fromkeys(canon)))
        _check_text(self.place_of_birth, "place_of_birth")
        docs = _tuple(self.documents, "documents")
        for i, doc in enumerate(docs):
            if not isinstance(doc, TravelDocument):
                raise InvalidRecord(f"documents[{i}]: must be a TravelDocument", reason="wrong_type")
        object.__setattr__(self, "documents", tuple(dict.fromkeys(docs)))
        if self.face_embedding is not None:
            object.__setattr__(self, "face_embedding", _embedding(self.face_embedding))
        if not isinstance(self.label, Label):
            raise InvalidRecord("label: must be a Label", reason="wrong_type")
        flags = self.flags
        if isinstance(flags, str) or not isinstance(flags, Iterable):
            raise InvalidRecord("flags: must be a set of strings", reason="wrong_type")
        flags = frozenset(flags)
        for f in flags:
            if not isinstance(f, str) or not _FLAG_RE.match(f):
                raise InvalidRecord("flags: each flag must be a lower-case identifier", reason="bad_flag")
        object.__setattr__(self, "flags", flags)

    @property
    def primary_name(self) -> PersonName | None:
        return self.names[0] if self.names else None

    def iter_years(self) -> Iterator[int]:
        """Every possible birth year over all birth dates, in order, without repeats."""
        seen: set[int] = set()
        for d in self.birth_dates:
            for y in d.years():
                if y not in seen:
                    seen.add(y)
                    yield y


def usable_norm(vec: npt.NDArray[np.float64]) -> float | None:
    """The L2 norm of a finite vector if it can be normalised to unit length in double precision, else None.

    One rule for the model (at import) and the face matcher (at quantisation): a zero vector, a norm that
    under/overflows (e.g. ``[1e-200] * 128`` or ``[1e200] * 128``) or subnormal squares that lose the
    direction are unusable. Computed as numpy does (``a @ a``), so both places give the same verdict.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        norm = float(np.sqrt(vec @ vec))
        if not (norm > 0.0 and math.isfinite(norm)):
            return None
        unit = vec / norm
        if abs(float(unit @ unit) - 1.0) > 1e-6:
            return None
    return norm


def _embedding(value: object) -> tuple[float, ...]:
    """Validated face embedding: 1.._MAX_EMBEDDING_DIM finite numbers whose L2 norm is usable.

    The values are kept as given (not normalised); matchers L2-normalise later, so a zero vector, or one whose
    norm under/overflows in double precision (e.g. ``[1e-200] * 128``), is refused here rather than breaking a
    screening run long after the import.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise InvalidRecord("face_embedding: must be a sequence of numbers", reason="wrong_type")
    items = list(itertools.islice(value, _MAX_EMBEDDING_DIM + 1))
    if not 1 <= len(items) <= _MAX_EMBEDDING_DIM:
        raise InvalidRecord(f"face_embedding: length must be 1..{_MAX_EMBEDDING_DIM}", reason="bad_embedding")
    # the distinct element types (a handful), not every element: numbers only, never text or booleans
    if any(issubclass(k, (str, bytes, bytearray, bool)) or not issubclass(k, numbers.Real)
           for k in set(map(type, items))):
        raise InvalidRecord("face_embedding: must be a sequence of numbers", reason="wrong_type")
    try:
        arr = np.array(items, dtype=np.float64)
    except OverflowError:
        raise InvalidRecord("face_embedding: value too large for a float", reason="bad_embedding") from None
    except (TypeError, ValueError, ArithmeticError):
        raise InvalidRecord("face_embedding: must be a sequence of numbers", reason="wrong_type") from None
    if arr.ndim != 1:
        raise InvalidRecord("face_embedding: must be a sequence of numbers", reason="wrong_type")
    vec = tuple(arr.tolist())
    if not np.all(np.isfinite(arr)):
        raise InvalidRecord(
            "face_embedding: values must be finite (no NaN or infinity)", reason="bad_embedding"
        )
    if usable_norm(arr) is None:
        raise InvalidRecord(
            "face_embedding: zero vector or norm out of floating-point range", reason="bad_embedding"
        )
    return vec
