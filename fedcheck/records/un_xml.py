"""Reader for the UN Security Council Consolidated List XML (``sc-sanctions.xsd``) into canonical records.

Individuals become records; entities are counted, not imported (they have no date of birth or travel
documents to screen travellers against). Every alias is kept with its quality. Values the list writes as free
text (nationalities, issuing countries) are mapped to alpha-3 codes where unambiguous; the rest is counted and
warned about, never fatal. Documents with a DOCTYPE or entity declarations are refused outright: the official
file has none, and refusing them closes entity-expansion attacks without a third-party parser.

Two independent guards do this: a byte scan before parsing (any encoding expat accepts writes ``<!DOCTYPE``
as those ASCII bytes, except UTF-16/32, which are refused), and a parser target that aborts at the start of
any DOCTYPE declaration, before an internal subset could declare an entity. ElementTree never fetches
external DTDs or entities, and expat >= 2.4 caps entity amplification on its own as well.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from fedcheck.errors import FormatError, InvalidRecord
from fedcheck.records._countries import NAME_TO_CODE
from fedcheck.records.io import ReadResult, Rejection, read_input_bytes
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument
from fedcheck.records.normalise import detect_script

__all__ = ["UN_STAT_KEYS", "country_code_from_name", "read_un_xml"]

#: Counters in ``ReadResult.stats`` for this format.
UN_STAT_KEYS = (
    "read", "imported", "rejected", "individuals", "entities", "aliases", "aliases_good", "aliases_low",
    "documents", "documents_with_number", "documents_imported", "documents_without_issuer", "dates_of_birth",
    "dates_unparsed", "nationalities", "nationalities_unmapped", "names_original_script",
)  # fmt: skip

_WS_RE = re.compile(r"\s+")
_PAREN_RE = re.compile(r"\([^)]*\)")
_DATE_PREFIX_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
_NAT_NOISE = ("possibly ", "passport", "by birth", "national", "citizen")
_NAT_REFUSE = ("revoked", "withdrawn", "unknown", "until")
#: the encoding named by an XML declaration (``<?xml version="1.0" encoding="..."?>``), if any
_XML_DECL_ENCODING_RE = re.compile(
    rb"""\A(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]*?\bencoding\s*=\s*["']([^"']*)["']"""
)
_UTF8_NAMES = frozenset({b"utf-8", b"utf8", b"us-ascii", b"ascii"})


class _DoctypeRefused(Exception):
    """Raised from the parser target when expat reports the start of a DOCTYPE declaration."""


class _NoDoctypeBuilder(ET.TreeBuilder):
    """A TreeBuilder that refuses DOCTYPE declarations (and so any entity declaration) while parsing."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise _DoctypeRefused


def _parse(data: bytes, name: str) -> ET.Element:
    parser = ET.XMLParser(target=_NoDoctypeBuilder())
    try:
        parser.feed(data)
        return parser.close()
    except _DoctypeRefused:
        raise FormatError(
            f"{name}: DOCTYPE/ENTITY declarations are not accepted", reason="xml_doctype"
        ) from None
    except ET.ParseError as e:
        line, col = e.position
        raise FormatError(f"{name}: line {line} column {col}: malformed XML", reason="bad_xml") from None
    except RecursionError:
        raise FormatError(f"{name}: XML nested too deep", reason="bad_xml") from None
    except (LookupError, ValueError):  # expat asks Python for a declared encoding it does not know
        raise FormatError(f"{name}: XML declares an unknown encoding", reason="bad_encoding") from None


def _text(el: ET.Element | None) -> str:
    if el is None or el.text is None:
        return ""
    return _WS_RE.sub(" ", el.text).strip()


def _key(name: str) -> str:
    return " ".join("".join(ch if ch.isalnum() else " " for ch in name.casefold()).split())


