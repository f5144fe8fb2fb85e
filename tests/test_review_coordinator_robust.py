"""Review of the coordinator's robustness against what holders return (/tmp/review/probe_anchor.py,
probe_reasons.py, probe_release_anchor.py, probe_targets.py): one malicious or buggy holder must not cost the
querier the answers other holders already charged for, a round must not be fanned out when it cannot be
audited, and index downloads are relayed only for the State that signed the request."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedcheck.coordinator.fanout import ask_holder
from fedcheck.coordinator.fuzzy import FuzzyRelay
from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import (
    BudgetExhausted,
    FedcheckError,
    IntegrityError,
    InvalidInput,
    LimitExceeded,
    PolicyDenied,
    Unavailable,
)
from fedcheck.rpc import errors as rpc_errors
from fedcheck.rpc import serde
from fedcheck.rpc.messages import (
    BlindEvaluateRequest,
    Evaluation,
    FuzzyReleasePayload,
    FuzzyReleaseReply,
    FuzzyReleaseRequest,
    FuzzyScore,
    FuzzyScoreRequest,
    GetIndexRequest,
    HolderResult,
    HolderStatus,
    IndexChunk,
    IndexRequest,
    RoundPayload,
    RoundResult,
    RoundTarget,
    SignedEnvelope,
    SubmitFuzzyRoundRequest,
)
from fedcheck.trust import audit as audit_mod
from fedcheck.trust.audit import AuditLog, generate_signing_key, read_entries
from fedcheck.trust.pki import PeerIdentity, create_ca, issue_certificate, sign_payload
from tests.test_coordinator_rounds import PEER, FakeNode, _request

GOOD_HASH = "ab" * 32  # the audit log's hash format: SHA-256 hex
GOOD_SIG = b"s" * 64  # one Ed25519 signature
GOOD_REPLY = FuzzyReleaseReply(
    b"sealed-labels", None, audit_seq=7, audit_hash=GOOD_HASH, audit_signature=GOOD_SIG
)


# -- helpers -------------------------------------------------------------------------------------------------


class EvilNode(FakeNode):
    """A holder that answers with something the coordinator must not trust."""

    def __init__(self, how: str) -> None:
        super().__init__("ok")
        self.how = how

    def blind_evaluate(self, request: BlindEvaluateRequest, *, timeout: float) -> Evaluation:
        self.calls += 1
        if self.how == "reason":  # what an unchecked fedcheck-reason trailer would have built
            raise PolicyDenied("no", reason="A" * 90, reasons=("A" * 90, "a b"))
        if self.how == "retry":
            raise BudgetExhausted("spent", retry_after_s=2**40)
        ev = Evaluation("e1", request.blinded, b"proof", audit_seq=1, audit_hash="ab" * 50)
        if self.how == "anchor-wire":  # what a gRPC holder's reply goes through (GrpcNodeClient)
            return serde.evaluation_from_pb(serde.evaluation_to_pb(ev))
        return ev  # "anchor-raw": an in-process transport, no wire validation


def _log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "coord-audit.jsonl", generate_signing_key())


def _entries(tmp_path: Path) -> list[dict[str, Any]]:
    return [dict(e.event) for e in read_entries(tmp_path / "coord-audit.jsonl")]


class FlakySink:
    """An audit sink in front of a real log: ``refuse`` raises for matching events (the first ``times``)."""

    def __init__(self, log: AuditLog, refuse: Callable[[Mapping[str, Any]], FedcheckError | None],
                 times: int = 1) -> None:
        self.log, self.refuse, self.left = log, refuse, times
        self.refused: list[Mapping[str, Any]] = []

    def __call__(self, event: Mapping[str, Any]) -> object:
        exc = self.refuse(event)
        if exc is not None and self.left > 0:
            self.left -= 1
            self.refused.append(event)
            raise exc
        return self.log.append(event)


class FakeCall(grpc.RpcError, grpc.Call):
    """What a holder's gRPC refusal looks like to the client (trailing metadata chosen by the holder)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...]) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, cb: Any) -> bool:
        return False


