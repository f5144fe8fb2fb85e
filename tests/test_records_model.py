"""Record model validation: constructors accept the documented shapes and reject the rest without echoing."""

from __future__ import annotations

import pytest

from fedcheck.errors import InvalidRecord
from fedcheck.records import BirthDate, Label, PersonName, PersonRecord, TravelDocument, validate_country
from fedcheck.records._countries import ICAO_SPECIAL_CODES, ISO_ALPHA3


def test_country_table_complete() -> None:
    assert len(ISO_ALPHA3) == 249
    for code in ("DEU", "FRA", "PRK", "PSE", "SSD", "CUW", "SXM", "BES", "ALA", "TWN"):
        assert validate_country(code) == code
    for code in ("XXA", "XXB", "XXC", "XXX", "GBD", "GBN", "GBO", "UNO", "UNA", "UNK", "EUE", "XPO", "XOM"):
        assert validate_country(code) == code
    assert validate_country("D") == "DEU"
    assert validate_country("d<<") == "DEU"
    assert validate_country(" fra ") == "FRA"
    assert "ANT" not in ISO_ALPHA3 and "SCG" not in ISO_ALPHA3  # withdrawn codes
    assert set(ICAO_SPECIAL_CODES).isdisjoint(ISO_ALPHA3)


@pytest.mark.parametrize("code", ["", "DE", "ZZZ", "ANT", "SUN", "YUG", "12A", "DEUX"])
def test_country_rejected(code: str) -> None:
    with pytest.raises(InvalidRecord) as e:
        validate_country(code, field="nationalities[0]")
    assert "nationalities[0]" in e.value.message


@pytest.mark.parametrize(
    ("text", "precision", "years"),
    [
        ("1964", "year", [1964]),
        ("1964-07", "year_month", [1964]),
        ("1964-07-17", "exact", [1964]),
        ("1960/1963", "range", [1960, 1961, 1962, 1963]),
        ("1960/1960", "year", [1960]),
    ],
)
def test_birth_date_parse(text: str, precision: str, years: list[int]) -> None:
    d = BirthDate.parse(text)
    assert d.precision == precision
    assert list(d.years()) == years
    assert BirthDate.parse(str(d)) == d


@pytest.mark.parametrize(
    "text", ["", "64", "1964-13", "1964-02-30", "1963/1960", "1900/2050", "1964-7-1", "17.07.1964", "0999"]
)
def test_birth_date_rejected(text: str) -> None:
    with pytest.raises(InvalidRecord):
        BirthDate.parse(text)


def test_leap_day() -> None:
    assert BirthDate.parse("2000-02-29").is_exact
    with pytest.raises(InvalidRecord):
        BirthDate.parse("1900-02-29")


def test_person_name_defaults_and_validation() -> None:
    n = PersonName("", given_names="Anna", surname="Schmidt")
    assert n.full_name == "Anna Schmidt"
    with pytest.raises(InvalidRecord):
        PersonName("")
    with pytest.raises(InvalidRecord):
        PersonName("X", quality="Good")
    with pytest.raises(InvalidRecord):
        PersonName("X", script="latin")
    with pytest.raises(InvalidRecord):
        PersonName("X" * 513)


def test_record_canonicalises_and_is_frozen() -> None:
    rec = PersonRecord(
        "r1",
        [PersonName("Jane Roe")],  # type: ignore[arg-type]
        nationalities=["d", "DEU", "fra"],  # type: ignore[arg-type]
        documents=[TravelDocument("P", "C01X00T47", "D")],  # type: ignore[arg-type]
        face_embedding=[0.5, 1, -2.0],  # type: ignore[arg-type]
        flags={"refugee"},  # type: ignore[arg-type]
    )
    assert rec.names == (PersonName("Jane Roe"),)
    assert rec.nationalities == ("DEU", "FRA")
    assert rec.documents[0].issuer == "DEU"
    assert rec.face_embedding == (0.5, 1.0, -2.0)
    assert rec.flags == frozenset({"refugee"})
    with pytest.raises(AttributeError):
        rec.record_id = "x"  # type: ignore[misc]
    assert hash(rec.names[0]) == hash(PersonName("Jane Roe"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"record_id": ""},
        {"sex": "male"},
        {"nationalities": ("XYZ",)},
        {"face_embedding": (float("nan"),)},
        {"face_embedding": ()},
        {"flags": frozenset({"Refugee"})},
        {"names": ("Jane",)},
        {"record_id": "a\nb"},
    ],
)
def test_record_rejected_without_echo(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"record_id": "r1", "names": (PersonName("Jane Secretname"),)}
    base.update(kwargs)
    with pytest.raises(InvalidRecord) as e:
        PersonRecord(**base)  # type: ignore[arg-type]
    assert "Secretname" not in e.value.message and "XYZ" not in e.value.message


def test_document_validation() -> None:
    assert TravelDocument("Passport", "AB 123").doc_class == "P"
    assert TravelDocument("National Identification Number", "123").doc_class == "I"
    assert TravelDocument("Numéro de passeport", "123").doc_class == "P"
    assert TravelDocument("ID", "123").doc_class == "I"
    assert TravelDocument("", "123").doc_class == "O"
    with pytest.raises(InvalidRecord):
        TravelDocument("P", " - ")
    with pytest.raises(InvalidRecord):
        TravelDocument("P", "123", "QQQ")


def test_label_round_trip() -> None:
    lab = Label("Al-Qaida", "QDi.001", "2001-01-25", (("source", "un-sc"),))
    d = lab.to_dict()
    assert d == {
        "category": "Al-Qaida",
        "reference": "QDi.001",
        "listing_date": "2001-01-25",
        "source": "un-sc",
    }
    assert Label.from_dict(d) == lab
    with pytest.raises(InvalidRecord):
        Label(extra=(("category", "x"),))
    with pytest.raises(InvalidRecord):
        Label(listing_date="25.01.2001")
