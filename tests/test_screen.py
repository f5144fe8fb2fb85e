"""The offline harness (`fedcheck screen`) on the demo data: planted hits found, nothing else, both modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcheck.cli.main import main
from fedcheck.demo.data import make_demo_data, transliteration_variant
from fedcheck.protocol.exact import Mode
from fedcheck.records import write_jsonl
from fedcheck.screening.offline import screen_exact


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    return make_demo_data(travellers=120)


def test_transliteration_variant() -> None:
    assert transliteration_variant("Mohammed Omar") == "MUHAMMAD OMAR"
    assert transliteration_variant("Jean Martin") is None


@pytest.mark.parametrize("state", ["FRA", "KEN", "UNX"])
def test_planted_exact_hits_and_nothing_else(demo, state: str) -> None:  # type: ignore[no-untyped-def]
    report = screen_exact(demo.watchlists[state], demo.manifest, state=state)
    got = {t.traveller for t in report.hit_travellers}
    want = {p.traveller for p in demo.planted if p.state == state and not p.fuzzy_only}
    assert got == want
    for t in report.hit_travellers:
        assert all(h.state == state and h.label.get("reference") for h in t.hits)


def test_fuzzy_only_hit_is_missed_by_exact_keys(demo) -> None:  # type: ignore[no-untyped-def]
    fuzzy = [p for p in demo.planted if p.fuzzy_only]
    assert fuzzy
    report = screen_exact(demo.watchlists["KEN"], demo.manifest, state="KEN")
    assert not {p.traveller for p in fuzzy} & {t.traveller for t in report.hit_travellers}


def test_cardinality_mode_reveals_only_a_count(demo) -> None:  # type: ignore[no-untyped-def]
    exact = screen_exact(demo.watchlists["FRA"], demo.manifest, state="FRA")
    card = screen_exact(demo.watchlists["FRA"], demo.manifest, state="FRA", mode=Mode.CARDINALITY)
    assert not card.hit_travellers
    assert card.counts[0].hits == sum(len({h.key_type for h in t.hits}) for t in exact.hit_travellers)


def test_cli_json_output(demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    wl, mf = tmp_path / "wl.jsonl", tmp_path / "manifest.jsonl"
    write_jsonl(demo.watchlists["KEN"], wl)
    write_jsonl(demo.manifest, mf)
    assert main(["screen", "--watchlist", str(wl), "--manifest", str(mf), "--state", "KEN",
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == len(demo.manifest)
    hits = {row["traveller"]: row["hits"] for row in out if row["hits"]}
    assert set(hits) == {p.traveller for p in demo.planted if p.state == "KEN" and not p.fuzzy_only}
    first = next(iter(hits.values()))[0]
    assert set(first) >= {"state", "mode", "key_type", "label"} and first["state"] == "KEN"


def test_cli_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["screen", "--watchlist", str(tmp_path / "nope.csv"), "--manifest", str(tmp_path / "m.csv")])
    assert rc == 2
    assert "file not found" in capsys.readouterr().err
