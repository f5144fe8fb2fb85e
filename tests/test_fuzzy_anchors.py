"""Audit anchors of fuzzy rounds: ``FuzzyScore`` and ``FuzzyRelease`` answers carry the holder's signed audit
head after that very request's audit entry; the coordinator records them like an exact round's (``anchors``,
``audit_anchors``) and checks them against configured audit public keys (``anchors_verified`` /
``anchors_unverified``); the querier reports the head per State (``details.<STATE>.audit_head``).

In process, no sockets: a real :class:`FuzzyService` (DEU) with a real signed :class:`AuditLog`, a real
:class:`RoundEngine` with its own audit log, and a real :class:`FuzzyQueryRunner` (FRA), connected by the
in-memory transports (same serde round trip as gRPC). 1024-bit Paillier keys and a six-entry list, as in
tests/test_fuzzy_service_review.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import test_security_review as sr
from test_fuzzy_service_review import FUZZY, _release, _score_request, _Store
from test_security_review import COORD, Pki, StubEpochs, _policy, _records

from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.fuzzy import LabelRequest, QuerierKey, ScoreResponse
from fedcheck.node.fuzzy import FuzzyService, FuzzySettings
from fedcheck.node.fuzzyquery import FuzzyOptions, FuzzyQueryRunner
from fedcheck.node.fuzzyseal import AnswerSigner
from fedcheck.node.querier import QueryOptions
from fedcheck.node.replay import ReplayGuard
from fedcheck.records.model import BirthDate, PersonName, PersonRecord
from fedcheck.rpc.clients import InMemoryCoordinatorClient, InMemoryNodeClient
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    FuzzyReleaseReply,
    FuzzyReleaseRequest,
    FuzzyScore,
    FuzzyScoreRequest,
    NodeInfo,
)
from fedcheck.trust.audit import (
    AuditLog,
    SignedHead,
    generate_signing_key,
    read_entries,
    verify_head_signature,
)
from fedcheck.trust.budget import BudgetLedger
from fedcheck.trust.pki import PeerIdentity

FRA = PeerIdentity("node", "FRA", 1)  # the querying node as the coordinator's TLS peer


@pytest.fixture(scope="module")
def pki() -> Pki:
    return sr.pki.__wrapped__()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def qkey() -> QuerierKey:
    return QuerierKey.generate(1024)


class Holder:
    """DEU: the fuzzy service with a real signed audit log, served like a node handler (``head=False``: its
    audit sink acknowledges entries without a signed head, so its answers carry none)."""

    max_batch = 100

    def __init__(self, tmp: Path, pki: Pki, *, head: bool = True) -> None:
        self.key = generate_signing_key()
        self.path = tmp / "DEU" / "audit.jsonl"
        self.log = AuditLog(self.path, self.key)
        self._head = head
        pol = _policy(extra={"FRA": FUZZY})
        self.svc = FuzzyService(
            state="DEU", store=_Store(), epochs=StubEpochs(pol, _records()), policy=pol,  # type: ignore[arg-type]
            budget=BudgetLedger(tmp / "DEU" / "b.sqlite", pol.budget_limits()), audit=self._append,
            ca_pem=pki.ca_pem, crl=lambda: None,
            settings=FuzzySettings(key_bits=frozenset({1024}), workers=1),
            replay=ReplayGuard(tmp / "DEU" / "r.sqlite", window_seconds=600),
            signer=AnswerSigner("DEU", *pki.certs["DEU"]),
        )

    def _append(self, event: dict[str, Any]) -> SignedHead | None:
        head = self.log.append_anchored(event)[1]
        return head if self._head else None

    def last_entry(self) -> Any:
        return list(read_entries(self.path))[-1]

    # -- the node handler methods the in-memory transport calls -----------------------------------------

    def node_info(self, peer: PeerIdentity) -> NodeInfo:
        return NodeInfo("DEU", (1,), ("exact", FUZZY_MODE), "DEU-e1", bytes(32), 0, 100, 65536,
                        int(time.time() * 1000), fuzzy=self.svc.info(peer))

    def fuzzy_score(self, peer: PeerIdentity, request: FuzzyScoreRequest) -> FuzzyScore:
        return self.svc.score(peer, request)

    def fuzzy_release(self, peer: PeerIdentity, request: FuzzyReleaseRequest) -> FuzzyReleaseReply:
        return self.svc.release(peer, request)


def _head(answer: FuzzyScore | FuzzyReleaseReply) -> SignedHead:
    return SignedHead(answer.audit_seq, answer.audit_hash, answer.audit_signature)


def test_holder_answers_carry_the_head_of_their_own_audit_entry(
    tmp_path: Path, pki: Pki, qkey: QuerierKey
) -> None:
    holder = Holder(tmp_path, pki)
    node = InMemoryNodeClient(holder, COORD)  # type: ignore[arg-type]  # through the wire format
    try:
        q, req, sreq = _score_request(pki, qkey, "fz-anchor")
        ans = node.fuzzy_score(sreq, timeout=30)
        # signed by the node's audit key, and exactly the head after the fuzzy_score entry of this round
        assert ans.audit_hash and verify_head_signature(holder.key.public_key(), _head(ans))
        assert not verify_head_signature(generate_signing_key().public_key(), _head(ans))
        last = holder.last_entry()
        assert (ans.audit_seq, ans.audit_hash) == (last.seq, last.hash) == holder.log.head
        assert last.event["type"] == "fuzzy_score" and last.event["round_id"] == "fz-anchor"
        assert last.event["outcome"] == "ok"

        # the follow-up is audited by the holder too: its answer carries the next head
        hits = q.decide(req, ScoreResponse.from_bytes(ans.score_response)).hits
        assert hits
        reply = node.fuzzy_release(_release(pki, "fz-anchor", LabelRequest(req.round_id, tuple(hits))),
                                   timeout=30)
        assert verify_head_signature(holder.key.public_key(), _head(reply))
        last = holder.last_entry()
        assert (reply.audit_seq, reply.audit_hash) == (last.seq, last.hash) == holder.log.head
        assert reply.audit_seq == ans.audit_seq + 1
        assert last.event["type"] == "fuzzy_release" and last.event["outcome"] == "ok"
    finally:
        holder.log.close()


@dataclass
class Pipeline:
    case: str
    holder: Holder
    store: RoundStore  # the coordinator's round metadata (audit_anchors)
    coordinator_log: Path
    runner: FuzzyQueryRunner

    def coordinator_events(self, kind: str) -> list[dict[str, Any]]:
        return [dict(e.event) for e in read_entries(self.coordinator_log) if e.event["type"] == kind]


@pytest.fixture
def pipeline(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[Pipeline]:
    """Querier FRA -> coordinator -> holder DEU; ``request.param`` is the coordinator's audit-key setup."""
    case: str = request.param
    holder = Holder(tmp_path, pki, head=case != "no_head")
    keys = {
        "verified": {"DEU": holder.key.public_key()},
        "wrong_key": {"DEU": generate_signing_key().public_key()},
        "no_head": {"DEU": holder.key.public_key()},
        "no_key_configured": {},
    }[case]
    coord_path = tmp_path / "coordinator" / "audit.jsonl"
    coord_log = AuditLog(coord_path, generate_signing_key())
    store = RoundStore(tmp_path / "coordinator" / "rounds.sqlite")
    engine = RoundEngine(
        {"DEU": InMemoryNodeClient(holder, COORD)},  # type: ignore[arg-type]
        store, ca_pem=pki.ca_pem, crl=lambda: None, audit=coord_log.append, audit_public_keys=keys,
    )
    cert, key = pki.certs["FRA"]
    runner = FuzzyQueryRunner(state="FRA", coordinator=InMemoryCoordinatorClient(engine, FRA),
                              cert_pem=cert, key_pem=key, ca_pem=pki.ca_pem, crl=lambda: None)
    try:
        yield Pipeline(case, holder, store, coord_path, runner)
    finally:
        engine.close()
        coord_log.close()
        holder.log.close()


