"""UN/EDIFACT PAXLST (Advance Passenger Information) reader -> canonical :class:`PersonRecord` travellers.

Follows the WCO/IATA/ICAO PAXLST message implementation guide (D02B/D05B): UNA/UNB/UNG/UNH envelope, flight
legs in segment groups 2-3 (TDT+20, LOC+125/87/92, DTM+189/232), one traveller per NAD+FL/FM/DDT/DDU
group 4 (ATT+2 sex, DTM+329 birth date, NAT+2 nationality, LOC+180 place of birth) with its travel documents
in group 5 (DOC, DTM+36 expiry, LOC+91 issuing State). Envelope counts (UNT, UNZ) and references are verified.

A malformed message raises :class:`fedcheck.errors.FormatError` naming the segment (position and tag) and what
is wrong. Messages never echo data values: API data are personal data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedcheck.errors import FormatError, InvalidInput
from fedcheck.formats._common import country_from_icao, expand_two_digit_year
from fedcheck.records.io import ReadResult, Rejection, read_input_bytes
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument

__all__ = [
    "FlightLeg",
    "PaxlstHeader",
    "PaxlstMessage",
    "Segment",
    "Separators",
    "Traveller",
    "parse_paxlst",
    "read_paxlst",
    "split_segments",
]

#: NAD party function codes that open a traveller group (group 4). MS (reporting party, group 1) is not one.
TRAVELLER_CODES = frozenset({"FL", "FM", "DDT", "DDU", "COT"})
#: BGM document name codes: passenger list / crew list.
CREW_LIST = "250"
#: DOC document name code (IATA code set) -> ``TravelDocument.doc_type`` text that
#: :func:`fedcheck.records.normalise.document_class` classifies; unknown codes are kept as written.
DOC_TYPES = {
    "P": "passport",
    "PT": "passport",
    "IP": "passport card",
    "I": "identity card",
    "A": "identity card",
    "C": "identity card",
    "ID": "identity card",
    "V": "visa",
    "AC": "crew member certificate",
    "M": "military identification",
    "F": "approved non-standard travel document",
}


@dataclass(frozen=True)
class Separators:
    """The six service characters of a UNA segment (defaults are syntax level A's)."""

    component: str = ":"
    element: str = "+"
    decimal: str = "."
    release: str = "?"
    repetition: str = " "
    segment: str = "'"

    @classmethod
    def from_una(cls, una: str) -> Separators:
        """Validate ``UNA`` + six characters; reject separators that would make the message ambiguous."""
        if len(una) != 9 or not una.startswith("UNA"):
            raise FormatError("UNA: service string advice must be 'UNA' plus 6 characters", reason="bad_una")
        comp, elem, dec, rel, rep, seg = (una[i] for i in range(3, 9))
        used = [comp, elem, seg] + ([rel] if rel != " " else [])
        if len(set(used)) != len(used):
            raise FormatError("UNA: separators are not distinct", reason="bad_separators")
        if any(c.isalnum() or c in "\r\n" or c == " " for c in (comp, elem, seg)):
            raise FormatError("UNA: unknown separators (letters, digits or blanks)", reason="bad_separators")
        if rel != " " and rel.isalnum():
            raise FormatError("UNA: unknown release character", reason="bad_separators")
        if dec not in ".,":
            raise FormatError("UNA: decimal notation must be '.' or ','", reason="bad_separators")
        return cls(comp, elem, dec, "" if rel == " " else rel, rep, seg)


@dataclass(frozen=True)
class Segment:
    """One segment: ``elements[i][j]`` is component ``j`` of data element ``i`` (tag excluded).

    ``index`` counts segments from 1 at the first segment after UNA, the position an error message names.
    """

    tag: str
    elements: tuple[tuple[str, ...], ...]
    index: int

    def get(self, element: int, component: int = 0) -> str:
        """Component value, ``""`` when absent (EDIFACT omits trailing empty elements)."""
        if element < len(self.elements) and component < len(self.elements[element]):
            return self.elements[element][component]
        return ""

    def where(self) -> str:
        return f"segment {self.index} ({self.tag})"


@dataclass(frozen=True)
class FlightLeg:
    """One TDT+20 transport stage with its departure and arrival locations (IATA airport codes) and times."""

    carrier: str
    flight_number: str
    departure_airport: str = ""
    departure_time: dt.datetime | None = None
    arrival_airport: str = ""
    arrival_time: dt.datetime | None = None


@dataclass(frozen=True)
class PaxlstHeader:
    """Envelope and message-level facts of one PAXLST message (no personal data)."""

    sender: str
    recipient: str
    interchange_ref: str
    prepared: dt.datetime | None
    message_ref: str
    version: str  # e.g. "D:05B"
    document_code: str  # BGM: 745 passenger list, 250 crew list, ...
    flights: tuple[FlightLeg, ...] = ()


@dataclass(frozen=True)
class Traveller:
    """A group-4 traveller: its position, NAD role code, canonical record and per-document expiry dates."""

    position: int
    role: str
    record: PersonRecord
    document_expiry: tuple[dt.date | None, ...] = ()


@dataclass(frozen=True)
class PaxlstMessage:
    header: PaxlstHeader
    travellers: tuple[Traveller, ...]
    #: non-fatal findings, naming segments only (e.g. a nationality code that is not ISO 3166-1)
    warnings: tuple[str, ...] = ()

    @property
    def records(self) -> list[PersonRecord]:
        return [t.record for t in self.travellers]


def _detect_separators(text: str) -> tuple[Separators, int]:
    if text.startswith("UNA"):
        return Separators.from_una(text[:9]), 9
    return Separators(), 0


def split_segments(text: str) -> tuple[Separators, list[Segment]]:
    """Tokenise an interchange honouring UNA separators and the release character.

    Line breaks between segments are tolerated (many senders wrap after each terminator).
    """
    text = text.lstrip("\ufeff \r\n\t")
    seps, pos = _detect_separators(text)
    segments: list[Segment] = []
    elements: list[tuple[str, ...]] = []
    components: list[str] = []
    buf: list[str] = []
    at_start = True
    n = len(text)
    i = pos
    while i < n:
        ch = text[i]
        if at_start and ch in "\r\n\t ":
            i += 1
            continue
        at_start = False
        if seps.release and ch == seps.release:
            if i + 1 >= n:
                raise FormatError(
                    f"truncated message: release character at end after segment {len(segments)}",
                    reason="truncated",
                )
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == seps.component:
            components.append("".join(buf))
            buf = []
        elif ch == seps.element:
            components.append("".join(buf))
            elements.append(tuple(components))
            buf, components = [], []
        elif ch == seps.segment:
            components.append("".join(buf))
            elements.append(tuple(components))
            segments.append(_make_segment(elements, len(segments) + 1))
            buf, components, elements = [], [], []
            at_start = True
        else:
            buf.append(ch)
        i += 1
    if (buf or components or elements) and not segments:
        raise FormatError(
            "segment 1: no segment terminator (unknown separators without UNA?)", reason="bad_separators"
        )
    if buf or components or elements:
        raise FormatError(
            f"truncated message: segment {len(segments) + 1} has no segment terminator", reason="truncated"
        )
    if not segments:
        raise FormatError("empty message: no segments", reason="truncated")
    return seps, segments


def _make_segment(elements: list[tuple[str, ...]], index: int) -> Segment:
    tag_elem = elements[0]
    tag = tag_elem[0]
    if len(tag) != 3 or not tag.isalnum() or not tag.isupper() or len(tag_elem) != 1:
        raise FormatError(
            f"segment {index}: not a segment tag (unknown separators or corrupt data)", reason="bad_segment"
        )
    return Segment(tag, tuple(elements[1:]), index)


_DATE_FORMATS = {"101": 6, "102": 8, "201": 10, "203": 12, "204": 14}


def _is_digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts "²" (``int`` refuses it) and other scripts' digits."""
    return text.isascii() and text.isdigit()


def _parse_dtm(seg: Segment, *, reference: dt.date, past: bool) -> tuple[int, int, int, int, int]:
    """DTM composite -> (year, month, day, hour, minute) with the century inferred for 2-digit years."""
    value, fmt = seg.get(0, 1), seg.get(0, 2)
    if fmt and fmt not in _DATE_FORMATS:
        raise FormatError(f"{seg.where()}: unsupported date/time format code", reason="bad_date")
    if (
        not _is_digits(value)
        or (fmt and len(value) != _DATE_FORMATS[fmt])
        or len(value) not in (6, 8, 10, 12, 14)
    ):
        raise FormatError(f"{seg.where()}: date is not in a PAXLST date format", reason="bad_date")
    full_year = len(value) in (8, 12, 14)
    if full_year:
        year, rest = int(value[:4]), value[4:]
    else:
        year, rest = int(value[:2]), value[2:]
    month, day = int(rest[0:2]), int(rest[2:4])
    hour = int(rest[4:6]) if len(rest) >= 6 else 0
    minute = int(rest[6:8]) if len(rest) >= 8 else 0
    if not full_year:
        year = expand_two_digit_year(year, month, day, reference=reference, past=past)
    try:
        dt.datetime(year, month, day, hour, minute)
    except ValueError:
        raise FormatError(f"{seg.where()}: not a calendar date/time", reason="bad_date") from None
    return year, month, day, hour, minute


def _envelope(segments: list[Segment]) -> Iterator[tuple[Segment | None, list[Segment]]]:
    """Check UNB/UNG/UNH/UNT/UNE/UNZ nesting and counts; yield (UNB, message segments UNH..UNT)."""
    unb: Segment | None = None
    unz_seen = False
    ung: Segment | None = None
    messages_in_interchange = 0
    groups_in_interchange = 0
    messages_in_group = 0
    current: list[Segment] | None = None
    for seg in segments:
        if unz_seen:
            raise FormatError(f"{seg.where()}: segment after UNZ", reason="bad_envelope")
        if current is not None:
            if seg.tag in ("UNB", "UNZ", "UNG", "UNE"):
                raise FormatError(
                    f"truncated message: {seg.where()} before UNT of message at segment {current[0].index}",
                    reason="truncated",
                )
            if seg.tag == "UNH":
                raise FormatError(
                    f"{seg.where()}: UNH inside message opened at segment {current[0].index} (missing UNT)",
                    reason="missing_unt",
                )
            current.append(seg)
            if seg.tag == "UNT":
                _check_unt(current)
                messages_in_interchange += 1
                messages_in_group += 1
                yield unb, current
                current = None
            continue
        if seg.tag == "UNB":
            if unb is not None or seg.index != 1:
                raise FormatError(f"{seg.where()}: UNB must open the interchange once", reason="bad_envelope")
            unb = seg
        elif seg.tag == "UNG":
            if ung is not None:
                raise FormatError(
                    f"{seg.where()}: UNG inside an open functional group", reason="bad_envelope"
                )
            ung, messages_in_group = seg, 0
        elif seg.tag == "UNE":
            if ung is None:
                raise FormatError(f"{seg.where()}: UNE without UNG", reason="bad_envelope")
            if seg.get(0) != str(messages_in_group) or seg.get(1) != ung.get(4):
                raise FormatError(
                    f"{seg.where()}: message count or group reference does not match UNG",
                    reason="count_mismatch",
                )
            ung = None
            groups_in_interchange += 1
        elif seg.tag == "UNH":
            current = [seg]
        elif seg.tag == "UNZ":
            if unb is None:
                raise FormatError(f"{seg.where()}: UNZ without UNB", reason="bad_envelope")
            if ung is not None:
                raise FormatError(f"{seg.where()}: UNZ before UNE", reason="truncated")
            expected = groups_in_interchange or messages_in_interchange
            if seg.get(0) != str(expected):
                raise FormatError(
                    f"{seg.where()}: control count does not match the {expected} message(s)/group(s) sent",
                    reason="count_mismatch",
                )
            if seg.get(1) != unb.get(4):
                raise FormatError(
                    f"{seg.where()}: control reference does not match UNB", reason="ref_mismatch"
                )
            unz_seen = True
        else:
            raise FormatError(f"{seg.where()}: segment outside a message (missing UNH)", reason="missing_unh")
    if current is not None:
        raise FormatError(
            f"truncated message: message opened at segment {current[0].index} has no UNT", reason="truncated"
        )
    if messages_in_interchange == 0:
        raise FormatError("no message: missing UNH", reason="missing_unh")
    if unb is not None and not unz_seen:
        raise FormatError("truncated interchange: UNB has no UNZ", reason="truncated")
    if ung is not None:
        raise FormatError("truncated interchange: UNG has no UNE", reason="truncated")


def _check_unt(message: list[Segment]) -> None:
    unh, unt = message[0], message[-1]
    count = unt.get(0)
    valid = _is_digits(count) and len(count) <= 10
    if not (valid and int(count) == len(message)):
        shown = count if valid else "(not a count)" if count else "(none)"
        raise FormatError(
            f"{unt.where()}: segment count {shown} does not match the {len(message)} segments "
            f"from UNH (segment {unh.index}) to UNT",
            reason="count_mismatch",
        )
    if unt.get(1) != unh.get(0):
        raise FormatError(f"{unt.where()}: message reference does not match UNH", reason="ref_mismatch")


@dataclass
class _TravellerBuilder:
    position: int
    role: str
    nad: Segment
    surname: str = ""
    given: str = ""
    sex: str | None = None
    birth: BirthDate | None = None
    nationalities: list[str] = field(default_factory=list)
    place_of_birth: str = ""
    documents: list[TravelDocument] = field(default_factory=list)
    expiry: list[dt.date | None] = field(default_factory=list)
    # the document group (5) currently open: (code, number, issuer, expiry), opened by segment ``doc_seg``
    doc: list[str | dt.date | None] | None = None
    doc_seg: Segment | None = None

    def close_doc(self) -> None:
        if self.doc is None:
            return
        code, number, issuer, expiry = self.doc
        assert isinstance(code, str) and isinstance(number, str)
        if number:
            try:
                document = TravelDocument(
                    DOC_TYPES.get(code, code or "other"), number, issuer if isinstance(issuer, str) else None
                )
            except InvalidInput as exc:
                where = self.doc_seg.where() if self.doc_seg is not None else self.nad.where()
                raise FormatError(f"{where}: {exc.message}", reason=exc.reason) from None
            self.documents.append(document)
            self.expiry.append(expiry if isinstance(expiry, dt.date) else None)
        self.doc = None
        self.doc_seg = None


_SEX_CODES = {"M": "M", "F": "F", "X": "X"}


def parse_paxlst(text: str, *, reference_date: dt.date | None = None) -> list[PaxlstMessage]:
    """Parse every PAXLST message of an interchange.

    ``reference_date`` anchors the century of two-digit years; by default the UNB preparation date, else
    today. Birth dates take the latest century not after it; document and flight dates the nearest century.
    """
    _seps, segments = split_segments(text)
    out: list[PaxlstMessage] = []
    for unb, message in _envelope(segments):
        out.append(_parse_message(unb, message, reference_date))
    return out


def _parse_message(
    unb: Segment | None, message: list[Segment], reference_date: dt.date | None
) -> PaxlstMessage:
    unh = message[0]
    if unh.get(1, 0) != "PAXLST":
        raise FormatError(f"{unh.where()}: message type is not PAXLST", reason="not_paxlst")
    today = reference_date or dt.date.today()
    prepared: dt.datetime | None = None
    if unb is not None and unb.get(3):
        stamp = unb.get(3) + (unb.get(3, 1) or "0000")
        dseg = Segment("UNB", (("", stamp, "201" if len(stamp) == 10 else "203"),), unb.index)
        y, mo, d, h, mi = _parse_dtm(dseg, reference=today, past=False)
        prepared = dt.datetime(y, mo, d, h, mi)
    reference = reference_date or (prepared.date() if prepared else today)

    warnings: list[str] = []
    document_code = ""
    flights: list[FlightLeg] = []
    leg: FlightLeg | None = None
    travellers: list[_TravellerBuilder] = []
    cur: _TravellerBuilder | None = None

    def close_leg() -> None:
        nonlocal leg
        if leg is not None:
            flights.append(leg)
            leg = None

    for seg in message[1:-1]:
        tag = seg.tag
        if tag == "BGM":
            document_code = seg.get(0)
        elif tag == "NAD":
            code = seg.get(0)
            if code in TRAVELLER_CODES:
                close_leg()
                if cur is not None:
                    cur.close_doc()
                cur = _TravellerBuilder(len(travellers) + 1, code, seg)
                travellers.append(cur)
                _read_name(cur, seg)
            elif cur is not None:  # MS (reporting party) and contacts before travellers are skipped
                raise FormatError(
                    f"{seg.where()}: unknown party function code in traveller list", reason="bad_nad"
                )
        elif cur is None:
            if tag == "TDT":
                close_leg()
                if seg.get(0) != "20":
                    warnings.append(f"{seg.where()}: transport stage qualifier is not 20 (main carriage)")
                leg = FlightLeg(carrier=seg.get(4) or seg.get(1)[:2], flight_number=seg.get(1))
            elif tag == "LOC" and leg is not None:
                qual = seg.get(0)
                if qual == "125" or (qual == "92" and not leg.departure_airport):
                    leg = replace(leg, departure_airport=seg.get(1))
                elif qual in ("87", "92") or (qual == "130" and not leg.arrival_airport):
                    leg = replace(leg, arrival_airport=seg.get(1))
            elif tag == "DTM" and leg is not None and seg.get(0) in ("189", "232"):
                y, mo, d, h, mi = _parse_dtm(seg, reference=reference, past=False)
                when = dt.datetime(y, mo, d, h, mi)
                leg = (
                    replace(leg, departure_time=when)
                    if seg.get(0) == "189"
                    else replace(leg, arrival_time=when)
                )
        else:
            _traveller_segment(cur, seg, reference, warnings)
    close_leg()
    if cur is not None:
        cur.close_doc()

    header = PaxlstHeader(
        sender=unb.get(1) if unb else "",
        recipient=unb.get(2) if unb else "",
        interchange_ref=unb.get(4) if unb else "",
        prepared=prepared,
        message_ref=unh.get(0),
        version=":".join(c for c in unh.elements[1][1:3] if c) if len(unh.elements) > 1 else "",
        document_code=document_code,
        flights=tuple(flights),
    )
    crew_list = document_code == CREW_LIST
    built = tuple(_finish(t, header, crew_list) for t in travellers)
    return PaxlstMessage(header, built, tuple(warnings))


def _read_name(cur: _TravellerBuilder, nad: Segment) -> None:
    """C080 party name: surname, then given names (guideline: ``NAD+FL+++DOE:JOHN:WAYNE``)."""
    parts = [p.strip() for p in (nad.elements[3] if len(nad.elements) > 3 else ())]
    if parts and parts[0]:
        cur.surname = parts[0]
        cur.given = " ".join(p for p in parts[1:5] if p)
    else:
        unstructured = " ".join(p.strip() for p in (nad.elements[2] if len(nad.elements) > 2 else ()) if p)
        cur.surname = unstructured
    if not (cur.surname or cur.given):
        raise FormatError(f"{nad.where()}: traveller has no name", reason="missing_name")


def _traveller_segment(cur: _TravellerBuilder, seg: Segment, reference: dt.date, warnings: list[str]) -> None:
    tag, qual = seg.tag, seg.get(0)
    if tag == "DOC":
        cur.close_doc()
        number = seg.get(1)
        if not number:
            raise FormatError(f"{seg.where()}: document number missing", reason="missing_document_number")
        cur.doc = [seg.get(0).upper(), number.strip().upper(), None, None]
        cur.doc_seg = seg
    elif tag == "ATT" and qual == "2":
        code = seg.get(2).upper()
        if code not in ("M", "F", "U", "X"):
            raise FormatError(f"{seg.where()}: sex code is not M, F, U or X", reason="bad_sex")
        cur.sex = _SEX_CODES.get(code)
    elif tag == "DTM" and qual == "329":
        y, mo, d, _h, _m = _parse_dtm(seg, reference=reference, past=True)
        try:
            cur.birth = BirthDate(y, mo, d)
        except InvalidInput:
            raise FormatError(f"{seg.where()}: date of birth out of range", reason="bad_date") from None
    elif tag == "DTM" and qual == "36" and cur.doc is not None:
        y, mo, d, _h, _m = _parse_dtm(seg, reference=reference, past=False)
        cur.doc[3] = dt.date(y, mo, d)
    elif tag == "LOC" and qual == "91" and cur.doc is not None:
        issuer = country_from_icao(seg.get(1))
        if issuer is None:
            warnings.append(f"{seg.where()}: issuing State is not an ISO 3166-1 alpha-3 code; left out")
        cur.doc[2] = issuer
    elif tag == "NAT" and qual in ("2", ""):
        nat = country_from_icao(seg.get(1))
        if nat is None:
            warnings.append(f"{seg.where()}: nationality is not an ISO 3166-1 alpha-3 code; left out")
        elif nat not in cur.nationalities:
            cur.nationalities.append(nat)
    elif tag == "LOC" and qual == "180":
        # place of birth: country code and/or a place name in C517 component 4
        cur.place_of_birth = " ".join(x for x in (seg.get(1, 3), seg.get(1, 0)) if x).strip()


def _finish(t: _TravellerBuilder, header: PaxlstHeader, crew_list: bool) -> Traveller:
    full = " ".join(x for x in (t.given, t.surname) if x)
    flags = set()
    if t.role in ("FM", "DDU", "COT") or crew_list:
        flags.add("crew")
    if t.role in ("DDT", "DDU"):
        flags.add("transit")
    try:
        record = PersonRecord(
            record_id=f"{header.message_ref}/{t.position}",
            names=(PersonName(full, given_names=t.given, surname=t.surname),),
            birth_dates=(t.birth,) if t.birth else (),
            sex=t.sex,
            nationalities=tuple(t.nationalities),
            place_of_birth=t.place_of_birth,
            documents=tuple(t.documents),
            label=Label(),
            flags=frozenset(flags),
        )
    except InvalidInput as exc:  # e.g. a name over 512 characters or with control characters
        raise FormatError(
            f"{t.nad.where()}: traveller {t.position}: {exc.message}", reason=exc.reason
        ) from None
    return Traveller(t.position, t.role, record, tuple(t.expiry))


def read_paxlst(path: str | Path, *, reference_date: dt.date | None = None) -> ReadResult:
    """Read a PAXLST interchange file (all its messages) as canonical records; malformed -> FormatError."""
    p = Path(path)
    raw = read_input_bytes(p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # UNOC/UNOD level syntax; letters only matter for names
    records: list[PersonRecord] = []
    warnings: list[Rejection] = []
    messages = parse_paxlst(text, reference_date=reference_date)
    for message in messages:
        records.extend(message.records)
        for w in message.warnings:
            where, _, reason = w.partition(": ")
            warnings.append(Rejection(f"message {message.header.message_ref} {where}", reason))
    stats = {"read": len(records), "imported": len(records), "rejected": 0, "messages": len(messages)}
    return ReadResult(records=records, rejected=[], stats=stats, warnings=warnings)
