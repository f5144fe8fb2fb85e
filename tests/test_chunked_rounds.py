"""Manifests larger than one holder batch run as consecutive exact rounds (fedcheck.node.chunking).

In-process federation: querier FRA, holders DEU and ITA advertising a small ``max_batch`` (40), so a
50-traveller manifest (about four keys each) needs several rounds; the same manifest against holders with
the default 4,096 runs as one round and must give identical results.
"""

from __future__ import annotations

import io
import itertools
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import InvalidInput
from fedcheck.node.announce import AnnouncementSigner
from fedcheck.node.chunking import (
    NOT_RUN,
    Chunk,
    batch_limit,
    merge_reports,
    plan_chunks,
    run_chunked,
    status_rank,
)
from fedcheck.node.querier import QuerierCache, QueryOptions, QueryRunner
from fedcheck.node.replay import ReplayGuard
from fedcheck.node.service import NodeService
from fedcheck.progress import Progress
from fedcheck.records.model import BirthDate, PersonName, PersonRecord, TravelDocument
from fedcheck.rpc.clients import InMemoryCoordinatorClient, InMemoryNodeClient
from fedcheck.rpc.messages import NodeEntry, NodeInfo
from fedcheck.screening.manifest import query_keys
from fedcheck.screening.report import Hit, ScreenReport, StateCount, TravellerResult
from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey
from fedcheck.trust.budget import BudgetLedger
from fedcheck.trust.pki import PeerIdentity, create_ca, issue_certificate
from fedcheck.trust.policy import HolderPolicy, QuerierPolicy
from tests.test_security_review import StubEpochs, _records

HOLDERS = ("DEU", "ITA")
COORD = PeerIdentity("coordinator", "FED", 1)
OPTS = QueryOptions(states=HOLDERS, purpose="border", legal_basis="LB-1")
#: manifest positions of the travellers listed by both holders (watchlist entries w0..w4)
PLANTED = {3: 0, 17: 1, 29: 2, 44: 3, 49: 4}

PKI = tuple[Path, bytes, dict[str, tuple[bytes, bytes]]]


