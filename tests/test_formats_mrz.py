"""ICAO 9303 MRZ: specimens verify, corrupted zones are reported, batches are read block by block."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fedcheck.errors import FormatError
from fedcheck.formats import read_manifest, sniff_manifest_format
from fedcheck.formats.mrz import MrzFormat, check_digit, parse_mrz, read_mrz_file
from fedcheck.records.model import BirthDate

DATA = Path(__file__).parent / "data" / "formats"
REF = dt.date(2010, 1, 1)

# ICAO Doc 9303 specimens (Part 4 TD3, Part 5 TD1, Part 6 TD2); check digits as published.
TD3 = ["P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"]
TD1 = ["I<UTOD231458907<<<<<<<<<<<<<<<", "7408122F1204159UTO<<<<<<<<<<<6", "ERIKSSON<<ANNA<MARIA<<<<<<<<<<"]
TD2 = ["I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<", "D231458907UTO7408122F1204159<<<<<<<6"]


@pytest.mark.parametrize(
    ("data", "digit"),
    [("L898902C3", "6"), ("740812", "2"), ("120415", "9"), ("ZE184226B<<<<<", "1"), ("D23145890", "7")],
)
def test_check_digit_matches_icao_specimen(data: str, digit: str) -> None:
    assert check_digit(data) == digit


@pytest.mark.parametrize(("lines", "fmt"), [(TD3, MrzFormat.TD3), (TD1, MrzFormat.TD1), (TD2, MrzFormat.TD2)])
def test_specimens_parse_and_verify(lines: list[str], fmt: MrzFormat) -> None:
    r = parse_mrz(lines, strict=True, reference_date=REF)
    assert r.format is fmt and r.valid
    assert (r.surname, r.given_names) == ("ERIKSSON", "ANNA MARIA")
    assert r.birth_date == BirthDate(1974, 8, 12)
    assert r.expiry_date == dt.date(2012, 4, 15)
    assert r.sex == "F" and r.issuing_state == "UTO" and r.nationality == "UTO"
    assert r.document_number == ("L898902C3" if fmt is MrzFormat.TD3 else "D23145890")


def test_td3_optional_data_and_record() -> None:
    r = parse_mrz("\n".join(TD3), reference_date=REF)
    assert r.optional_data == "ZE184226B"
    rec = r.to_record("t1")
    assert rec.names[0].full_name == "ANNA MARIA ERIKSSON"
    assert rec.names[0].surname == "ERIKSSON"
    assert rec.documents[0].number == "L898902C3" and rec.documents[0].doc_type == "passport"
    # UTO is ICAO's fictitious specimen State: not a country the record model accepts
    assert rec.nationalities == () and rec.documents[0].issuer is None
    assert "mrz_check_failed" not in rec.flags


@pytest.mark.parametrize(
    ("line", "pos", "failed"),
    [
        (1, 3, {"document_number", "composite"}),  # number
        (1, 14, {"birth_date", "composite"}),  # date of birth
        (1, 22, {"expiry_date", "composite"}),  # expiry
        (1, 30, {"personal_number", "composite"}),  # personal number
        (1, 43, {"composite"}),  # composite digit itself
    ],
)
def test_corrupted_td3_reports_failed_checks(line: int, pos: int, failed: set[str]) -> None:
    lines = list(TD3)
    ch = lines[line][pos]
    lines[line] = lines[line][:pos] + ("7" if ch != "7" else "8") + lines[line][pos + 1 :]
    r = parse_mrz(lines, reference_date=REF)
    assert set(r.failed_checks) == failed
    assert not r.valid
    assert "mrz_check_failed" in r.to_record("x").flags
    with pytest.raises(FormatError) as exc:
        parse_mrz(lines, strict=True, reference_date=REF)
    assert exc.value.reason == "bad_check_digit"
    assert "ERIKSSON" not in exc.value.message


def test_corrupted_td1_composite() -> None:
    lines = list(TD1)
    lines[1] = lines[1][:-1] + "5"
    assert parse_mrz(lines, reference_date=REF).failed_checks == ("composite",)


def test_td1_long_document_number() -> None:
    lines = ["I<UTOD23145890<AB1124<<<<<<<<<", "7408122F1204159UTO<<<<<<<<<<<8", TD1[2]]
    r = parse_mrz(lines, strict=True, reference_date=REF)
    assert r.document_number == "D23145890AB112"


def test_german_d_code_becomes_deu() -> None:
    r = parse_mrz(
        ["P<D<<MUSTERMANN<<ERIKA<<<<<<<<<<<<<<<<<<<<<<", "C01X00T478D<<6408125F3108022<<<<<<<<<<<<<<<6"],
        strict=True,
        reference_date=REF,
    )
    rec = r.to_record("de")
    assert rec.nationalities == ("DEU",) and rec.documents[0].issuer == "DEU"
    assert r.birth_date == BirthDate(1964, 8, 12) and r.expiry_date == dt.date(2031, 8, 2)


def test_birth_century_never_in_future() -> None:
    # a 2-digit birth year later than the reference date belongs to the previous century
    r = parse_mrz(TD3, reference_date=dt.date(1974, 8, 11))
    assert r.birth_date == BirthDate(1874, 8, 12)
    assert parse_mrz(TD3, reference_date=dt.date(1974, 8, 12)).birth_date == BirthDate(1974, 8, 12)


def test_ocr_noise_spaces_and_lowercase_tolerated() -> None:
    noisy = [" ".join(TD3[0][i : i + 11] for i in range(0, 44, 11)).lower(), TD3[1] + "  "]
    assert parse_mrz(noisy, reference_date=REF).valid


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([TD3[0], TD3[1][:-1]], "bad_mrz_shape"),
        ([TD3[0]], "bad_mrz_shape"),
        ([TD3[0], TD3[1][:20] + "$" + TD3[1][21:]], "bad_mrz_charset"),
        ([TD3[0], TD3[1][:13] + "741312" + TD3[1][19:]], "bad_date"),
        ([TD3[0], TD3[1][:20] + "Q" + TD3[1][21:]], "bad_sex"),
    ],
)
def test_malformed_zones_raise(lines: list[str], reason: str) -> None:
    with pytest.raises(FormatError) as exc:
        parse_mrz(lines, reference_date=REF)
    assert exc.value.reason == reason
    assert "ERIKSSON" not in exc.value.message and "L898902C3" not in exc.value.message


def test_batch_file_strict() -> None:
    res = read_mrz_file(DATA / "mrz_batch.mrz", reference_date=REF)
    assert [r.record_id for r in res.records] == ["mrz-1", "mrz-2", "mrz-3", "mrz-4"]
    assert [(x.where, x.reason.split(":")[0]) for x in res.rejected] == [
        ("block 5 (line 18)", "check digit failed"),
        ("block 6 (line 22)", "MRZ"),
    ]
    assert res.stats["read"] == 6 and res.stats["imported"] == 4
    for rej in res.rejected:
        assert "ERIKSSON" not in rej.reason


def test_batch_file_lenient_keeps_flagged() -> None:
    res = read_mrz_file(DATA / "mrz_batch.mrz", strict=False, reference_date=REF)
    assert len(res.records) == 5 and len(res.rejected) == 1
    assert "mrz_check_failed" in res.records[4].flags


def test_manifest_entry_point_sniffs_mrz(tmp_path: Path) -> None:
    assert sniff_manifest_format(DATA / "mrz_batch.mrz") == "mrz"
    plain = tmp_path / "scans.txt"
    plain.write_text("\n".join(TD3) + "\n")
    assert sniff_manifest_format(plain) == "mrz"
    assert len(read_manifest(plain, reference_date=REF).records) == 1