def country_code_from_name(text: str) -> str | None:
    """Alpha-3 code for an English country name or demonym as written in UN lists, or None.

    Tries the text as written, then without parenthesised notes, then its first sentence, then without noise
    words ("Possibly", "passport", "by birth"). Refuses texts that say the nationality was revoked/withdrawn.
    """
    t = _WS_RE.sub(" ", text).strip()
    if not t:
        return None
    low = t.casefold()
    if any(w in low for w in _NAT_REFUSE):
        return None
    candidates = [t, _PAREN_RE.sub("", t), t.split(".")[0]]
    stripped = low
    for w in _NAT_NOISE:
        stripped = stripped.replace(w, " ")
    candidates.append(stripped)
    for c in candidates:
        code = NAME_TO_CODE.get(_key(c))
        if code:
            return code
    return None


def _birth_date(el: ET.Element) -> BirthDate | None:
    kind = _text(el.find("TYPE_OF_DATE")).upper()
    date, year = _text(el.find("DATE")), _text(el.find("YEAR"))
    y_from, y_to = _text(el.find("FROM_YEAR")), _text(el.find("TO_YEAR"))
    if kind == "BETWEEN" or (y_from and y_to):
        if y_from and y_to:
            return BirthDate.parse(f"{y_from}/{y_to}")
        return None
    if date:
        m = _DATE_PREFIX_RE.match(date)  # some dates carry a time-zone suffix: 1960-01-01-05:00
        return BirthDate.parse(m.group(1) if m else date)
    if year:
        return BirthDate.parse(year)
    return None


def _individual(ind: ET.Element, where: str, res: ReadResult, st: Counter[str]) -> PersonRecord:
    dataid = _text(ind.find("DATAID"))
    if not dataid:
        raise InvalidRecord("DATAID: missing", reason="empty_field")
    names: list[PersonName] = []
    parts = [_text(ind.find(t)) for t in ("FIRST_NAME", "SECOND_NAME", "THIRD_NAME", "FOURTH_NAME")]
    primary = " ".join(p for p in parts if p)
    if primary:
        names.append(PersonName(primary, script=detect_script(primary)))
    original = _text(ind.find("NAME_ORIGINAL_SCRIPT"))
    if original:
        st["names_original_script"] += 1
        names.append(PersonName(original, script=detect_script(original)))
    for alias in ind.findall("INDIVIDUAL_ALIAS"):
        text = _text(alias.find("ALIAS_NAME"))
        if not text:
            continue
        quality = _text(alias.find("QUALITY")).casefold()
        st["aliases"] += 1
        st[
            "aliases_good" if quality == "good" else "aliases_low" if quality == "low" else "aliases_other"
        ] += 1
        try:
            names.append(
                PersonName(text, script=detect_script(text), quality="low" if quality == "low" else "good")
            )
        except InvalidRecord as e:
            res.warnings.append(Rejection(f"{where} alias", e.message))
    if not names:
        raise InvalidRecord("names: individual has no name", reason="empty_field")

    dates: list[BirthDate] = []
    for i, el in enumerate(ind.findall("INDIVIDUAL_DATE_OF_BIRTH")):
        st["dates_of_birth"] += 1
        try:
            d = _birth_date(el)
        except InvalidRecord as e:
            d = None
            res.warnings.append(Rejection(f"{where} INDIVIDUAL_DATE_OF_BIRTH {i + 1}", e.message))
        if d is None:
            st["dates_unparsed"] += 1
        else:
            dates.append(d)

    nats: list[str] = []
    for el in ind.findall("NATIONALITY/VALUE"):
        text = _text(el)
        if not text:
            continue
        st["nationalities"] += 1
        code = country_code_from_name(text)
        if code is None:
            st["nationalities_unmapped"] += 1
            res.warnings.append(
                Rejection(f"{where} NATIONALITY", "nationality not mapped to an alpha-3 code")
            )
        else:
            nats.append(code)

    docs: list[TravelDocument] = []
    for i, el in enumerate(ind.findall("INDIVIDUAL_DOCUMENT")):
        st["documents"] += 1
        number = _text(el.find("NUMBER"))
        if not number:
            continue
        st["documents_with_number"] += 1
        doc_type = " ".join(
            t for t in (_text(el.find("TYPE_OF_DOCUMENT")), _text(el.find("TYPE_OF_DOCUMENT2"))) if t
        )
        country = _text(el.find("ISSUING_COUNTRY")) or _text(el.find("COUNTRY_OF_ISSUE"))
        issuer = country_code_from_name(country) if country else None
        if issuer is None:
            st["documents_without_issuer"] += 1
        try:
            docs.append(TravelDocument(doc_type[:64], number[:64], issuer))
            st["documents_imported"] += 1
        except InvalidRecord as e:
            res.warnings.append(Rejection(f"{where} INDIVIDUAL_DOCUMENT {i + 1}", e.message))

    pob = ""
    for el in ind.findall("INDIVIDUAL_PLACE_OF_BIRTH"):
        parts = [_text(el.find(t)) for t in ("CITY", "STATE_PROVINCE", "COUNTRY")]
        pob = ", ".join(p for p in parts if p)
        if pob:
            break
    gender = _text(ind.find("GENDER")).casefold()
    sex = {"male": "M", "female": "F"}.get(gender)
    listed = _text(ind.find("LISTED_ON"))
    m = _DATE_PREFIX_RE.match(listed)
    return PersonRecord(
        record_id=f"unsc:{dataid}",
        names=tuple(dict.fromkeys(names)),
        birth_dates=tuple(dates),
        sex=sex,
        nationalities=tuple(nats),
        place_of_birth=pob[:512],
        documents=tuple(docs),
        label=Label(
            category=_text(ind.find("UN_LIST_TYPE"))[:128],
            reference=_text(ind.find("REFERENCE_NUMBER"))[:128],
            listing_date=m.group(1) if m else "",
            extra=(("source", "un-sc"),),
        ),
    )