# -- 1. holder-supplied fields: reasons ----------------------------------------------------------------------


def test_from_rpc_error_relays_only_short_codes_and_bounded_values() -> None:
    err = rpc_errors.from_rpc_error(FakeCall(
        grpc.StatusCode.PERMISSION_DENIED, "x" * 5000,
        ((rpc_errors.REASON_KEY, "not a code"), (rpc_errors.REASONS_KEY, "partner_not_allowed,a b,c d")),
    ))
    assert isinstance(err, PolicyDenied)
    assert err.reason == rpc_errors.INVALID_REASON == "holder_invalid_reason"
    assert err.reasons == ("partner_not_allowed", "holder_invalid_reason")
    assert len(err.message) <= rpc_errors.MAX_DETAIL_CHARS
    ok = rpc_errors.from_rpc_error(FakeCall(
        grpc.StatusCode.PERMISSION_DENIED, "no",
        ((rpc_errors.REASON_KEY, "partner_not_allowed"), (rpc_errors.REASONS_KEY, "partner_not_allowed,x.y")),
    ))
    assert ok.reason == "partner_not_allowed" and ok.reasons == ("partner_not_allowed", "x.y")
    spent = rpc_errors.from_rpc_error(FakeCall(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "spent", ((rpc_errors.RETRY_AFTER_KEY, str(2**40)),),
    ))
    assert isinstance(spent, BudgetExhausted) and spent.retry_after_s == rpc_errors.MAX_RETRY_AFTER_S


def test_querier_parses_a_round_with_a_holders_bad_reasons() -> None:
    """probe_reasons: one holder's trailers made the whole RoundResult unparseable at the querier."""

    def call(state: str, transport: Any, timeout: float) -> HolderResult:
        # what GrpcNodeClient raises for the holder's refusal
        raise rpc_errors.from_rpc_error(FakeCall(
            grpc.StatusCode.PERMISSION_DENIED, "no",
            (("fedcheck-reason", "partner_not_allowed"), ("fedcheck-reasons", "a b,c d")),
        ))

    evil = ask_holder("MMM", FakeNode("ok"), call, deadline=time.time() + 5)  # type: ignore[arg-type]
    good = HolderResult("AAA", HolderStatus.OK, evaluation=Evaluation("e1", (b"\x02" * 32,), b"proof"))
    parsed = serde.round_result_from_pb(serde.round_result_to_pb(RoundResult("r1", (good, evil), 1, 2)))
    by = parsed.by_state()
    assert by["AAA"].evaluation is not None and by["AAA"].evaluation.evaluated == (b"\x02" * 32,)
    assert by["MMM"].status is HolderStatus.REFUSED
    assert by["MMM"].reasons == ("holder_invalid_reason",)


@pytest.mark.parametrize("how", ["reason", "retry"])
def test_holder_bad_refusal_does_not_sink_the_round(tmp_path: Path, how: str) -> None:
    """probe_anchor (reason): the round audit failed after the honest holder was charged."""
    log = _log(tmp_path)
    honest, evil = FakeNode("ok"), EvilNode(how)
    eng = RoundEngine({"AAA": honest, "MMM": evil}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"",
                      crl=lambda: None, verify_signatures=False, audit=log.append)
    try:
        req = _request("r-" + how, ["AAA", "MMM"])
        result = eng.submit_round(PEER, req)
        again = eng.submit_round(PEER, req)
    finally:
        eng.close()
        log.close()
    by = result.by_state()
    assert by["AAA"].status is HolderStatus.OK and by["AAA"].evaluation is not None
    assert by["MMM"].status is HolderStatus.REFUSED
    if how == "reason":
        assert by["MMM"].reason == "holder_invalid_reason"
        assert by["MMM"].reasons == ("holder_invalid_reason",)
    else:
        assert by["MMM"].retry_after_s == rpc_errors.MAX_RETRY_AFTER_S
    # what the coordinator relays passes the querier's wire validation
    serde.round_result_from_pb(serde.round_result_to_pb(result))
    assert again.replayed and again.results == result.results and honest.calls == 1
    (ev,) = [e for e in _entries(tmp_path) if e.get("round_id") == "r-" + how]
    assert ev["type"] == "round" and ev["outcome"] == "partial" and ev["holders"]["AAA"] == "ok"


