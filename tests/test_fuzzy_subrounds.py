"""Request trimming keeps decisions identical; sub-round sizing; sealed round state; audit references."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from fedcheck.demo.data import make_demo_data
from fedcheck.errors import InvalidInput, NotFound
from fedcheck.fuzzy import FuzzyHolder, FuzzyQuerier, HitClaim, HolderLimits, QuerierKey, entries_from_records
from fedcheck.fuzzy.encoding import MAX_BIGRAMS
from fedcheck.node.fuzzy import MAX_RELEASE_CLAIMS
from fedcheck.node.fuzzyquery import FuzzyHit, FuzzyOptions, FuzzyRound, FuzzyRoundStore, plan_layout
from fedcheck.rpc.messages import FuzzyInfo
from fedcheck.screening.fuzzy import traveller_of
from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey
from fedcheck.trust.audit import check_event


def _info(entries: list, max_travellers: int = 48) -> FuzzyInfo:  # type: ignore[type-arg]
    max_y = max(len(e.dims) for e in entries)
    years = [e.year for e in entries if e.year is not None]
    return FuzzyInfo(max_travellers, min(MAX_BIGRAMS + 1, (max_y // 16 + 1) * 16), min(years) // 10 * 10,
                     max(years) // 10 * 10 + 9, len(entries))


def test_trimmed_layout_gives_identical_decisions() -> None:
    data = make_demo_data(travellers=40)
    records = data.watchlists["KEN"][:150]
    entries = entries_from_records(records, kind="name")
    lay = plan_layout([_info(entries)], FuzzyOptions(key_bits=1024))
    assert lay.size_table < 128 and 0 < lay.year_count < 131
    holder = FuzzyHolder(entries, workers=2, limits=HolderLimits(key_bits=frozenset({1024})))
    # travellers: listed names (exact year, wrong year, unknown year) and a few manifest names
    travellers = [traveller_of(r) for r in records[:3]]
    travellers += [traveller_of(r) for r in data.manifest[:3]]
    wrong = traveller_of(records[0])
    travellers.append(type(wrong)(name=wrong.name, year=(wrong.year or 1970) + 3))
    key = QuerierKey.generate(1024)
    decided = []
    for kw in ({}, {"size_table": lay.size_table, "year_base": lay.year_base, "year_count": lay.year_count}):
        for tol in (1,):  # the +3 traveller is penalised, ±1 years agree
            q = FuzzyQuerier(key, threshold="0.8", year_tolerance=tol, workers=2, **kw)
            req = q.build_request(travellers)
            res = q.decide(req, holder.score(req))
            rel, record_ids = holder.release_with_records(q.follow_up(req.round_id, res.hits))
            assert rel.rejected == 0
            # the same (traveller, entry) pairs, whatever the shuffle
            pairs = zip(rel.released, record_ids, strict=True)
            decided.append(sorted((r.traveller, rid) for r, rid in pairs))
            holder.close_round(req.round_id)
    assert decided[0] == decided[1] and decided[0]
    assert 6 not in {t for t, _ in decided[0]}  # the wrong-year copy of a listed name misses in both


def test_sub_rounds_fit_the_message_limit() -> None:
    full = plan_layout([None], FuzzyOptions())  # a holder publishing nothing: historical tables
    assert full.request_bytes_per_traveller == 988 * 512 and full.per_round == 48
    info = FuzzyInfo(1000, 112, 1920, 2009, 10_240)
    lay = plan_layout([info, info], FuzzyOptions(), groups=2)
    assert lay.request_bytes_per_traveller == (729 + 112 + 90) * 512
    # two distinct traveller sets in one submission still fit 30 MB, and so do both holders' answers
    assert 2 * lay.per_round * lay.request_bytes_per_traveller <= 30 * 1024 * 1024
    assert lay.per_round * lay.response_bytes_per_traveller <= 30 * 1024 * 1024
    assert plan_layout([info], FuzzyOptions(sub_round_travellers=7)).per_round == 7
    narrow = plan_layout([info], FuzzyOptions(year_window=(1950, 1990)))
    assert (narrow.year_base, narrow.year_count) == (1950, 41)
    with pytest.raises(InvalidInput):
        plan_layout([info], FuzzyOptions(year_window=(1990, 1950)))


def test_round_state_is_sealed_and_found_by_sub_round(tmp_path: Path) -> None:
    sealer = EnvelopeSealer.open_or_create(tmp_path / "keyring.json", KeyEncryptionKey.generate())
    store = FuzzyRoundStore(tmp_path / "fz.sqlite", sealer)
    rnd = FuzzyRound("r-1", [FuzzyHit(1, "KEN", HitClaim(0, 5, 123456), "r-1.s2", b"\x01" * 16)],
                     ["r-1.s1", "r-1.s2"], [("T1", "ALPHA BRAVO"), ("T2", "CHARLIE DELTAFOX")], "name",
                     time.time(), {"KEN": 600})
    store.put(rnd)
    assert store.get("r-1.s2") == store.get("r-1") == rnd
    with pytest.raises(NotFound):
        store.get("r-2")
    # a round older than the retention is never returned, even before a write prunes it
    store.put(replace(rnd, round_id="r-old", sub_rounds=[], created_unix=time.time() - 2 * 86400))
    with pytest.raises(NotFound):
        store.get("r-old")
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("fz.sqlite*"))
    assert b"DELTAFOX" not in raw and b"KEN" not in raw  # nothing in clear, not even the State


def test_audit_references_are_bounded() -> None:
    ev = check_event({"type": "fuzzy_release", "references": ["KEN-REF-00007", "QDi.123"]})
    assert ev["references"] == ["KEN-REF-00007", "QDi.123"]
    # the bound is the most one follow-up can release (fedcheck.node.fuzzy.MAX_RELEASE_CLAIMS)
    most = check_event({"type": "fuzzy_release", "references": ["ok"] * MAX_RELEASE_CLAIMS})
    assert len(most["references"]) == MAX_RELEASE_CLAIMS
    for bad in (["JOHN SMITH"], ["x" * 65], ["ok"] * (MAX_RELEASE_CLAIMS + 1), "KEN-1", [7]):
        with pytest.raises(InvalidInput):
            check_event({"type": "fuzzy_release", "references": bad})


def test_screen_cli_faces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from dataclasses import replace

    import numpy as np

    from fedcheck.cli.main import main
    from fedcheck.records import write_jsonl

    data = make_demo_data(travellers=12)
    faces = np.random.default_rng(3).normal(size=(12, 128))  # synthetic: no real faces in the repo
    listed = [replace(r, face_embedding=tuple(faces[i])) for i, r in enumerate(data.watchlists["KEN"][:8])]
    probe = faces[5] + np.random.default_rng(4).normal(scale=0.15, size=128)
    manifest = [replace(data.manifest[0], face_embedding=tuple(probe)),
                replace(data.manifest[1], face_embedding=tuple(faces[10])), data.manifest[2]]
    wl, mf = tmp_path / "wl.jsonl", tmp_path / "m.jsonl"
    write_jsonl(listed, wl)
    write_jsonl(manifest, mf)
    assert main(["screen", "--watchlist", str(wl), "--manifest", str(mf), "--mode", "fuzzy", "--fuzzy-kind",
                 "face", "--key-bits", "1024", "--state", "KEN", "--format", "json"]) == 0
    doc = {t["traveller"]: t["hits"] for t in json.loads(capsys.readouterr().out)}
    first, second, third = (r.record_id for r in manifest)
    assert [(h["key_type"], h["label"]["reference"]) for h in doc[first]] == [
        ("face_similarity", listed[5].label.reference)]
    assert not doc[second] and not doc[third]
