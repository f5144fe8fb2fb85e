"""The fan-out both coordinator round kinds share: submitter check, parallel holder calls, deadline, statuses.

Why one place: an exact round (``BlindEvaluate``) and a fuzzy round (``FuzzyScore``) reach their holders the
same way -- every target asked in parallel with the remaining time as its deadline, a State that is not a
member or does not answer in time reported as such, one State down never blocking the others, metadata kept
and the round audited before the answer leaves. Only the holder call and the round's audit entry differ, so
those are what the round engines pass in (:mod:`fedcheck.coordinator.rounds`,
:mod:`fedcheck.coordinator.fuzzy`).

Once the holders were asked, their answers are charged to the querier's budgets, so nothing a holder returns
may cost the querier the other holders' answers: a holder's reason codes are relayed only as short codes,
an audit entry the log refuses (a value it will not store) is replaced by a reduced entry (what the
coordinator itself derived, no holder-supplied text, ``reasons = [audit_reduced, <why>]``), and when even
that cannot be appended the answer is held (:class:`AuditPending`) so a resubmission of the same round
appends the entry and collects it, instead of finding its round id spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fedcheck.errors import BudgetExhausted, FedcheckError, InvalidInput, Unauthenticated, Unavailable
from fedcheck.node import metrics
from fedcheck.rpc.clients import NodeTransport
from fedcheck.rpc.errors import MAX_RETRY_AFTER_S, relayed_reason, relayed_reasons
from fedcheck.rpc.messages import HolderResult, HolderStatus, RoundPayload, RoundResult, SignedEnvelope
from fedcheck.trust.pki import PeerIdentity, RevocationList, verify_payload

if TYPE_CHECKING:
    from fedcheck.coordinator.rounds import RoundStore

__all__ = [
    "AuditPending",
    "HolderCall",
    "append_audit",
    "ask_holder",
    "holder_status",
    "round_event",
    "run_round",
    "submitter",
]

_log = logging.getLogger("fedcheck.coordinator")

#: One holder's call: ``(state, transport, timeout_seconds) -> HolderResult`` with status OK and the answer
#: set (latency is filled in by :func:`ask_holder`); raising a :class:`FedcheckError` maps to a status.
HolderCall = Callable[[str, NodeTransport, float], HolderResult]

#: Appends one audit event durably before returning (``AuditLog.append``).
AuditFn = Callable[[Mapping[str, Any]], object]

_T = TypeVar("_T")


class AuditPending(Unavailable, Generic[_T]):
    """The holders answered (and charged the querier) but the coordinator's audit entry could not be appended.

    The answer (``value``) does not leave unaudited; the round engine holds this exception for the result TTL
    and a resubmission of the same request calls :meth:`retry`, which appends the entry (or its reduced
    form) and returns the answer -- so the round id is not spent on a failure after the fan-out."""

    def __init__(
        self, value: _T, audit: AuditFn, event: Mapping[str, Any], reduced: Mapping[str, Any]
    ) -> None:
        super().__init__(
            "the holders answered but the coordinator could not record the round in its audit log; resubmit "
            "the same request (same round id and payload) to collect the answer",
            reason="audit_pending",
        )
        self.value = value
        self._audit = audit
        self._event = event
        self._reduced = reduced

    def retry(self) -> _T:
        """Append the held entry now and return the answer; raises a new :class:`AuditPending` if it still
        cannot be appended."""
        return finish_audit(self.value, self._audit, self._event, self._reduced)


def append_audit(audit: AuditFn, event: Mapping[str, Any], reduced: Mapping[str, Any]) -> None:
    """Append ``event``; if the audit log refuses it (:class:`InvalidInput`: a value it will not store, e.g.
    something a holder returned), append ``reduced`` instead -- marked ``reasons = [audit_reduced, <why>]`` --
    like the holders' refusal audit (:class:`fedcheck.node.gate.RequestGate`). Other failures propagate."""
    try:
        audit(event)
        return
    except InvalidInput as exc:
        why = exc.reason
    _log.warning(
        "audit event refused by the audit log; recording the reduced event",
        extra={"round_id": str(event.get("round_id", "")), "reason": why},
    )
    audit({**reduced, "reasons": ["audit_reduced", why]})


