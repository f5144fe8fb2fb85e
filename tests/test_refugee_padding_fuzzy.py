"""Protected travellers in fuzzy rounds: every target gets the same traveller set, count and layout.

A refugee of nationality ITA screened against DEU and ITA: ITA's request carries a dummy in the refugee's
place (fresh ciphertexts of an all-zero encoding that never hits), so neither the sub-round sizes nor the
counts in the signed payload nor the request bytes depend on the exclusion. The holders run in-process
(``FuzzyHolder`` behind a fake coordinator, holder signatures not checked here: tests/test_fuzzy_federation.py
does), and the test owns the Paillier key so it can read what ITA was sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from fedcheck.demo.data import make_demo_data
from fedcheck.fuzzy import FuzzyHolder, FuzzyQuerier, HolderLimits, QuerierKey, ScoreRequest, ScoreResponse
from fedcheck.fuzzy.encoding import name_bigrams
from fedcheck.fuzzy.holder import MARGIN_BITS, entries_from_records
from fedcheck.fuzzy.querier import DUMMY_NAME_MARGIN, DUMMY_TRAVELLER, Traveller
from fedcheck.fuzzy.reference import face_margins, name_margins
from fedcheck.node import fuzzyquery
from fedcheck.node.fuzzyquery import FuzzyOptions, FuzzyQueryRunner
from fedcheck.node.querier import QueryOptions
from fedcheck.records.model import PersonRecord
from fedcheck.rpc import serde
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    FuzzyInfo,
    FuzzyScore,
    HolderResult,
    HolderStatus,
    NodeEntry,
    NodeInfo,
    RoundResult,
    SubmitFuzzyRoundRequest,
)
from fedcheck.screening.fuzzy import traveller_of

KEY_BITS = 1024  # test-only key size
THETA = "0.8"
MAX_TRAVELLERS = 3  # small sub-rounds: the manifest of 7 is split in 3
_PLAN_LAYOUT = fuzzyquery.plan_layout


@pytest.fixture(scope="module")
def key() -> QuerierKey:
    return QuerierKey.generate(KEY_BITS)


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    data = make_demo_data(travellers=12)
    listed = data.watchlists["KEN"][:25]
    target = listed[3]  # the refugee's name is listed at both States
    refugee = replace(data.manifest[0], record_id="R-1", names=target.names, birth_dates=target.birth_dates,
                      nationalities=("ITA",), flags=frozenset({"refugee"}))
    others = [r for r in data.manifest[1:] if r.names][:4]
    # two more listed names (hits at both States) among ordinary travellers
    extra = [replace(data.manifest[6], record_id="X-1", names=listed[7].names,
                     birth_dates=listed[7].birth_dates, nationalities=("ITA",)),
             replace(data.manifest[7], record_id="X-2", names=listed[11].names,
                     birth_dates=listed[11].birth_dates, nationalities=("DEU",))]
    manifest = [others[0], others[1], refugee, others[2], extra[0], others[3], extra[1]]
    return {"manifest": manifest, "refugee": 2, "lists": {"DEU": listed, "ITA": listed[:20]}}


class _FakeCoordinator:
    """Lists DEU and ITA and scores each State's request with that State's in-process holder."""

    def __init__(self, lists: dict[str, list[PersonRecord]]) -> None:
        self.holders = {s: FuzzyHolder(entries_from_records(recs, kind="name"), workers=1,
                                       limits=HolderLimits(key_bits=frozenset({KEY_BITS})))
                        for s, recs in lists.items()}
        self.submitted: list[SubmitFuzzyRoundRequest] = []

    def list_nodes(self, *, timeout: float) -> list[NodeEntry]:
        out = []
        for state, holder in self.holders.items():
            years = [e.year for e in holder.entries if e.year is not None]
            fz = FuzzyInfo(MAX_TRAVELLERS, 128, min(years), max(years), len(holder.entries))
            info = NodeInfo(state, (1,), ("exact", FUZZY_MODE), f"ep-{state}", b"\x01" * 32, 0, 100, 0, 0,
                            fuzzy=fz)
            out.append(NodeEntry(state, True, info))
        return out

    def submit_fuzzy_round(self, request: SubmitFuzzyRoundRequest, *, timeout: float) -> RoundResult:
        self.submitted.append(request)
        results = []
        for state, data in request.requests.items():
            resp = self.holders[state].score(ScoreRequest.from_bytes(data))
            results.append(HolderResult(state, HolderStatus.OK,
                                        fuzzy=FuzzyScore(f"ep-{state}", resp.to_bytes())))
        return RoundResult(request.round_id, tuple(results), 0, 0)


def _run(world: dict[str, Any], key: QuerierKey, monkeypatch: pytest.MonkeyPatch, *, flagged: bool
         ) -> tuple[Any, _FakeCoordinator, FuzzyQueryRunner]:
    manifest = list(world["manifest"])
    if not flagged:
        i = world["refugee"]
        manifest[i] = replace(manifest[i], flags=frozenset())
    coord = _FakeCoordinator(world["lists"])
    monkeypatch.setattr(QuerierKey, "generate", classmethod(lambda cls, bits=2048: key))
    monkeypatch.setattr(fuzzyquery, "sign_payload", lambda key_pem, payload: b"sig")
    monkeypatch.setattr(fuzzyquery, "verify_answer", lambda *a, **kw: None)
    planned: list[tuple[Any, ...]] = []
    plan = _PLAN_LAYOUT

    def recording_plan(infos: Any, fuzzy: FuzzyOptions, groups: int = 1) -> Any:
        planned.append((tuple(infos), fuzzy, groups))
        return plan(infos, fuzzy, groups)

    monkeypatch.setattr(fuzzyquery, "plan_layout", recording_plan)
    world.setdefault("planned", {})[flagged] = planned
    runner = FuzzyQueryRunner(state="FRA", coordinator=coord, cert_pem=b"cert", key_pem=b"key")  # type: ignore[arg-type]
    options = QueryOptions(states=("DEU", "ITA"), legal_basis="FED-agreement-2026/art.5",
                           unit="FRA-BORDER-01", official="officer-0001", deadline_seconds=30)
    report = runner.run(manifest, options, FuzzyOptions(key_bits=KEY_BITS, threshold=THETA, workers=1))
    return report, coord, runner


def _hits(runner: FuzzyQueryRunner) -> dict[str, set[int]]:
    rnd = runner.last_fuzzy
    assert rnd is not None
    out: dict[str, set[int]] = {"DEU": set(), "ITA": set()}
    for h in rnd.hits:
        out[h.state].add(h.traveller)
    return out


def _reference_hits(world: dict[str, Any], state: str) -> set[int]:
    entries = entries_from_records(world["lists"][state], kind="name")
    travellers = [traveller_of(r) for r in world["manifest"]]
    m = name_margins([name_bigrams(t.name) for t in travellers], [t.year for t in travellers],
                     [frozenset(e.dims) for e in entries], [e.year for e in entries], Fraction(THETA),
                     year_base=1800, year_count=301)
    return {int(i) for i in np.nonzero((m >= 0).any(axis=1))[0]}


def _rows(req: ScoreRequest, key: QuerierKey) -> list[list[int]]:
    """The signed plaintext encoding of every traveller of ``req`` (pack size 1)."""
    width, n = key.public.ciphertext_bytes, key.public.n
    per = req.params.ciphertexts_per_pack
    cts = [int.from_bytes(req.ciphertexts[i:i + width], "big") for i in range(0, len(req.ciphertexts), width)]
    plain = [v - n if v > n // 2 else v for v in key.decrypt_many(cts)]
    return [plain[i:i + per] for i in range(0, len(plain), per)]


def test_refugee_is_a_dummy_at_its_state_of_nationality(
    world: dict[str, Any], key: QuerierKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_report, plain_coord, plain_runner = _run(world, key, monkeypatch, flagged=False)
    report, coord, runner = _run(world, key, monkeypatch, flagged=True)
    refugee = world["refugee"]

    # 1. the layout does not depend on the exclusion: same sub-rounds, same sizes, at every State
    def sizes(c: _FakeCoordinator) -> list[dict[str, int]]:
        return [{s: ScoreRequest.from_bytes(d).traveller_count for s, d in sub.requests.items()}
                for sub in c.submitted]

    assert sizes(coord) == sizes(plain_coord) == [{"DEU": 3, "ITA": 3}, {"DEU": 3, "ITA": 3},
                                                  {"DEU": 1, "ITA": 1}]
    # the sizing inputs too (2 targets = 2 requests on the wire, whatever the policy excludes)
    assert world["planned"][True] == world["planned"][False] and world["planned"][True][0][2] == 2
    fz, plain_fz = report.details["fuzzy"], plain_report.details["fuzzy"]
    for k in ("sub_rounds", "travellers_per_sub_round", "travellers", "size_table", "years"):
        assert fz[k] == plain_fz[k]

    # 2. the signed payload: equal counts per target, every target's request its own fresh encryption
    for sub in coord.submitted:
        payload = serde.round_payload_from_bytes(sub.round.payload)
        counts = {t.state: t.count for t in payload.targets}
        assert counts["DEU"] == counts["ITA"]
        digests = {t.state: t.batch_sha256 for t in payload.targets}
        assert digests == {s: hashlib.sha256(d).digest() for s, d in sub.requests.items()}
        assert digests["DEU"] != digests["ITA"]
        deu, ita = (ScoreRequest.from_bytes(sub.requests[s]) for s in ("DEU", "ITA"))
        width = key.public.ciphertext_bytes
        shared = {deu.ciphertexts[i:i + width] for i in range(0, len(deu.ciphertexts), width)} & {
            ita.ciphertexts[i:i + width] for i in range(0, len(ita.ciphertexts), width)}
        assert not shared  # no ciphertext reused across States: the relay cannot see where they differ

    # 3. ITA was never sent the refugee's encoding: its slot decrypts to the dummy encoding
    sub = coord.submitted[refugee // MAX_TRAVELLERS]
    slot = refugee % MAX_TRAVELLERS
    deu_req, ita_req = (ScoreRequest.from_bytes(sub.requests[s]) for s in ("DEU", "ITA"))
    q = FuzzyQuerier(key, threshold=THETA, size_table=ita_req.params.size_table,
                     year_base=ita_req.params.year_base, year_count=ita_req.params.year_count)
    dummy = q.encode([DUMMY_TRAVELLER])[0]
    real = q.encode([traveller_of(world["manifest"][refugee])])[0]
    ita_rows, deu_rows = _rows(ita_req, key), _rows(deu_req, key)
    assert ita_rows[slot] == dummy and deu_rows[slot] == real and real != dummy
    assert all(v == 0 for v in dummy[:729]) and set(dummy[729:]) <= {DUMMY_NAME_MARGIN, 0}
    for i, row in enumerate(ita_rows):  # the others are sent to ITA as they are to DEU
        if i != slot:
            assert row == deu_rows[i] != dummy

    # 4. DEU finds the refugee, ITA reports nothing for them; every other decision is unchanged
    hits, plain_hits = _hits(runner), _hits(plain_runner)
    assert refugee in hits["DEU"] and refugee not in hits["ITA"]
    assert refugee in plain_hits["ITA"]  # without the flag ITA would have found them
    assert hits["DEU"] == plain_hits["DEU"] == _reference_hits(world, "DEU")
    assert hits["ITA"] == plain_hits["ITA"] - {refugee} == _reference_hits(world, "ITA") - {refugee}
    assert len(hits["DEU"]) >= 3  # the planted listed names
    # the report: no ITA hit on the refugee, none anywhere from a dummy
    assert not [h for h in report.travellers[refugee].hits if h.state == "ITA"]
    assert [h for h in report.travellers[refugee].hits if h.state == "DEU"]
    rnd = runner.last_fuzzy
    assert rnd is not None and not [h for h in rnd.hits if h.state == "ITA" and h.traveller == refugee]


@pytest.mark.parametrize("pack_size", [1, 3])
def test_dummy_slots_decode_as_misses_and_leave_real_decisions_unchanged(
    world: dict[str, Any], key: QuerierKey, pack_size: int
) -> None:
    """Dummies between real travellers (also sharing a pack with them): every dummy slot is a miss with the
    dummy margin, every real traveller's decisions equal the plaintext reference (no spill-over)."""
    records = world["lists"]["DEU"]
    entries = entries_from_records(records, kind="name")
    holder = FuzzyHolder(entries, workers=1, limits=HolderLimits(key_bits=frozenset({KEY_BITS})))
    real = [traveller_of(r) for r in world["manifest"]]
    real.append(Traveller(name="", year=None))  # an empty name: the honest margin 0 - T(0, |Y|)
    travellers: list[Traveller] = []
    for t in real:
        travellers += [DUMMY_TRAVELLER, t]
    travellers.append(DUMMY_TRAVELLER)
    q = FuzzyQuerier(key, threshold=THETA, pack_size=pack_size, workers=1)
    req = q.build_request(travellers)
    resp: ScoreResponse = holder.score(req)
    vals = q.slot_values(req, resp).astype(object)
    w = q.params.slot_bits
    top, b = 1 << (w - 1), w - MARGIN_BITS["name"]
    assert -(1 << (MARGIN_BITS["name"] - 1)) <= DUMMY_NAME_MARGIN < 0  # within the honest range
    ref = name_margins([name_bigrams(t.name) for t in real], [t.year for t in real],
                       [frozenset(e.dims) for e in entries], [e.year for e in entries], Fraction(THETA))
    for i, t in enumerate(travellers):
        row = vals[i]
        if t.dummy:
            # 2^(w-1) + r·m + ρ with m = -255, r >= 2^(b-1), ρ < r: below 2^(w-1) - 254·2^(b-1), never < 0
            assert all(0 < v < top + (DUMMY_NAME_MARGIN + 1) * (1 << (b - 1)) for v in row), row
        else:
            got = sorted(bool(v >= top) for v in row)  # per entry, whatever the holder's shuffle
            assert got == sorted(bool(m >= 0) for m in ref[real.index(t)])
    decided = q.decide(req, resp)
    assert {travellers[h.traveller].dummy for h in decided.hits} == {False}
    assert len(decided.hits) == int((ref >= 0).sum()) > 0