# -- 1. holder-supplied fields: audit heads ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "audit_hash", "sig"),
    [
        (1, "ab" * 50, GOOD_SIG),  # longer than a SHA-256 hex digest (and an "encoded blob" to the log)
        (1, "AB" * 32, GOOD_SIG),  # upper case: not what the log writes
        (1, "zz" * 32, GOOD_SIG),
        (1, GOOD_HASH, b"s" * 63),  # not an Ed25519 signature
        (1, GOOD_HASH, b"s" * 128),
        (2**63, GOOD_HASH, GOOD_SIG),  # does not fit the coordinator's anchor table
    ],
)
def test_malformed_audit_heads_are_refused_at_the_wire(seq: int, audit_hash: str, sig: bytes) -> None:
    ev = Evaluation("e1", (b"\x02" * 32,), b"p", audit_seq=seq, audit_hash=audit_hash, audit_signature=sig)
    score = FuzzyScore("e1", b"x", audit_seq=seq, audit_hash=audit_hash, audit_signature=sig)
    reply = FuzzyReleaseReply(b"x", None, audit_seq=seq, audit_hash=audit_hash, audit_signature=sig)
    for parse in (
        lambda: serde.evaluation_from_pb(serde.evaluation_to_pb(ev)),
        lambda: serde.fuzzy_score_from_pb(serde.fuzzy_score_to_pb(score)),
        lambda: serde.fuzzy_release_reply_from_pb(serde.fuzzy_release_reply_to_pb(reply)),
    ):
        with pytest.raises(InvalidInput) as info:
            parse()
        assert info.value.reason == "invalid_audit_head"


def test_well_formed_and_absent_audit_heads_pass_the_wire() -> None:
    for seq, h, sig in ((7, GOOD_HASH, GOOD_SIG), (0, "", b"")):
        ev = Evaluation("e1", (b"\x02" * 32,), b"p", audit_seq=seq, audit_hash=h, audit_signature=sig)
        back = serde.evaluation_from_pb(serde.evaluation_to_pb(ev))
        assert (back.audit_seq, back.audit_hash, back.audit_signature) == (seq, h, sig)
        reply = FuzzyReleaseReply(b"x", None, audit_seq=seq, audit_hash=h, audit_signature=sig)
        assert serde.fuzzy_release_reply_from_pb(serde.fuzzy_release_reply_to_pb(reply)) == reply


def test_real_audit_heads_are_well_formed(tmp_path: Path) -> None:
    log = _log(tmp_path)
    try:
        _, head = log.append_anchored({"type": "evaluate"})
    finally:
        log.close()
    serde.check_audit_head(head.seq, head.hash, head.signature)


@pytest.mark.parametrize("how", ["anchor-wire", "anchor-raw"])
def test_holder_malformed_head_does_not_sink_the_round(tmp_path: Path, how: str) -> None:
    """probe_anchor (anchor): an over-long audit_hash made the coordinator's audit append fail after the
    honest holder was charged, and the round id was spent (round_expired on resubmission)."""
    log = _log(tmp_path)
    honest, evil = FakeNode("ok"), EvilNode(how)
    eng = RoundEngine({"AAA": honest, "MMM": evil}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"",
                      crl=lambda: None, verify_signatures=False, audit=log.append)
    store = eng._store
    try:
        req = _request("r1", ["AAA", "MMM"])
        result = eng.submit_round(PEER, req)
        again = eng.submit_round(PEER, req)
        anchors = store.anchors()
    finally:
        eng.close()
        log.close()
    by = result.by_state()
    assert by["AAA"].status is HolderStatus.OK and by["AAA"].evaluation is not None
    assert by["MMM"].status is HolderStatus.REFUSED and by["MMM"].reason == "invalid_audit_head"
    serde.round_result_from_pb(serde.round_result_to_pb(result))  # the querier can read it
    assert again.replayed and honest.calls == 1
    assert anchors == []
    (ev,) = [e for e in _entries(tmp_path) if e.get("round_id") == "r1"]
    assert ev["outcome"] == "partial" and ev["anchors"] == {}
    assert ev["holders"]["MMM"] == "refused/invalid_audit_head"


