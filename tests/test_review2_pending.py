"""Second review of the coordinator's held answers and the querier's audit
(/tmp/review2/probe_audit_pending.py, probe_qlog_collision.py).

1. A held answer (``UNAVAILABLE audit_pending``) was collectable only with the byte-identical signed request,
   which the shipped querier never sent, and the held ``round`` entry was appended only by that resubmission
   (dropped without a trace at expiry). Now the querier resubmits the unchanged request, and the coordinator
   appends held entries at its next successful append, by a background retry, or -- reduced -- at expiry.
2. Reduced entries kept neither the validated audit heads (``anchors``) nor a refusal's relayed reason.
3. ``RoundStore.anchors`` named rounds without their querier (round ids are per querier).
4. Nodes sharing an ``[audit] log`` directory shared one querier log (the second node's queries exit 2).
5. Only a ``FedcheckError`` left a querier audit entry; any other failure left none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import test_security_review as sr
from test_fuzzy_anchors import FRA as FRA_PEER
from test_fuzzy_anchors import Holder as FuzzyHolder
from test_security_review import COORD, Pki

import fedcheck.node.querier as querier_mod
from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import (
    Aborted,
    FedcheckError,
    IntegrityError,
    InvalidInput,
    PolicyDenied,
    PreconditionFailed,
    Unavailable,
)
from fedcheck.fuzzy import HitClaim
from fedcheck.node.fuzzyquery import FuzzyHit, FuzzyOptions, FuzzyQueryRunner, FuzzyRound
from fedcheck.node.querier import (
    QUERIER_AUDIT_LOG,
    QuerierCache,
    QueryOptions,
    QueryRunner,
    collect_held,
    querier_audit_path,
)
from fedcheck.records.model import BirthDate, PersonName, PersonRecord
from fedcheck.rpc.clients import InMemoryCoordinatorClient, InMemoryNodeClient
from fedcheck.rpc.messages import BlindEvaluateRequest, Evaluation, FuzzyReleaseReply, FuzzyReleaseRequest
from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey
from fedcheck.trust.audit import AuditLog, append_event, generate_signing_key, read_entries, verify_log
from fedcheck.trust.pki import PeerIdentity
from tests.test_coordinator_rounds import PEER, FakeNode, _request
from tests.test_review_coordinator_robust import (
    GOOD_HASH,
    GOOD_SIG,
    FuzzyNode,
    ReleaseHolder,
    _fuzzy_request,
    _relay,
    _release_request,
)

FRA = PeerIdentity("node", "FRA", 2)  # the querying node as the coordinator's TLS peer (exact pipeline)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return sr.pki.__wrapped__()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The querier's resubmission backoff, shortened (the bound on the total wait is kept)."""
    monkeypatch.setattr(querier_mod, "AUDIT_PENDING_FIRST_WAIT_S", 0.01)


# -- helpers -------------------------------------------------------------------------------------------------


class FailFirst:
    """An audit sink in front of a real log that fails the first ``n`` appends of each of ``types`` (full
    entries only unless ``reduced_too``) with ``exc``."""

    def __init__(self, log: AuditLog, types: set[str], n: int = 1, *, exc: FedcheckError | None = None,
                 reduced_too: bool = False) -> None:
        self.log, self.left = log, dict.fromkeys(types, n)
        self.exc = exc or IntegrityError("disk full", reason="audit_write")
        self.reduced_too = reduced_too
        self.failed: list[Mapping[str, Any]] = []

    def __call__(self, event: Mapping[str, Any]) -> object:
        kind = str(event.get("type"))
        if self.left.get(kind, 0) > 0 and (self.reduced_too or "reasons" not in event):
            self.left[kind] -= 1
            self.failed.append(event)
            raise self.exc
        return self.log.append(event)


