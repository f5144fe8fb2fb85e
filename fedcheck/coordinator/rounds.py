"""The round engine: fan a signed round out to its holders in parallel, enforce the deadline, keep metadata.

Why it is safe to run anywhere: it relays blinded elements and evaluations it cannot open, holds no keys
besides
its TLS identity, and persists only round metadata (ids, States, sizes, timings, statuses). Evaluations stay
in memory for ``result_ttl`` so a resubmission of the same round id returns the same answer without asking the
holders again (which would burn the querier's budget); after that window the id stays taken (for its querier).

Round ids are per querier: rounds are kept under (querier State from its verified certificate, round id),
like the holders' replay guards do, so a member naming its rounds after case numbers cannot find an id taken
(or get another member's answer replayed) because another member submitted that id first.

Accountability: every round (and every refused submission) is appended to the coordinator's own signed,
hash-chained audit log before the answer leaves (querier State from its verified certificate, unit,
official, purpose, legal basis, mode, sizes, per-State statuses and reasons, timings -- never payloads). The
signed audit heads the holders return with their answers (exact evaluations and fuzzy scores alike) are
kept per round (``audit_anchors`` table, and ``anchors`` in the round's audit entry) so an oversight body can
check each holder's log against them (``fedcheck audit verify --expected-head``). Where the coordinator
config names a holder's audit public key (``[nodes.<STATE>] audit_public_key``), each returned head's
signature is checked on arrival: the round's audit entry lists the States whose heads verified
(``anchors_verified``) and those whose did not, or that returned none (``anchors_unverified``, with a warning
logged). The round answer is still delivered -- the querier's own checks protect it; this is oversight
evidence. A head that is not well-formed (``serde.check_audit_head``) is neither stored nor listed in
``anchors``; it counts as missing.

Once the holders were asked (and charged the querier), a failure to record the round never spends the round id
without an answer, nor loses its audit entry: see :mod:`fedcheck.coordinator.fanout` (reduced audit entry;
:class:`AuditPending` answers kept in the engine's :class:`~fedcheck.coordinator.fanout.AuditBacklog`, whose
entries are appended at the next successful append or by a background retry, and collected by a
resubmission of the same round).

Index downloads are relayed only for the State that signed the index request: the TLS peer's State must be
the signer's (``PERMISSION_DENIED`` ``identity_mismatch`` otherwise), like rounds and follow-ups.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcheck.coordinator.fanout import (
    AUDIT_RETRY_SECONDS,
    AnchoredAnswer,
    AuditBacklog,
    AuditPending,
    anchor_fields,
    answers,
    refusal_event,
    run_round,
    submitter,
    well_formed_head,
)
from fedcheck.coordinator.fuzzy import FuzzyRelay
from fedcheck.errors import (
    FedcheckError,
    InvalidInput,
    NotFound,
    PolicyDenied,
    PreconditionFailed,
)
from fedcheck.rpc import serde
from fedcheck.rpc.clients import NodeTransport
from fedcheck.rpc.messages import (
    BlindEvaluateRequest,
    FuzzyReleaseReply,
    FuzzyReleaseRequest,
    GetIndexRequest,
    HolderResult,
    HolderStatus,
    IndexChunk,
    NodeEntry,
    RoundPayload,
    RoundResult,
    SubmitFuzzyRoundRequest,
    SubmitRoundRequest,
)
from fedcheck.trust.audit import SignedHead, verify_head_signature
from fedcheck.trust.pki import PeerIdentity, RevocationList, verify_payload

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["AuditSink", "RoundEngine", "RoundStore", "anchor_fields", "check_anchor", "well_formed_head"]

_log = logging.getLogger("fedcheck.coordinator")

#: Appends one audit event durably before returning (``AuditLog.append``). Raising ``InvalidInput`` (an
#: event the log refuses) makes the engine append the reduced event instead; any other failure after the
#: fan-out holds the answer (``AuditPending``) in the engine's ``AuditBacklog`` until its entry is appended.
AuditSink = Callable[[Mapping[str, Any]], object]

#: table -> its CREATE statement; every table is keyed by (querier, round id)
_TABLES = {
    "rounds": """CREATE TABLE IF NOT EXISTS rounds (
    round_id TEXT NOT NULL, payload_sha256 TEXT NOT NULL, querier TEXT NOT NULL, mode TEXT NOT NULL,
    targets INTEGER NOT NULL, items INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER,
    PRIMARY KEY (querier, round_id))""",
    "round_holders": """CREATE TABLE IF NOT EXISTS round_holders (
    round_id TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
    items INTEGER NOT NULL, latency_ms INTEGER NOT NULL, querier TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (querier, round_id, state))""",
    "audit_anchors": """CREATE TABLE IF NOT EXISTS audit_anchors (
    round_id TEXT NOT NULL, state TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
    signature BLOB NOT NULL, received_ms INTEGER NOT NULL, querier TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (querier, round_id, state))""",
}

#: Stores of earlier versions keyed by round id alone: table -> (rename, copy from the renamed table, drop).
#: Per-State rows take their round's querier; ``rounds`` goes last, as the others look the querier up in it.
_MIGRATIONS = {
    "round_holders": (
        "ALTER TABLE round_holders RENAME TO round_holders_v1",
        "INSERT INTO round_holders SELECT h.*, COALESCE((SELECT r.querier FROM rounds r"
        " WHERE r.round_id = h.round_id LIMIT 1), '') FROM round_holders_v1 h",
        "DROP TABLE round_holders_v1",
    ),
    "audit_anchors": (
        "ALTER TABLE audit_anchors RENAME TO audit_anchors_v1",
        "INSERT INTO audit_anchors SELECT a.*, COALESCE((SELECT r.querier FROM rounds r"
        " WHERE r.round_id = a.round_id LIMIT 1), '') FROM audit_anchors_v1 a",
        "DROP TABLE audit_anchors_v1",
    ),
    "rounds": (
        "ALTER TABLE rounds RENAME TO rounds_v1",
        "INSERT INTO rounds SELECT * FROM rounds_v1",
        "DROP TABLE rounds_v1",
    ),
}


class RoundStore:
    """Round metadata in SQLite (WAL), keyed by (querier, round id). Never evaluations or payload bytes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        for create in _TABLES.values():
            self._db.execute(create)
        self._migrate()

    def _keyed_by_querier(self, table: str) -> bool:
        return any(str(r[1]) == "querier" and int(r[5]) > 0 for r in self._db.execute(
            "SELECT * FROM pragma_table_info(?)", (table,)
        ))

    def _migrate(self) -> None:
        """Rebuild the tables of a store of an earlier version (one round id namespace for every member: one
        member could take the id another was going to use) keyed by querier, in one transaction."""
        if all(self._keyed_by_querier(t) for t in _MIGRATIONS):
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, (rename, copy, drop) in _MIGRATIONS.items():
                if not self._keyed_by_querier(table):  # checked again: another process may have migrated
                    for sql in (rename, _TABLES[table], copy, drop):
                        self._db.execute(sql)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def claim(
        self, round_id: str, payload_sha: str, querier: str, payload: RoundPayload, items: int
    ) -> str | None:
        """Record ``querier``'s new round; returns ``None`` if claimed now, else the payload digest stored for
        that querier's round id (another querier's round of the same id is another round)."""
        with self._lock:
            row = self._db.execute(
                "SELECT payload_sha256 FROM rounds WHERE querier=? AND round_id=?", (querier, round_id)
            ).fetchone()
            if row is not None:
                return str(row[0])
            self._db.execute(
                "INSERT INTO rounds VALUES (?,?,?,?,?,?,?,NULL)",
                (
                    round_id,
                    payload_sha,
                    querier,
                    payload.mode,
                    len(payload.targets),
                    items,
                    int(time.time() * 1000),
                ),
            )
            return None

    def finish(self, result: RoundResult, items: Mapping[str, int], querier: str) -> None:
        answered, finished, rid = answers(result), result.finished_unix_ms, result.round_id
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE rounds SET finished_ms=? WHERE querier=? AND round_id=?", (finished, querier, rid)
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO round_holders"
                " (round_id, state, status, reason, items, latency_ms, querier) VALUES (?,?,?,?,?,?,?)",
                [
                    (rid, h.state, str(h.status), h.reason, items.get(h.state, 0), h.latency_ms, querier)
                    for h in result.results
                ],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO audit_anchors"
                " (round_id, state, seq, hash, signature, received_ms, querier) VALUES (?,?,?,?,?,?,?)",
                [
                    (rid, s, a.audit_seq, a.audit_hash, a.audit_signature, finished, querier)
                    for s, a in answered.items()
                    if well_formed_head(a)
                ],
            )
            self._db.execute("COMMIT")

    def anchors(self, state: str | None = None) -> list[tuple[str, str, str, int, str, bytes]]:
        """Audit heads received from holders: (querier, round_id, state, seq, hash, signature), oldest first.
        Round ids are per querier, so a round is named by both (querier ``''``: migrated from a store of an
        earlier version without that round's row)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT querier, round_id, state, seq, hash, signature FROM audit_anchors"
                + (" WHERE state=?" if state else "")
                + " ORDER BY received_ms, state, querier, round_id",
                (state,) if state else (),
            ).fetchall()
        return [(str(u), str(r), str(s), int(q), str(h), bytes(g)) for u, r, s, q, h, g in rows]

    def holders(self, querier: str, round_id: str) -> list[tuple[str, str, str]]:
        with self._lock:
            return [
                (str(a), str(b), str(c))
                for a, b, c in self._db.execute(
                    "SELECT state, status, reason FROM round_holders WHERE querier=? AND round_id=?"
                    " ORDER BY state",
                    (querier, round_id),
                )
            ]

    def close(self) -> None:
        with self._lock:
            self._db.close()


#: how long ListNodes waits for each member's NodeInfo: a slower member is reported unavailable
NODE_INFO_TIMEOUT_S = 3.0


class RoundEngine:
    """:class:`fedcheck.rpc.handlers.CoordinatorHandler` implementation."""

    def __init__(
        self,
        nodes: Mapping[str, NodeTransport],
        store: RoundStore,
        *,
        ca_pem: bytes,
        crl: Callable[[], RevocationList | None],
        max_batch: int = 10_000,
        max_deadline_seconds: float = 120.0,
        result_ttl_seconds: float = 900.0,
        verify_signatures: bool = True,
        audit: AuditSink | None = None,
        audit_public_keys: Mapping[str, Ed25519PublicKey] | None = None,
        audit_retry_seconds: float = AUDIT_RETRY_SECONDS,
    ) -> None:
        self._nodes = dict(nodes)
        self._audit_keys = dict(audit_public_keys or {})
        #: answers whose audit entry could not be appended yet (exact and fuzzy rounds, follow-ups); every
        #: append goes through its sink, which then appends the held entries too
        self._backlog = AuditBacklog(audit, retry_seconds=audit_retry_seconds)
        self._audit: AuditSink | None = self._backlog.sink if self._backlog.enabled else None
        self._fuzzy: FuzzyRelay | None = None
        self._store = store
        self._ca_pem = ca_pem
        self._crl = crl
        self._max_batch = max_batch
        self._max_deadline = max_deadline_seconds
        self._ttl = result_ttl_seconds
        self._verify = verify_signatures
        self._pool = ThreadPoolExecutor(max_workers=max(8, 4 * len(self._nodes)), thread_name_prefix="fanout")
        self._lock = threading.Lock()
        #: keyed by (querier State, round id), like the store: round ids are per querier
        self._results: dict[tuple[str, str], tuple[str, float, RoundResult]] = {}
        self._inflight: dict[tuple[str, str], tuple[str, Future[RoundResult]]] = {}

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def close(self) -> None:
        """Stop the fan-out pool, then append what the audit backlog still holds (or log it as lost)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._backlog.close()

    # -- rounds ----------------------------------------------------------------------------------------------

    def submit_round(self, peer: PeerIdentity, request: SubmitRoundRequest) -> RoundResult:
        try:
            return self._submit_round(peer, request)
        except AuditPending:
            raise  # not a refusal: the answer is held until its audit entry can be appended
        except FedcheckError as exc:
            self._audit_refusal(peer, request.round_id, exc)
            raise

    def _audit_refusal(self, peer: PeerIdentity, round_id: str, exc: FedcheckError) -> None:
        """Every refused submission (exact or fuzzy) is audited before the refusal leaves."""
        if self._audit is not None:
            self._audit(refusal_event(peer, round_id, exc))

    def _submit_round(self, peer: PeerIdentity, request: SubmitRoundRequest) -> RoundResult:
        env = request.round
        querier = submitter(
            peer, env, ca_pem=self._ca_pem, crl=self._crl, verify=self._verify, what="round"
        )
        payload = serde.round_payload_from_bytes(env.payload)
        if request.round_id and request.round_id != payload.round_id:
            raise InvalidInput("header round_id differs from the signed round", reason="round_id_mismatch")
        if {t.state for t in payload.targets} != set(request.batches):
            raise InvalidInput("batches must match the signed targets one to one", reason="batch_mismatch")
        for t in payload.targets:
            batch = request.batches[t.state]
            if len(batch) != t.count or hashlib.sha256(b"".join(batch)).digest() != t.batch_sha256:
                raise InvalidInput("a batch differs from the one the querier signed", reason="batch_mismatch")
        payload_sha = hashlib.sha256(env.payload).hexdigest()
        key = (querier.state, payload.round_id)
        held_key = ("exact", querier.state, payload.round_id)
        self._backlog.expire()  # may append (reduced entries of expired answers): not under the lock
        with self._lock:
            self._expire()
            done = self._results.get(key)
            if done is not None:
                if done[0] != payload_sha:
                    raise PreconditionFailed(
                        "round_id already used with a different payload", reason="round_id_reused"
                    )
                return _replayed(done[2])
            running = self._inflight.get(key)
            held = False
            if running is None:
                pending = self._backlog.digest(held_key)
                if pending is not None:
                    if pending != payload_sha:
                        raise PreconditionFailed(
                            "round_id already used with a different payload", reason="round_id_reused"
                        )
                    held = True
                else:
                    items = sum(len(b) for b in request.batches.values())
                    stored = self._store.claim(payload.round_id, payload_sha, querier.state, payload, items)
                    if stored is not None:
                        if stored != payload_sha:
                            raise PreconditionFailed(
                                "round_id already used with a different payload", reason="round_id_reused"
                            )
                        raise PreconditionFailed(
                            "round results are no longer held; submit a new round id", reason="round_expired"
                        )
                fut: Future[RoundResult] = Future()
                self._inflight[key] = (payload_sha, fut)
                owner = True
            else:
                if running[0] != payload_sha:
                    raise PreconditionFailed(
                        "round_id already used with a different payload", reason="round_id_reused"
                    )
                fut, owner = running[1], False
        if not owner:
            return _replayed(fut.result())
        try:
            # a held round's holders are not asked again: its answer is collected once its entry is appended
            result = self._backlog.collect_round(held_key) if held else self._run(querier, payload, request)
            fut.set_result(result)
        except BaseException as exc:
            fut.set_exception(exc)
            if isinstance(exc, AuditPending) and not held:
                self._backlog.hold(held_key, payload_sha, exc, self._ttl)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
                if fut.done() and fut.exception() is None:
                    self._results[key] = (payload_sha, time.monotonic() + self._ttl, fut.result())
        if held:
            self._backlog.discard(held_key)
        return result

    def _expire(self) -> None:
        now = time.monotonic()
        for rid in [r for r, (_, exp, _) in self._results.items() if exp < now]:
            del self._results[rid]

    def _run(self, querier: PeerIdentity, payload: RoundPayload, request: SubmitRoundRequest) -> RoundResult:
        def evaluate(state: str, transport: NodeTransport, timeout: float) -> HolderResult:
            req = BlindEvaluateRequest(request.round, request.batches[state], payload.round_id)
            evaluation = transport.blind_evaluate(req, timeout=timeout)
            # relayed to the querier, whose wire validation refuses a malformed head (gRPC answers were
            # checked on arrival; this covers in-process transports): only this holder's answer is refused
            serde.check_audit_head(evaluation.audit_seq, evaluation.audit_hash, evaluation.audit_signature)
            key = self._audit_keys.get(state)
            if key is not None:
                checks[state] = check_anchor(state, payload.round_id, key, evaluation)
            return HolderResult(state, HolderStatus.OK, evaluation=evaluation)

        #: State -> head signature verified, for holders with a configured audit public key that answered
        checks: dict[str, bool] = {}
        items = {s: len(b) for s, b in request.batches.items()}
        return run_round(
            nodes=self._nodes, pool=self._pool, store=self._store, audit=self._audit, querier=querier,
            payload=payload, max_deadline_seconds=self._max_deadline, items=items, call=evaluate,
            checks=checks if self._audit_keys else None,
        )

    # -- relays ----------------------------------------------------------------------------------------------

    # -- fuzzy (Paillier) rounds: fedcheck.coordinator.fuzzy -------------------------------------------------

    def _fuzzy_relay(self) -> FuzzyRelay:
        with self._lock:
            if self._fuzzy is None:
                self._fuzzy = FuzzyRelay(
                    self._nodes, self._store, self._pool, ca_pem=self._ca_pem, crl=self._crl,
                    verify_signatures=self._verify, max_deadline_seconds=self._max_deadline,
                    result_ttl_seconds=self._ttl, audit_public_keys=self._audit_keys, backlog=self._backlog,
                )
            return self._fuzzy

    def submit_fuzzy_round(self, peer: PeerIdentity, request: SubmitFuzzyRoundRequest) -> RoundResult:
        try:
            return self._fuzzy_relay().submit(peer, request)
        except AuditPending:
            raise  # not a refusal: the answer is held until its audit entry can be appended
        except FedcheckError as exc:
            self._audit_refusal(peer, request.round_id, exc)
            raise

    def fuzzy_release(
        self, peer: PeerIdentity, state: str, request: FuzzyReleaseRequest
    ) -> FuzzyReleaseReply:
        return self._fuzzy_relay().release(peer, state, request)

    def list_nodes(self, peer: PeerIdentity) -> list[NodeEntry]:
        def info(item: tuple[str, NodeTransport]) -> NodeEntry:
            state, transport = item
            try:
                return NodeEntry(state, True, transport.node_info(timeout=NODE_INFO_TIMEOUT_S))
            except FedcheckError as exc:
                # the querier only sees "unavailable": the coordinator operator gets the State and the reason
                _log.warning("member node did not answer NodeInfo",
                             extra={"state": state, "reason": exc.reason})
                return NodeEntry(state, False, None)

        return list(self._pool.map(info, list(self._nodes.items())))

    def get_index(self, peer: PeerIdentity, state: str, request: GetIndexRequest) -> Iterator[IndexChunk]:
        transport = self._nodes.get(state)
        if transport is None:
            raise NotFound("State is not a member of this federation", reason="unknown_state")
        try:
            self._check_index_requester(peer, request)
        except FedcheckError as exc:
            self._audit_refusal(peer, "", exc)
            raise
        yield from transport.get_index(request, timeout=self._max_deadline)

    def _check_index_requester(self, peer: PeerIdentity, request: GetIndexRequest) -> None:
        """The signed index request must be the TLS peer's own (signer State = peer State), as for rounds and
        follow-ups: a node does not fetch indexes with another State's signed request. The holder still
        checks the signature, audience and freshness itself. ``verify_signatures`` off (no PKI): no check."""
        if not self._verify:
            return
        env = request.request
        signer = verify_payload(env.certificate_pem, self._ca_pem, self._crl(), env.payload, env.signature)
        if signer.state != peer.state:
            raise PolicyDenied(
                "the index request must be signed by the requesting State's own certificate",
                reason="identity_mismatch",
            )


def check_anchor(state: str, round_id: str, key: Ed25519PublicKey, answer: AnchoredAnswer) -> bool:
    """Whether the holder's returned audit head is signed by its configured audit key (a missing head fails).

    A failure never fails the round (the querier verifies the answer itself); it is oversight evidence: the
    round's audit entry lists the State in ``anchors_unverified`` and a warning is logged. Used for exact
    evaluations, fuzzy scores and fuzzy follow-ups (:mod:`fedcheck.coordinator.fuzzy`)."""
    ok = bool(answer.audit_hash) and verify_head_signature(
        key, SignedHead(answer.audit_seq, answer.audit_hash, answer.audit_signature)
    )
    if not ok:
        _log.warning(
            "holder audit head missing or not signed by its configured audit key",
            extra={"state": state, "round_id": round_id, "reason": "audit_anchor_unverified"},
        )
    return ok


def _replayed(r: RoundResult) -> RoundResult:
    return RoundResult(r.round_id, r.results, r.started_unix_ms, r.finished_unix_ms, replayed=True)
