"""Record file readers and the JSON Lines writer: the one place files become :class:`PersonRecord` s.

Readers never crash on a bad row: the row becomes a :class:`Rejection` saying where (line or element) and
why, and the rest of the file is read. A file that cannot be read as its format at all (not UTF-8, no header,
broken XML) raises :class:`fedcheck.errors.FormatError` naming the location. Messages never contain field
values. Shapes are documented in ``docs/data-model.md``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fedcheck.codes import did_you_mean
from fedcheck.errors import FormatError, InvalidInput, InvalidRecord
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument
from fedcheck.records.normalise import detect_script

__all__ = [
    "CSV_COLUMNS",
    "CSV_OPTIONAL_COLUMNS",
    "FORMATS",
    "JSONL_VERSION",
    "ReadResult",
    "Rejection",
    "open_input",
    "read_csv",
    "read_input_bytes",
    "read_jsonl",
    "read_records",
    "record_from_dict",
    "record_from_row",
    "record_to_dict",
    "write_jsonl",
]

#: The flat header every tool accepts. Only ``id`` is required; any other column may be absent or empty.
CSV_COLUMNS = (
    "id", "full_name", "given_names", "surname", "date_of_birth", "sex", "nationality", "document_type",
    "document_number", "document_issuer", "category", "reference",
)  # fmt: skip
#: Further optional columns. ``aliases``, ``date_of_birth``, ``nationality`` and ``flags`` take several values
#: separated by ``;``.
CSV_OPTIONAL_COLUMNS = ("aliases", "place_of_birth", "flags", "listing_date")
FORMATS = ("csv", "jsonl", "un-xml")
JSONL_VERSION = 1
_MULTI_SEP = ";"
_SEX_MAP = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "X": "X", "<": "X", "U": None, "UNKNOWN": None}
_JSON_KEYS = frozenset({
    "v", "id", "names", "birth_dates", "sex", "nationalities", "place_of_birth", "documents",
    "face_embedding", "label", "flags",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row/element not imported: ``where`` is e.g. ``"line 12"`` or ``"INDIVIDUAL 34 (DATAID 6908555)"``."""

    where: str
    reason: str


@dataclass(slots=True)
class ReadResult:
    """Records read, rows rejected, counters for importers to report, and non-fatal warnings."""

    records: list[PersonRecord]
    rejected: list[Rejection]
    stats: dict[str, int] = field(default_factory=dict)
    warnings: list[Rejection] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- dispatch


def read_records(path: str | os.PathLike[str], fmt: str | None = None) -> ReadResult:
    """Read a record file as ``csv``, ``jsonl`` or ``un-xml``; ``fmt=None`` sniffs suffix, then content."""
    p = Path(path)
    if fmt is None:
        fmt = _sniff(p)
    if fmt == "csv":
        return read_csv(p)
    if fmt == "jsonl":
        return read_jsonl(p)
    if fmt == "un-xml":
        from fedcheck.records.un_xml import read_un_xml

        return read_un_xml(p)
    raise InvalidInput("fmt: expected one of csv, jsonl, un-xml", reason="unknown_format")