class AnchoredNode(FakeNode):
    """An exact holder whose answer carries a well-formed signed audit head."""

    def blind_evaluate(self, request: BlindEvaluateRequest, *, timeout: float) -> Evaluation:
        ev = super().blind_evaluate(request, timeout=timeout)
        return Evaluation(ev.epoch_id, ev.evaluated, ev.proof, audit_seq=42, audit_hash=GOOD_HASH,
                          audit_signature=GOOD_SIG)


def _entries(path: Path) -> list[dict[str, Any]]:
    return [dict(e.event) for e in read_entries(path)] if path.exists() else []


def _rounds(path: Path, round_id: str) -> list[dict[str, Any]]:
    return [e for e in _entries(path) if e.get("type") == "round" and e.get("round_id") == round_id]


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[tuple[Path, AuditLog]]:
    path = tmp_path / "coordinator" / "audit.jsonl"
    log = AuditLog(path, generate_signing_key())
    try:
        yield path, log
    finally:
        log.close()


def _engine(tmp_path: Path, sink: Callable[[Mapping[str, Any]], object], **kw: Any) -> RoundEngine:
    return RoundEngine({"AAA": AnchoredNode("ok"), "DDD": FakeNode("deny")},
                       RoundStore(tmp_path / "rounds.sqlite"), ca_pem=b"", crl=lambda: None,
                       verify_signatures=False, audit=sink, **kw)


# -- 1b. the querier collects a held answer by itself --------------------------------------------------------


def test_exact_held_round_is_collected_by_the_querier_retry(
    tmp_path: Path, pki: Pki, coord: tuple[Path, AuditLog]
) -> None:
    """probe_audit_pending: the coordinator holds the answer (its round entry failed once); the querier
    resubmits the unchanged signed request, gets the answer, and the holder was asked (charged) once."""
    path, log = coord
    svc, _, epochs, _ = sr._holder(tmp_path, pki)
    sink = FailFirst(log, {"round"})
    engine = RoundEngine({"DEU": InMemoryNodeClient(svc, COORD)}, RoundStore(tmp_path / "rounds.sqlite"),
                         ca_pem=pki.ca_pem, crl=lambda: None, audit=sink)
    cache = QuerierCache(tmp_path / "qc.sqlite",
                         EnvelopeSealer.open_or_create(tmp_path / "kr.json", KeyEncryptionKey.generate()))
    events: list[dict[str, Any]] = []
    runner = QueryRunner(state="FRA", coordinator=InMemoryCoordinatorClient(engine, FRA), cache=cache,
                         cert_pem=pki.certs["FRA"][0], key_pem=pki.certs["FRA"][1], ca_pem=pki.ca_pem,
                         crl=lambda: None, audit=lambda e: events.append(dict(e)))
    try:
        report = runner.run(sr._records()[:2], QueryOptions(states=("DEU",), purpose="border",
                                                             legal_basis="LB-1", round_id="case-1"))
    finally:
        engine.close()
        cache.close()
    assert len(sink.failed) == 1  # the coordinator did hold the answer once
    assert report.statuses["DEU"] == "ok" and all(t.hits for t in report.travellers)
    assert epochs.evaluations == 1  # the holder evaluated (and charged) once
    assert runner.last_round is not None and not runner.last_round.replayed
    (rnd,) = _rounds(path, "case-1")  # the coordinator's entry for the round exists, once
    assert rnd["querier"] == "FRA" and rnd["outcome"] == "ok" and "reasons" not in rnd
    assert not [e for e in _entries(path) if e["type"] == "refusal"]
    (q,) = events
    assert q["outcome"] == "ok" and q["round_id"] == "case-1" and q["replayed"] is False