def read_un_xml(path: str | os.PathLike[str]) -> ReadResult:
    """Read a UN SC Consolidated List XML file. ``stats`` carries the counters in :data:`UN_STAT_KEYS`."""
    p = Path(path)
    data = read_input_bytes(p)
    if b"\x00" in data[:4096]:  # UTF-16/32 would hide a DOCTYPE from the byte scan below; the list is UTF-8
        raise FormatError(f"{p.name}: only UTF-8 XML is accepted", reason="bad_encoding")
    declared = _XML_DECL_ENCODING_RE.match(data[:1024])
    if declared and declared.group(1).strip().lower() not in _UTF8_NAMES:
        # expat would otherwise decode through any single-byte Python codec the file names
        raise FormatError(
            f"{p.name}: only UTF-8 XML is accepted (declared another encoding)", reason="bad_encoding"
        )
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise FormatError(f"{p.name}: DOCTYPE/ENTITY declarations are not accepted", reason="xml_doctype")
    root = _parse(data, p.name)
    if root.tag != "CONSOLIDATED_LIST":
        raise FormatError(f"{p.name}: root element is not CONSOLIDATED_LIST", reason="bad_xml")
    st: Counter[str] = Counter({k: 0 for k in UN_STAT_KEYS})
    res = ReadResult([], [])
    st["entities"] = len(root.findall("ENTITIES/ENTITY"))
    seen: set[str] = set()
    for n, ind in enumerate(root.findall("INDIVIDUALS/INDIVIDUAL"), start=1):
        st["individuals"] += 1
        st["read"] += 1
        where = f"INDIVIDUAL {n}"
        dataid = _text(ind.find("DATAID"))
        if dataid and dataid.isdigit():
            where += f" (DATAID {dataid})"
        try:
            rec = _individual(ind, where, res, st)
        except InvalidRecord as e:
            res.rejected.append(Rejection(where, e.message))
            continue
        if rec.record_id in seen:
            res.rejected.append(Rejection(where, "DATAID: duplicate of an earlier individual"))
            continue
        seen.add(rec.record_id)
        res.records.append(rec)
    st["imported"] = len(res.records)
    st["rejected"] = len(res.rejected)
    res.stats = dict(st)
    return res
