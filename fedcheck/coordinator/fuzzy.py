"""Fuzzy (Paillier) rounds through the coordinator: fan-out of encrypted requests, and follow-up relay.

Why it mirrors the exact round engine: the querier signs a ``RoundPayload`` (mode ``fuzzy``) whose targets
bind each holder's encrypted request by SHA-256; the coordinator checks the signature and the bindings, calls
every holder's ``FuzzyScore`` in parallel with the remaining time as deadline, and answers with per-State
statuses (ok, timeout, unavailable, refused) -- one State down never blocks the others. It never sees a
plaintext: it relays ciphertexts under the querier's Paillier key and blinded, shuffled scores.

The follow-up (``FuzzyRelease``) is relayed to the **one** holder the querier names and to nobody else, so
the other holders of the round never learn that something was followed up. Round metadata goes to the same
:class:`~fedcheck.coordinator.rounds.RoundStore` and audit log as exact rounds (sizes, statuses, never
payloads); answers are kept in memory for ``result_ttl`` for idempotent resubmission like exact rounds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any

from fedcheck.errors import (
    BudgetExhausted,
    FedcheckError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    Unauthenticated,
    Unavailable,
)
from fedcheck.node import metrics
from fedcheck.rpc import serde
from fedcheck.rpc.clients import NodeTransport
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    FuzzyReleaseReply,
    FuzzyReleaseRequest,
    FuzzyScoreRequest,
    HolderResult,
    HolderStatus,
    RoundPayload,
    RoundResult,
    SubmitFuzzyRoundRequest,
)
from fedcheck.trust.pki import PeerIdentity, RevocationList, verify_payload

if TYPE_CHECKING:
    from fedcheck.coordinator.rounds import RoundStore

__all__ = ["FuzzyRelay"]

_log = logging.getLogger("fedcheck.coordinator")


def _status_of(exc: FedcheckError) -> HolderStatus:
    if isinstance(exc, Unavailable):
        return HolderStatus.TIMEOUT if exc.reason == "deadline" else HolderStatus.UNAVAILABLE
    return HolderStatus.REFUSED


class FuzzyRelay:
    """The coordinator's fuzzy handling (used by :class:`fedcheck.coordinator.rounds.RoundEngine`)."""

    def __init__(
        self,
        nodes: Mapping[str, NodeTransport],
        store: RoundStore,
        pool: ThreadPoolExecutor,
        *,
        ca_pem: bytes,
        crl: Callable[[], RevocationList | None],
        verify_signatures: bool,
        max_deadline_seconds: float,
        result_ttl_seconds: float,
        audit: Callable[[Mapping[str, Any]], object] | None = None,
    ) -> None:
        self._nodes = dict(nodes)
        self._store = store
        self._pool = pool
        self._ca_pem = ca_pem
        self._crl = crl
        self._verify = verify_signatures
        self._max_deadline = max_deadline_seconds
        self._ttl = result_ttl_seconds
        self._audit = audit
        self._lock = threading.Lock()
        self._results: dict[str, tuple[str, float, RoundResult]] = {}

    def _signer(self, peer: PeerIdentity, payload: bytes, signature: bytes, cert: bytes) -> PeerIdentity:
        if not self._verify:
            return peer
        querier = verify_payload(cert, self._ca_pem, self._crl(), payload, signature)
        if querier.state != peer.state or querier.role != "node":
            raise Unauthenticated(
                "the request must be signed by the submitting node", reason="identity_mismatch"
            )
        return querier

    # -- rounds --------------------------------------------------------------------------------------------

    def submit(self, peer: PeerIdentity, request: SubmitFuzzyRoundRequest) -> RoundResult:
        env = request.round
        querier = self._signer(peer, env.payload, env.signature, env.certificate_pem)
        payload = serde.round_payload_from_bytes(env.payload)
        if payload.mode != FUZZY_MODE:
            raise InvalidInput("SubmitFuzzyRound needs a round signed with mode fuzzy", reason="invalid_mode")
        if request.round_id and request.round_id != payload.round_id:
            raise InvalidInput("header round_id differs from the signed round", reason="round_id_mismatch")
        if {t.state for t in payload.targets} != set(request.requests):
            raise InvalidInput("batches must match the signed targets one to one", reason="batch_mismatch")
        for t in payload.targets:
            if hashlib.sha256(request.requests[t.state]).digest() != t.batch_sha256:
                raise InvalidInput(
                    "a request differs from the one the querier signed", reason="batch_mismatch"
                )
        payload_sha = hashlib.sha256(env.payload).hexdigest()
        rid = payload.round_id
        with self._lock:
            now = time.monotonic()
            for old in [r for r, (_, exp, _) in self._results.items() if exp < now]:
                del self._results[old]
            done = self._results.get(rid)
            if done is not None:
                if done[0] != payload_sha:
                    raise PreconditionFailed("round_id already used with a different payload",
                                             reason="round_id_reused")
                r = done[2]
                return RoundResult(
                    r.round_id, r.results, r.started_unix_ms, r.finished_unix_ms, replayed=True
                )
            travellers = sum(t.count for t in payload.targets)
            stored = self._store.claim(rid, payload_sha, querier.state, payload, travellers)
            if stored is not None:
                raise PreconditionFailed(
                    "round_id already used" if stored != payload_sha else
                    "round results are no longer held, or the round is still running; use a new round id",
                    reason="round_id_reused" if stored != payload_sha else "round_expired",
                )
        result = self._run(querier, payload, request)
        with self._lock:
            self._results[rid] = (payload_sha, time.monotonic() + self._ttl, result)
        return result

    def _run(
        self, querier: PeerIdentity, payload: RoundPayload, request: SubmitFuzzyRoundRequest
    ) -> RoundResult:
        started = time.time()
        deadline = min(payload.deadline_unix_ms / 1000, started + self._max_deadline)
        futures: dict[str, Future[HolderResult]] = {}
        for t in payload.targets:
            transport = self._nodes.get(t.state)
            if transport is not None:
                req = FuzzyScoreRequest(request.round, request.requests[t.state], payload.round_id)
                futures[t.state] = self._pool.submit(self._ask, t.state, transport, req, deadline)
        wait_futures(list(futures.values()), timeout=max(0.0, deadline - time.time()) + 0.5)
        results: list[HolderResult] = []
        for t in payload.targets:
            f = futures.get(t.state)
            if f is None:
                results.append(HolderResult(t.state, HolderStatus.UNAVAILABLE, "unknown_state",
                                            "State is not a member of this federation"))
            elif not f.done():
                results.append(HolderResult(t.state, HolderStatus.TIMEOUT, "deadline",
                                            "holder did not answer before the deadline",
                                            latency_ms=int((time.time() - started) * 1000)))
            else:
                results.append(f.result())
        result = RoundResult(payload.round_id, tuple(results), int(started * 1000), int(time.time() * 1000))
        items = {t.state: t.count for t in payload.targets}
        self._store.finish(result, items)
        if self._audit is not None:  # durable before the answer leaves
            self._audit({
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
                "items_by_state": items,
                "holders": {h.state: str(h.status) + (f"/{h.reason}" if h.reason else "") for h in results},
                "latency_ms": {h.state: h.latency_ms for h in results},
                "outcome": "ok" if all(h.status is HolderStatus.OK for h in results) else "partial",
                "duration_ms": result.finished_unix_ms - result.started_unix_ms,
            })
        for h in results:
            metrics.ROUNDS.labels(role="coordinator", state=h.state, status=str(h.status)).inc()
        metrics.ROUND_SECONDS.labels(role="coordinator").observe(time.time() - started)
        _log.info("round finished", extra={
            "round_id": payload.round_id, "partner": querier.state, "mode": payload.mode,
            "targets": {h.state: str(h.status) for h in results},
            "ms": result.finished_unix_ms - result.started_unix_ms,
        })
        return result

    @staticmethod
    def _ask(state: str, transport: NodeTransport, req: FuzzyScoreRequest, deadline: float) -> HolderResult:
        t0 = time.time()
        timeout = deadline - t0
        if timeout <= 0:
            return HolderResult(state, HolderStatus.TIMEOUT, "deadline", "the round's deadline has passed")
        try:
            score = transport.fuzzy_score(req, timeout=timeout)
        except FedcheckError as exc:
            status = _status_of(exc)
            return HolderResult(
                state, status, exc.reason, exc.message[:300],
                exc.retry_after_s if isinstance(exc, BudgetExhausted) else 0,
                latency_ms=int((time.time() - t0) * 1000), reasons=exc.reasons,
                code=exc.status if status is HolderStatus.REFUSED else "",
            )
        except Exception:  # a transport bug must not sink the round
            _log.exception("holder call failed", extra={"state": state})
            return HolderResult(state, HolderStatus.UNAVAILABLE, "internal", "holder call failed",
                                latency_ms=int((time.time() - t0) * 1000))
        return HolderResult(state, HolderStatus.OK, fuzzy=score, latency_ms=int((time.time() - t0) * 1000))

    # -- follow-up -----------------------------------------------------------------------------------------

    def release(self, peer: PeerIdentity, state: str, request: FuzzyReleaseRequest) -> FuzzyReleaseReply:
        """Forward a follow-up to ``state`` only; the signed payload must name that same holder.

        The answer is opaque here: the labels are sealed to the querier's reply key and the holder signs
        the answer (fedcheck.node.fuzzyseal), so this relay can drop it but neither read nor alter it."""
        env = request.release
        querier = self._signer(peer, env.payload, env.signature, env.certificate_pem)
        payload = serde.fuzzy_release_payload_from_bytes(env.payload)
        if payload.holder_state != state:
            raise InvalidInput("the signed follow-up names another holder", reason="wrong_holder")
        transport = self._nodes.get(state)
        if transport is None:
            raise NotFound("State is not a member of this federation", reason="unknown_state")
        t0 = time.time()
        outcome, reason = "ok", ""
        try:
            return transport.fuzzy_release(request, timeout=self._max_deadline)
        except FedcheckError as exc:
            outcome, reason = "refused", exc.reason
            raise
        finally:
            if self._audit is not None:
                self._audit({
                    "type": "fuzzy_release", "round_id": payload.round_id, "querier": querier.state,
                    "holder": state, "unit": payload.unit, "official": payload.official,
                    "purpose": payload.purpose, "legal_basis": payload.legal_basis, "mode": FUZZY_MODE,
                    "outcome": outcome, "reason": reason, "duration_ms": int((time.time() - t0) * 1000),
                })