def test_face_dummy_never_hits(key: QuerierKey) -> None:
    rng = np.random.default_rng(5)
    listed = rng.normal(size=(6, 32))
    entries_rec = make_demo_data(travellers=2).watchlists["KEN"][:6]
    records = [replace(r, face_embedding=tuple(listed[i])) for i, r in enumerate(entries_rec)]
    entries = entries_from_records(records, kind="face")
    holder = FuzzyHolder(entries, kind="face", face_dims=32, workers=1,
                         limits=HolderLimits(key_bits=frozenset({KEY_BITS})))
    probe = listed[2] + rng.normal(scale=0.05, size=32)
    travellers = [DUMMY_TRAVELLER, Traveller(face=tuple(probe)), DUMMY_TRAVELLER]
    q = FuzzyQuerier(key, kind="face", threshold="0.5", face_dims=32, workers=1, pack_size=3)
    req = q.build_request(travellers)
    vals = q.slot_values(req, holder.score(req)).astype(object)
    top = 1 << (q.params.slot_bits - 1)
    assert all(0 < v < top for i in (0, 2) for v in vals[i])
    ref = face_margins([probe], [listed[i] for i in range(6)], Fraction("0.5"))
    assert sorted(bool(v >= top) for v in vals[1]) == sorted(bool(m >= 0) for m in ref[0])
    assert (ref >= 0).sum() >= 1