# -- 1. the post-fan-out audit: reduced entry, held answers --------------------------------------------------


def _refuse_round_with(exc: FedcheckError) -> Callable[[Mapping[str, Any]], FedcheckError | None]:
    return lambda e: exc if e.get("type") == "round" and "reasons" not in e else None


def test_round_entry_the_log_refuses_is_replaced_by_the_reduced_entry(tmp_path: Path) -> None:
    log = _log(tmp_path)
    sink = FlakySink(log, _refuse_round_with(InvalidInput("no", reason="audit_value")), times=99)
    honest = FakeNode("ok")
    eng = RoundEngine({"AAA": honest, "DDD": FakeNode("deny")}, RoundStore(tmp_path / "r.sqlite"),
                      ca_pem=b"", crl=lambda: None, verify_signatures=False, audit=sink)
    try:
        result = eng.submit_round(PEER, _request("r1", ["AAA", "DDD"]))
    finally:
        eng.close()
        log.close()
    assert result.by_state()["AAA"].evaluation is not None and honest.calls == 1
    assert len(sink.refused) == 1
    (ev,) = [e for e in _entries(tmp_path) if e.get("round_id") == "r1"]
    assert ev["type"] == "round" and ev["reasons"] == ["audit_reduced", "audit_value"]
    # statuses with their relayed (validated) reason codes, nothing else the holders wrote
    assert ev["holders"] == {"AAA": "ok", "DDD": "refused/partner_not_allowed"}
    assert ev["outcome"] == "partial" and ev["querier"] == "QQQ" and ev["targets"] == ["AAA", "DDD"]
    assert ev["anchors"] == {}  # validated heads are kept (FakeNode answers without one)


def test_round_whose_entry_cannot_be_written_is_held_for_resubmission(tmp_path: Path) -> None:
    log = _log(tmp_path)
    sink = FlakySink(log, _refuse_round_with(IntegrityError("disk", reason="audit_write")), times=2)
    honest = FakeNode("ok")
    eng = RoundEngine({"AAA": honest}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"", crl=lambda: None,
                      verify_signatures=False, audit=sink)
    req = _request("r1", ["AAA"])
    try:
        with pytest.raises(Unavailable) as info:
            eng.submit_round(PEER, req)
        assert info.value.reason == "audit_pending" and info.value.status == "UNAVAILABLE"
        assert [e for e in _entries(tmp_path)] == []  # no refusal recorded: nothing was refused
        with pytest.raises(Unavailable):  # still failing: still held
            eng.submit_round(PEER, req)
        result = eng.submit_round(PEER, req)  # the log works again: the held answer is delivered
        again = eng.submit_round(PEER, req)
    finally:
        eng.close()
        log.close()
    assert result.by_state()["AAA"].evaluation is not None and not result.replayed
    assert again.replayed and again.results == result.results
    assert honest.calls == 1  # the holder (and the querier's budget there) was asked once
    (ev,) = [e for e in _entries(tmp_path) if e.get("round_id") == "r1"]
    assert ev["type"] == "round" and ev["outcome"] == "ok" and "reasons" not in ev


class FuzzyNode(FakeNode):
    def fuzzy_score(self, request: FuzzyScoreRequest, *, timeout: float) -> FuzzyScore:
        self.calls += 1
        return FuzzyScore("e1", b"scores", audit_seq=3, audit_hash=GOOD_HASH, audit_signature=GOOD_SIG)


def _fuzzy_request(round_id: str, states: list[str]) -> SubmitFuzzyRoundRequest:
    now = int(time.time() * 1000)
    blob = b"encrypted-request"
    payload = RoundPayload(round_id, "p", "b", "fuzzy",
                           tuple(RoundTarget(s, "e1", 1, hashlib.sha256(blob).digest()) for s in states),
                           now + 5000, now)
    env = SignedEnvelope(serde.round_payload_to_bytes(payload), b"sig", b"cert")
    return SubmitFuzzyRoundRequest(env, {s: blob for s in states}, round_id)


