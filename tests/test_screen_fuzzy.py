"""The offline fuzzy harness (`fedcheck screen --mode fuzzy|both`): finds the typo exact keys miss, merges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcheck.cli.main import main
from fedcheck.demo.data import make_demo_data
from fedcheck.records import write_jsonl
from fedcheck.screening.fuzzy import screen_fuzzy_into
from fedcheck.screening.offline import screen_exact

KEY_BITS = 1024  # tests only; the CLI default is 2048


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    data = make_demo_data(travellers=12)
    assert [p.traveller for p in data.planted if p.fuzzy_only] == ["T008"], "demo data changed: update ids"
    return data, data.watchlists["KEN"][:300], [r for r in data.manifest if r.record_id in ("T007", "T008",
                                                                                          "T009", "T010")]


def test_fuzzy_finds_the_typo_exact_keys_miss(demo) -> None:  # type: ignore[no-untyped-def]
    data, ken, manifest = demo
    exact = screen_exact(ken, manifest, state="KEN")
    assert {t.traveller for t in exact.hit_travellers} == {"T007"}  # T008 (typo) is missed
    report = screen_fuzzy_into(None, ken, manifest, state="KEN", key_bits=KEY_BITS, workers=2)
    hits = {t.traveller: t.hits for t in report.hit_travellers}
    assert set(hits) == {"T007", "T008"}
    want = next(r for r in data.watchlists["KEN"] if r.record_id == "KEN-00007").label.reference
    assert [(h.mode, h.key_type, h.label["reference"]) for h in hits["T008"]] == [
        ("fuzzy", "name_similarity", want)]
    # a strict threshold no longer accepts the consonant swap
    strict = screen_fuzzy_into(None, ken, manifest, state="KEN", key_bits=KEY_BITS, threshold="1", workers=2)
    assert {t.traveller for t in strict.hit_travellers} == {"T007"}


def test_cli_both_merges_exact_and_fuzzy(demo, tmp_path: Path,  # type: ignore[no-untyped-def]
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, ken, manifest = demo
    wl, mf = tmp_path / "ken.jsonl", tmp_path / "manifest.jsonl"
    write_jsonl(ken, wl)
    write_jsonl(manifest, mf)
    assert main(["screen", "--watchlist", str(wl), "--manifest", str(mf), "--mode", "both", "--state", "KEN",
                 "--key-bits", str(KEY_BITS), "--format", "json"]) == 0
    doc = {t["traveller"]: t["hits"] for t in json.loads(capsys.readouterr().out)}
    assert {h["mode"] for h in doc["T007"]} == {"exact", "fuzzy"}
    assert [h["mode"] for h in doc["T008"]] == ["fuzzy"]
    assert not doc["T009"] and not doc["T010"]
