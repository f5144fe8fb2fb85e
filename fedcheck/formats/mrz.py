"""ICAO Doc 9303 machine-readable zones (TD1 ID cards, TD2 cards, TD3 passports) -> canonical records.

Every check digit is verified (7-3-1 weighting, per field and composite). A failed check is *reported*:
:class:`MrzResult` lists ``failed_checks``, ``strict=True`` raises :class:`fedcheck.errors.FormatError`, and
the batch reader rejects such zones by default. A misread MRZ must never pass silently as a clean traveller.
Error messages name the line and field, never the characters read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fedcheck.errors import FormatError, InvalidInput
from fedcheck.formats._common import country_from_icao, expand_two_digit_year
from fedcheck.records.io import ReadResult, Rejection, read_input_bytes
from fedcheck.records.model import BirthDate, PersonName, PersonRecord, TravelDocument

__all__ = [
    "MrzFormat",
    "MrzResult",
    "check_digit",
    "iter_mrz_blocks",
    "parse_mrz",
    "read_mrz_file",
]

_CHARSET = re.compile(r"^[A-Z0-9<]+$")
_VALUES = {**{str(d): d for d in range(10)}, **{chr(65 + i): 10 + i for i in range(26)}, "<": 0}
_WEIGHTS = (7, 3, 1)


class MrzFormat(StrEnum):
    TD1 = "TD1"  # 3 lines x 30: identity cards
    TD2 = "TD2"  # 2 lines x 36: older identity cards, some official documents
    TD3 = "TD3"  # 2 lines x 44: passports


_SHAPES = {(3, 30): MrzFormat.TD1, (2, 36): MrzFormat.TD2, (2, 44): MrzFormat.TD3}


def check_digit(data: str) -> str:
    """ICAO 9303 Part 3 check digit: values 0-9, A-Z = 10-35, ``<`` = 0, weights 7-3-1 repeating, mod 10."""
    try:
        total = sum(_VALUES[ch] * _WEIGHTS[i % 3] for i, ch in enumerate(data))
    except KeyError:
        raise FormatError("MRZ: character outside A-Z, 0-9 and '<'", reason="bad_mrz_charset") from None
    return str(total % 10)


@dataclass(frozen=True)
class MrzResult:
    """Fields of one MRZ as read (fillers removed), with the names of the check digits that failed.

    ``issuing_state``/``nationality`` are the codes as written (``D`` for Germany); dates are parsed with the
    century inferred (see :func:`parse_mrz`), ``None`` where the MRZ leaves them unknown (``<``).
    """

    format: MrzFormat
    document_code: str
    issuing_state: str
    surname: str
    given_names: str
    document_number: str
    nationality: str
    birth_date: BirthDate | None
    sex: str | None
    expiry_date: dt.date | None
    optional_data: str
    optional_data_2: str
    failed_checks: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return not self.failed_checks

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.given_names, self.surname) if p)

    def to_record(self, record_id: str, *, flags: frozenset[str] = frozenset()) -> PersonRecord:
        """Canonical record; a code that is no ISO/ICAO country (specimen State ``UTO``) is left out."""
        issuer = country_from_icao(self.issuing_state)
        nationality = country_from_icao(self.nationality)
        doc_type = "passport" if self.document_code.startswith("P") else "identity card"
        if self.document_code.startswith("V"):
            doc_type = "visa"
        documents: tuple[TravelDocument, ...] = ()
        if self.document_number:
            documents = (TravelDocument(doc_type, self.document_number, issuer),)
        return PersonRecord(
            record_id=record_id,
            names=(PersonName(self.full_name, given_names=self.given_names, surname=self.surname),),
            birth_dates=(self.birth_date,) if self.birth_date else (),
            sex=self.sex,
            nationalities=(nationality,) if nationality else (),
            documents=documents,
            flags=flags | ({"mrz_check_failed"} if self.failed_checks else frozenset()),
        )


def _lines(mrz: str | Sequence[str]) -> list[str]:
    raw = mrz.splitlines() if isinstance(mrz, str) else list(mrz)
    if not all(isinstance(line, str) for line in raw):
        raise FormatError("MRZ: lines must be text", reason="bad_mrz_shape")
    # OCR output often carries spaces and lower case; a filler is never a space, so dropping them is safe.
    # Only ASCII is upper-cased: str.upper() maps some non-ASCII letters to A-Z ("ı" -> "I", "ﬀ" -> "FF"),
    # which would smuggle them past the character check and shift every field after them.
    out = []
    for line in raw:
        if line.strip():
            compact = re.sub(r"\s+", "", line)
            out.append(compact.upper() if compact.isascii() else compact)
    return out


def _split_long_number(number: str, number_cd: str, opt: str) -> tuple[str, str, str]:
    """Doc 9303 long document number: a ``<`` check digit says the number continues in the optional field,
    up to its check digit and a ``<``. Without such a continuation the fields are returned unchanged, and
    the ``<`` then fails the document-number check like any other wrong check digit."""
    if number_cd != "<":
        return number, number_cd, opt
    rest = opt.split("<", 1)[0]
    if not rest:
        return number, number_cd, opt
    return number + rest[:-1], rest[-1], opt[len(rest) :]


def _name(field: str) -> tuple[str, str]:
    primary, _, secondary = field.rstrip("<").partition("<<")
    return primary.replace("<", " ").strip(), " ".join(secondary.replace("<", " ").split())


def _check(failed: list[str], name: str, data: str, digit: str, *, optional: bool = False) -> None:
    # An unused optional field may carry '<' (or 0) as its check digit (Doc 9303 Part 4, 4.2.2.1).
    if optional and digit == "<" and set(data) <= {"<"}:
        return
    if digit != check_digit(data):
        failed.append(name)


def _date(
    value: str, line: int, field: str, *, reference: dt.date, past: bool
) -> tuple[int, int | None, int | None] | None:
    if set(value) == {"<"}:
        return None
    yy, mm, dd = value[0:2], value[2:4], value[4:6]
    if not yy.isdigit() or not (mm.isdigit() or mm == "<<") or not (dd.isdigit() or dd == "<<"):
        raise FormatError(f"MRZ line {line}: {field} is not YYMMDD", reason="bad_date")
    month = int(mm) if mm.isdigit() else None
    day = int(dd) if dd.isdigit() and month is not None else None
    m1 = month if month is not None else 1  # unknown month/day ('<<'): checked as the 1st, kept as None
    d1 = day if day is not None else 1
    year = expand_two_digit_year(int(yy), m1, d1, reference=reference, past=past)
    try:
        dt.date(year, m1, d1)  # month 00 / day 00 are not calendar dates
    except ValueError:
        raise FormatError(f"MRZ line {line}: {field} is not a calendar date", reason="bad_date") from None
    return year, month, day


def _sex(ch: str, line: int) -> str | None:
    if ch in ("M", "F"):
        return ch
    if ch in ("<", "X"):
        return None  # unspecified: unknown for matching, not a third value to match on
    raise FormatError(f"MRZ line {line}: sex is not M, F or '<'", reason="bad_sex")


def parse_mrz(
    mrz: str | Sequence[str], *, strict: bool = False, reference_date: dt.date | None = None
) -> MrzResult:
    """Parse and verify one MRZ (TD1, TD2 or TD3, detected from its shape).

    Two-digit years: birth dates take the latest century not after ``reference_date`` (default today),
    expiry dates the nearest century. Wrong shape, characters or dates raise :class:`FormatError`; failed
    check digits are listed in the result, or raise with ``strict=True``.
    """
    lines = _lines(mrz)
    shape = (len(lines), len(lines[0]) if lines else 0)
    fmt = _SHAPES.get(shape)
    if fmt is None or any(len(x) != shape[1] for x in lines):
        lengths = f" of length {[len(x) for x in lines]}" if len(lines) <= 4 else ""  # keep messages short
        raise FormatError(
            f"MRZ: {len(lines)} line(s){lengths}; expected 3x30 (TD1), 2x36 (TD2) or 2x44 (TD3)",
            reason="bad_mrz_shape",
        )
    for i, line in enumerate(lines, 1):
        if not _CHARSET.match(line):
            raise FormatError(f"MRZ line {i}: character outside A-Z, 0-9 and '<'", reason="bad_mrz_charset")
    ref = reference_date or dt.date.today()
    failed: list[str] = []
    if fmt is MrzFormat.TD1:
        l1, l2, l3 = lines
        code, state = l1[0:2], l1[2:5]
        # a long document number continues in the optional field, ending with its check digit
        number, number_cd, opt1 = _split_long_number(l1[5:14], l1[14], l1[15:30])
        _check(failed, "document_number", number, number_cd)
        dob, dob_cd, sex, exp, exp_cd, nat, opt2 = (
            l2[0:6],
            l2[6],
            l2[7],
            l2[8:14],
            l2[14],
            l2[15:18],
            l2[18:29],
        )
        _check(failed, "birth_date", dob, dob_cd)
        _check(failed, "expiry_date", exp, exp_cd)
        _check(failed, "composite", l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29], l2[29])
        name_field, sex_line, date_line = l3, 2, 2
    else:
        l1, l2 = lines
        code, state, name_field = l1[0:2], l1[2:5], l1[5:]
        number, number_cd, nat = l2[0:9], l2[9], l2[10:13]
        dob, dob_cd, sex, exp, exp_cd = l2[13:19], l2[19], l2[20], l2[21:27], l2[27]
        sex_line = date_line = 2
        if fmt is MrzFormat.TD3:
            opt1, opt2 = l2[28:42], ""
            _check(failed, "document_number", number, number_cd)
            _check(failed, "personal_number", opt1, l2[42], optional=True)
            composite = l2[0:10] + l2[13:20] + l2[21:43]
            composite_cd = l2[43]
        else:
            opt2 = ""
            number, number_cd, opt1 = _split_long_number(number, number_cd, l2[28:35])
            _check(failed, "document_number", number, number_cd)
            composite = l2[0:10] + l2[13:20] + l2[21:35]
            composite_cd = l2[35]
        _check(failed, "birth_date", dob, dob_cd)
        _check(failed, "expiry_date", exp, exp_cd)
        _check(failed, "composite", composite, composite_cd)
    if code[0] not in "PIACV":
        raise FormatError("MRZ line 1: document code is not P, I, A, C or V", reason="bad_document_code")
    surname, given = _name(name_field)
    if not (surname or given):
        raise FormatError(f"MRZ line {len(lines)}: name field is empty", reason="missing_name")
    birth = _date(dob, date_line, "date of birth", reference=ref, past=True)
    expiry = _date(exp, date_line, "date of expiry", reference=ref, past=False)
    try:
        birth_date = BirthDate(birth[0], birth[1], birth[2]) if birth else None
    except InvalidInput:
        raise FormatError(f"MRZ line {date_line}: date of birth out of range", reason="bad_date") from None
    result = MrzResult(
        format=fmt,
        document_code=code.rstrip("<"),
        issuing_state=state.replace("<", ""),
        surname=surname,
        given_names=given,
        document_number=number.replace("<", ""),
        nationality=nat.replace("<", ""),
        birth_date=birth_date,
        sex=_sex(sex, sex_line),
        expiry_date=dt.date(expiry[0], expiry[1] or 1, expiry[2] or 1) if expiry else None,
        optional_data=opt1.strip("<"),
        optional_data_2=opt2.strip("<"),
        failed_checks=tuple(failed),
    )
    if strict and failed:
        raise FormatError(f"MRZ: check digit failed for {', '.join(failed)}", reason="bad_check_digit")
    return result


def iter_mrz_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first line number, lines)`` for each blank-line-separated block; ``#`` lines are comments."""
    block: list[str] = []
    start = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if not stripped:
            if block:
                yield start, block
                block = []
            continue
        if not block:
            start = lineno
        block.append(stripped)
    if block:
        yield start, block