@dataclass
class Fed:
    root: Path
    ca: bytes
    certs: dict[str, tuple[bytes, bytes]]
    engine: RoundEngine
    events: list[dict[str, Any]]

    def runner(self) -> QueryRunner:
        d = Path(tempfile.mkdtemp(dir=self.root))
        sealer = EnvelopeSealer.open_or_create(d / "kr.json", KeyEncryptionKey.generate())
        return QueryRunner(
            state="FRA",
            coordinator=InMemoryCoordinatorClient(self.engine, PeerIdentity("node", "FRA", 2)),
            cache=QuerierCache(d / "qc.sqlite", sealer),
            cert_pem=self.certs["FRA"][0],
            key_pem=self.certs["FRA"][1],
            ca_pem=self.ca,
            crl=lambda: None,
            policy=QuerierPolicy(),
            audit=lambda e: self.events.append(dict(e)),
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("chunked-pki")
    create_ca(d / "ca", federation="FED")
    certs = {}
    for s in ("FRA", *HOLDERS):
        f = issue_certificate(d / "ca", d / s, role="node", state=s)
        certs[s] = (f.cert.read_bytes(), f.key.read_bytes())
    return d, (d / "ca" / "ca.crt.pem").read_bytes(), certs


def _policy(budget: int | None = None) -> HolderPolicy:
    partner: dict[str, Any] = {"modes": ["exact", "cardinality"], "key_types": ["document", "name_dob"],
                               "purposes": ["border"]}
    if budget is not None:
        partner["budget_per_epoch"] = budget
    return HolderPolicy.from_toml({"policy": {"holder": {"partners": {"FRA": partner}}}})


def _federation(pki: PKI, root: Path, max_batch: int, budgets: Mapping[str, int] | None = None) -> Fed:
    _, ca, certs = pki
    root.mkdir(parents=True, exist_ok=True)
    nodes = {}
    for s in HOLDERS:
        pol = _policy((budgets or {}).get(s))
        svc = NodeService(
            state=s, epochs=StubEpochs(pol, _records(), epoch_id=f"{s}-e1"),  # type: ignore[arg-type]
            policy=pol,
            budget=BudgetLedger(root / f"{s}b.sqlite", pol.budget_limits()), audit=lambda e: None,
            ca_pem=ca, crl=lambda: None, max_batch=max_batch, index_chunk_bytes=1 << 16,
            replay=ReplayGuard(root / f"{s}r.sqlite", window_seconds=600),
            announcer=AnnouncementSigner(s, *certs[s]),
        )
        nodes[s] = InMemoryNodeClient(svc, COORD)
    engine = RoundEngine(nodes, RoundStore(root / "rounds.sqlite"), ca_pem=ca, crl=lambda: None)
    return Fed(root, ca, certs, engine, [])


@pytest.fixture
def small(pki: PKI, tmp_path: Path) -> Iterator[Fed]:
    fed = _federation(pki, tmp_path / "small", 40)
    yield fed
    fed.engine.close()


@pytest.fixture
def large(pki: PKI, tmp_path: Path) -> Iterator[Fed]:
    fed = _federation(pki, tmp_path / "large", 4096)
    yield fed
    fed.engine.close()


def _traveller(i: int) -> PersonRecord:
    w = PLANTED.get(i)
    if w is not None:  # matches watchlist entry w{w} of _records() (name + date of birth + document)
        return PersonRecord(
            f"t{i:02d}", (PersonName(f"LISTED PERSON {w}"),), birth_dates=(BirthDate(1970 + w, 1, 2),),
            documents=(TravelDocument("passport", f"P{w:06d}", "DEU"),), nationalities=("ESP",),
        )
    return PersonRecord(
        f"t{i:02d}", (PersonName(f"TRAVELLER NUMBER {i}"),),
        birth_dates=(BirthDate(1960 + i, 3, 1 + i % 28),),
        documents=(TravelDocument("passport", f"X{i:06d}", "FRA"),), nationalities=("FRA",),
    )


MANIFEST = [_traveller(i) for i in range(50)]


def _hits(report: ScreenReport) -> list[tuple[str, list[tuple[str, str, str]]]]:
    return [(t.traveller, sorted((h.state, h.key_type, h.label.get("reference", "")) for h in t.hits))
            for t in report.travellers]


def replace_id(options: QueryOptions, round_id: str) -> QueryOptions:
    return replace(options, round_id=round_id)


def _round_ids(fed: Fed) -> list[str]:
    return [str(e["round_id"]) for e in fed.events]


# -- planning -----------------------------------------------------------------------------------------------


def test_plan_keeps_travellers_whole_in_order_within_the_limit() -> None:
    total = len(query_keys(MANIFEST).keys)
    assert total > 40  # one round would be refused
    chunks = plan_chunks(MANIFEST, 40)
    assert len(chunks) >= 3
    assert chunks[0].start == 0 and chunks[-1].stop == len(MANIFEST)
    assert all(a.stop == b.start for a, b in itertools.pairwise(chunks))
    for c in chunks:
        assert len(c) > 0 and c.keys == len(query_keys(MANIFEST[c.start:c.stop]).keys) <= 40
    assert plan_chunks(MANIFEST, 10_000) == [Chunk(0, 50, total)]
    # a traveller whose keys alone exceed the limit gets a chunk of their own, never split
    assert all(len(c) == 1 for c in plan_chunks(MANIFEST[:5], 1))
    assert plan_chunks([], 40) == []


def test_batch_limit_is_the_smallest_advertised_among_targets() -> None:
    def entry(state: str, max_batch: int, reachable: bool = True) -> NodeEntry:
        info = NodeInfo(state, (1,), ("exact",), "e1", b"k", 1, max_batch, 1 << 16, 0)
        return NodeEntry(state, reachable, info if reachable else None)

    nodes = [entry("DEU", 4096), entry("ITA", 500), entry("ESP", 100), entry("NLD", 0, reachable=False)]
    assert batch_limit(nodes, ["DEU", "ITA"]) == 500
    assert batch_limit(nodes, ["DEU", "ITA", "ESP", "NLD"]) == 100
    assert batch_limit(nodes, ["NLD"]) == 4096  # nothing advertised: the node default
    assert batch_limit([entry("DEU", 60_000)], ["DEU"]) == 10_000  # the coordinator's wire limit


# -- merging ------------------------------------------------------------------------------------------------


def test_merge_worst_status_details_timings_counts() -> None:
    a = ScreenReport(
        [TravellerResult("t1", hits=[Hit("DEU", "exact", "document", {"reference": "R1"})])],
        counts=[StateCount("DEU", "cardinality", 2)],
        statuses={"DEU": "ok (cached)", "ITA": "ok", "ESP": "ok"},
        timings={"round": 1.0, "total": 2.0},
        details={"ITA": {"excluded": 1, "excluded_causes": {"refugee": 1}, "audit_head": "1:a"}},
    )
    b = ScreenReport(
        [TravellerResult("t2")],
        counts=[StateCount("DEU", "cardinality", 3)],
        statuses={"DEU": "ok", "ITA": "refused (epoch_budget_exhausted)", "ESP": "timeout"},
        timings={"round": 0.5, "total": 1.0},
        details={"ITA": {"excluded": 2, "excluded_causes": {"refugee": 1, "asylum": 1}, "audit_head": "2:b",
                         "code": "RESOURCE_EXHAUSTED", "reasons": ["epoch_budget_exhausted"],
                         "retry_after_s": 30}},
    )
    c = ScreenReport(
        [TravellerResult("t3")], statuses={"DEU": "ok (cached)", "ITA": "unavailable", "ESP": "refused (x)"},
        details={"ITA": {"code": "PERMISSION_DENIED", "reasons": ["purpose_denied", "epoch_budget_exhausted"],
                         "retry_after_s": 10}},
    )
    m = merge_reports([a, b, c])
    assert [t.traveller for t in m.travellers] == ["t1", "t2", "t3"]
    assert m.travellers[0].hits == a.travellers[0].hits
    assert m.statuses == {"DEU": "ok", "ITA": "refused (epoch_budget_exhausted)", "ESP": "refused (x)"}
    assert m.details["ITA"] == {
        "excluded": 3, "excluded_causes": {"refugee": 2, "asylum": 1}, "audit_head": "2:b",
        "code": "RESOURCE_EXHAUSTED", "reasons": ["epoch_budget_exhausted", "purpose_denied"],
        "retry_after_s": 30,
    }
    assert m.timings == {"round": 1.5, "total": 3.0}
    assert m.counts == [StateCount("DEU", "cardinality", 5)]
    ranks = [status_rank(s) for s in ("ok (cached)", "ok", NOT_RUN, "unavailable", "timeout", "refused (x)")]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


# -- federation ---------------------------------------------------------------------------------------------


def test_single_round_is_refused_without_chunking(small: Fed) -> None:
    rep = small.runner().run(MANIFEST, OPTS)
    assert rep.statuses == {s: "refused (batch_too_large)" for s in HOLDERS}


def test_chunked_rounds_find_every_planted_hit_like_one_large_round(small: Fed, large: Fed) -> None:
    single = run_chunked(large.runner(), MANIFEST, replace_id(OPTS, "scr-1"))
    assert len(large.events) == 1 and _round_ids(large) == ["scr-1"]  # fits: one round, id unchanged
    assert "chunks" not in single.details

    out = io.StringIO()
    bar = Progress(enabled=True, stream=out, min_interval=0)
    rep = run_chunked(small.runner(), MANIFEST, replace_id(OPTS, "scr-1"), progress=bar)
    n = len(plan_chunks(MANIFEST, 40))
    assert n >= 3
    assert _round_ids(small) == [f"scr-1.c{k}" for k in range(1, n + 1)]
    assert all(e["statuses"] == {"DEU": "ok", "ITA": "ok"} for e in small.events)
    assert all(e["items_by_state"]["DEU"] <= 40 for e in small.events)
    assert rep.statuses == {"DEU": "ok", "ITA": "ok"}
    assert [t.traveller for t in rep.travellers] == [r.record_id for r in MANIFEST]
    assert not any(t.not_checked for t in rep.travellers) and rep.complete
    assert _hits(rep) == _hits(single)
    hit = {t.traveller for t in rep.travellers if t.hits}
    assert hit == {f"t{i:02d}" for i in PLANTED}
    for i, w in PLANTED.items():
        refs = {(h.state, h.label.get("reference")) for h in rep.travellers[i].hits}
        assert refs == {(s, f"REF-{w}") for s in HOLDERS}
    assert rep.details["chunks"]["rounds"] == n and rep.details["chunks"]["completed"] == n
    assert rep.details["chunks"]["round_ids"] == _round_ids(small)
    assert set(rep.timings) == set(single.timings)
    text = out.getvalue()
    assert f"round {n}/{n}" in text and f"{n}/{n}" in text


def test_generated_round_ids_and_cached_recheck(small: Fed) -> None:
    runner = small.runner()
    lines: list[str] = []
    rep = run_chunked(runner, MANIFEST, OPTS, progress=lines.append)
    ids = _round_ids(small)
    base = ids[0].rsplit(".c", 1)[0]
    assert ids == [f"{base}.c{k}" for k in range(1, len(ids) + 1)] and len(ids) >= 3
    assert rep.details["chunks"]["round_id"] == base
    assert len(lines) == len(ids) and lines[0].startswith(f"exact round 1/{len(ids)} {base}.c1:")
    again = run_chunked(runner, MANIFEST, OPTS)  # everything from the cache: no holder is asked again
    assert again.statuses == {"DEU": "ok (cached)", "ITA": "ok (cached)"}
    assert _hits(again) == _hits(rep)


def test_cardinality_counts_summed(small: Fed, large: Fed) -> None:
    opts = QueryOptions(mode="cardinality", states=HOLDERS, purpose="border", legal_basis="LB-1")
    one = large.runner().run(MANIFEST, opts)
    rep = run_chunked(small.runner(), MANIFEST, opts)
    assert rep.statuses == {"DEU": "ok", "ITA": "ok"}
    assert sorted((c.state, c.hits) for c in rep.counts) == sorted((c.state, c.hits) for c in one.counts)
    assert all(c.hits > 0 for c in rep.counts)


def test_too_long_round_id_fails_before_any_round(small: Fed) -> None:
    with pytest.raises(InvalidInput) as err:
        run_chunked(small.runner(), MANIFEST, replace_id(OPTS, "r" * 63))
    assert err.value.reason == "invalid_round_id"
    assert small.events == []


def test_budget_refusal_stops_early(pki: PKI, tmp_path: Path) -> None:
    fed = _federation(pki, tmp_path / "budget", 40, budgets={"ITA": 60})
    try:
        lines: list[str] = []
        rep = run_chunked(fed.runner(), MANIFEST, replace_id(OPTS, "b"), progress=lines.append)
    finally:
        fed.engine.close()
    n = len(plan_chunks(MANIFEST, 40))
    assert _round_ids(fed) == ["b.c1", "b.c2"]  # the second round was refused: nothing more was sent
    assert fed.events[1]["statuses"]["ITA"].startswith("refused")
    assert rep.statuses["ITA"] == "refused (epoch_budget_exhausted)"
    assert rep.statuses["DEU"] == NOT_RUN
    chunks = plan_chunks(MANIFEST, 40)
    screened = chunks[1].stop
    # every traveller stays, in manifest order; those of the rounds not run are marked, never "no hit"
    assert [t.traveller for t in rep.travellers] == [r.record_id for r in MANIFEST]
    assert all(not t.not_checked for t in rep.travellers[:chunks[0].stop])  # round 1: checked everywhere
    assert all("DEU" not in t.not_checked for t in rep.travellers[:screened])  # round 2: ITA refused
    for t in rep.travellers[screened:]:
        assert not t.hits and set(t.not_checked) == set(HOLDERS)
        assert "stopped early" in t.not_checked["DEU"] and "epoch_budget_exhausted" in t.not_checked["ITA"]
    assert not rep.complete
    info = rep.details["chunks"]
    assert info["completed"] == 2 and info["rounds"] == n
    assert info["stopped_by"] == "ITA" and info["stop_reason"] == "epoch_budget_exhausted"
    assert info["not_screened"] == len(MANIFEST) - screened
    assert info["not_run_round_ids"] == [f"b.c{k}" for k in range(3, n + 1)]
    assert "epoch_budget_exhausted" in rep.details["ITA"]["reasons"]
    assert lines[-1].startswith("stopped after round 2/")
