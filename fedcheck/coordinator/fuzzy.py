"""Fuzzy (Paillier) rounds through the coordinator: fan-out of encrypted requests, and follow-up relay.

Why it mirrors the exact round engine: the querier signs a ``RoundPayload`` (mode ``fuzzy``) whose targets
bind each holder's encrypted request by SHA-256; the coordinator checks the signature and the bindings, calls
every holder's ``FuzzyScore`` in parallel with the remaining time as deadline, and answers with per-State
statuses (ok, timeout, unavailable, refused) -- one State down never blocks the others. It never sees a
plaintext: it relays ciphertexts under the querier's Paillier key and blinded, shuffled scores.

The follow-up (``FuzzyRelease``) is relayed to the **one** holder the querier names and to nobody else, so
the other holders of the round never learn that something was followed up. Round metadata goes to the same
:class:`~fedcheck.coordinator.rounds.RoundStore` and audit log as exact rounds (sizes, statuses, never
payloads); answers are kept in memory for ``result_ttl`` for idempotent resubmission like exact rounds. Round
ids are per querier here too (store and memory keyed by the verified querier State and the round id).

Audit anchors: every ``FuzzyScore`` and ``FuzzyRelease`` answer carries the holder's signed audit head after
recording that very round or follow-up. They are recorded exactly like an exact round's (``anchors`` in the
round's audit entry and the ``audit_anchors`` table; ``anchors`` in the relayed follow-up's entry) and, where
``[nodes.<STATE>] audit_public_key`` is configured, checked on arrival (``anchors_verified`` /
``anchors_unverified``) with the helpers of :mod:`fedcheck.coordinator.rounds`.

A follow-up's labels are released (and charged) once: the holder refuses the same follow-up again. So the
relay never lets its own audit append replace the holder's reply: an entry the audit log refuses is replaced
by the reduced one, and a reply whose entry cannot be appended at all is held
(:class:`~fedcheck.coordinator.fanout.AuditPending`) for a resubmission of the same signed follow-up, like a
round's answer.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fedcheck.coordinator.fanout import (
    AuditPending,
    append_audit,
    finish_audit,
    round_event,
    run_round,
    submitter,
)
from fedcheck.errors import (
    FedcheckError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from fedcheck.rpc import serde
from fedcheck.rpc.clients import NodeTransport
from fedcheck.rpc.errors import relayed_reason
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    FuzzyReleaseReply,
    FuzzyReleaseRequest,
    FuzzyScoreRequest,
    HolderResult,
    HolderStatus,
    RoundPayload,
    RoundResult,
    SignedEnvelope,
    SubmitFuzzyRoundRequest,
)
from fedcheck.trust.pki import PeerIdentity, RevocationList

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from fedcheck.coordinator.rounds import RoundStore

__all__ = ["FuzzyRelay"]

_log = logging.getLogger("fedcheck.coordinator")


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
        audit_public_keys: Mapping[str, Ed25519PublicKey] | None = None,
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
        #: holders' audit public keys ([nodes.<STATE>] audit_public_key): returned heads are checked with them
        self._audit_keys = dict(audit_public_keys or {})
        self._lock = threading.Lock()
        #: (querier State, round id) -> (payload digest, expiry, answer), like the store: ids are per querier
        self._results: dict[tuple[str, str], tuple[str, float, RoundResult]] = {}
        #: (querier State, round id) -> (payload digest, expiry, held answer) whose audit entry is still to be
        #: appended
        self._pending: dict[tuple[str, str], tuple[str, float, AuditPending[RoundResult]]] = {}
        #: (holder State, querier State, follow-up payload digest) -> (expiry, held reply) whose audit entry
        #: is still to be appended
        self._pending_releases: dict[
            tuple[str, str, str], tuple[float, AuditPending[FuzzyReleaseReply]]
        ] = {}

    def _signer(self, peer: PeerIdentity, env: SignedEnvelope) -> PeerIdentity:
        return submitter(peer, env, ca_pem=self._ca_pem, crl=self._crl, verify=self._verify, what="request")

    # -- rounds --------------------------------------------------------------------------------------------

    def submit(self, peer: PeerIdentity, request: SubmitFuzzyRoundRequest) -> RoundResult:
        env = request.round
        querier = self._signer(peer, env)
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
        rid = (querier.state, payload.round_id)
        held: AuditPending[RoundResult] | None = None
        with self._lock:
            now = time.monotonic()
            for old in [r for r, (_, exp, _) in self._results.items() if exp < now]:
                del self._results[old]
            for old in [r for r, (_, exp, _) in self._pending.items() if exp < now]:
                del self._pending[old]
            done = self._results.get(rid)
            if done is not None:
                if done[0] != payload_sha:
                    raise PreconditionFailed("round_id already used with a different payload",
                                             reason="round_id_reused")
                r = done[2]
                return RoundResult(
                    r.round_id, r.results, r.started_unix_ms, r.finished_unix_ms, replayed=True
                )
            pending = self._pending.get(rid)
            if pending is not None and pending[0] == payload_sha:
                held = self._pending.pop(rid)[2]
            else:
                travellers = sum(t.count for t in payload.targets)
                stored = self._store.claim(payload.round_id, payload_sha, querier.state, payload, travellers)
                if stored is not None:
                    raise PreconditionFailed(
                        "round_id already used" if stored != payload_sha else
                        "round results are no longer held, or the round is still running; use a new round id",
                        reason="round_id_reused" if stored != payload_sha else "round_expired",
                    )
        try:
            # a held round's holders are not asked again: only its audit entry is appended now
            result = held.retry() if held is not None else self._run(querier, payload, request)
        except AuditPending as exc:
            with self._lock:
                self._pending[rid] = (payload_sha, time.monotonic() + self._ttl, exc)
            raise
        with self._lock:
            self._results[rid] = (payload_sha, time.monotonic() + self._ttl, result)
        return result

    def _run(
        self, querier: PeerIdentity, payload: RoundPayload, request: SubmitFuzzyRoundRequest
    ) -> RoundResult:
        from fedcheck.coordinator.rounds import check_anchor  # rounds imports this module

        def score(state: str, transport: NodeTransport, timeout: float) -> HolderResult:
            req = FuzzyScoreRequest(request.round, request.requests[state], payload.round_id)
            answer = transport.fuzzy_score(req, timeout=timeout)
            serde.check_audit_head(answer.audit_seq, answer.audit_hash, answer.audit_signature)  # as exact
            key = self._audit_keys.get(state)
            if key is not None:
                checks[state] = check_anchor(state, payload.round_id, key, answer)
            return HolderResult(state, HolderStatus.OK, fuzzy=answer)

        #: State -> head signature verified, for holders with a configured audit public key that answered
        checks: dict[str, bool] = {}
        items = {t.state: t.count for t in payload.targets}
        return run_round(
            nodes=self._nodes, pool=self._pool, store=self._store, audit=self._audit, querier=querier,
            payload=payload, max_deadline_seconds=self._max_deadline, items=items, call=score,
            round_event=lambda result: _fuzzy_round_event(
                querier, payload, result, items, checks if self._audit_keys else None
            ),
        )

    # -- follow-up -----------------------------------------------------------------------------------------

    def release(self, peer: PeerIdentity, state: str, request: FuzzyReleaseRequest) -> FuzzyReleaseReply:
        """Forward a follow-up to ``state`` only; the signed payload must name that same holder.

        The answer is opaque here: the labels are sealed to the querier's reply key and the holder signs
        the answer (fedcheck.node.fuzzyseal), so this relay can drop it but neither read nor alter it."""
        env = request.release
        querier = self._signer(peer, env)
        payload = serde.fuzzy_release_payload_from_bytes(env.payload)
        if payload.holder_state != state:
            raise InvalidInput("the signed follow-up names another holder", reason="wrong_holder")
        transport = self._nodes.get(state)
        if transport is None:
            raise NotFound("State is not a member of this federation", reason="unknown_state")
        key = (state, querier.state, hashlib.sha256(env.payload).hexdigest())
        with self._lock:
            now = time.monotonic()
            for old in [k for k, (exp, _) in self._pending_releases.items() if exp < now]:
                del self._pending_releases[old]
            held = self._pending_releases.pop(key, None)
        if held is not None:  # released before, its audit entry still to be appended: not asked again
            return self._hold_release(key, held[1].retry)
        t0 = time.time()

        def event(outcome: str, reason: str) -> dict[str, Any]:
            return {
                "type": "fuzzy_release", "round_id": payload.round_id, "querier": querier.state,
                "holder": state, "unit": payload.unit, "official": payload.official,
                "purpose": payload.purpose, "legal_basis": payload.legal_basis, "mode": FUZZY_MODE,
                "outcome": outcome, "reason": reason, "duration_ms": int((time.time() - t0) * 1000),
            }

        try:
            reply = transport.fuzzy_release(request, timeout=self._max_deadline)
            serde.check_audit_head(reply.audit_seq, reply.audit_hash, reply.audit_signature)  # as rounds
        except FedcheckError as exc:
            # the refusal is audited before it leaves (an audit failure replaces it)
            if self._audit is not None:
                refused = event("refused", relayed_reason(exc.reason))
                append_audit(self._audit, refused, {k: v for k, v in refused.items() if k != "reason"})
            raise
        if self._audit is None:
            return reply
        reduced = event("ok", "")  # nothing the holder returned
        full = dict(reduced)
        try:  # the holder's head after auditing this follow-up
            full.update(self._release_anchor(state, payload.round_id, reply))
        except Exception:
            _log.exception("follow-up audit anchor could not be read", extra={"round_id": payload.round_id})
        audit = self._audit
        return self._hold_release(key, lambda: finish_audit(reply, audit, full, reduced))

    def _hold_release(
        self, key: tuple[str, str, str], deliver: Callable[[], FuzzyReleaseReply]
    ) -> FuzzyReleaseReply:
        """``deliver()`` (audit, then the reply); a reply that could not be audited is held under ``key``."""
        try:
            return deliver()
        except AuditPending as exc:
            with self._lock:
                self._pending_releases[key] = (time.monotonic() + self._ttl, exc)
            raise

    def _release_anchor(self, state: str, round_id: str, reply: FuzzyReleaseReply) -> dict[str, Any]:
        from fedcheck.coordinator.rounds import anchor_fields, check_anchor  # rounds imports this module

        key = self._audit_keys.get(state)
        checks = None if not self._audit_keys else (
            {} if key is None else {state: check_anchor(state, round_id, key, reply)}
        )
        return anchor_fields({state: reply}, checks)


def _fuzzy_round_event(
    querier: PeerIdentity,
    payload: RoundPayload,
    result: RoundResult,
    items: Mapping[str, int],
    checks: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """The coordinator's audit entry for a fuzzy round, with the holders' audit heads like an exact round's
    (``checks``: State -> head signature verified; ``None`` when no holder audit key is configured)."""
    from fedcheck.coordinator.rounds import anchor_fields  # rounds imports this module

    results = result.results
    event = round_event(querier, payload, result, items)
    event["holders"] = {h.state: str(h.status) + (f"/{h.reason}" if h.reason else "") for h in results}
    event.update(anchor_fields({h.state: h.fuzzy for h in results if h.fuzzy is not None}, checks))
    event["outcome"] = "ok" if all(h.status is HolderStatus.OK for h in results) else "partial"
    return event