@pytest.fixture
def fuzzy_pipeline(tmp_path: Path, pki: Pki, coord: tuple[Path, AuditLog]) -> Iterator[
    tuple[FuzzyHolder, FuzzyQueryRunner, FailFirst, Path, list[dict[str, Any]]]
]:
    path, log = coord
    holder = FuzzyHolder(tmp_path, pki)
    sink = FailFirst(log, {"round", "fuzzy_release"})
    engine = RoundEngine({"DEU": InMemoryNodeClient(holder, COORD)},  # type: ignore[arg-type]
                         RoundStore(tmp_path / "coordinator" / "rounds.sqlite"), ca_pem=pki.ca_pem,
                         crl=lambda: None, audit=sink)
    events: list[dict[str, Any]] = []
    cert, key = pki.certs["FRA"]
    runner = FuzzyQueryRunner(state="FRA", coordinator=InMemoryCoordinatorClient(engine, FRA_PEER),
                              cert_pem=cert, key_pem=key, ca_pem=pki.ca_pem, crl=lambda: None,
                              audit=lambda e: events.append(dict(e)))
    try:
        yield holder, runner, sink, path, events
    finally:
        engine.close()
        holder.log.close()


def test_fuzzy_held_round_and_follow_up_are_collected_by_the_querier_retry(
    fuzzy_pipeline: tuple[FuzzyHolder, FuzzyQueryRunner, FailFirst, Path, list[dict[str, Any]]],
) -> None:
    holder, runner, sink, path, events = fuzzy_pipeline
    manifest = [PersonRecord("T1", (PersonName("LISTED PERSON 1"),), birth_dates=(BirthDate(1971, 1, 2),))]
    options = QueryOptions(states=("DEU",), purpose="border", legal_basis="LB", round_id="fz-held")
    report = runner.run(manifest, options, FuzzyOptions(key_bits=1024, workers=1), follow_up=True)
    assert [e["type"] for e in sink.failed] == ["round", "fuzzy_release"]  # both answers were held once
    assert report.statuses == {"DEU": "ok"}
    assert {h.label.get("reference") for h in report.travellers[0].hits} == {"REF-1"}  # released
    at_holder = [e.event["type"] for e in read_entries(holder.path)]
    assert at_holder.count("fuzzy_score") == 1 and at_holder.count("fuzzy_release") == 1  # asked once each
    assert "refusal" not in at_holder
    (rnd,) = _rounds(path, "fz-held")
    assert rnd["mode"] == "fuzzy" and rnd["anchors"]
    (rel,) = [e for e in _entries(path) if e["type"] == "fuzzy_release"]
    assert rel["outcome"] == "ok" and rel["holder"] == "DEU"
    assert [(e["type"], e["outcome"]) for e in events] == [("query", "ok"), ("query_follow_up", "ok")]


def test_querier_retry_is_bounded_and_only_for_audit_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(querier_mod.time, "sleep", slept.append)
    monkeypatch.setattr(querier_mod, "AUDIT_PENDING_FIRST_WAIT_S", 0.5)
    calls: list[int] = []

    def held() -> None:
        calls.append(1)
        raise Unavailable("held", reason="audit_pending")

    with pytest.raises(Unavailable) as info:
        collect_held(held, round_id="r1")
    assert info.value.reason == "audit_pending"
    assert slept == [0.5, 1.0, 2.0, 4.0] and sum(slept) <= 10 and len(calls) == 5

    others = (Unavailable("down", reason="coordinator_down"), PreconditionFailed("x", reason="round_expired"))
    for other in others:
        slept.clear()
        calls.clear()

        def fails(exc: FedcheckError = other) -> None:
            calls.append(1)
            raise exc

        with pytest.raises(FedcheckError):
            collect_held(fails)
        assert calls == [1] and slept == []  # nothing else is resubmitted

    slept.clear()
    hinted = Unavailable("held", reason="audit_pending")
    hinted.retry_after_s = 3  # type: ignore[attr-defined]
    answers: list[object] = [hinted, hinted, "answer"]

    def hint_then_answer() -> object:
        item = answers.pop(0)
        if isinstance(item, FedcheckError):
            raise item
        return item

    assert collect_held(hint_then_answer) == "answer" and slept == [3.0, 3.0]  # the hint is honoured
    assert Aborted("x").status != "UNAVAILABLE"  # ABORTED (round_in_progress) is not a held answer


