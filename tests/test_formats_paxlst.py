"""PAXLST: guideline-shaped messages parse into travellers; malformed ones fail naming the segment."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fedcheck.errors import FormatError
from fedcheck.formats import read_external, read_manifest, sniff_manifest_format
from fedcheck.formats.paxlst import Separators, parse_paxlst, read_paxlst, split_segments
from fedcheck.records.model import BirthDate

DATA = Path(__file__).parent / "data" / "formats"
PASSENGERS = (DATA / "paxlst_d05b_passengers.edi").read_text()
CUSTOM = (DATA / "paxlst_custom_separators.edi").read_text()
NAMES = ("DOE", "BRIEN", "ROSSI", "JONES")


def _fails(text: str, reason: str, where: str) -> FormatError:
    with pytest.raises(FormatError) as exc:
        parse_paxlst(text)
    assert exc.value.reason == reason, exc.value.message
    assert where in exc.value.message
    for name in NAMES:
        assert name not in exc.value.message
    return exc.value


def test_passenger_message_header_and_flight() -> None:
    (msg,) = parse_paxlst(PASSENGERS)
    h = msg.header
    assert (h.sender, h.recipient, h.interchange_ref, h.message_ref) == (
        "APIS*ABE",
        "USADHS",
        "000000001",
        "PAX001",
    )
    assert h.version == "D:05B" and h.document_code == "745"
    assert h.prepared == dt.datetime(2007, 4, 29, 9, 0)
    (leg,) = h.flights
    assert (leg.carrier, leg.flight_number, leg.departure_airport, leg.arrival_airport) == (
        "UA",
        "UA123",
        "YVR",
        "JFK",
    )
    assert leg.departure_time == dt.datetime(2007, 4, 29, 12, 30)
    assert leg.arrival_time == dt.datetime(2007, 4, 29, 16, 0)


def test_passenger_message_travellers() -> None:
    (msg,) = parse_paxlst(PASSENGERS)
    assert [t.role for t in msg.travellers] == ["FL", "FL", "DDT"]
    doe, obrien, rossi = msg.records
    assert doe.record_id == "PAX001/1"
    assert (doe.names[0].surname, doe.names[0].given_names) == ("DOE", "JOHN WAYNE")
    assert doe.birth_dates == (BirthDate(1957, 1, 21),)  # YYMMDD, century from the message date
    assert doe.sex == "M" and doe.nationalities == ("CAN",)
    assert [(d.doc_type, d.number, d.issuer) for d in doe.documents] == [("passport", "MB140241", "CAN")]
    assert msg.travellers[0].document_expiry == (dt.date(2008, 10, 21),)
    # release character: ?' is a literal apostrophe inside the name
    assert obrien.names[0].surname == "O'BRIEN" and obrien.names[0].given_names == "MARY ANNE"
    assert obrien.birth_dates == (BirthDate(2005, 3, 15),)
    assert [d.doc_type for d in obrien.documents] == ["passport", "visa"]
    assert [d.issuer for d in obrien.documents] == ["IRL", "USA"]
    assert obrien.place_of_birth == "CORK IRL"
    # CCYYMMDD with format code 102, unknown sex, in-transit flag
    assert rossi.birth_dates == (BirthDate(1988, 11, 30),) and rossi.sex is None
    assert rossi.documents[0].doc_type == "identity card" and "transit" in rossi.flags


def test_custom_separators_and_release_characters() -> None:
    seps, _ = split_segments(CUSTOM)
    assert seps == Separators("|", "*", ".", "#", " ", "!")
    (msg,) = parse_paxlst(CUSTOM)
    (crew,) = msg.records
    assert crew.names[0].surname == "SMITH*JONES"  # released element separator
    assert crew.names[0].given_names == "ANNA B!Z|?"  # released terminator, component separator, '?'
    assert crew.birth_dates == (BirthDate(1999, 2, 28),)  # 99 is 1999, not 2099, relative to 2024
    assert "crew" in crew.flags and msg.header.document_code == "250"
    assert msg.travellers[0].document_expiry == (dt.date(2030, 1, 1),)


def test_read_paxlst_and_manifest_entry_point() -> None:
    res = read_paxlst(DATA / "paxlst_d05b_passengers.edi")
    assert len(res.records) == 3 and res.rejected == [] and res.stats["messages"] == 1
    assert sniff_manifest_format(DATA / "paxlst_custom_separators.edi") == "paxlst"
    assert [r.record_id for r in read_manifest(DATA / "paxlst_custom_separators.edi").records] == ["M1/1"]
    assert len(read_external(DATA / "paxlst_d05b_passengers.edi").records) == 3


def test_two_messages_in_one_interchange() -> None:
    body = "BGM+745'NAD+FL+++ROE:JANE'UNT+4+{ref}'"
    text = (
        "UNB+UNOA:4+A+B+240101:1200+9'"
        + "UNH+1+PAXLST:D:05B:UN:IATA'" + body.format(ref="1")
        + "UNH+2+PAXLST:D:05B:UN:IATA'" + body.format(ref="2")
        + "UNZ+2+9'"
    )  # fmt: skip
    msgs = parse_paxlst(text)
    assert [m.records[0].record_id for m in msgs] == ["1/1", "2/1"]
    _fails(text.replace("UNZ+2+9", "UNZ+1+9"), "count_mismatch", "(UNZ)")
    _fails(text.replace("UNZ+2+9", "UNZ+2+8"), "ref_mismatch", "(UNZ)")


def test_unt_count_mismatch() -> None:
    _fails(PASSENGERS.replace("UNT+39+PAX001", "UNT+38+PAX001"), "count_mismatch", "segment 41 (UNT)")


def test_unt_reference_mismatch() -> None:
    _fails(PASSENGERS.replace("UNT+39+PAX001", "UNT+39+PAX002"), "ref_mismatch", "(UNT)")


def test_missing_unh() -> None:
    _fails(PASSENGERS.replace("UNH+PAX001+PAXLST:D:05B:UN:IATA+API01+01:F'\n", ""), "missing_unh", "(BGM)")


def test_unknown_separators() -> None:
    _fails(PASSENGERS.replace("UNA:+.? '", "UNAa+.? '"), "bad_separators", "UNA")
    _fails(PASSENGERS.replace("UNA:+.? '", "UNA++.? '"), "bad_separators", "UNA")
    # separators other than the defaults but no UNA announcing them: the first segment is not a tag
    _fails(CUSTOM.split("\n", 1)[1], "bad_separators", "segment 1")
    _fails(CUSTOM.split("\n", 1)[1].replace("!", "'"), "bad_segment", "segment 1")


def test_truncated() -> None:
    cut = PASSENGERS[: PASSENGERS.index("CNT+42")]
    _fails(cut, "truncated", "no UNT")
    _fails(PASSENGERS[:-3], "truncated", "no segment terminator")
    _fails(PASSENGERS.replace("UNZ+1+000000001'", ""), "truncated", "UNZ")


def test_bad_dates() -> None:
    _fails(PASSENGERS.replace("DTM+329:570121", "DTM+329:571321"), "bad_date", "segment 14 (DTM)")
    _fails(PASSENGERS.replace("DTM+36:081021", "DTM+36:08102"), "bad_date", "segment 21 (DTM)")
    _fails(PASSENGERS.replace("DTM+329:19881130:102", "DTM+329:881130:102"), "bad_date", "(DTM)")


def test_not_paxlst_and_bad_sex() -> None:
    _fails(PASSENGERS.replace("PAXLST:D:05B", "CUSRES:D:05B"), "not_paxlst", "(UNH)")
    _fails(PASSENGERS.replace("ATT+2++M", "ATT+2++Q"), "bad_sex", "(ATT)")


def test_unknown_nationality_is_a_warning_not_a_failure() -> None:
    (msg,) = parse_paxlst(PASSENGERS.replace("NAT+2+CAN", "NAT+2+ZZZ"))
    assert msg.records[0].nationalities == ()
    assert msg.warnings == ("segment 18 (NAT): nationality is not an ISO 3166-1 alpha-3 code; left out",)