def test_fuzzy_round_whose_entry_cannot_be_written_is_held_for_resubmission(tmp_path: Path) -> None:
    log = _log(tmp_path)
    sink = FlakySink(log, _refuse_round_with(IntegrityError("disk", reason="audit_write")), times=1)
    holder = FuzzyNode("ok")
    eng = RoundEngine({"AAA": holder}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"", crl=lambda: None,
                      verify_signatures=False, audit=sink)
    req = _fuzzy_request("fz1", ["AAA"])
    try:
        with pytest.raises(Unavailable) as info:
            eng.submit_fuzzy_round(PEER, req)
        assert info.value.reason == "audit_pending"
        result = eng.submit_fuzzy_round(PEER, req)
    finally:
        eng.close()
        log.close()
    fz = result.by_state()["AAA"].fuzzy
    assert fz is not None and fz.score_response == b"scores" and holder.calls == 1
    (ev,) = [e for e in _entries(tmp_path) if e.get("round_id") == "fz1"]
    assert ev["anchors"] == {"AAA": f"3:{GOOD_HASH}"}


# -- 1. the relayed follow-up (FuzzyRelease) -----------------------------------------------------------------


class ReleaseHolder:
    def __init__(self, reply: FuzzyReleaseReply, wire: bool = True) -> None:
        self.reply, self.wire, self.calls = reply, wire, 0

    def fuzzy_release(self, request: FuzzyReleaseRequest, *, timeout: float) -> FuzzyReleaseReply:
        self.calls += 1
        if not self.wire:
            return self.reply
        return serde.fuzzy_release_reply_from_pb(serde.fuzzy_release_reply_to_pb(self.reply))


def _relay(tmp_path: Path, holder: ReleaseHolder, audit: Callable[[Mapping[str, Any]], object]) -> FuzzyRelay:
    return FuzzyRelay({"DEU": holder}, RoundStore(tmp_path / "r.sqlite"),  # type: ignore[dict-item]
                      ThreadPoolExecutor(2), ca_pem=b"", crl=lambda: None, verify_signatures=False,
                      max_deadline_seconds=5, result_ttl_seconds=60, audit=audit)


def _release_request() -> FuzzyReleaseRequest:
    p = FuzzyReleasePayload(round_id="r1", holder_state="DEU",
                            label_request_sha256=hashlib.sha256(b"x").digest(),
                            issued_at_unix_ms=int(time.time() * 1000), purpose="border", legal_basis="",
                            unit="", official="", reply_public_key=b"\x01" * 32)
    return FuzzyReleaseRequest(SignedEnvelope(serde.fuzzy_release_payload_to_bytes(p), b"s", b"c"), b"x")


@pytest.mark.parametrize("wire", [True, False])
def test_release_with_malformed_head_is_a_clean_refusal(tmp_path: Path, wire: bool) -> None:
    """probe_release_anchor: the coordinator's audit append in ``finally`` raised (audit_value) and replaced
    the holder's reply. A malformed head is now refused like any malformed reply, and audited as such."""
    log = _log(tmp_path)
    holder = ReleaseHolder(FuzzyReleaseReply(b"sealed", None, audit_seq=7, audit_hash="ab" * 50), wire)
    relay = _relay(tmp_path, holder, log.append)
    try:
        with pytest.raises(InvalidInput) as info:
            relay.release(PeerIdentity("node", "FRA", 1), "DEU", _release_request())
    finally:
        log.close()
    assert info.value.reason == "invalid_audit_head"
    (ev,) = _entries(tmp_path)
    assert ev["type"] == "fuzzy_release" and ev["outcome"] == "refused"
    assert ev["reason"] == "invalid_audit_head"