def _sniff(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".xml":
        return "un-xml"
    head = read_input_bytes(p, limit=4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return "un-xml"
    if head.startswith(b"{"):
        return "jsonl"
    return "csv"


@contextlib.contextmanager
def open_input(p: Path) -> Iterator[BinaryIO]:
    """An input file opened for reading bytes: failing to open or read it (within the ``with``) is a
    :class:`FormatError` ``unreadable`` naming the file, as for every reader."""
    try:
        with p.open("rb") as f:
            yield f
    except OSError as e:
        raise FormatError(f"{p.name}: cannot read file ({type(e).__name__})", reason="unreadable") from None


def read_input_bytes(p: Path, limit: int | None = None) -> bytes:
    """The bytes of an input file (the first ``limit`` only, given one); see :func:`open_input`."""
    with open_input(p) as f:
        return f.read() if limit is None else f.read(limit)


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) with a FormatError naming the line on invalid UTF-8."""
    data = read_input_bytes(p)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for n, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{p.name}: line {n}: not valid UTF-8", reason="bad_encoding") from None


# --------------------------------------------------------------------------------------------- CSV


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(_MULTI_SEP) if v.strip()]


def record_from_row(row: Mapping[str, str | None]) -> PersonRecord:
    """One flat CSV row (header names as keys) -> record; :class:`InvalidRecord` on violations."""

    def col(name: str) -> str:
        v = row.get(name)
        return v.strip() if isinstance(v, str) else ""

    names: list[PersonName] = []
    full, given, sur = col("full_name"), col("given_names"), col("surname")
    if full or given or sur:
        names.append(PersonName(full, given, sur, script=detect_script(full or f"{given} {sur}")))
    for alias in _split(col("aliases")):
        names.append(PersonName(alias, script=detect_script(alias)))
    sex_raw = col("sex").upper()
    if sex_raw not in _SEX_MAP and sex_raw:
        raise InvalidRecord("sex: expected M, F, X or empty", reason="bad_sex")
    docs: list[TravelDocument] = []
    if col("document_number"):
        docs.append(
            TravelDocument(col("document_type"), col("document_number"), col("document_issuer") or None)
        )
    if not names and not docs:
        raise InvalidRecord("record: no name and no document to match on", reason="nothing_to_match")
    return PersonRecord(
        record_id=col("id"),
        names=tuple(names),
        birth_dates=tuple(BirthDate.parse(d) for d in _split(col("date_of_birth"))),
        sex=_SEX_MAP.get(sex_raw) if sex_raw else None,
        nationalities=tuple(_split(col("nationality"))),
        place_of_birth=col("place_of_birth"),
        documents=tuple(docs),
        label=Label(col("category"), col("reference"), col("listing_date")),
        flags=frozenset(f.lower() for f in _split(col("flags"))),
    )


def _delimiter_hint(text: str) -> str:
    """For a header without ``id``: when its first line is separated by ``;`` or tabs rather than commas,
    say so (the usual cause: a spreadsheet export in a locale whose list separator is not ',')."""
    line = text.partition("\n")[0].rstrip("\r")
    for sep, name in ((";", "semicolon"), ("\t", "tab")):
        if line.count(sep) > line.count(","):
            return (
                f" -- the header is {name}-separated, but fedcheck reads comma-separated CSV: export the "
                "file with ',' as the delimiter"
            )
    return ""


def _column_warnings(header: list[str]) -> list[Rejection]:
    """One warning per unknown column, naming it (column names are no personal data; long ones shortened) and,
    for a near miss of a known column, the one probably meant."""
    known = (*CSV_COLUMNS, *CSV_OPTIONAL_COLUMNS)
    out: list[Rejection] = []
    for col in header:
        if col in known:
            continue
        shown = col if len(col) <= 40 else col[:37] + "..."
        close = did_you_mean(col, known, cutoff=0.75)
        hint = f" (did you mean {close!r}?)" if close else ""
        out.append(Rejection("line 1", f"unknown column {shown!r} ignored{hint}"))
    return out


def read_csv(path: str | os.PathLike[str]) -> ReadResult:
    """Read the flat CSV (UTF-8, optional BOM, comma-separated, header row with an ``id`` column)."""
    p = Path(path)
    text = "".join(t for _, t in _lines(p))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise FormatError(f"{p.name}: line 1: malformed CSV header ({e})", reason="bad_csv") from None
    if header is None:
        raise FormatError(f"{p.name}: empty file, expected a header row", reason="no_header")
    header = [h.strip().lower() for h in header]
    if "id" not in header:
        raise FormatError(
            f"{p.name}: line 1: header has no 'id' column{_delimiter_hint(text)}", reason="no_id_column"
        )
    if len(set(header)) != len(header):
        raise FormatError(f"{p.name}: line 1: duplicate column names", reason="duplicate_column")
    res = ReadResult([], [], {"read": 0, "imported": 0, "rejected": 0})
    res.warnings.extend(_column_warnings(header))
    seen: set[str] = set()
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader, None)
        except csv.Error as e:
            raise FormatError(
                f"{p.name}: line {reader.line_num}: malformed CSV ({e})", reason="bad_csv"
            ) from None
        if fields is None:
            break
        if not any(f.strip() for f in fields):
            continue
        res.stats["read"] += 1
        where = f"line {start}"
        if len(fields) > len(header):
            res.rejected.append(Rejection(where, "more fields than the header has columns"))
            continue
        row = dict(zip(header, fields, strict=False))
        try:
            rec = record_from_row(row)
        except InvalidRecord as e:
            res.rejected.append(Rejection(where, e.message))
            continue
        if rec.record_id in seen:
            res.rejected.append(Rejection(where, "id: duplicate of an earlier row"))
            continue
        seen.add(rec.record_id)
        res.records.append(rec)
    res.stats["imported"] = len(res.records)
    res.stats["rejected"] = len(res.rejected)
    return res


# --------------------------------------------------------------------------------------------- JSON Lines


def record_to_dict(rec: PersonRecord) -> dict[str, Any]:
    """The canonical JSON object of a record (the JSON Lines shape)."""
    return {
        "v": JSONL_VERSION,
        "id": rec.record_id,
        "names": [
            {
                "full_name": n.full_name,
                "given_names": n.given_names,
                "surname": n.surname,
                "script": n.script,
                "quality": n.quality,
            }
            for n in rec.names
        ],
        "birth_dates": [str(d) for d in rec.birth_dates],
        "sex": rec.sex,
        "nationalities": list(rec.nationalities),
        "place_of_birth": rec.place_of_birth,
        "documents": [{"type": d.doc_type, "number": d.number, "issuer": d.issuer} for d in rec.documents],
        "face_embedding": list(rec.face_embedding) if rec.face_embedding is not None else None,
        "label": rec.label.to_dict(),
        "flags": sorted(rec.flags),
    }


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise InvalidRecord(f"{key}: must be a list", reason="wrong_type")
    return v


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    v = obj.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise InvalidRecord(f"{where}: must be a string", reason="wrong_type")
    return v


def record_from_dict(obj: Mapping[str, Any]) -> PersonRecord:
    """Inverse of :func:`record_to_dict`. Only ``id`` is required; names may be plain strings."""
    if not isinstance(obj, Mapping):
        raise InvalidRecord("record: must be a JSON object", reason="wrong_type")
    if set(obj) - _JSON_KEYS:
        raise InvalidRecord("record: unknown field(s)", reason="unknown_field")
    if obj.get("v", JSONL_VERSION) != JSONL_VERSION:
        raise InvalidRecord("v: unsupported record version", reason="bad_version")
    if not isinstance(obj.get("id"), str):
        raise InvalidRecord("id: required string", reason="empty_field")
    names: list[PersonName] = []
    for i, n in enumerate(_list(obj, "names")):
        if isinstance(n, str):
            names.append(PersonName(n, script=detect_script(n)))
        elif isinstance(n, Mapping):
            if set(n) - {"full_name", "given_names", "surname", "script", "quality"}:
                raise InvalidRecord(f"names[{i}]: unknown field(s)", reason="unknown_field")
            full = _str(n, "full_name", f"names[{i}].full_name")
            given = _str(n, "given_names", f"names[{i}].given_names")
            sur = _str(n, "surname", f"names[{i}].surname")
            script = _str(n, "script", f"names[{i}].script") or detect_script(full or f"{given} {sur}")
            names.append(
                PersonName(full, given, sur, script, _str(n, "quality", f"names[{i}].quality") or "good")
            )
        else:
            raise InvalidRecord(f"names[{i}]: must be a string or object", reason="wrong_type")
    dates: list[BirthDate] = []
    for d in _list(obj, "birth_dates"):
        if not isinstance(d, str):
            raise InvalidRecord("birth_dates: items must be strings", reason="wrong_type")
        dates.append(BirthDate.parse(d))
    docs: list[TravelDocument] = []
    for i, d in enumerate(_list(obj, "documents")):
        if not isinstance(d, Mapping) or set(d) - {"type", "number", "issuer"}:
            raise InvalidRecord(
                f"documents[{i}]: must be an object with type/number/issuer", reason="wrong_type"
            )
        issuer = d.get("issuer")
        if issuer is not None and not isinstance(issuer, str):
            raise InvalidRecord(f"documents[{i}].issuer: must be a string or null", reason="wrong_type")
        docs.append(TravelDocument(_str(d, "type", f"documents[{i}].type"),
                                   _str(d, "number", f"documents[{i}].number"), issuer or None))  # fmt: skip
    label_obj = obj.get("label") or {}
    if not isinstance(label_obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in label_obj.items()
    ):
        raise InvalidRecord("label: must be an object of strings", reason="wrong_type")
    emb = obj.get("face_embedding")
    if emb is not None and (not isinstance(emb, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in emb
    )):  # fmt: skip
        raise InvalidRecord("face_embedding: must be a list of numbers", reason="wrong_type")
    sex = obj.get("sex")
    if sex is not None and not isinstance(sex, str):
        raise InvalidRecord("sex: must be a string or null", reason="wrong_type")
    flags = _list(obj, "flags")
    nats = _list(obj, "nationalities")
    return PersonRecord(
        record_id=obj["id"],
        names=tuple(names),
        birth_dates=tuple(dates),
        sex=sex or None,
        nationalities=tuple(nats),
        place_of_birth=_str(obj, "place_of_birth", "place_of_birth"),
        documents=tuple(docs),
        face_embedding=tuple(emb) if emb is not None else None,
        label=Label.from_dict(label_obj),
        flags=frozenset(flags),
    )


def read_jsonl(path: str | os.PathLike[str]) -> ReadResult:
    """Read JSON Lines of canonical records; blank lines are skipped, bad lines rejected."""
    p = Path(path)
    res = ReadResult([], [], {"read": 0, "imported": 0, "rejected": 0})
    seen: set[str] = set()
    for n, line in _lines(p):
        if not line.strip():
            continue
        res.stats["read"] += 1
        where = f"line {n}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            # JSONDecodeError is a ValueError; so is an integer literal over Python's 4300-digit limit
            if isinstance(e, json.JSONDecodeError):
                reason = f"not valid JSON (column {e.colno})"
            elif isinstance(e, RecursionError):
                reason = "not valid JSON (nested too deep)"
            else:
                reason = "not valid JSON (number too long)"
            res.rejected.append(Rejection(where, reason))
            continue
        try:
            rec = record_from_dict(obj)
        except InvalidRecord as e:
            res.rejected.append(Rejection(where, e.message))
            continue
        except (TypeError, ValueError, ArithmeticError, RecursionError):
            res.rejected.append(Rejection(where, "record: wrong value types"))
            continue
        if rec.record_id in seen:
            res.rejected.append(Rejection(where, "id: duplicate of an earlier line"))
            continue
        seen.add(rec.record_id)
        res.records.append(rec)
    res.stats["imported"] = len(res.records)
    res.stats["rejected"] = len(res.rejected)
    return res


def write_jsonl(records: Iterable[PersonRecord], path: str | os.PathLike[str]) -> int:
    """Write records as JSON Lines (UTF-8, one object per line); atomic replace. Returns the count written."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent or Path("."))
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for rec in records:
                f.write(json.dumps(record_to_dict(rec), ensure_ascii=False, separators=(",", ":")))
                f.write("\n")
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