def finish_audit(value: _T, audit: AuditFn, event: Mapping[str, Any], reduced: Mapping[str, Any]) -> _T:
    """:func:`append_audit`, then ``value``; if nothing could be appended, an :class:`AuditPending` holding
    ``value``."""
    try:
        append_audit(audit, event, reduced)
    except Exception as exc:
        _log.error(
            "audit entry could not be appended; holding the answer for a resubmission",
            extra={"round_id": str(event.get("round_id", "")), "reason": getattr(exc, "reason", "internal")},
            exc_info=not isinstance(exc, FedcheckError),
        )
        raise AuditPending(value, audit, event, reduced) from exc
    return value


def submitter(
    peer: PeerIdentity,
    env: SignedEnvelope,
    *,
    ca_pem: bytes,
    crl: Callable[[], RevocationList | None],
    verify: bool,
    what: str,
) -> PeerIdentity:
    """The verified signer of a submitted ``env``, which must be the submitting node itself (``verify`` off:
    the TLS peer, for tests and demos without a PKI). ``what`` names the signed thing in the error."""
    if not verify:
        return peer
    querier = verify_payload(env.certificate_pem, ca_pem, crl(), env.payload, env.signature)
    if querier.state != peer.state or querier.role != "node":
        raise Unauthenticated(f"the {what} must be signed by the submitting node", reason="identity_mismatch")
    return querier


def holder_status(exc: FedcheckError) -> HolderStatus:
    """A holder's error as its per-State status: timeouts and outages are not refusals."""
    if isinstance(exc, Unavailable):
        return HolderStatus.TIMEOUT if exc.reason == "deadline" else HolderStatus.UNAVAILABLE
    return HolderStatus.REFUSED


def ask_holder(state: str, transport: NodeTransport, call: HolderCall, deadline: float) -> HolderResult:
    """Run one holder call with what is left until ``deadline`` (unix seconds); never raises."""
    t0 = time.time()
    timeout = deadline - t0
    if timeout <= 0:
        return HolderResult(state, HolderStatus.TIMEOUT, "deadline", "the round's deadline has passed")
    try:
        answer = call(state, transport, timeout)
    except FedcheckError as exc:
        status = holder_status(exc)
        # what the holder sent is relayed to the querier and audited: short codes only, bounded numbers
        # (from_rpc_error does the same for gRPC holders; in-process transports come through here only)
        retry = exc.retry_after_s if isinstance(exc, BudgetExhausted) else 0
        return HolderResult(
            state,
            status,
            relayed_reason(exc.reason),
            exc.message[:300],
            min(max(0, int(retry)), MAX_RETRY_AFTER_S),
            latency_ms=int((time.time() - t0) * 1000),
            reasons=relayed_reasons(exc.reasons),
            code=exc.status if status is HolderStatus.REFUSED else "",
        )
    except Exception:  # a transport bug must not sink the round
        _log.exception("holder call failed", extra={"state": state})
        return HolderResult(
            state,
            HolderStatus.UNAVAILABLE,
            "internal",
            "holder call failed",
            latency_ms=int((time.time() - t0) * 1000),
        )
    return replace(answer, latency_ms=int((time.time() - t0) * 1000))