def test_release_entry_the_log_refuses_still_delivers_the_labels(tmp_path: Path) -> None:
    log = _log(tmp_path)
    sink = FlakySink(log, lambda e: InvalidInput("no", reason="audit_value") if "reasons" not in e else None,
                     times=99)
    reply = GOOD_REPLY
    relay = _relay(tmp_path, ReleaseHolder(reply), sink)
    try:
        got = relay.release(PeerIdentity("node", "FRA", 1), "DEU", _release_request())
    finally:
        log.close()
    assert got.sealed_label_response == b"sealed-labels"
    (ev,) = _entries(tmp_path)
    assert ev["type"] == "fuzzy_release" and ev["outcome"] == "ok"
    assert ev["reasons"] == ["audit_reduced", "audit_value"]
    assert ev["anchors"] == {"DEU": f"7:{GOOD_HASH}"}  # the validated head is kept in the reduced entry


def test_release_whose_entry_cannot_be_written_is_held_for_resubmission(tmp_path: Path) -> None:
    log = _log(tmp_path)
    sink = FlakySink(log, lambda e: IntegrityError("disk", reason="audit_write"), times=1)
    reply = GOOD_REPLY
    holder = ReleaseHolder(reply)
    relay = _relay(tmp_path, holder, sink)
    req = _release_request()
    querier = PeerIdentity("node", "FRA", 1)
    try:
        with pytest.raises(Unavailable) as info:
            relay.release(querier, "DEU", req)
        assert info.value.reason == "audit_pending"
        got = relay.release(querier, "DEU", req)
    finally:
        log.close()
    # the holder releases a follow-up once: the held reply is delivered without asking it again
    assert got.sealed_label_response == b"sealed-labels" and holder.calls == 1
    (ev,) = _entries(tmp_path)
    assert ev["type"] == "fuzzy_release" and ev["outcome"] == "ok"
    assert ev["anchors"] == {"DEU": f"7:{GOOD_HASH}"}


# -- 2. targets per round ------------------------------------------------------------------------------------


def test_target_cap_matches_the_audit_list_cap() -> None:
    assert serde.MAX_TARGETS <= audit_mod._MAX_LIST


def test_too_many_targets_refused_before_fan_out(tmp_path: Path) -> None:
    """probe_targets: 257 targets passed the wire, were fanned out (member charged), then the audit failed."""
    log = _log(tmp_path)
    honest = FakeNode("ok")
    eng = RoundEngine({"AAA": honest}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"", crl=lambda: None,
                      verify_signatures=False, audit=log.append)
    states = ["AAA"] + [f"Z{i:03d}" for i in range(serde.MAX_TARGETS)]
    req = _request("big", states, n=1)
    try:
        with pytest.raises(LimitExceeded) as info:
            eng.submit_round(PEER, req)
        # the largest allowed round is fanned out and audited
        ok = eng.submit_round(PEER, _request("max", states[: serde.MAX_TARGETS], n=1))
    finally:
        eng.close()
        log.close()
    assert info.value.status == "RESOURCE_EXHAUSTED" and info.value.reason == "too_many_targets"
    assert rpc_errors.status_for(info.value) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 256" in info.value.message
    assert ok.by_state()["AAA"].evaluation is not None and honest.calls == 1
    events = _entries(tmp_path)
    assert [(e["type"], e.get("reason")) for e in events if e.get("round_id") == "big"] == [
        ("refusal", "too_many_targets")
    ]
    (ev,) = [e for e in events if e.get("round_id") == "max"]
    assert len(ev["targets"]) == serde.MAX_TARGETS and ev["holders"]["AAA"] == "ok"


def test_duplicate_targets_refused_at_the_wire() -> None:
    req = _request("dup", ["AAA", "AAA"])
    with pytest.raises(InvalidInput) as info:
        serde.round_payload_from_bytes(req.round.payload)
    assert info.value.reason == "duplicate_target"


# -- 3. index downloads: the TLS peer must be the signer -----------------------------------------------------