@pytest.mark.parametrize("pipeline", ["verified", "wrong_key", "no_head", "no_key_configured"],
                         indirect=True)
def test_coordinator_records_and_checks_fuzzy_anchors(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    case, holder = pipeline.case, pipeline.holder
    manifest = [PersonRecord("T1", (PersonName("LISTED PERSON 1"),), birth_dates=(BirthDate(1971, 1, 2),))]
    options = QueryOptions(states=("DEU",), purpose="border", legal_basis="LB", unit="U1", official="O1",
                           round_id="fz-coord")
    with caplog.at_level(logging.WARNING, logger="fedcheck.coordinator"):
        report = pipeline.runner.run(manifest, options, FuzzyOptions(key_bits=1024, workers=1),
                                     follow_up=True)
    assert report.statuses == {"DEU": "ok"}
    assert {h.label.get("reference") for h in report.travellers[0].hits} == {"REF-1"}  # released

    entries = list(read_entries(holder.path))
    score_entry = next(e for e in entries if e.event["type"] == "fuzzy_score")
    release_entry = next(e for e in entries if e.event["type"] == "fuzzy_release")
    score_anchor = f"{score_entry.seq}:{score_entry.hash}"
    release_anchor = f"{release_entry.seq}:{release_entry.hash}"

    (rnd,) = pipeline.coordinator_events("round")
    (rel,) = pipeline.coordinator_events("fuzzy_release")
    assert rnd["mode"] == FUZZY_MODE and rnd["round_id"] == "fz-coord" and rnd["outcome"] == "ok"
    assert rel["holder"] == "DEU" and rel["outcome"] == "ok"
    stored = pipeline.store.anchors("DEU")
    warned = sorted(getattr(r, "round_id", "") for r in caplog.records
                    if getattr(r, "reason", "") == "audit_anchor_unverified")

    if case == "no_head":
        assert rnd["anchors"] == {} and rel["anchors"] == {}
        assert "audit_head" not in report.details.get("DEU", {})
        assert stored == []
    else:
        # the heads are recorded as received, whatever the verification says
        assert rnd["anchors"] == {"DEU": score_anchor}
        assert rel["anchors"] == {"DEU": release_anchor}
        assert report.details["DEU"]["audit_head"] == score_anchor  # the querier sees the head too
        ((querier, round_id, state, seq, h, sig),) = stored  # the fuzzy round's row of audit_anchors
        assert (querier, round_id, state, f"{seq}:{h}") == ("FRA", "fz-coord", "DEU", score_anchor)
        assert verify_head_signature(holder.key.public_key(), SignedHead(seq, h, sig))

    if case == "verified":
        assert rnd["anchors_verified"] == ["DEU"] and rnd["anchors_unverified"] == []
        assert rel["anchors_verified"] == ["DEU"] and rel["anchors_unverified"] == []
        assert warned == []
    elif case in ("wrong_key", "no_head"):
        assert rnd["anchors_verified"] == [] and rnd["anchors_unverified"] == ["DEU"]
        assert rel["anchors_verified"] == [] and rel["anchors_unverified"] == ["DEU"]
        assert warned == ["fz-coord", "fz-coord"]  # oversight evidence; the round was still answered
    else:
        for ev in (rnd, rel):
            assert "anchors_verified" not in ev and "anchors_unverified" not in ev
