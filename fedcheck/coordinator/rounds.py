"""The round engine: fan a signed round out to its holders in parallel, enforce the deadline, keep metadata.

Why it is safe to run anywhere: it relays blinded elements and evaluations it cannot open, holds no keys
besides
its TLS identity, and persists only round metadata (ids, States, sizes, timings, statuses). Evaluations stay
in memory for ``result_ttl`` so a resubmission of the same round id returns the same answer without asking the
holders again (which would burn the querier's budget); after that window the id stays taken.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path

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
    BlindEvaluateRequest,
    GetIndexRequest,
    HolderResult,
    HolderStatus,
    IndexChunk,
    NodeEntry,
    RoundPayload,
    RoundResult,
    SubmitRoundRequest,
)
from fedcheck.trust.pki import PeerIdentity, RevocationList, verify_payload

__all__ = ["RoundEngine", "RoundStore"]

_log = logging.getLogger("fedcheck.coordinator")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round_id TEXT PRIMARY KEY, payload_sha256 TEXT NOT NULL, querier TEXT NOT NULL, mode TEXT NOT NULL,
    targets INTEGER NOT NULL, items INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER);
CREATE TABLE IF NOT EXISTS round_holders (
    round_id TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
    items INTEGER NOT NULL, latency_ms INTEGER NOT NULL, PRIMARY KEY (round_id, state));
"""


class RoundStore:
    """Round metadata in SQLite (WAL). Never evaluations, never payload bytes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def claim(
        self, round_id: str, payload_sha: str, querier: str, payload: RoundPayload, items: int
    ) -> str | None:
        """Record a new round; returns ``None`` if claimed now, else the stored payload digest."""
        with self._lock:
            row = self._db.execute(
                "SELECT payload_sha256 FROM rounds WHERE round_id=?", (round_id,)
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

    def finish(self, result: RoundResult, items: Mapping[str, int]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE rounds SET finished_ms=? WHERE round_id=?", (result.finished_unix_ms, result.round_id)
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO round_holders VALUES (?,?,?,?,?,?)",
                [
                    (result.round_id, h.state, str(h.status), h.reason, items.get(h.state, 0), h.latency_ms)
                    for h in result.results
                ],
            )
            self._db.execute("COMMIT")

    def holders(self, round_id: str) -> list[tuple[str, str, str]]:
        with self._lock:
            return [
                (str(a), str(b), str(c))
                for a, b, c in self._db.execute(
                    "SELECT state, status, reason FROM round_holders WHERE round_id=? ORDER BY state",
                    (round_id,),
                )
            ]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _status_of(exc: FedcheckError) -> HolderStatus:
    if isinstance(exc, Unavailable):
        return HolderStatus.TIMEOUT if exc.reason == "deadline" else HolderStatus.UNAVAILABLE
    return HolderStatus.REFUSED


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
    ) -> None:
        self._nodes = dict(nodes)
        self._store = store
        self._ca_pem = ca_pem
        self._crl = crl
        self._max_batch = max_batch
        self._max_deadline = max_deadline_seconds
        self._ttl = result_ttl_seconds
        self._verify = verify_signatures
        self._pool = ThreadPoolExecutor(max_workers=max(8, 4 * len(self._nodes)), thread_name_prefix="fanout")
        self._lock = threading.Lock()
        self._results: dict[str, tuple[str, float, RoundResult]] = {}
        self._inflight: dict[str, tuple[str, Future[RoundResult]]] = {}

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- rounds ----------------------------------------------------------------------------------------------

    def submit_round(self, peer: PeerIdentity, request: SubmitRoundRequest) -> RoundResult:
        env = request.round
        if self._verify:
            querier = verify_payload(
                env.certificate_pem, self._ca_pem, self._crl(), env.payload, env.signature
            )
            if querier.state != peer.state or querier.role != "node":
                raise Unauthenticated(
                    "the round must be signed by the submitting node", reason="identity_mismatch"
                )
        else:
            querier = peer
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
        rid = payload.round_id
        with self._lock:
            self._expire()
            done = self._results.get(rid)
            if done is not None:
                if done[0] != payload_sha:
                    raise PreconditionFailed(
                        "round_id already used with a different payload", reason="round_id_reused"
                    )
                return _replayed(done[2])
            running = self._inflight.get(rid)
            if running is None:
                items = sum(len(b) for b in request.batches.values())
                stored = self._store.claim(rid, payload_sha, querier.state, payload, items)
                if stored is not None:
                    if stored != payload_sha:
                        raise PreconditionFailed(
                            "round_id already used with a different payload", reason="round_id_reused"
                        )
                    raise PreconditionFailed(
                        "round results are no longer held; submit a new round id", reason="round_expired"
                    )
                fut: Future[RoundResult] = Future()
                self._inflight[rid] = (payload_sha, fut)
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
            result = self._run(querier, payload, request)
            fut.set_result(result)
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(rid, None)
                if fut.done() and fut.exception() is None:
                    self._results[rid] = (payload_sha, time.monotonic() + self._ttl, fut.result())
        return result

    def _expire(self) -> None:
        now = time.monotonic()
        for rid in [r for r, (_, exp, _) in self._results.items() if exp < now]:
            del self._results[rid]

    def _run(self, querier: PeerIdentity, payload: RoundPayload, request: SubmitRoundRequest) -> RoundResult:
        started = time.time()
        deadline = min(payload.deadline_unix_ms / 1000, started + self._max_deadline)
        futures: dict[str, Future[HolderResult]] = {}
        for t in payload.targets:
            transport = self._nodes.get(t.state)
            if transport is None:
                continue
            req = BlindEvaluateRequest(request.round, request.batches[t.state], payload.round_id)
            futures[t.state] = self._pool.submit(self._ask, t.state, transport, req, deadline)
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
        self._store.finish(result, {s: len(b) for s, b in request.batches.items()})
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

    @staticmethod
    def _ask(
        state: str, transport: NodeTransport, req: BlindEvaluateRequest, deadline: float
    ) -> HolderResult:
        t0 = time.time()
        timeout = deadline - t0
        if timeout <= 0:
            return HolderResult(state, HolderStatus.TIMEOUT, "deadline", "the round's deadline has passed")
        try:
            ev = transport.blind_evaluate(req, timeout=timeout)
        except FedcheckError as exc:
            retry = exc.retry_after_s if isinstance(exc, BudgetExhausted) else 0
            return HolderResult(
                state,
                _status_of(exc),
                exc.reason,
                exc.message[:300],
                retry,
                latency_ms=int((time.time() - t0) * 1000),
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
        return HolderResult(state, HolderStatus.OK, evaluation=ev, latency_ms=int((time.time() - t0) * 1000))

    # -- relays ----------------------------------------------------------------------------------------------

    def list_nodes(self, peer: PeerIdentity) -> list[NodeEntry]:
        def info(item: tuple[str, NodeTransport]) -> NodeEntry:
            state, transport = item
            try:
                return NodeEntry(state, True, transport.node_info(timeout=3.0))
            except FedcheckError:
                return NodeEntry(state, False, None)

        return list(self._pool.map(info, list(self._nodes.items())))

    def get_index(self, peer: PeerIdentity, state: str, request: GetIndexRequest) -> Iterator[IndexChunk]:
        transport = self._nodes.get(state)
        if transport is None:
            raise NotFound("State is not a member of this federation", reason="unknown_state")
        yield from transport.get_index(request, timeout=self._max_deadline)


def _replayed(r: RoundResult) -> RoundResult:
    return RoundResult(r.round_id, r.results, r.started_unix_ms, r.finished_unix_ms, replayed=True)