class IndexNode(FakeNode):
    def get_index(self, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        self.calls += 1
        yield IndexChunk("e1", 0, b"idx", hashlib.sha256(b"idx").digest(), 3, b"", True, b"")


@pytest.fixture
def pki(tmp_path: Path) -> tuple[bytes, dict[str, tuple[bytes, bytes]]]:
    create_ca(tmp_path / "ca", federation="FED")
    certs = {}
    for state in ("FRA", "KEN"):
        c = issue_certificate(tmp_path / "ca", tmp_path / state, role="node", state=state)
        certs[state] = (c.cert.read_bytes(), c.key.read_bytes())
    return (tmp_path / "ca" / "ca.crt.pem").read_bytes(), certs


def _index_request(signer: tuple[bytes, bytes]) -> GetIndexRequest:
    data = serde.index_request_to_bytes(IndexRequest("DEU", "e1", int(time.time() * 1000)))
    return GetIndexRequest(SignedEnvelope(data, sign_payload(signer[1], data), signer[0]), 0)


def test_index_relay_requires_the_peer_to_be_the_signer(
    tmp_path: Path, pki: tuple[bytes, dict[str, tuple[bytes, bytes]]]
) -> None:
    ca, certs = pki
    events: list[Mapping[str, Any]] = []
    node = IndexNode("ok")
    eng = RoundEngine({"DEU": node}, RoundStore(tmp_path / "r.sqlite"), ca_pem=ca, crl=lambda: None,
                      audit=events.append)
    fra = PeerIdentity("node", "FRA", 1)
    try:
        with pytest.raises(PolicyDenied) as info:
            list(eng.get_index(fra, "DEU", _index_request(certs["KEN"])))  # KEN's request, relayed by FRA
        assert node.calls == 0
        chunks = list(eng.get_index(fra, "DEU", _index_request(certs["FRA"])))  # its own: relayed
    finally:
        eng.close()
    assert info.value.status == "PERMISSION_DENIED" and info.value.reason == "identity_mismatch"
    assert "signed by the requesting State" in info.value.message
    assert [c.data for c in chunks] == [b"idx"] and node.calls == 1
    assert [(e["type"], e["reason"], e["querier"]) for e in events] == [
        ("refusal", "identity_mismatch", "FRA")
    ]


def test_follow_ups_the_coordinator_refuses_itself_are_audited(tmp_path: Path) -> None:
    """wrong_holder, unknown_state and identity_mismatch are raised before any holder is asked; each leaves a
    ``refusal`` entry in the coordinator's log like every refused submission (threat-model audit)."""
    from fedcheck.rpc.messages import FuzzyReleasePayload, FuzzyReleaseRequest

    create_ca(tmp_path / "ca", federation="FED")
    f = issue_certificate(tmp_path / "ca", tmp_path / "FRA", role="node", state="FRA")
    cert, key = f.cert.read_bytes(), f.key.read_bytes()
    ca = (tmp_path / "ca" / "ca.crt.pem").read_bytes()
    events: list[dict[str, object]] = []
    engine = RoundEngine({}, RoundStore(tmp_path / "rounds.sqlite"), ca_pem=ca, crl=lambda: None,
                         audit=lambda e: events.append(dict(e)))
    p = FuzzyReleasePayload(round_id="r1", holder_state="KEN",
                            label_request_sha256=hashlib.sha256(b"x").digest(),
                            issued_at_unix_ms=int(time.time() * 1000), purpose="border", legal_basis="LB",
                            unit="U1", official="O1", reply_public_key=b"\x09" * 32)
    data = serde.fuzzy_release_payload_to_bytes(p)
    req = FuzzyReleaseRequest(SignedEnvelope(data, sign_payload(key, data), cert), b"x")
    try:
        for state, peer in (("ITA", PeerIdentity("node", "FRA", 2)), ("KEN", PeerIdentity("node", "FRA", 2)),
                            ("KEN", PeerIdentity("node", "DEU", 3))):
            with pytest.raises(FedcheckError):
                engine.fuzzy_release(peer, state, req)
    finally:
        engine.close()
    assert [(e["type"], e["querier"], e["reason"]) for e in events] == [
        ("refusal", "FRA", "wrong_holder"), ("refusal", "FRA", "unknown_state"),
        ("refusal", "DEU", "identity_mismatch")]