def read_mrz_file(
    path: str | Path, *, strict: bool = True, reference_date: dt.date | None = None
) -> ReadResult:
    """Batch of scanned MRZs, one per blank-line-separated block -> records ``mrz-<block>``.

    ``strict=True`` (default): a zone with a failed check digit is rejected, named by block and line.
    ``strict=False``: it is kept with the flag ``mrz_check_failed``. Malformed zones are always rejected.
    """
    p = Path(path)
    raw = read_input_bytes(p)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FormatError(f"{p.name}: line {line}: not valid UTF-8", reason="bad_encoding") from None
    records: list[PersonRecord] = []
    rejected: list[Rejection] = []
    for n, (lineno, lines) in enumerate(iter_mrz_blocks(text), 1):
        where = f"block {n} (line {lineno})"
        try:
            result = parse_mrz(lines, reference_date=reference_date)
        except FormatError as exc:
            rejected.append(Rejection(where, exc.message))
            continue
        if result.failed_checks and strict:
            rejected.append(Rejection(where, f"check digit failed: {', '.join(result.failed_checks)}"))
            continue
        try:
            records.append(result.to_record(f"mrz-{n}"))
        except InvalidInput as exc:
            rejected.append(Rejection(where, exc.message))
    stats = {"read": len(records) + len(rejected), "imported": len(records), "rejected": len(rejected)}
    stats["check_failed_kept"] = sum(1 for r in records if "mrz_check_failed" in r.flags)
    return ReadResult(records=records, rejected=rejected, stats=stats)