# -- 1a. the coordinator appends held entries without waiting for a resubmission ----------------------------


def test_held_entry_is_flushed_at_the_next_successful_append(
    tmp_path: Path, coord: tuple[Path, AuditLog]
) -> None:
    path, log = coord
    sink = FailFirst(log, {"round"})
    eng = _engine(tmp_path, sink)
    held = _request("r1", ["AAA"])
    try:
        with pytest.raises(Unavailable) as info:
            eng.submit_round(PEER, held)
        assert info.value.reason == "audit_pending"
        assert _rounds(path, "r1") == []
        eng.submit_round(PEER, _request("r2", ["AAA"]))  # any later round: its entry, then the held one
        assert [e["round_id"] for e in _entries(path)] == ["r2", "r1"]
        result = eng.submit_round(PEER, held)  # collecting appends nothing more
        again = eng.submit_round(PEER, held)
    finally:
        eng.close()
    assert result.by_state()["AAA"].evaluation is not None and not result.replayed and again.replayed
    assert eng._nodes["AAA"].calls == 2  # type: ignore[attr-defined]  # r1 and r2, once each
    (rnd,) = _rounds(path, "r1")
    assert rnd["outcome"] == "ok" and rnd["anchors"] == {"AAA": f"42:{GOOD_HASH}"} and "reasons" not in rnd
    assert verify_log(path, log.public_key).ok


def test_rerun_with_a_new_payload_is_refused_but_flushes_the_held_entry(
    tmp_path: Path, coord: tuple[Path, AuditLog]
) -> None:
    """The probe's re-run: a freshly signed payload under the same id is refused (round_id_reused) -- and
    that refusal's append brings the held round entry into the log too."""
    path, log = coord
    eng = _engine(tmp_path, FailFirst(log, {"round"}))
    try:
        with pytest.raises(Unavailable):
            eng.submit_round(PEER, _request("case-1", ["AAA"]))
        time.sleep(0.002)
        with pytest.raises(PreconditionFailed) as info:
            eng.submit_round(PEER, _request("case-1", ["AAA"], n=3))
        assert info.value.reason == "round_id_reused"
    finally:
        eng.close()
    assert [(e["type"], e.get("reason")) for e in _entries(path)] == [("refusal", "round_id_reused"),
                                                                       ("round", None)]
    assert eng._nodes["AAA"].calls == 1  # type: ignore[attr-defined]


def test_background_retry_flushes_without_further_traffic(
    tmp_path: Path, coord: tuple[Path, AuditLog]
) -> None:
    path, log = coord
    eng = _engine(tmp_path, FailFirst(log, {"round"}), audit_retry_seconds=0.05)
    req = _request("r1", ["AAA"])
    try:
        with pytest.raises(Unavailable):
            eng.submit_round(PEER, req)
        deadline = time.monotonic() + 5
        while not _rounds(path, "r1") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_rounds(path, "r1")) == 1
        assert eng.submit_round(PEER, req).by_state()["AAA"].evaluation is not None
    finally:
        eng.close()
    assert len(_rounds(path, "r1")) == 1


def test_expired_held_entry_is_appended_reduced(tmp_path: Path, coord: tuple[Path, AuditLog]) -> None:
    path, log = coord
    sink = FailFirst(log, {"round"}, n=99)  # the full entry never goes in; the reduced one does
    eng = _engine(tmp_path, sink, result_ttl_seconds=0.05)
    req = _request("r1", ["AAA", "DDD"])
    try:
        with pytest.raises(Unavailable):
            eng.submit_round(PEER, req)
        time.sleep(0.1)
        with pytest.raises(PreconditionFailed) as info:  # expired: the id stays taken
            eng.submit_round(PEER, req)
        assert info.value.reason == "round_expired"
    finally:
        eng.close()
    (rnd,) = _rounds(path, "r1")
    assert rnd["reasons"] == ["audit_reduced", "audit_pending_expired"]
    assert rnd["querier"] == "QQQ" and rnd["outcome"] == "partial"
    assert rnd["anchors"] == {"AAA": f"42:{GOOD_HASH}"}
    assert rnd["holders"] == {"AAA": "ok", "DDD": "refused/partner_not_allowed"}


