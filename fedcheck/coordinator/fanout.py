"""The fan-out both coordinator round kinds share: submitter check, parallel holder calls, deadline, statuses.

Why one place: an exact round (``BlindEvaluate``) and a fuzzy round (``FuzzyScore``) reach their holders the
same way -- every target asked in parallel with the remaining time as its deadline, a State that is not a
member or does not answer in time reported as such, one State down never blocking the others, metadata kept
and the round audited before the answer leaves. Only the holder call and the round's audit entry differ, so
those are what the round engines pass in (:mod:`fedcheck.coordinator.rounds`,
:mod:`fedcheck.coordinator.fuzzy`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fedcheck.errors import BudgetExhausted, FedcheckError, Unauthenticated, Unavailable
from fedcheck.node import metrics
from fedcheck.rpc.clients import NodeTransport
from fedcheck.rpc.messages import HolderResult, HolderStatus, RoundPayload, RoundResult, SignedEnvelope
from fedcheck.trust.pki import PeerIdentity, RevocationList, verify_payload

if TYPE_CHECKING:
    from fedcheck.coordinator.rounds import RoundStore

__all__ = ["HolderCall", "ask_holder", "holder_status", "round_event", "run_round", "submitter"]

_log = logging.getLogger("fedcheck.coordinator")

#: One holder's call: ``(state, transport, timeout_seconds) -> HolderResult`` with status OK and the answer
#: set (latency is filled in by :func:`ask_holder`); raising a :class:`FedcheckError` maps to a status.
HolderCall = Callable[[str, NodeTransport, float], HolderResult]


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
        return HolderResult(
            state,
            status,
            exc.reason,
            exc.message[:300],
            exc.retry_after_s if isinstance(exc, BudgetExhausted) else 0,
            latency_ms=int((time.time() - t0) * 1000),
            reasons=exc.reasons,
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
    keep the metadata and append ``round_event(result)`` to the audit log before the answer leaves."""
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
    store.finish(result, items)
    if audit is not None:  # durable before the answer leaves
        audit(round_event(result))
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
