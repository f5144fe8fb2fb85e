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
by the reduced one (which keeps the validated head, ``anchors``, and a refusal's relayed reason code), and a
reply whose entry cannot be appended at all is held (:class:`~fedcheck.coordinator.fanout.AuditPending`, in
the :class:`~fedcheck.coordinator.fanout.AuditBacklog` shared with the round engine) for a resubmission of
the same signed follow-up, like a round's answer; its entry is appended at the next successful append.
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
    AUDIT_RETRY_SECONDS,
    AuditBacklog,
    AuditPending,
    anchor_fields,
    append_audit,
    finish_audit,
    refusal_event,
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
        backlog: AuditBacklog | None = None,
        audit_retry_seconds: float = AUDIT_RETRY_SECONDS,
    ) -> None:
        """``backlog``: the round engine's (its sink is then the audit sink; ``audit`` is ignored); without
        one the relay keeps its own over ``audit`` (:meth:`close` closes it)."""
        self._nodes = dict(nodes)
        self._store = store
        self._pool = pool
        self._ca_pem = ca_pem
        self._crl = crl
        self._verify = verify_signatures
        self._max_deadline = max_deadline_seconds
        self._ttl = result_ttl_seconds
        self._own_backlog = backlog is None
        if backlog is None:
            backlog = AuditBacklog(audit, retry_seconds=audit_retry_seconds)
        self._backlog = backlog
        self._audit = backlog.sink if backlog.enabled else None
        #: holders' audit public keys ([nodes.<STATE>] audit_public_key): returned heads are checked with them
        self._audit_keys = dict(audit_public_keys or {})
        self._lock = threading.Lock()
        #: (querier State, round id) -> (payload digest, expiry, answer), like the store: ids are per querier
        self._results: dict[tuple[str, str], tuple[str, float, RoundResult]] = {}
        # answers whose audit entry is still to be appended are in the backlog: ("fuzzy", querier State, round
        # id) and ("release", holder State, querier State, follow-up payload digest)

    def close(self) -> None:
        """Close the relay's own backlog (a shared one is the round engine's to close)."""
        if self._own_backlog:
            self._backlog.close()

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
        held_key = ("fuzzy", querier.state, payload.round_id)
        held = False
        self._backlog.expire()  # may append (reduced entries of expired answers): not under the lock
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
            if self._backlog.digest(held_key) == payload_sha:
                held = True
            else:
                travellers = sum(t.count for t in payload.targets)
                stored = self._store.claim(payload.round_id, payload_sha, querier.state, payload, travellers)
                if stored is not None:
                    raise PreconditionFailed(
                        "round_id already used" if stored != payload_sha else
                        "round results are no longer held, or the round is still running; use a new round id",
                        reason="round_id_reused" if stored != payload_sha else "round_expired",
                    )
        if held:
            # a held round's holders are not asked again: its answer is collected once its entry is appended
            value = self._backlog.collect_round(held_key)  # AuditPending if it still cannot be
            with self._lock:
                self._results[rid] = (payload_sha, time.monotonic() + self._ttl, value)
            self._backlog.discard(held_key)
            return value
        try:
            result = self._run(querier, payload, request)
        except AuditPending as exc:
            self._backlog.hold(held_key, payload_sha, exc, self._ttl)
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
            checks=checks if self._audit_keys else None,
        )

    # -- follow-up -----------------------------------------------------------------------------------------

    def release(self, peer: PeerIdentity, state: str, request: FuzzyReleaseRequest) -> FuzzyReleaseReply:
        """Forward a follow-up to ``state`` only; the signed payload must name that same holder.

        The answer is opaque here: the labels are sealed to the querier's reply key and the holder signs
        the answer (fedcheck.node.fuzzyseal), so this relay can drop it but neither read nor alter it."""
        env = request.release
        try:  # refused here, before any holder is asked: audited like every refused submission
            querier = self._signer(peer, env)
            payload = serde.fuzzy_release_payload_from_bytes(env.payload)
            if payload.holder_state != state:
                raise InvalidInput("the signed follow-up names another holder", reason="wrong_holder")
            transport = self._nodes.get(state)
            if transport is None:
                raise NotFound("State is not a member of this federation", reason="unknown_state")
        except FedcheckError as exc:
            if self._audit is not None:
                self._audit(refusal_event(peer, "", exc))
            raise
        digest = hashlib.sha256(env.payload).hexdigest()
        key = ("release", state, querier.state, digest)
        self._backlog.expire()
        held = self._backlog.collect(key)  # AuditPending if its entry still cannot be appended
        if isinstance(held, FuzzyReleaseReply):  # released before: the holder is not asked again
            self._backlog.discard(key)
            return held
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
            # the refusal is audited before it leaves (an audit failure replaces it); the relayed reason is
            # a validated short code, so the reduced entry keeps it
            if self._audit is not None:
                refused = event("refused", relayed_reason(exc.reason))
                append_audit(self._audit, refused, dict(refused))
            raise
        if self._audit is None:
            return reply
        reduced = event("ok", "")
        full = dict(reduced)
        try:  # the holder's head after auditing this follow-up (validated above: the reduced entry keeps it)
            reduced.update(anchor_fields({state: reply}))
            full.update(self._release_anchor(state, payload.round_id, reply))
        except Exception:
            _log.exception("follow-up audit anchor could not be read", extra={"round_id": payload.round_id})
        try:
            return finish_audit(reply, self._audit, full, reduced)
        except AuditPending as exc:  # held for a resubmission of the same signed follow-up
            self._backlog.hold(key, digest, exc, self._ttl)
            raise

    def _release_anchor(self, state: str, round_id: str, reply: FuzzyReleaseReply) -> dict[str, Any]:
        from fedcheck.coordinator.rounds import check_anchor  # rounds imports this module

        key = self._audit_keys.get(state)
        checks = None if not self._audit_keys else (
            {} if key is None else {state: check_anchor(state, round_id, key, reply)}
        )
        return anchor_fields({state: reply}, checks)

