"""Review findings on the file readers: every malformed input ends as a typed error or a counted rejection.

One test per finding of the format review (JSONL, FtM, MRZ face-embedding rows), plus what fuzzing the
readers found afterwards (PAXLST digits, JSON number limits, UN XML encodings) and the XML entity guards.
Nothing here may surface as a raw ``OverflowError``/``KeyError``/``RecursionError``/``UnicodeDecodeError``
/``IndexError``/``ValueError``/``LookupError``: the CLI only catches ``FedcheckError``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from fedcheck.errors import FormatError, InvalidRecord
from fedcheck.formats.ftm import read_ftm, read_ftm_lines
from fedcheck.formats.mrz import parse_mrz, read_mrz_file
from fedcheck.formats.paxlst import parse_paxlst, read_paxlst
from fedcheck.records import PersonName, PersonRecord
from fedcheck.records.io import read_jsonl, read_records
from fedcheck.records.un_xml import _parse, read_un_xml
from fedcheck.screening.inputs import load_manifest

DATA = Path(__file__).resolve().parent / "data" / "formats"
REF = dt.date(2024, 1, 1)
NAME = (PersonName("Jane Secretname"),)


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, str):
        p.write_text(content, encoding="utf-8")
    else:
        p.write_bytes(content)
    return p


def _jsonl_reasons(tmp_path: Path, *lines: str) -> tuple[list[str], list[str]]:
    res = read_jsonl(_write(tmp_path, "l.jsonl", "\n".join(lines) + "\n"))
    assert res.stats["read"] == len(lines)
    assert res.stats["rejected"] == len(res.rejected)
    return [r.record_id for r in res.records], [f"{r.where}: {r.reason}" for r in res.rejected]


# ------------------------------------------------------------------------------------------ face embeddings


def test_jsonl_face_embedding_huge_integer_is_a_counted_rejection(tmp_path: Path) -> None:
    ok = '{"id": "ok", "names": ["A B"]}'
    big = '{"id": "r1", "names": ["A B"], "face_embedding": [' + "9" * 400 + "]}"
    ids, reasons = _jsonl_reasons(tmp_path, ok, big)
    assert ids == ["ok"]
    assert reasons == ["line 2: face_embedding: value too large for a float"]


@pytest.mark.parametrize(
    "vector",
    [
        [0.0] * 128,  # zero vector: no direction to compare
        [1e-200] * 128,  # squares underflow: the matcher's norm is 0
        [1e200] * 128,  # squares overflow: the matcher's norm is inf
        [1e-160] * 128,  # subnormal squares: the normalised vector is not unit length
        [float("nan")] + [0.1] * 127,
        [float("inf")] + [0.1] * 127,
    ],
    ids=["zero", "underflow", "overflow", "subnormal", "nan", "inf"],
)
def test_face_embedding_without_a_usable_norm_is_refused_by_the_model(vector: list[float]) -> None:
    with pytest.raises(InvalidRecord) as e:
        PersonRecord("r1", NAME, face_embedding=tuple(vector))
    assert e.value.reason == "bad_embedding"
    assert e.value.message.startswith("face_embedding:")


def test_face_embedding_rejections_are_per_record_skips_at_import(tmp_path: Path) -> None:
    good = json.dumps({"id": "good", "names": ["Anna Smith"], "face_embedding": [0.1] * 128})
    zero = json.dumps({"id": "zero", "names": ["John Doe"], "face_embedding": [0.0] * 128})
    tiny = json.dumps({"id": "tiny", "names": ["John Doe"], "face_embedding": [1e-200] * 128})
    nan = '{"id": "nan", "names": ["John Doe"], "face_embedding": [NaN, 1.0]}'
    inf = '{"id": "inf", "names": ["John Doe"], "face_embedding": [1e999, 1.0]}'
    ids, reasons = _jsonl_reasons(tmp_path, good, zero, tiny, nan, inf)
    assert ids == ["good"]
    assert [r.split(": ", 1)[0] for r in reasons] == ["line 2", "line 3", "line 4", "line 5"]
    assert all("face_embedding:" in r for r in reasons)
    assert "zero vector" in reasons[0] and "finite" in reasons[2]


def test_face_embedding_valid_values_are_kept_as_given() -> None:
    rec = PersonRecord("r1", NAME, face_embedding=(1e-150, -2.0, 3))
    assert rec.face_embedding == (1e-150, -2.0, 3.0)
    for bad in ("0.5", [True, 1.0], ["1.0"], {"a": 1.0}):
        with pytest.raises(InvalidRecord) as e:
            PersonRecord("r1", NAME, face_embedding=bad)  # type: ignore[arg-type]
        assert e.value.reason == "wrong_type"


# ------------------------------------------------------------------------------------------ JSON Lines


def test_jsonl_integer_over_python_digit_limit_is_rejected_not_raised(tmp_path: Path) -> None:
    # json.loads raises a plain ValueError (not JSONDecodeError) for integer literals over 4300 digits
    ids, reasons = _jsonl_reasons(tmp_path, '{"id": "a", "names": [' + "1" * 5000 + "]}", '{"id": "b"}')
    assert ids == ["b"]
    assert reasons == ["line 1: not valid JSON (number too long)"]


def test_jsonl_deep_nesting_is_rejected(tmp_path: Path) -> None:
    ids, reasons = _jsonl_reasons(tmp_path, "[" * 100_000 + "]" * 100_000, '{"id": "x", "names": ["A"]}')
    assert ids == ["x"] and reasons == ["line 1: not valid JSON (nested too deep)"]


# ------------------------------------------------------------------------------------------ FollowTheMoney


def _person(entity_id: str = "p1", **props: object) -> str:
    return json.dumps({"id": entity_id, "schema": "Person", "properties": {"name": ["Ivan Testov"], **props}})


def test_ftm_holder_object_without_id_is_skipped_as_unlinked(tmp_path: Path) -> None:
    doc = {"id": "d1", "schema": "Passport", "properties": {"holder": [{}], "number": ["P1234567"]}}
    linked = {
        "id": "d2",
        "schema": "Passport",
        "properties": {"holder": [{"id": "p1"}], "number": ["P7654321"]},
    }
    res = read_ftm(_write(tmp_path, "h.jsonl", "\n".join([json.dumps(doc), json.dumps(linked), _person()])))
    assert res.rejected == []
    assert res.skipped["document_unlinked"] == 1 and res.documents_linked == 1
    assert [d.number for d in res.records[0].documents] == ["P7654321"]


def test_ftm_deeply_nested_line_is_rejected_and_the_rest_imported(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    res = read_ftm(
        _write(tmp_path, "deep.jsonl", "\n".join([_person(), deep, '{"a": ' * 50_000 + "1" + "}" * 50_000]))
    )
    assert [r.record_id for r in res.records] == ["p1"]
    assert [(r.where, r.reason) for r in res.rejected] == [
        ("line 2", "not valid JSON (nested too deep)"),
        ("line 3", "not valid JSON (nested too deep)"),
    ]
    assert res.stats()["read"] == 3 and res.stats()["rejected"] == 2


def test_ftm_invalid_utf8_is_a_format_error_naming_the_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "bad.jsonl", _person().encode() + b"\n\xff\xfe\n")
    with pytest.raises(FormatError) as e:
        read_ftm(p)
    assert e.value.reason == "bad_encoding"
    assert "line 2" in e.value.message and "UTF-8" in e.value.message


def test_ftm_line_splitting_matches_text_mode(tmp_path: Path) -> None:
    # BOM dropped; CRLF and bare CR end lines; U+2028 inside a JSON string does not
    text = "\ufeff" + _person("p1") + "\r\n" + _person("p2", alias=["A\u2028B"]) + "\r" + _person("p3") + "\n"
    res = read_ftm(_write(tmp_path, "nl.jsonl", text.encode()))
    assert res.rejected == [] and res.read == 3
    assert sorted(r.record_id for r in res.records) == ["p1", "p2", "p3"]


def test_ftm_merging_many_values_is_linear() -> None:
    n = 200_000
    values = [f"v{i}" for i in range(n)]
    line = json.dumps(
        {"id": "p", "schema": "Person", "properties": {"name": ["Ivan Testov"], "notes": values}}
    )
    again = json.dumps({"id": "p", "schema": "Person", "properties": {"notes": [*values[::-1], "new"]}})
    start = time.perf_counter()
    res = read_ftm_lines([line, again])
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"merging {n} values took {elapsed:.1f}s"
    assert [r.record_id for r in res.records] == ["p"]
    assert res.skipped["fragment_merged"] == 1


def test_ftm_merge_keeps_first_seen_order_and_dedupes_nested_values() -> None:
    nested = {"schema": "Passport", "properties": {"number": ["P1234567"]}}
    a = _person(alias=["B", "A", "B"], passport=[nested])
    b = _person(alias=["C", "A"], passport=[dict(reversed(list(nested.items())))])
    res = read_ftm_lines([a, b])
    rec = res.records[0]
    assert [n.full_name for n in rec.names] == ["Ivan Testov", "B", "A", "C"]
    assert [d.number for d in rec.documents] == ["P1234567"]


def test_ftm_odd_value_types_do_not_escape() -> None:
    lines = [
        _person("p1", passport=[{"schema": ["Passport"]}, {"schema": "Passport", "properties": [1]}]),
        _person("p2", createdAt=["2024-1x-05"], birthDate=[1, None, ["1970"]]),
        json.dumps({"id": "p3", "schema": "Person", "properties": {"name": [{"x": 1}], "lastName": ["Roe"]}}),
        json.dumps({"id": "p4", "schema": "Person", "properties": {"name": ["N"]}, "datasets": [[1], "ds"]}),
        '{"id": "p5", "schema": "Person", "properties": {"name": [' + "7" * 5000 + "]}}",
    ]
    res = read_ftm_lines(lines)
    assert sorted(r.record_id for r in res.records) == ["p1", "p2", "p3", "p4"]
    assert res.records[1].label.listing_date == ""  # not a date: left out, the person is still imported
    assert [(r.where, r.reason) for r in res.rejected] == [("line 5", "not valid JSON (number too long)")]


# ------------------------------------------------------------------------------------------ MRZ

TD1_L2 = "7408122F1204159UTO" + "<" * 11 + "6"
TD1_L3 = "ERIKSSON<<ANNA<MARIA" + "<" * 10


def test_mrz_td1_filler_check_digit_with_filler_optional_field_is_a_failed_check(tmp_path: Path) -> None:
    l1 = "I<UTOD23145890" + "<" + "<ABC" + "<" * 11
    assert len(l1) == 30
    result = parse_mrz([l1, TD1_L2, TD1_L3], reference_date=REF)
    assert "document_number" in result.failed_checks
    with pytest.raises(FormatError) as e:
        parse_mrz([l1, TD1_L2, TD1_L3], strict=True, reference_date=REF)
    assert e.value.reason == "bad_check_digit"
    p = _write(tmp_path, "m.mrz", "\n".join([l1, TD1_L2, TD1_L3]) + "\n")
    res = read_mrz_file(p, reference_date=REF)
    assert res.records == []
    assert res.stats == {"read": 1, "imported": 0, "rejected": 1, "check_failed_kept": 0}
    assert res.rejected[0].where == "block 1 (line 1)" and "document_number" in res.rejected[0].reason
    kept = read_mrz_file(p, strict=False, reference_date=REF)
    assert kept.stats["check_failed_kept"] == 1 and "mrz_check_failed" in kept.records[0].flags


def test_mrz_td2_filler_check_digit_with_filler_optional_field_is_a_failed_check() -> None:
    l1 = "I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<"
    l2 = "D23145890<UTO7408122F1204159<ABC<<<6"
    assert len(l1) == len(l2) == 36
    assert "document_number" in parse_mrz([l1, l2], reference_date=REF).failed_checks


def test_mrz_invalid_utf8_is_a_format_error_naming_the_line(tmp_path: Path) -> None:
    good = (DATA / "mrz_batch.mrz").read_bytes()
    with pytest.raises(FormatError) as e:
        read_mrz_file(_write(tmp_path, "bad.mrz", good + b"\n\xff\n"))
    assert e.value.reason == "bad_encoding"
    bad_line = good.count(b"\n") + 2
    assert f"line {bad_line}" in e.value.message


def test_mrz_non_ascii_letters_are_not_upper_cased_into_the_zone() -> None:
    # "ı".upper() == "I" and "ﬀ".upper() == "FF": both would pass the A-Z check after upper-casing
    for bad in ("ı<UTOD231458907<<<<<<<<<<<<<<<", "I<UTOD231458907<<<<<<<<<<<<<ﬀ"):
        with pytest.raises(FormatError) as e:
            parse_mrz([bad, TD1_L2, TD1_L3], reference_date=REF)
        assert e.value.reason in ("bad_mrz_charset", "bad_mrz_shape")


def test_mrz_month_zero_is_not_a_date() -> None:
    l1 = "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<"
    l2 = "L898902C36UTO7400122F1204159ZE184226B<<<<<10"  # date of birth 74-00-12
    with pytest.raises(FormatError) as e:
        parse_mrz([l1, l2], reference_date=REF)
    assert e.value.reason == "bad_date" and "line 2" in e.value.message


def test_mrz_shape_error_stays_short_for_huge_blocks() -> None:
    with pytest.raises(FormatError) as e:
        parse_mrz(["A" * 30] * 10_000)
    assert len(e.value.message) < 200


# ------------------------------------------------------------------------------------------ PAXLST


def _paxlst(old: str, new: str) -> str:
    text = (DATA / "paxlst_d05b_passengers.edi").read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "where", "reason"),
    [
        ("DTM+329:570121", "DTM+329:5701²1", "(DTM)", "bad_date"),  # "²".isdigit() but int("²") fails
        ("DTM+329:570121", "DTM+329:٥٧٠١٢١", "(DTM)", "bad_date"),  # other scripts' digits
        ("UNT+39+PAX001", "UNT+3²+PAX001", "(UNT)", "count_mismatch"),
        ("UNT+39+PAX001", "UNT+" + "3" * 5000 + "+PAX001", "(UNT)", "count_mismatch"),
        ("DOE:JOHN:WAYNE", "DOE" + "X" * 600 + ":JOHN", "(NAD)", "too_long"),
        ("DOE:JOHN:WAYNE", "DOE\x01:JOHN", "(NAD)", "control_characters"),
        ("DOC+P:110:111+MB140241", "DOC+P:110:111+" + "9" * 80, "(DOC)", "too_long"),
        ("DOC+P:110:111+MB140241", "DOC+P:110:111+--", "(DOC)", "empty_field"),
        ("DTM+329:570121", "DTM+329:17000101:102", "(DTM)", "bad_date"),  # before 1850
    ],
)
def test_paxlst_bad_values_are_format_errors_naming_the_segment(
    old: str, new: str, where: str, reason: str
) -> None:
    with pytest.raises(FormatError) as e:
        parse_paxlst(_paxlst(old, new), reference_date=REF)
    assert where in e.value.message and e.value.reason == reason
    assert "XXXX" not in e.value.message and "9999" not in e.value.message and len(e.value.message) < 300


def test_paxlst_latin1_fallback_with_superscript_digit(tmp_path: Path) -> None:
    raw = _paxlst("DTM+329:570121", "DTM+329:5701²1").encode("latin-1")  # b"\xb2": not UTF-8
    with pytest.raises(FormatError) as e:
        read_paxlst(_write(tmp_path, "m.edi", raw), reference_date=REF)
    assert e.value.reason == "bad_date"


# ------------------------------------------------------------------------------------------ UN XML


def test_un_xml_unknown_or_non_utf8_declared_encoding_is_refused(tmp_path: Path) -> None:
    for enc in ("UTF-0", "utf-7", "unicode_escape", "ISO-8859-1"):
        doc = f'<?xml version="1.0" encoding="{enc}"?><CONSOLIDATED_LIST/>'
        with pytest.raises(FormatError) as e:
            read_un_xml(_write(tmp_path, "e.xml", doc))
        assert e.value.reason == "bad_encoding" and "UTF-8" in e.value.message
    ok = '<?xml version="1.0" encoding="UTF-8"?><CONSOLIDATED_LIST><INDIVIDUALS/></CONSOLIDATED_LIST>'
    assert read_un_xml(_write(tmp_path, "ok.xml", ok)).stats["read"] == 0


@pytest.mark.parametrize(
    "doc",
    [
        # billion laughs
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><CONSOLIDATED_LIST>&c;</CONSOLIDATED_LIST>',
        # external entity (XXE) and external DTD
        '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><CONSOLIDATED_LIST>&e;</CONSOLIDATED_LIST>',
        '<!DOCTYPE x SYSTEM "http://127.0.0.1:1/x.dtd"><CONSOLIDATED_LIST/>',
        '<!DOCTYPE x PUBLIC "-//x//y" "file:///etc/passwd"><CONSOLIDATED_LIST/>',
    ],
)
def test_un_xml_entity_declarations_are_refused_by_scan_and_by_the_parser(tmp_path: Path, doc: str) -> None:
    with pytest.raises(FormatError) as e:
        read_un_xml(_write(tmp_path, "x.xml", doc))
    assert e.value.reason == "xml_doctype"
    # the parser guard alone (without the byte scan in front of it) refuses them too
    with pytest.raises(FormatError) as e:
        _parse(doc.encode(), "x.xml")
    assert e.value.reason == "xml_doctype"


def test_un_xml_undeclared_entity_and_deep_nesting(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as e:
        read_un_xml(_write(tmp_path, "u.xml", "<CONSOLIDATED_LIST>&x;</CONSOLIDATED_LIST>"))
    assert e.value.reason == "bad_xml"
    deep = "<CONSOLIDATED_LIST>" + "<a>" * 50_000 + "</a>" * 50_000 + "</CONSOLIDATED_LIST>"
    assert read_un_xml(_write(tmp_path, "d.xml", deep)).stats["read"] == 0


# ------------------------------------------------------------------------------------------ file access


def test_unreadable_paths_are_format_errors(tmp_path: Path) -> None:
    d = tmp_path / "dir.jsonl"
    d.mkdir()
    for reader in (read_ftm, read_mrz_file, read_paxlst):
        with pytest.raises(FormatError) as e:
            reader(d)
        assert e.value.reason == "unreadable"
    with pytest.raises(FormatError):
        read_records(d, "jsonl")
    with pytest.raises(FormatError) as e:
        load_manifest(tmp_path / ("x" * 5000), "mrz")
    assert e.value.reason == "file_not_found"


def test_embedding_norm_overflowing_only_in_the_sum_is_bad_embedding() -> None:
    """Each value is a finite float but the sum of squares overflows: the same ``bad_embedding`` the face
    matcher gives (one shared rule, records.model.usable_norm), never a bare OverflowError."""
    from fedcheck.errors import InvalidRecord
    from fedcheck.records.model import PersonName, PersonRecord

    with pytest.raises(InvalidRecord) as exc:
        PersonRecord("x", (PersonName("A B"),), face_embedding=[1e154, 1e154])
    assert exc.value.reason == "bad_embedding"