def test_expired_entry_that_cannot_be_written_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Mapping[str, Any]) -> None:
        raise IntegrityError("disk full", reason="audit_write")

    eng = _engine(tmp_path, broken, result_ttl_seconds=0.05)
    try:
        with pytest.raises(Unavailable):
            eng.submit_round(PEER, _request("lost-1", ["AAA"]))
        time.sleep(0.1)
        with caplog.at_level(logging.ERROR, logger="fedcheck.coordinator"):
            eng._backlog.expire()
    finally:
        eng.close()
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR and "lost" in r.getMessage()]
    assert getattr(line, "round_id", "") == "lost-1" and getattr(line, "partner", "") == "QQQ"
    assert getattr(line, "reason", "") == "audit_pending_expired"
    assert "proof" not in line.getMessage() and GOOD_HASH not in line.getMessage()


def test_close_records_what_is_still_held(tmp_path: Path, coord: tuple[Path, AuditLog]) -> None:
    path, log = coord
    sink = FailFirst(log, {"round"}, n=99)
    eng = _engine(tmp_path, sink)
    with pytest.raises(Unavailable):
        eng.submit_round(PEER, _request("r1", ["AAA"]))
    eng.close()
    (rnd,) = _rounds(path, "r1")
    assert rnd["reasons"] == ["audit_reduced", "coordinator_stopped"]


def test_held_fuzzy_round_is_flushed_by_the_next_append(tmp_path: Path, coord: tuple[Path, AuditLog]) -> None:
    path, log = coord
    holder = FuzzyNode("ok")
    eng = RoundEngine({"AAA": holder}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"", crl=lambda: None,
                      verify_signatures=False, audit=FailFirst(log, {"round"}))
    req = _fuzzy_request("fz1", ["AAA"])
    try:
        with pytest.raises(Unavailable):
            eng.submit_fuzzy_round(PEER, req)
        with pytest.raises(PreconditionFailed):  # a refused submission is appended: the held entry follows
            eng.submit_fuzzy_round(PEER, _fuzzy_request("fz1", ["AAA", "BBB"]))
        assert len(_rounds(path, "fz1")) == 1
        result = eng.submit_fuzzy_round(PEER, req)
    finally:
        eng.close()
    assert result.by_state()["AAA"].fuzzy is not None and holder.calls == 1
    assert len(_rounds(path, "fz1")) == 1


def test_held_follow_up_is_flushed_and_collected_once(tmp_path: Path, coord: tuple[Path, AuditLog]) -> None:
    path, log = coord
    holder = ReleaseHolder(FuzzyReleaseReply(b"sealed-labels", None, audit_seq=7, audit_hash=GOOD_HASH,
                                             audit_signature=GOOD_SIG))
    relay = _relay(tmp_path, holder, FailFirst(log, {"fuzzy_release"}))
    querier = PeerIdentity("node", "FRA", 1)
    req = _release_request()
    try:
        with pytest.raises(Unavailable):
            relay.release(querier, "DEU", req)
        relay._backlog.flush()  # what the next append or the background retry does
        assert len(_entries(path)) == 1
        got = relay.release(querier, "DEU", req)
    finally:
        relay.close()
    assert got.sealed_label_response == b"sealed-labels" and holder.calls == 1
    (ev,) = _entries(path)
    assert ev["type"] == "fuzzy_release" and ev["anchors"] == {"DEU": f"7:{GOOD_HASH}"}