def run_round(
    *,
    nodes: Mapping[str, NodeTransport],
    pool: ThreadPoolExecutor,
    store: RoundStore,
    audit: Callable[[Mapping[str, Any]], object] | None,
    querier: PeerIdentity,
    payload: RoundPayload,
    max_deadline_seconds: float,
    items: Mapping[str, int],
    call: HolderCall,
    round_event: Callable[[RoundResult], Mapping[str, Any]],
) -> RoundResult:
    """Ask every target in parallel until the round's deadline (capped at ``max_deadline_seconds``), then
    keep the metadata and append ``round_event(result)`` to the audit log before the answer leaves.

    After the fan-out nothing loses the answers: a metadata write failure is logged, an audit entry the log
    refuses is replaced by the reduced one (:func:`append_audit`), and when no entry can be appended the
    result is raised held in :class:`AuditPending` for the engine to keep."""
    started = time.time()
    deadline = min(payload.deadline_unix_ms / 1000, started + max_deadline_seconds)
    futures: dict[str, Future[HolderResult]] = {}
    for t in payload.targets:
        transport = nodes.get(t.state)
        if transport is not None:
            futures[t.state] = pool.submit(ask_holder, t.state, transport, call, deadline)
    wait_futures(list(futures.values()), timeout=max(0.0, deadline - time.time()) + 0.5)
    results: list[HolderResult] = []
    for t in payload.targets:
        f = futures.get(t.state)
        if f is None:
            results.append(
                HolderResult(
                    t.state,
                    HolderStatus.UNAVAILABLE,
                    "unknown_state",
                    "State is not a member of this federation",
                )
            )
        elif not f.done():
            results.append(
                HolderResult(
                    t.state,
                    HolderStatus.TIMEOUT,
                    "deadline",
                    "holder did not answer before the deadline",
                    latency_ms=int((time.time() - started) * 1000),
                )
            )
        else:
            results.append(f.result())
    result = RoundResult(payload.round_id, tuple(results), int(started * 1000), int(time.time() * 1000))
    try:
        store.finish(result, items, querier.state)
    except Exception:  # round metadata; the audit entry below is the record that must exist
        _log.exception("round metadata could not be stored", extra={"round_id": payload.round_id})
    if audit is not None:  # durable before the answer leaves
        reduced = reduced_round_event(querier, payload, result, items)
        try:
            event: Mapping[str, Any] = round_event(result)
        except Exception:  # building the entry from what the holders returned failed: record the reduced one
            _log.exception("round audit event could not be built", extra={"round_id": payload.round_id})
            event = {**reduced, "reasons": ["audit_reduced", "event_error"]}
        finish_audit(result, audit, event, reduced)
    for h in results:
        metrics.ROUNDS.labels(role="coordinator", state=h.state, status=str(h.status)).inc()
    metrics.ROUND_SECONDS.labels(role="coordinator").observe(time.time() - started)
    _log.info(
        "round finished",
        extra={
            "round_id": payload.round_id,
            "partner": querier.state,
            "mode": payload.mode,
            "targets": {h.state: str(h.status) for h in results},
            "ms": result.finished_unix_ms - result.started_unix_ms,
        },
    )
    return result


def reduced_round_event(
    querier: PeerIdentity, payload: RoundPayload, result: RoundResult, items: Mapping[str, int]
) -> dict[str, Any]:
    """The round's audit entry without anything a holder returned (reason codes, audit heads): the shared
    fields of :func:`round_event` (the declared texts among them passed the audit log's own rules at the
    wire), each State's status and the outcome."""
    event = round_event(querier, payload, result, items)
    ok = sum(1 for h in result.results if h.status is HolderStatus.OK)
    event["holders"] = {h.state: str(h.status) for h in result.results}
    event["outcome"] = "ok" if ok == len(result.results) else ("partial" if ok else "failed")
    return event


def round_event(
    querier: PeerIdentity, payload: RoundPayload, result: RoundResult, items: Mapping[str, int]
) -> dict[str, Any]:
    """The part of the coordinator's audit entry every round kind shares: who asked, why, of whom, how much,
    per-State latency and duration. Never a payload. Callers add their per-State statuses and outcome."""
    return {
        "type": "round",
        "round_id": payload.round_id,
        "querier": querier.state,
        "cert_serial": str(querier.serial),
        "unit": payload.unit,
        "official": payload.official,
        "purpose": payload.purpose,
        "legal_basis": payload.legal_basis,
        "mode": payload.mode,
        "targets": [t.state for t in payload.targets],
        "items": sum(items.values()),
        "items_by_state": dict(items),
        "latency_ms": {h.state: h.latency_ms for h in result.results},
        "duration_ms": result.finished_unix_ms - result.started_unix_ms,
    }
