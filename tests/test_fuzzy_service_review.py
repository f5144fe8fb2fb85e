"""Second review of the fuzzy path at the holder service: refusals audited, validation before the
charge, post-charge failures, follow-up replay, per-round lock, per-audience layout hints, sealed and signed
answers."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import test_security_review as sr
from test_security_review import COORD, Pki, StubEpochs, _policy, _records

from fedcheck.errors import FedcheckError, VerificationError
from fedcheck.fuzzy import FuzzyQuerier, HitClaim, LabelRequest, LabelResponse, QuerierKey, Traveller
from fedcheck.node.fuzzy import FuzzyService, FuzzySettings
from fedcheck.node.fuzzyquery import _sub_round_id
from fedcheck.node.fuzzyseal import KIND_RELEASE, KIND_SCORE, AnswerSigner, ReplyKey, verify_answer
from fedcheck.node.replay import ReplayGuard
from fedcheck.rpc import serde
from fedcheck.rpc.messages import (
    FuzzyReleasePayload,
    FuzzyReleaseRequest,
    FuzzyScoreRequest,
    RoundPayload,
    RoundTarget,
    SignedEnvelope,
)
from fedcheck.trust.budget import BudgetLedger
from fedcheck.trust.pki import PeerIdentity, sign_payload

FUZZY = {"modes": ["exact", "fuzzy"], "key_types": ["document", "name_dob"], "purposes": ["border"],
         "budget_per_epoch": 50}


class _Store:
    def __init__(self) -> None:
        self.records = _records()

    def list_version(self) -> str:
        return "v1"

    def iter_records(self) -> Any:
        return iter(self.records)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return sr.pki.__wrapped__()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def qkey() -> QuerierKey:
    return QuerierKey.generate(1024)


def _svc(
    tmp: Path, pki: Pki, extra: dict[str, Any] | None = None
) -> tuple[FuzzyService, list[dict[str, Any]]]:
    pol = _policy(extra={"FRA": FUZZY, **(extra or {})})
    events: list[dict[str, Any]] = []
    svc = FuzzyService(
        state="DEU", store=_Store(), epochs=StubEpochs(pol, _records()), policy=pol,  # type: ignore[arg-type]
        budget=BudgetLedger(tmp / "b.sqlite", pol.budget_limits()), audit=lambda e: events.append(dict(e)),
        ca_pem=pki.ca_pem, crl=lambda: None,
        settings=FuzzySettings(key_bits=frozenset({1024}), workers=1),
        replay=ReplayGuard(tmp / "r.sqlite", window_seconds=600),
        signer=AnswerSigner("DEU", *pki.certs["DEU"]),
    )
    return svc, events


def _score_request(pki: Pki, qkey: QuerierKey, round_id: str, name: str = "LISTED PERSON 1",
                   **fields: Any) -> tuple[FuzzyQuerier, Any, FuzzyScoreRequest]:
    q = FuzzyQuerier(qkey, workers=1)
    req = q.build_request([Traveller(name, 1971)])
    data = req.to_bytes()
    now = int(time.time() * 1000)
    p = RoundPayload(round_id=round_id, purpose="border", legal_basis=fields.pop("legal_basis", "LB"),
                     mode="fuzzy", targets=(RoundTarget("DEU", "DEU-e1", 1, hashlib.sha256(data).digest()),),
                     deadline_unix_ms=now + 60000, issued_at_unix_ms=now, **fields)
    cert, key = pki.certs["FRA"]
    pd = serde.round_payload_to_bytes(p)
    return q, req, FuzzyScoreRequest(SignedEnvelope(pd, sign_payload(key, pd), cert), data, round_id)


def _release(pki: Pki, round_id: str, lr: LabelRequest, reply: ReplyKey | None = None,
             **fields: Any) -> FuzzyReleaseRequest:
    data = lr.to_bytes()
    p = FuzzyReleasePayload(round_id=round_id, holder_state="DEU",
                            label_request_sha256=hashlib.sha256(data).digest(),
                            issued_at_unix_ms=int(time.time() * 1000), purpose="border",
                            legal_basis=fields.pop("legal_basis", "LB"),
                            reply_public_key=(reply or ReplyKey()).public, **fields)
    cert, key = pki.certs["FRA"]
    pd = serde.fuzzy_release_payload_to_bytes(p)
    return FuzzyReleaseRequest(SignedEnvelope(pd, sign_payload(key, pd), cert), data)


def _scored(svc: FuzzyService, pki: Pki, qkey: QuerierKey, rid: str) -> tuple[Any, list[HitClaim], bytes]:
    q, req, sreq = _score_request(pki, qkey, rid)
    ans = svc.score(COORD, sreq)
    from fedcheck.fuzzy import ScoreResponse

    hits = list(q.decide(req, ScoreResponse.from_bytes(ans.score_response)).hits)
    assert hits
    return ans, hits, req.round_id


def test_signed_score_and_sealed_release_round_trip(tmp_path: Path, pki: Pki, qkey: QuerierKey) -> None:
    svc, _ = _svc(tmp_path, pki)
    q, req, sreq = _score_request(pki, qkey, "fz-ok")
    ans = svc.score(COORD, sreq)
    kw = dict(ca_pem=pki.ca_pem, crl=lambda: None, holder_state="DEU", querier_state="FRA", round_id="fz-ok")
    verify_answer(ans.attestation, kind=KIND_SCORE, request_payload=sreq.round.payload,
                  answer=ans.score_response, **kw)  # type: ignore[arg-type]
    for bad in (ans.score_response[:-1] + bytes([ans.score_response[-1] ^ 1]), b"other answer"):
        with pytest.raises(VerificationError):  # a relay's substitution
            verify_answer(ans.attestation, kind=KIND_SCORE, request_payload=sreq.round.payload, answer=bad,
                          **kw)  # type: ignore[arg-type]
    with pytest.raises(VerificationError):  # signed by another node (the relay holds no DEU key)
        forged = AnswerSigner("DEU", *pki.certs["FRA"]).sign(KIND_SCORE, "FRA", "fz-ok", sreq.round.payload,
                                                             b"x")
        verify_answer(forged, kind=KIND_SCORE, request_payload=sreq.round.payload, answer=b"x",
                      **kw)  # type: ignore[arg-type]
    from fedcheck.fuzzy import ScoreResponse

    hits = q.decide(req, ScoreResponse.from_bytes(ans.score_response)).hits
    reply = ReplyKey()
    rreq = _release(pki, "fz-ok", LabelRequest(req.round_id, tuple(hits)), reply)
    out = svc.release(COORD, rreq)
    verify_answer(out.attestation, kind=KIND_RELEASE, request_payload=rreq.release.payload,
                  answer=out.sealed_label_response, **kw)  # type: ignore[arg-type]
    assert b"REF-1" not in out.sealed_label_response and b"sanctions" not in out.sealed_label_response
    labels = LabelResponse.from_bytes(reply.open(out.sealed_label_response, querier_state="FRA",
                                                 holder_state="DEU", round_id="fz-ok"))
    assert {r.label.get("reference") for r in labels.released} == {"REF-1"}
    with pytest.raises(VerificationError):  # bound to the round and States
        reply.open(out.sealed_label_response, querier_state="FRA", holder_state="DEU", round_id="other")
    with pytest.raises(VerificationError):  # altered in transit
        reply.open(out.sealed_label_response[:-1] + b"\0", querier_state="FRA", holder_state="DEU",
                   round_id="fz-ok")


def test_fuzzy_refusals_are_audited(tmp_path: Path, pki: Pki, qkey: QuerierKey) -> None:
    """/tmp/rev/test_fuzzy_audit.py: before the fix none of these left an audit entry."""
    svc, events = _svc(tmp_path, pki)
    _, _, good = _score_request(pki, qkey, "fz1")
    bad_sig = SignedEnvelope(good.round.payload, sign_payload(pki.certs["FRA"][1], b"other"),
                             good.round.certificate_pem)
    with pytest.raises(FedcheckError):
        svc.score(COORD, FuzzyScoreRequest(bad_sig, good.score_request, "fz1"))
    assert events[-1]["type"] == "fuzzy_score" and events[-1]["reason"] == "bad_signature"
    _, _, long_lb = _score_request(pki, qkey, "fz2", legal_basis="X" * 80)
    with pytest.raises(FedcheckError):
        svc.score(COORD, long_lb)
    assert events[-1]["type"] == "fuzzy_score" and events[-1]["outcome"] == "refused"
    assert events[-1]["partner"] == "FRA" and events[-1]["role"] == "node"
    rel = _release(pki, "fz3", LabelRequest(b"\0" * 16, ()), legal_basis="X" * 80)
    with pytest.raises(FedcheckError):
        svc.release(COORD, rel)
    assert events[-1]["type"] == "fuzzy_release" and events[-1]["role"] == "node"
    bad_rel = FuzzyReleaseRequest(SignedEnvelope(rel.release.payload, bad_sig.signature,
                                                 rel.release.certificate_pem), rel.label_request)
    with pytest.raises(FedcheckError):
        svc.release(COORD, bad_rel)
    assert events[-1]["type"] == "fuzzy_release" and events[-1]["reason"] == "bad_signature"
    assert len(events) == 4


def test_release_replay_and_claim_cap_refused_before_charge(
    tmp_path: Path, pki: Pki, qkey: QuerierKey
) -> None:
    svc, events = _svc(tmp_path, pki)
    _, hits, fz = _scored(svc, pki, qkey, "fz-r")
    used = svc._budget.remaining("FRA", "DEU-e1").items
    too_many = _release(pki, "fz-r", LabelRequest(fz, tuple(hits) * 5))  # over the cap of 4 per traveller
    with pytest.raises(FedcheckError) as exc:
        svc.release(COORD, too_many)
    assert exc.value.reason == "too_many_claims" and svc._budget.remaining("FRA", "DEU-e1").items == used
    rel = _release(pki, "fz-r", LabelRequest(fz, (hits[0],)))
    svc.release(COORD, rel)
    after = svc._budget.remaining("FRA", "DEU-e1").items
    with pytest.raises(FedcheckError) as exc:
        svc.release(COORD, rel)  # the same signed follow-up replayed by the relay
    assert exc.value.reason == "release_replayed" and events[-1]["reason"] == "release_replayed"
    assert svc._budget.remaining("FRA", "DEU-e1").items == after
    holder = svc._open[("FRA", "fz-r")].holder
    assert holder._rounds[fz].claims == 1  # the replay consumed no claim


def test_failures_after_the_charge_are_audited(tmp_path: Path, pki: Pki, qkey: QuerierKey) -> None:
    svc, events = _svc(tmp_path, pki)
    partner = svc._policy.partner("FRA")
    assert partner is not None
    holder = svc.holder_for("DEU-e1", partner)
    real = holder.score

    def boom(req: Any) -> Any:
        raise RuntimeError("worker died")

    holder.score = boom  # type: ignore[method-assign]
    _, _, sreq = _score_request(pki, qkey, "fz-f")
    with pytest.raises(FedcheckError) as exc:
        svc.score(COORD, sreq)
    assert exc.value.reason == "scoring_failed"
    assert events[-1]["outcome"] == "refused" and events[-1]["reason"] == "scoring_failed"
    holder.score = real  # type: ignore[method-assign]
    _, _, again = _score_request(pki, qkey, "fz-f")  # the round id is not burnt
    assert svc.score(COORD, again).score_response


def test_concurrent_wrong_claims_evaluate_once(qkey: QuerierKey) -> None:
    """/tmp/rev/test_release_race.py: one wrong claim per round, also under concurrency."""
    from test_fuzzy_release import _holder, _round

    holder = _holder()
    _, req, vals = _round(qkey, holder)
    outcomes: list[str] = []
    gate = threading.Barrier(8)

    def go(j: int) -> None:
        gate.wait()
        try:
            out = holder.release(LabelRequest(req.round_id, (HitClaim(0, j % 6, int(vals[j % 6]) + 7 + j),)))
            outcomes.append(f"rejected:{out.rejected}")
        except FedcheckError as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=go, args=(j,)) for j in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o.startswith("rejected") for o in outcomes) == 1, outcomes


def test_layout_hints_leave_out_withheld_entries(tmp_path: Path, pki: Pki) -> None:
    withheld = dict(FUZZY, withheld=[f"REF-{i}" for i in range(3, 6)])
    svc, _ = _svc(tmp_path, pki, {"FRA": withheld, "ITA": withheld})
    store = svc._store
    assert isinstance(store, _Store)
    from dataclasses import replace

    from fedcheck.records.model import PersonName

    # the withheld entries are the only long names and the only late births
    store.records = [r if i < 3 else replace(r, names=(PersonName("W" * 60 + " LONGNAME" * 4),),
                                             birth_dates=(replace(r.birth_dates[0], year=2010),))
                     for i, r in enumerate(store.records)]
    own = svc.info(PeerIdentity("node", "FRA", 3))
    relayed = svc.info(COORD)
    for info in (own, relayed):
        assert info.year_max < 2000 and info.name_size_table <= 32


def test_sub_round_ids_of_long_round_ids_do_not_collide() -> None:
    a, b = "x" * 62 + "AA", "x" * 62 + "BB"
    assert _sub_round_id(a, 0, 2) != _sub_round_id(b, 0, 2)
    assert all(len(_sub_round_id(r, 9, 12)) <= 64 for r in (a, b, "short"))
    assert _sub_round_id("short", 1, 2) == "short.s2"
