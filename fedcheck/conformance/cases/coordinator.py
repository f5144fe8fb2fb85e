"""The federation coordinator (issue #3 "Coordinator"), when ``--coordinator HOST:PORT`` is given.

Why: the coordinator is the one component every State talks to, so an evaluator admitting a new partner (or a
new coordinator release) needs to see that it is healthy, speaks only mutual TLS, answers a resubmitted round
id with the stored result instead of running it twice, reports a status for every State it was asked about,
and refuses (or marks) a State that is not a member instead of silently dropping it. Rounds are submitted as a
member node (``--coordinator-cert/--coordinator-key``): the coordinator takes rounds only from nodes, signed
by the submitting node itself. The rounds are tiny (2 throw-away elements per holder) but do reach the
holders, which audit them and charge their budgets.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2 as cpb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2_grpc as cgrpc
from fedcheck.conformance.cases._common import valid_blinded
from fedcheck.conformance.model import CaseFailed, CaseSkipped, case, check
from fedcheck.conformance.session import Call, Session, cert_name

__all__: list[str] = []

SERVICE = "fedcheck.v1.Coordinator"
_DEFINED = {cpb.HOLDER_STATUS_OK, cpb.HOLDER_STATUS_TIMEOUT, cpb.HOLDER_STATUS_UNAVAILABLE,
            cpb.HOLDER_STATUS_REFUSED}
_BATCH = 2


def _need(session: Session) -> None:
    if not session.config.coordinator:
        raise CaseSkipped("no --coordinator HOST:PORT given")


def _member_md(session: Session) -> tuple[tuple[str, str], ...] | None:
    return session.dev_metadata(session.coordinator_cert_pem)


def _member_stub(session: Session) -> cgrpc.CoordinatorStub:
    ch = session.memo.get("coordinator.channel")
    if ch is None:
        ch = session.coordinator_channel(as_member=True)
        session.memo["coordinator.channel"] = ch
    return cgrpc.CoordinatorStub(ch)


def _members(session: Session) -> tuple[str, list[cpb.NodeEntry]]:
    """(the submitting member's State, the other reachable members) from ListNodes."""
    cached = session.memo.get("coordinator.members")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    stub = _member_stub(session)
    call = session.invoke(stub.ListNodes, cpb.ListNodesRequest(header=session.header()),
                          metadata=_member_md(session))
    if not call.ok:
        raise CaseFailed(f"ListNodes as a member node: {call.describe()}")
    own = (cert_name(session.coordinator_cert_pem) or ".").split(".", 1)[1]
    others = [n for n in call.response.nodes if n.reachable and n.state != own and n.info.epoch_id]
    if not others:
        raise CaseSkipped(f"ListNodes names no reachable holder besides the submitter {own!r}")
    session.memo["coordinator.members"] = (own, others)
    return own, others


def _round(session: Session, holders: list[tuple[str, str]], **overrides: Any) -> cpb.SubmitRoundRequest:
    """A signed SubmitRoundRequest with ``_BATCH`` throw-away elements for each (state, epoch_id)."""
    now = int(time.time() * 1000)
    batches = {state: valid_blinded(_BATCH) for state, _ in holders}
    targets = [pb.RoundTarget(state=s, epoch_id=e, count=_BATCH,
                              batch_sha256=hashlib.sha256(b"".join(batches[s])).digest()) for s, e in holders]
    fields: dict[str, Any] = {
        "round_id": str(uuid.uuid4()), "purpose": session.config.purpose,
        "legal_basis": session.config.legal_basis, "mode": pb.MODE_EXACT, "targets": targets,
        "deadline_unix_ms": now + int(session.config.timeout_s * 1000), "issued_at_unix_ms": now,
        "unit": "conformance-unit", "official": "conformance-official",
    }
    fields.update(overrides)
    payload = pb.RoundPayload(**fields)
    env = session.sign(payload.SerializeToString(), cert_pem=session.coordinator_cert_pem,
                       key_pem=session.coordinator_key_pem)
    return cpb.SubmitRoundRequest(
        header=session.header(round_id=payload.round_id), round=env,
        batches=[cpb.HolderBatch(state=s, blinded=batches[s]) for s, _ in holders])


def _submit(session: Session, req: cpb.SubmitRoundRequest) -> Call:
    return session.invoke(_member_stub(session).SubmitRound, req, metadata=_member_md(session))


def _first_round(session: Session) -> tuple[cpb.SubmitRoundRequest, Call]:
    memo = session.memo.get("coordinator.round")
    if memo is None:
        _, others = _members(session)
        req = _round(session, [(n.state, n.info.epoch_id) for n in others])
        memo = (req, _submit(session, req))
        session.memo["coordinator.round"] = memo
    return memo


def _statuses(result: cpb.RoundResult) -> list[tuple[str, str, str]]:
    return [(h.state, cpb.HolderStatus.Name(h.status) if h.status in _DEFINED else str(h.status), h.reason)
            for h in result.results]


@case("coordinator.health", title="the coordinator serves grpc.health.v1 and reports SERVING",
      spec="grpc.health.v1; issue #3 Services (standard gRPC health checking)", needs=("coordinator",))
def health(session: Session) -> str:
    """Health/Check for the empty service name and for ``fedcheck.v1.Coordinator`` must answer SERVING over
    the evaluator's mutual-TLS connection."""
    _need(session)
    ch = session.coordinator_channel()
    try:
        stub = health_pb2_grpc.HealthStub(ch)
        got = []
        for service in ("", SERVICE):
            call = session.invoke(stub.Check, health_pb2.HealthCheckRequest(service=service))
            check(call.ok, f"Health/Check({service!r}): {call.describe()}")
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(call.response.status)
            check(status == "SERVING", f"Health/Check({service!r}) answered {status}")
            got.append(f"{service or '(overall)'}=SERVING")
    finally:
        ch.close()
    return ", ".join(got)


@case("coordinator.mtls_required", title="the coordinator refuses plain text and TLS without a client "
      "certificate", spec="issue #5 Identity and transport (all coordinator traffic uses mutual TLS)",
      needs=("coordinator", "tls"))
def mtls_required(session: Session) -> str:
    """Health/Check over plain text, and over TLS presenting no client certificate, must not get an answer."""
    _need(session)
    if not session.tls:
        raise CaseSkipped("tested without TLS (--insecure-dev): transport cannot be judged")
    seen = []
    for what, ch in (("plain text", session.coordinator_channel(plaintext=True)),
                     ("TLS without client certificate", session.coordinator_channel(client_cert=False))):
        try:
            call = session.invoke(health_pb2_grpc.HealthStub(ch).Check, health_pb2.HealthCheckRequest(),
                                  timeout=min(5.0, session.config.timeout_s))
        finally:
            ch.close()
        check(not call.ok, f"the coordinator answered Health/Check over {what}")
        seen.append(f"{what}: {call.status}")
    return "; ".join(seen)


@case("coordinator.per_state_statuses", title="a round reports one defined status per target State",
      spec="coordinator.proto RoundResult.results, HolderResult.status/reason; issue #3 (per-State results "
      "with a status for each)", needs=("coordinator", "member"))
def per_state_statuses(session: Session) -> str:
    """A round submitted as a member node to every other reachable member must come back with the round id
    and exactly one result per target, in target order, each with a defined HolderStatus; a non-OK result
    carries a reason, an OK one an evaluation of exactly the batch size."""
    _need(session)
    req, call = _first_round(session)
    check(call.ok, f"SubmitRound as a member node: {call.describe()}")
    res: cpb.RoundResult = call.response
    payload = pb.RoundPayload.FromString(req.round.payload)
    check(res.round_id == payload.round_id, f"round id {res.round_id!r}, submitted {payload.round_id!r}")
    want = [t.state for t in payload.targets]
    got = [h.state for h in res.results]
    check(got == want, f"results for {got}, targets were {want}")
    for h in res.results:
        check(h.status in _DEFINED, f"{h.state}: undefined HolderStatus {h.status}")
        if h.status == cpb.HOLDER_STATUS_OK:
            check(len(h.evaluation.evaluated) == _BATCH,
                  f"{h.state}: OK with {len(h.evaluation.evaluated)} evaluations for {_BATCH} elements")
        else:
            check(bool(h.reason), f"{h.state}: {cpb.HolderStatus.Name(h.status)} without a reason")
    return "; ".join(f"{s}={st}{'(' + r + ')' if r else ''}" for s, st, r in _statuses(res))


@case("coordinator.idempotent_resubmission", title="resubmitting a round id returns the stored result",
      spec="issue #3 (round submission is idempotent by round id); coordinator.proto RoundResult.replayed",
      needs=("coordinator", "member"))
def idempotent(session: Session) -> str:
    """The identical submission again must be answered with ``replayed = true`` and the same per-State
    statuses and evaluations (the round is not run twice); the same round id with a different signed payload
    must be refused."""
    _need(session)
    req, first = _first_round(session)
    if not first.ok:
        raise CaseSkipped(f"the first round was not accepted: {first.describe()}")
    again = _submit(session, req)
    check(again.ok, f"identical resubmission: {again.describe()}")
    a, b = first.response, again.response
    check(b.replayed, "identical resubmission was not marked replayed (the round ran twice?)")
    check(b.round_id == a.round_id, f"resubmission answered round {b.round_id!r}")
    check(_statuses(a) == _statuses(b), f"statuses changed: {_statuses(a)} -> {_statuses(b)}")
    for x, y in zip(a.results, b.results, strict=True):
        check(list(x.evaluation.evaluated) == list(y.evaluation.evaluated),
              f"{x.state}: a different evaluation on resubmission")
    payload = pb.RoundPayload.FromString(req.round.payload)
    _, others = _members(session)
    other = _round(session, [(n.state, n.info.epoch_id) for n in others], round_id=payload.round_id)
    reuse = _submit(session, other)
    check(not reuse.ok, "the same round id with a different payload was accepted")
    return f"replayed with identical results; reused id with another payload: {reuse.status}"


@case("coordinator.unknown_state_refused", title="a round naming a non-member State gets a clear status",
      spec="issue #3 (status for each State: refused/unavailable); coordinator.proto HolderResult.reason",
      needs=("coordinator", "member"))
def unknown_state(session: Session) -> str:
    """A round that targets a State the federation does not know (plus one member) must either be refused as
    a whole (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION or PERMISSION_DENIED) or report that State as
    UNAVAILABLE/REFUSED with a reason, while the member still gets its own result."""
    _need(session)
    own, others = _members(session)
    known = {own, *(n.state for n in others)}
    stranger = next(c for c in ("ZZZ", "ZZY", "ZZX", "ZZW") if c not in known)
    member = others[0]
    req = _round(session, [(member.state, member.info.epoch_id), (stranger, "e-unknown")])
    call = _submit(session, req)
    if not call.ok:
        check(call.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                            grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED),
              f"round to non-member {stranger}: {call.describe()}")
        return f"round refused: {call.describe()}"
    by_state = {h.state: h for h in call.response.results}
    check(stranger in by_state, f"no result for the non-member State {stranger} (silently dropped)")
    h = by_state[stranger]
    check(h.status in (cpb.HOLDER_STATUS_UNAVAILABLE, cpb.HOLDER_STATUS_REFUSED),
          f"non-member {stranger} reported as {h.status}")
    check(bool(h.reason), f"non-member {stranger} reported without a reason")
    check(member.state in by_state, f"the member {member.state} got no result")
    return f"{stranger}: {cpb.HolderStatus.Name(h.status)} ({h.reason}); {member.state} answered"