# -- 2. reduced entries keep what was validated ----------------------------------------------------------


def test_reduced_round_entry_keeps_anchors(tmp_path: Path, coord: tuple[Path, AuditLog]) -> None:
    path, log = coord
    eng = _engine(tmp_path, FailFirst(log, {"round"}, exc=InvalidInput("no", reason="audit_value")))
    try:
        eng.submit_round(PEER, _request("r1", ["AAA", "DDD"]))
    finally:
        eng.close()
    (rnd,) = _rounds(path, "r1")
    assert rnd["reasons"] == ["audit_reduced", "audit_value"]
    assert rnd["anchors"] == {"AAA": f"42:{GOOD_HASH}"}
    assert rnd["holders"] == {"AAA": "ok", "DDD": "refused/partner_not_allowed"}


def test_reduced_fuzzy_round_entry_keeps_anchors(tmp_path: Path, coord: tuple[Path, AuditLog]) -> None:
    path, log = coord
    eng = RoundEngine({"AAA": FuzzyNode("ok")}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"",
                      crl=lambda: None, verify_signatures=False,
                      audit=FailFirst(log, {"round"}, exc=InvalidInput("no", reason="audit_value")))
    try:
        eng.submit_fuzzy_round(PEER, _fuzzy_request("fz1", ["AAA"]))
    finally:
        eng.close()
    (rnd,) = _rounds(path, "fz1")
    assert rnd["reasons"] == ["audit_reduced", "audit_value"] and rnd["anchors"] == {"AAA": f"3:{GOOD_HASH}"}


def test_reduced_follow_up_refusal_keeps_the_relayed_reason(
    tmp_path: Path, coord: tuple[Path, AuditLog]
) -> None:
    path, log = coord

    class Refusing(ReleaseHolder):
        def fuzzy_release(self, request: FuzzyReleaseRequest, *, timeout: float) -> FuzzyReleaseReply:
            self.calls += 1
            raise PolicyDenied("no", reason="release_not_allowed")

    relay = _relay(tmp_path, Refusing(FuzzyReleaseReply(b"", None)),
                   FailFirst(log, {"fuzzy_release"}, exc=InvalidInput("no", reason="audit_value")))
    try:
        with pytest.raises(PolicyDenied):
            relay.release(PeerIdentity("node", "FRA", 1), "DEU", _release_request())
    finally:
        relay.close()
    (ev,) = _entries(path)
    assert ev["outcome"] == "refused" and ev["reasons"] == ["audit_reduced", "audit_value"]
    assert ev["reason"] == "release_not_allowed"


# -- 3. anchors name their round's querier -----------------------------------------------------------------


def test_anchors_name_the_querier_of_each_round(tmp_path: Path) -> None:
    eng = _engine(tmp_path, lambda e: None)
    store = eng._store
    try:
        eng.submit_round(PeerIdentity("node", "FRA", 1), _request("case-1", ["AAA"]))
        eng.submit_round(PeerIdentity("node", "ITA", 1), _request("case-1", ["AAA"]))
        anchors = store.anchors("AAA")
    finally:
        eng.close()
        store.close()
    assert sorted(a[:3] for a in anchors) == [("FRA", "case-1", "AAA"), ("ITA", "case-1", "AAA")]
    assert all(a[3:5] == (42, GOOD_HASH) for a in anchors)


# -- 4. querier logs of nodes sharing a log directory ------------------------------------------------------


def _cfg(tmp_path: Path, state: str, log: str | None) -> Any:
    raw = {"audit": {"log": log}} if log is not None else {}
    return SimpleNamespace(raw=raw, path=tmp_path / state / "node.toml", data_dir=tmp_path / state / "data")


def test_querier_log_is_named_after_the_node_log(tmp_path: Path) -> None:
    shared = tmp_path / "logs"
    fra = querier_audit_path(_cfg(tmp_path, "FRA", str(shared / "FRA.jsonl")))
    deu = querier_audit_path(_cfg(tmp_path, "DEU", str(shared / "DEU.jsonl")))
    assert (fra, deu) == (shared / "FRA-querier.jsonl", shared / "DEU-querier.jsonl")
    default = _cfg(tmp_path, "ITA", None)
    assert querier_audit_path(default) == default.data_dir / "audit-querier.jsonl"
    assert QUERIER_AUDIT_LOG == "audit-querier.jsonl"
    ka, kb = generate_signing_key(), generate_signing_key()  # each node signs with its own audit key
    append_event(fra, ka, {"type": "query", "round_id": "r1", "outcome": "ok"})
    append_event(deu, kb, {"type": "query", "round_id": "r2", "outcome": "ok"})  # was: audit_anchor_signature
    assert verify_log(fra, ka.public_key()).ok and verify_log(deu, kb.public_key()).ok


# -- 5. any failure of a run is audited --------------------------------------------------------------------


class _Broken:
    """A coordinator transport failing with an unexpected (non-fedcheck) error carrying personal data."""

    def list_nodes(self, *, timeout: float) -> list[Any]:
        raise RuntimeError("traveller JANE DOE 1980-01-01 P1234567")

    def fuzzy_release(self, state: str, request: FuzzyReleaseRequest, *, timeout: float) -> FuzzyReleaseReply:
        raise RuntimeError("traveller JANE DOE 1980-01-01 P1234567")


def _no_personal_data(event: Mapping[str, Any]) -> None:
    text = repr(event)
    assert "JANE" not in text and "P1234567" not in text and "RuntimeError" not in text


def test_unexpected_error_of_an_exact_run_is_audited(tmp_path: Path) -> None:
    cache = QuerierCache(tmp_path / "qc.sqlite",
                         EnvelopeSealer.open_or_create(tmp_path / "kr.json", KeyEncryptionKey.generate()))
    events: list[dict[str, Any]] = []
    runner = QueryRunner(state="FRA", coordinator=_Broken(), cache=cache,  # type: ignore[arg-type]
                         cert_pem=b"", key_pem=b"", audit=lambda e: events.append(dict(e)))
    try:
        with pytest.raises(RuntimeError):  # re-raised as it was
            runner.run(sr._records()[:1], QueryOptions(states=("DEU",), round_id="r-int"))
    finally:
        cache.close()
    (ev,) = events
    assert ev["outcome"] == "error" and ev["reason"] == "internal" and ev["status"] == "INTERNAL"
    assert ev["round_id"] == "r-int" and ev["targets"] == ["DEU"]
    _no_personal_data(ev)


def test_unexpected_error_of_a_fuzzy_run_and_follow_up_is_audited(pki: Pki) -> None:
    events: list[dict[str, Any]] = []
    cert, key = pki.certs["FRA"]
    runner = FuzzyQueryRunner(state="FRA", coordinator=_Broken(), cert_pem=cert,  # type: ignore[arg-type]
                              key_pem=key, audit=lambda e: events.append(dict(e)))
    with pytest.raises(RuntimeError):
        runner.run(sr._records()[:1], QueryOptions(states=("DEU",), round_id="fz-int"))
    rnd = FuzzyRound("fz-int", hits=[FuzzyHit(0, "DEU", HitClaim(0, 1, 2), "fz-int", b"\x01" * 16)],
                     travellers=[("t1", "JANE DOE")])
    with pytest.raises(RuntimeError):
        runner.follow_up(rnd, "DEU", QueryOptions(states=("DEU",)))
    run_ev, follow_ev = events
    assert run_ev["type"] == "query" and run_ev["outcome"] == "error" and run_ev["reason"] == "internal"
    assert follow_ev["type"] == "query_follow_up" and follow_ev["outcome"] == "error"
    assert follow_ev["reason"] == "internal" and follow_ev["status"] == "INTERNAL"
    for ev in events:
        _no_personal_data(ev)
