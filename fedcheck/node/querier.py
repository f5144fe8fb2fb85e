"""The querier side of a round, run with a node's identity (``fedcheck query``).

Steps: ask the coordinator which holders are up and their epochs; fetch (resumably, integrity-checked) each
holder's index for us unless cached for that epoch; keep flagged travellers away from their State of
nationality
(querier policy); blind locally; send only keys never finalised before against that holder's epoch (re-checks
never burn budget: results are cached per holder + epoch + the request terms the holder's policy decides on --
purpose, legal basis, mode, key types, label fields -- so a result obtained under one purpose is never served
for another); sign and submit one round through the coordinator; verify proofs, finalise, open labels, cache,
and map hits back to travellers.

Every round -- including a re-check answered entirely from the cache, which no holder sees, and a run that
fails for any reason -- is recorded in the querying node's own audit log (:func:`open_querier_audit`:
``<log stem>-querier.jsonl`` next to the node's audit log, by default ``data_dir/audit-querier.jsonl``, signed
with the node's audit key): counts, States, outcomes and the request terms, never names, documents or match
keys (:func:`round_event`).

When the coordinator answers ``UNAVAILABLE audit_pending`` (the holders answered but it could not record the
round in its own audit log yet; it holds the answer for the byte-identical request) the runner resubmits the
unchanged signed request a few times with backoff (:func:`collect_held`), never a re-signed one: that would
be another round, charged again at the holders, or refused ``round_id_reused`` under the same round id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fedcheck.core.index import ExactIndex
from fedcheck.errors import (
    FedcheckError,
    IntegrityError,
    LimitExceeded,
    PreconditionFailed,
    Unavailable,
    VerificationError,
)
from fedcheck.node import metrics
from fedcheck.node.announce import verify_announcement
from fedcheck.protocol.exact import BlindedBatch, ExactQuerier, Mode
from fedcheck.protocol.exact import Evaluation as ExactEvaluation
from fedcheck.records.keys import KeyType
from fedcheck.records.model import PersonRecord
from fedcheck.rpc import serde
from fedcheck.rpc.clients import CoordinatorTransport
from fedcheck.rpc.errors import relayed_reason
from fedcheck.rpc.messages import (
    GetIndexRequest,
    HolderStatus,
    IndexRequest,
    NodeEntry,
    RoundPayload,
    RoundResult,
    RoundTarget,
    SignedEnvelope,
    SubmitRoundRequest,
)
from fedcheck.screening.manifest import QueryKeys, query_keys
from fedcheck.screening.report import (
    Hit,
    ScreenReport,
    StateCount,
    TravellerResult,
    exclusion_reason,
    state_reason,
)
from fedcheck.trust.atrest import Sealer
from fedcheck.trust.audit import audit_text_problem
from fedcheck.trust.pki import RevocationList, sign_payload
from fedcheck.trust.policy import QuerierPolicy, exclusion_causes

if TYPE_CHECKING:
    from fedcheck.node.config import NodeConfig

__all__ = [
    "QUERIER_AUDIT_LOG", "AuditSink", "QuerierCache", "QueryOptions", "QueryRunner", "cache_context",
    "collect_held", "open_querier_audit", "querier_audit_path", "round_event",
]

#: file name of the querying node's own audit log with the default node log (``data_dir/audit.jsonl``); in
#: general ``<stem of the node's log>-querier.jsonl`` next to it (:func:`querier_audit_path`)
QUERIER_AUDIT_LOG = "audit-querier.jsonl"
#: resubmitting a held answer's request (``audit_pending``): first wait (doubling), and the total wait bound
AUDIT_PENDING_FIRST_WAIT_S = 0.5
AUDIT_PENDING_MAX_WAIT_S = 10.0
#: appends one event to the querier's audit log durably (raises when it cannot: results are then withheld)
AuditSink = Callable[[Mapping[str, Any]], object]

_log = logging.getLogger("fedcheck.querier")

_T = TypeVar("_T")

#: default cap on one downloaded holder index ([querier] max_index_mb)
DEFAULT_MAX_INDEX_BYTES = 512 * 1024 * 1024
#: stands for "NodeInfo carried no announcement" (verification then fails: an unsigned key is never used)
_MISSING = SignedEnvelope(b"", b"", b"")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS indexes (state TEXT PRIMARY KEY, epoch_id TEXT NOT NULL, blob BLOB NOT NULL);
-- the holder-signed announcement a cached index was accepted with (re-verified on every cache hit)
CREATE TABLE IF NOT EXISTS index_announcements (
    state TEXT PRIMARY KEY, epoch_id TEXT NOT NULL, payload BLOB NOT NULL, signature BLOB NOT NULL,
    certificate BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    state TEXT NOT NULL, epoch_id TEXT NOT NULL, key_mac BLOB NOT NULL, blob BLOB NOT NULL,
    PRIMARY KEY (state, epoch_id, key_mac));
"""


class QuerierCache:
    """Per-holder epoch indexes and finalised outputs, sealed at rest; keys stored as keyed MACs only.

    Outputs are stored under ``mac(key, context)`` with :func:`cache_context` (the request terms the holder's
    policy decided on), so they are found again only under the same terms."""

    def __init__(self, path: Path, sealer: Sealer) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sealer = sealer
        self._sealer = sealer
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT v FROM meta WHERE k='mac_key'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('mac_key', ?)",
                (sealer.seal(secrets.token_bytes(32), b"fedcheck-querier-mac"),),
            )
            row = self._db.execute("SELECT v FROM meta WHERE k='mac_key'").fetchone()
        self._mac_key = sealer.open(bytes(row[0]), b"fedcheck-querier-mac")

    def mac(self, key: bytes, context: bytes = b"") -> bytes:
        """Keyed MAC of a match key; with ``context`` (:func:`cache_context`) the MAC -- and so the cached
        result -- is bound to the request terms it was obtained under."""
        if not context:
            return hmac.new(self._mac_key, key, hashlib.sha256).digest()
        bound = b"fedcheck-querier-ctx-v1\x00" + hashlib.sha256(context).digest() + key
        return hmac.new(self._mac_key, bound, hashlib.sha256).digest()

    def index(self, state: str, epoch_id: str) -> ExactIndex | None:
        with self._lock:
            row = self._db.execute(
                "SELECT blob FROM indexes WHERE state=? AND epoch_id=?", (state, epoch_id)
            ).fetchone()
        if row is None:
            return None
        try:
            return ExactIndex.from_bytes(bytes(row[0]))
        except FedcheckError:
            return None

    def index_entry(self, state: str, epoch_id: str) -> tuple[bytes, SignedEnvelope | None] | None:
        """The cached index bytes of ``state`` for ``epoch_id`` and the announcement it was accepted with."""
        with self._lock:
            row = self._db.execute(
                "SELECT blob FROM indexes WHERE state=? AND epoch_id=?", (state, epoch_id)
            ).fetchone()
            ann = self._db.execute(
                "SELECT payload, signature, certificate FROM index_announcements"
                " WHERE state=? AND epoch_id=?",
                (state, epoch_id),
            ).fetchone()
        if row is None:
            return None
        env = None if ann is None else SignedEnvelope(bytes(ann[0]), bytes(ann[1]), bytes(ann[2]))
        return bytes(row[0]), env

    def drop_index(self, state: str, epoch_id: str) -> None:
        """Forget a cached index that no longer verifies, and the outputs finalised against it."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM indexes WHERE state=?", (state,))
            self._db.execute("DELETE FROM index_announcements WHERE state=?", (state,))
            self._db.execute("DELETE FROM results WHERE state=? AND epoch_id=?", (state, epoch_id))
            self._db.execute("COMMIT")

    def put_index(
        self, state: str, epoch_id: str, data: bytes, announcement: SignedEnvelope | None = None
    ) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO indexes VALUES (?,?,?)", (state, epoch_id, data))
            self._db.execute("DELETE FROM index_announcements WHERE state=?", (state,))
            if announcement is not None:
                self._db.execute(
                    "INSERT INTO index_announcements VALUES (?,?,?,?,?)",
                    (state, epoch_id, announcement.payload, announcement.signature,
                     announcement.certificate_pem),
                )
            # outputs of older epochs can never be reused (new key): drop them
            self._db.execute("DELETE FROM results WHERE state=? AND epoch_id<>?", (state, epoch_id))
            self._db.execute("COMMIT")

    def results(self, state: str, epoch_id: str, macs: Sequence[bytes]) -> dict[bytes, list[list[object]]]:
        aad = f"{state}/{epoch_id}".encode()
        out: dict[bytes, list[list[object]]] = {}
        with self._lock:
            for mac in macs:
                row = self._db.execute(
                    "SELECT blob FROM results WHERE state=? AND epoch_id=? AND key_mac=?",
                    (state, epoch_id, mac),
                ).fetchone()
                if row is not None:
                    out[mac] = json.loads(self._sealer.open(bytes(row[0]), aad))
        return out

    def put_results(self, state: str, epoch_id: str, items: dict[bytes, list[list[object]]]) -> None:
        aad = f"{state}/{epoch_id}".encode()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?)",
                [
                    (state, epoch_id, mac, self._sealer.seal(json.dumps(v).encode(), aad))
                    for mac, v in items.items()
                ],
            )
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class QueryOptions:
    mode: str = "exact"
    states: tuple[str, ...] = ()
    purpose: str = "border-screening"
    legal_basis: str = ""
    unit: str = ""
    official: str = ""
    deadline_seconds: float = 30.0
    round_id: str = ""
    #: match-key types to use (empty = all defaults); sent, signed, so holders can report narrowing
    key_types: tuple[str, ...] = ()
    #: label fields asked of holders (empty = whatever each holder discloses)
    label_fields: tuple[str, ...] = ()


def cache_context(options: QueryOptions, mode: str) -> bytes:
    """The request terms a holder's policy decides on (``fedcheck.trust.policy.HolderPolicy.decide``:
    purpose, legal basis, mode, key types, label fields), canonically encoded. Cached results are keyed by
    it, so a re-check is answered from the cache only under the very terms the holder accepted (anything
    else goes to the holder, whose policy decides again). ``unit``/``official`` are not among them: holder
    policies do not decide on them (they are audited, here and at the holder)."""
    return json.dumps(
        {
            "purpose": options.purpose,
            "legal_basis": options.legal_basis,
            "mode": mode,
            "key_types": sorted(options.key_types),
            "label_fields": sorted(options.label_fields),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def _audit_text(value: str, fallback: str = "") -> str:
    """``value`` if it may be stored in an audit event, else ``fallback`` (a status text carrying a reason
    that came over the wire must never make the querier's audit append fail)."""
    value = value[:200]
    return value if audit_text_problem(value) is None else fallback


def _outcome(statuses: Mapping[str, str]) -> str:
    values = list(statuses.values())
    if all(v.startswith("ok") for v in values):
        return "ok"
    if any("refused" in v for v in values):
        return "refused"
    if any(v.startswith("timeout") for v in values):
        return "timeout"
    return "error"


def round_event(
    options: QueryOptions,
    *,
    round_id: str,
    mode: str,
    targets: Sequence[str],
    statuses: Mapping[str, str],
    travellers: int,
    items_by_state: Mapping[str, int],
    hits_by_state: Mapping[str, int],
    excluded_by_state: Mapping[str, int],
    epochs: Mapping[str, str],
    started: float,
    cached_by_state: Mapping[str, int] | None = None,
    event_type: str = "query",
    **extra: Any,
) -> dict[str, Any]:
    """The querier's audit event for one round: request terms, target States with their outcomes, and counts
    (travellers, items sent, travellers with hits, exclusions, cache use) -- never names, documents, match
    keys or labels."""
    event: dict[str, Any] = {
        "type": event_type,
        "round_id": round_id,
        "mode": mode,
        "purpose": options.purpose,
        "legal_basis": options.legal_basis,
    }
    if options.unit:
        event["unit"] = options.unit
    if options.official:
        event["official"] = options.official
    if options.key_types:
        event["key_types"] = list(options.key_types)
    if options.label_fields:
        event["label_fields"] = list(options.label_fields)
    clean = {s: _audit_text(v, v.split(" ", 1)[0][:32]) for s, v in statuses.items()}
    event.update(
        targets=list(targets),
        outcome=_outcome(clean) if clean else "ok",
        statuses=clean,
        travellers=travellers,
        items=sum(items_by_state.values()),
        items_by_state=dict(items_by_state),
        hits=sum(hits_by_state.values()),
        hits_by_state=dict(hits_by_state),
        excluded=sum(excluded_by_state.values()),
        excluded_by_state=dict(excluded_by_state),
        epochs=dict(epochs),
    )
    if cached_by_state is not None:
        event["cached"] = any(
            n and clean.get(s, "").startswith("ok") for s, n in cached_by_state.items()
        )
        event["cached_by_state"] = dict(cached_by_state)
    event.update(extra)
    event["duration_ms"] = round((time.perf_counter() - started) * 1000)
    return event


def audit_reason(exc: FedcheckError) -> str:
    """``exc``'s reason code as the querier audits it. It may have come over the wire, so the one rule for a
    peer's codes applies (:func:`fedcheck.rpc.errors.relayed_reason`: a short code, else
    ``holder_invalid_reason``); codes rebuilt from gRPC errors passed it already."""
    return relayed_reason(exc.reason)


def failure_fields(exc: BaseException) -> dict[str, str]:
    """The audit fields of a failed run: ``outcome: error`` with the error's reason code
    (:func:`audit_reason`) and status, or ``reason: internal`` / ``status: INTERNAL`` for an unexpected error
    (its text may carry anything, e.g. a traveller's name, and is never audited)."""
    if isinstance(exc, FedcheckError):
        return {"outcome": "error", "reason": audit_reason(exc), "status": exc.status}
    return {"outcome": "error", "reason": "internal", "status": "INTERNAL"}


def audit_run_failure(
    sink: AuditSink | None,
    exc: BaseException,
    options: QueryOptions,
    *,
    round_id: str,
    mode: str,
    travellers: int,
    started: float,
    **extra: Any,
) -> None:
    """Record a run that failed midway (best effort, :func:`audit_failure`; no-op without a sink): the
    round's terms and target States, no counts, and :func:`failure_fields`. ``extra`` as for
    :func:`round_event`."""
    if sink is None:
        return
    event = round_event(
        options, round_id=round_id, mode=mode, targets=list(options.states), statuses={},
        travellers=travellers, items_by_state={}, hits_by_state={}, excluded_by_state={}, epochs={},
        started=started, **extra,
    )
    event.update(failure_fields(exc))
    audit_failure(sink, event)


def audit_failure(sink: AuditSink | None, event: Mapping[str, Any]) -> None:
    """Best-effort :func:`write_audit` of a failed run's event: the error being reported is the caller's, so
    a sink that fails too (it may be what failed) is only logged."""
    try:
        write_audit(sink, event)
    except Exception:
        _log.error(
            "the failed run could not be recorded in the querier audit log",
            extra={"round_id": str(event.get("round_id", "")), "reason": "querier_audit"},
        )


def write_audit(sink: AuditSink | None, event: Mapping[str, Any]) -> None:
    """Append ``event`` through ``sink`` (no-op without one); any failure -> :class:`IntegrityError`
    ``querier_audit``: a round the querier could not record is not reported (fail closed)."""
    if sink is None:
        return
    try:
        sink(event)
    except (FedcheckError, OSError) as exc:
        why = exc.reason if isinstance(exc, FedcheckError) else type(exc).__name__
        raise IntegrityError(
            f"the querier audit log could not record this round ({why}); results withheld",
            reason="querier_audit",
        ) from exc


def querier_audit_path(cfg: NodeConfig) -> Path:
    """``<stem>-querier.jsonl`` next to the node's audit log (``[audit] log``, default
    ``data_dir/audit.jsonl`` -> ``data_dir/audit-querier.jsonl``), so nodes sharing one log directory
    (``FRA.jsonl``, ``DEU.jsonl``) keep one querier log each. A file of its own: the running node holds the
    single-writer lock of its log for as long as it serves, while ``fedcheck query`` runs beside it."""
    from fedcheck.node.app import audit_paths

    log = audit_paths(cfg)[1]
    return log.with_name(f"{log.stem}-querier.jsonl")


def collect_held(submit: Callable[[], _T], *, round_id: str = "") -> _T:
    """``submit()`` -- one call sending an already signed request -- repeated unchanged while the coordinator
    answers ``UNAVAILABLE audit_pending``: the holders answered, the coordinator holds the answer until its
    own audit entry is written and hands it out only for the byte-identical request. Waits 0.5, 1, 2, 4 s (a
    ``retry_after_s`` hint instead, when the error carries one), at most :data:`AUDIT_PENDING_MAX_WAIT_S` in
    all, then re-raises the last error."""
    waited, delay = 0.0, AUDIT_PENDING_FIRST_WAIT_S
    while True:
        try:
            return submit()
        except FedcheckError as exc:
            if exc.status != "UNAVAILABLE" or exc.reason != "audit_pending":
                raise
            hint = float(getattr(exc, "retry_after_s", 0) or 0)
            wait = hint if hint > 0 else delay
            if waited + wait > AUDIT_PENDING_MAX_WAIT_S:
                raise
            _log.warning(
                "the coordinator holds the answer until it can record the round; resubmitting the same signed"
                " request",
                extra={"round_id": round_id, "reason": exc.reason, "ms": round(wait * 1000)},
            )
            time.sleep(wait)
            waited += wait
            delay *= 2


def open_querier_audit(cfg: NodeConfig, *, lock_timeout: float = 10.0) -> AuditSink:
    """The querying node's audit sink: each call opens :func:`querier_audit_path`, appends one event signed
    with the node's audit key (``[audit] signing_key``, sealed under the node's KEK; created like the node
    does when missing) and closes it again, so concurrent ``fedcheck query`` commands of one node take turns
    (waiting up to ``lock_timeout`` s). Verify with ``fedcheck audit verify --log .../audit-querier.jsonl
    --public-key .../audit-signing.key.pub.pem``."""
    from fedcheck.node.app import audit_paths
    from fedcheck.trust.atrest import load_kek
    from fedcheck.trust.audit import append_event, ensure_signing_key, load_signing_key

    kek = load_kek(cfg.kek)
    key_path, _ = audit_paths(cfg)
    ensure_signing_key(key_path, kek)
    key = load_signing_key(key_path, kek)
    path = querier_audit_path(cfg)

    def sink(event: Mapping[str, Any]) -> object:
        return append_event(path, key, event, lock_timeout=lock_timeout)

    return sink


@dataclass
class _HolderPlan:
    state: str
    epoch_id: str
    index: ExactIndex
    keys: QueryKeys
    macs: list[bytes]
    cached: dict[bytes, list[list[object]]]
    #: the epoch key from the holder's verified announcement
    public_key: bytes
    send_positions: list[int] = field(default_factory=list)
    #: key types the payload would announce for this holder had nothing been excluded (padding included)
    payload_types: set[str] = field(default_factory=set)
    #: cache marks for the excluded keys padded for (exact mode): "as if sent", so a re-run pads as the
    #: unfiltered re-run would send (not at all); never read as results
    pad_marks: list[bytes] = field(default_factory=list)
    #: the batch: blinded ``keys[send_positions]``, then one dummy per pad mark (:meth:`QueryRunner._padding`)
    batch: BlindedBatch | None = None


class QueryRunner:
    """Runs one query round for a querying node."""

    def __init__(
        self,
        *,
        state: str,
        coordinator: CoordinatorTransport,
        cache: QuerierCache,
        cert_pem: bytes,
        key_pem: bytes,
        policy: QuerierPolicy | None = None,
        ca_pem: bytes | None = None,
        crl: Callable[[], RevocationList | None] | None = None,
        max_index_bytes: int = DEFAULT_MAX_INDEX_BYTES,
        audit: AuditSink | None = None,
    ) -> None:
        self._state = state
        #: the querier's own audit log (one event per round, cached re-checks too); None = not audited here
        self.audit: AuditSink | None = audit
        #: federation CA and CRL: holders' signed epoch announcements are verified against them (without a
        #: CA every holder is refused with ``announcement_invalid``: fail closed)
        self._ca = ca_pem
        self._crl: Callable[[], RevocationList | None] = crl or (lambda: None)
        self._max_index = max_index_bytes
        self._coord = coordinator
        self._cache = cache
        self._cert = cert_pem
        self._key = key_pem
        self._policy = policy or QuerierPolicy()
        self.last_round: RoundResult | None = None
        self.last_request: SubmitRoundRequest | None = None
        #: the id of the last run (= the submitted round's id; also set when everything came from the cache)
        self.last_round_id: str = ""

    def _sign(self, payload: bytes) -> SignedEnvelope:
        return SignedEnvelope(payload, sign_payload(self._key, payload), self._cert)

    # -- index download --------------------------------------------------------------------------------------

    def _verify_announced(
        self, state: str, epoch_id: str, env: SignedEnvelope | None, public_key: bytes | None
    ) -> bytes | None:
        if env is None:
            return public_key
        return verify_announcement(
            env, ca_pem=self._ca, crl=self._crl, state=state, epoch_id=epoch_id, public_key=public_key
        ).epoch_public_key

    def fetch_index(
        self,
        state: str,
        epoch_id: str,
        *,
        timeout: float = 60.0,
        known_announcement: SignedEnvelope | None = None,
        known_public_key: bytes | None = None,
    ) -> ExactIndex:
        """Download ``state``'s index for ``epoch_id`` via the coordinator; resumes after transient errors.

        The download is accepted only with the holder's signed announcement for our audience on the last
        chunk (its digest = SHA-256 of the downloaded bytes, its key = the index's key, and = the key of
        ``known_announcement`` / ``known_public_key`` when given); anything else -> ``VerificationError``
        ``announcement_invalid``. Larger than ``max_index_bytes`` -> ``LimitExceeded`` ``index_too_large``.
        """
        buf = bytearray()
        failures = 0
        announced_pk = self._verify_announced(state, epoch_id, known_announcement, known_public_key)
        while True:
            payload = serde.index_request_to_bytes(IndexRequest(state, epoch_id, int(time.time() * 1000)))
            try:
                for chunk in self._coord.get_index(
                    state, GetIndexRequest(self._sign(payload), len(buf)), timeout=timeout
                ):
                    if chunk.epoch_id != epoch_id:
                        raise PreconditionFailed(
                            "holder changed epoch during download", reason="epoch_changed"
                        )
                    if chunk.offset != len(buf) or hashlib.sha256(chunk.data).digest() != chunk.chunk_sha256:
                        raise IntegrityError("index chunk failed its integrity check", reason="chunk_corrupt")
                    if chunk.total_bytes > self._max_index or len(buf) + len(chunk.data) > self._max_index:
                        raise LimitExceeded(
                            f"holder index larger than this querier accepts ({self._max_index} bytes;"
                            " [querier] max_index_mb)",
                            reason="index_too_large",
                        )
                    buf += chunk.data
                    if chunk.last:
                        if (
                            len(buf) != chunk.total_bytes
                            or hashlib.sha256(buf).digest() != chunk.index_sha256
                        ):
                            raise IntegrityError(
                                "downloaded index failed its digest check", reason="index_corrupt"
                            )
                        data = bytes(buf)
                        index = ExactIndex.from_bytes(data)
                        # authenticity, not just integrity: the holder's own signature over this index's
                        # digest and key (a relay can recompute the chunk digests, not this)
                        # and made for *our* State: a relay cannot hand us the holder-signed index of another
                        # partner's audience (narrower: hits suppressed; broader: withheld entries)
                        verify_announcement(
                            chunk.announcement,
                            ca_pem=self._ca,
                            crl=self._crl,
                            state=state,
                            epoch_id=epoch_id,
                            public_key=announced_pk or index.public_key,
                            index_sha256=hashlib.sha256(data).digest(),
                            partner_state=self._state,
                        )
                        if not hmac.compare_digest(index.public_key, announced_pk or index.public_key):
                            raise VerificationError(reason="announcement_invalid")
                        self._cache.put_index(state, epoch_id, data, chunk.announcement)
                        return index
                raise Unavailable("index stream ended early", reason="stream_truncated")
            except Unavailable:
                failures += 1
                if failures > 3:
                    raise
                time.sleep(0.2 * failures)

    def _cached_index(self, state: str, epoch_id: str, announced_pk: bytes | None) -> ExactIndex | None:
        """The cached index, only if it still matches the verified announcement: its key = the announced key,
        and the holder's index announcement stored with it still verifies (made for our State, digest = the
        cached bytes). Anything else is dropped (with the outputs finalised against it) and re-downloaded."""
        entry = self._cache.index_entry(state, epoch_id)
        if entry is None:
            return None
        data, announcement = entry
        try:
            index = ExactIndex.from_bytes(data)
            if announced_pk is None or not hmac.compare_digest(index.public_key, announced_pk):
                raise VerificationError(reason="announcement_invalid")
            verify_announcement(
                announcement or _MISSING,
                ca_pem=self._ca,
                crl=self._crl,
                state=state,
                epoch_id=epoch_id,
                public_key=announced_pk,
                index_sha256=hashlib.sha256(data).digest(),
                partner_state=self._state,
            )
        except FedcheckError:
            _log.warning("cached index does not match the holder's announcement; downloading it again",
                         extra={"state": state, "epoch_id": epoch_id})
            self._cache.drop_index(state, epoch_id)
            return None
        return index

    # -- the round -------------------------------------------------------------------------------------------

    def _padding(
        self,
        manifest: Sequence[PersonRecord],
        plan: _HolderPlan,
        key_types: Sequence[str],
        context: bytes,
        mode: Mode,
    ) -> tuple[list[bytes], set[str]]:
        """Dummies to add to ``plan``'s batch so that excluding protected travellers does not show.

        Every holder (and the coordinator) sees each target's batch size in the signed round payload; a
        smaller batch for one State would tell it that a protected traveller of its nationality is on the
        manifest. The batch is padded to the size it would have had without the exclusion: the distinct keys
        of the whole manifest (same key types, same cache subtraction) minus the kept travellers' keys.

        In exact mode an excluded key counts as cached when its result is cached or when it was padded for in
        an earlier round at this holder (its *pad mark*, stored with the results once the round succeeds):
        the unfiltered re-run would not send it again either. Returns the pad marks (one per dummy) and the
        key types the unfiltered batch would have had (for the payload's ``key_types``).
        """
        full = _query_keys(manifest, key_types)
        kept = set(plan.macs)
        pad_context = context + b"\x00fedcheck-querier-padded-v1"
        extra = [
            (m, self._cache.mac(k, pad_context), t)
            for k, t in zip(full.keys, full.key_types, strict=True)
            if (m := self._cache.mac(k, context)) not in kept
        ]
        cached = (
            self._cache.results(plan.state, plan.epoch_id, [x for m, pm, _ in extra for x in (m, pm)])
            if mode is Mode.EXACT
            else {}
        )
        uncached = [(pm, t) for m, pm, t in extra if m not in cached and pm not in cached]
        return [pm for pm, _ in uncached], {t for _, t in uncached}

    def run(self, manifest: Sequence[PersonRecord], options: QueryOptions) -> ScreenReport:
        """One round; with an audit sink, recorded in the querier's audit log before the report is returned
        (a round that fails midway is recorded as ``outcome: error`` with its reason -- ``internal`` for an
        unexpected error, whose text is never audited -- then re-raised)."""
        t_start = time.perf_counter()
        round_id = options.round_id or str(uuid.uuid4())
        self.last_round_id = round_id
        try:
            report, event = self._run(manifest, options, round_id, t_start)
        except Exception as exc:
            audit_run_failure(self.audit, exc, options, round_id=round_id, mode=options.mode,
                              travellers=len(manifest), started=t_start)
            raise
        write_audit(self.audit, event)
        return report

    def _run(
        self, manifest: Sequence[PersonRecord], options: QueryOptions, round_id: str, t_start: float
    ) -> tuple[ScreenReport, dict[str, Any]]:
        timings: dict[str, float] = {}
        mode = Mode(options.mode)
        context = cache_context(options, str(mode))
        nodes = {e.state: e for e in self._coord.list_nodes(timeout=10.0)}
        targets = list(options.states) or sorted(s for s in nodes if s != self._state)
        excluded_by_state: dict[str, int] = {}
        statuses: dict[str, str] = {}
        details: dict[str, dict[str, object]] = {}
        travellers = [TravellerResult(r.record_id, r.names[0].full_name if r.names else "") for r in manifest]
        plans: dict[str, _HolderPlan] = {}
        querier = ExactQuerier()
        t0 = time.perf_counter()
        for state in targets:
            entry: NodeEntry | None = nodes.get(state)
            if entry is None or not entry.reachable or entry.info is None or not entry.info.epoch_id:
                statuses[state] = "unavailable" if entry is not None else "unavailable (not a member)"
                continue
            epoch_id = entry.info.epoch_id
            try:
                # the epoch key reached us through the coordinator: trust it only as the holder signed it
                announced_pk = self._verify_announced(
                    state, epoch_id, entry.info.epoch_announcement or _MISSING, entry.info.epoch_public_key
                )
                index = self._cached_index(state, epoch_id, announced_pk) or self.fetch_index(
                    state,
                    epoch_id,
                    known_announcement=entry.info.epoch_announcement,
                    known_public_key=entry.info.epoch_public_key,
                )
            except FedcheckError as exc:
                statuses[state] = (
                    f"{'unavailable' if isinstance(exc, Unavailable) else 'refused'} ({exc.reason})"
                )
                if not isinstance(exc, Unavailable):
                    retry = int(getattr(exc, "retry_after_s", 0))
                    details[state] = _refusal_details(exc.status, exc.reasons, retry)
                continue
            if index.public_key != entry.info.epoch_public_key:
                statuses[state] = "refused (epoch_key_mismatch)"
                continue
            kept, excluded = self._policy.filter_manifest(manifest, [state])
            if excluded:
                details.setdefault(state, {})["excluded"] = len(excluded)
                details[state]["excluded_causes"] = exclusion_causes(excluded)
                excluded_by_state[state] = len(excluded)
            kept_ids = {id(r) for r in kept}
            positions = [i for i, r in enumerate(manifest) if id(r) in kept_ids]
            # the excluded records, in manifest order (filter_manifest keeps the order): never checked here
            for i, excl in zip((i for i, r in enumerate(manifest) if id(r) not in kept_ids), excluded,
                               strict=True):
                travellers[i].not_checked[state] = exclusion_reason(excl.cause_text)
            qk = _query_keys([manifest[i] for i in positions], options.key_types)
            qk = QueryKeys(qk.keys, qk.key_types, qk.pair_key, qk.pair_owner.copy())
            if len(positions):
                qk.pair_owner[:] = [positions[int(o)] for o in qk.pair_owner]
            with_keys = set(qk.pair_owner.tolist())
            for i in positions:
                if i not in with_keys:  # nothing of this traveller could be sent
                    travellers[i].not_checked[state] = "no match key of the requested key types"
            macs = [self._cache.mac(k, context) for k in qk.keys]
            cached = self._cache.results(state, epoch_id, macs) if mode is Mode.EXACT else {}
            plan = _HolderPlan(state, epoch_id, index, qk, macs, cached, entry.info.epoch_public_key)
            plan.send_positions = [i for i, m in enumerate(macs) if m not in cached]
            plan.payload_types = {qk.key_types[i] for i in plan.send_positions}
            padding = 0
            if excluded:
                plan.pad_marks, pad_types = self._padding(manifest, plan, options.key_types, context, mode)
                plan.payload_types |= pad_types
                padding = len(plan.pad_marks)
            if plan.send_positions or padding:
                # dummies blinded in the same call as the real keys: every blinded element is a uniformly
                # random group element, so the holder cannot tell them apart (their outputs are dropped)
                plan.batch = querier.blind(
                    [qk.keys[i] for i in plan.send_positions]
                    + [secrets.token_bytes(32) for _ in range(padding)],
                    mode=mode,
                )
            plans[state] = plan
        timings["index+blind"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        to_send: dict[str, list[bytes]] = {
            s: p.batch.blinded for s, p in plans.items() if p.batch is not None and p.batch.blinded
        }
        result: RoundResult | None = None
        if to_send:
            now_ms = int(time.time() * 1000)
            payload = RoundPayload(
                round_id=round_id,
                purpose=options.purpose,
                legal_basis=options.legal_basis,
                mode=str(mode),
                targets=tuple(
                    RoundTarget(s, plans[s].epoch_id, len(b), hashlib.sha256(b"".join(b)).digest())
                    for s, b in to_send.items()
                ),
                deadline_unix_ms=now_ms + int(options.deadline_seconds * 1000),
                issued_at_unix_ms=now_ms,
                unit=options.unit,
                official=options.official,
                key_types=options.key_types
                or tuple(sorted({t for s in to_send for t in plans[s].payload_types})),
                label_fields=options.label_fields,
            )
            env = self._sign(serde.round_payload_to_bytes(payload))
            request = SubmitRoundRequest(env, {s: tuple(b) for s, b in to_send.items()}, round_id)
            self.last_request = request
            result = collect_held(  # a held answer: the unchanged request, never a re-signed one
                lambda: self._coord.submit_round(request, timeout=options.deadline_seconds + 10),
                round_id=round_id,
            )
            self.last_round = result
        timings["round"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        counts: list[StateCount] = []
        by_state = result.by_state() if result is not None else {}
        for state, plan in plans.items():
            outputs: dict[int, list[list[object]]] = {
                i: plan.cached[m] for i, m in enumerate(plan.macs) if m in plan.cached
            }
            if state in to_send:
                hr = by_state.get(state)
                if hr is None or hr.status is not HolderStatus.OK or hr.evaluation is None:
                    status = str(hr.status) if hr is not None else "unavailable"
                    reason = f" ({hr.reason})" if hr is not None and hr.reason else ""
                    statuses[state] = status + reason
                    if hr is not None and hr.status is HolderStatus.REFUSED:
                        details.setdefault(state, {}).update(
                            _refusal_details(hr.code, hr.reasons or (hr.reason,), hr.retry_after_s)
                        )
                    metrics.ROUNDS.labels(role="querier", state=state, status=status).inc()
                    continue
                assert plan.batch is not None
                ev = hr.evaluation
                if ev.narrowed:
                    details.setdefault(state, {}).update(
                        narrowed=list(ev.narrowed),
                        key_types=list(ev.effective_key_types),
                        label_fields=list(ev.effective_label_fields),
                    )
                    if "narrowed_key_types" in ev.narrowed:  # label-field narrowing checks every key
                        _mark_keyless(
                            travellers, state, plan.keys, ev.effective_key_types, plan.send_positions
                        )
                if ev.audit_hash:
                    details.setdefault(state, {})["audit_head"] = f"{ev.audit_seq}:{ev.audit_hash}"
                try:
                    if ev.epoch_id and ev.epoch_id != plan.epoch_id:
                        raise VerificationError(reason="epoch_mismatch")
                    # the proof must verify under the key the holder announced (and signed); the index was
                    # checked against that announcement when downloaded
                    fin = querier.finalize(
                        plan.batch,
                        ExactEvaluation(list(hr.evaluation.evaluated), hr.evaluation.proof or None),
                        public_key=plan.public_key,
                        index=plan.index,
                    )
                except FedcheckError as exc:
                    statuses[state] = f"refused ({exc.reason})"
                    continue
                if mode is Mode.CARDINALITY:
                    counts.append(StateCount(state, str(mode), fin.count))
                    statuses[state] = "ok"
                    metrics.ROUNDS.labels(role="querier", state=state, status="ok").inc()
                    continue
                fresh: dict[bytes, list[list[object]]] = {plan.macs[i]: [] for i in plan.send_positions}
                for h in fin.hits:
                    if h.position >= len(plan.send_positions):
                        continue  # a padding dummy (random input: a hit is a tag collision)
                    key_pos = plan.send_positions[h.position]
                    fresh[plan.macs[key_pos]].append([h.key_type, h.label])
                self._cache.put_results(state, plan.epoch_id, fresh | {pm: [] for pm in plan.pad_marks})
                for i in plan.send_positions:
                    outputs[i] = fresh[plan.macs[i]]
            elif mode is Mode.CARDINALITY:
                counts.append(StateCount(state, str(mode), 0))
            statuses[state] = "ok" if state in to_send else "ok (cached)"
            metrics.ROUNDS.labels(role="querier", state=state, status="ok").inc()
            hit_positions = [i for i, v in outputs.items() if v]
            for key_pos, owners in zip(hit_positions, plan.keys.owners_of(hit_positions), strict=True):
                for key_type, label in outputs[key_pos]:
                    lab = {str(a): str(b) for a, b in dict(label).items()}  # type: ignore[call-overload]
                    for owner in owners:
                        review = self._policy.requires_human_review(
                            state, lab, record_flags=manifest[owner].flags
                        )
                        travellers[owner].hits.append(Hit(state, "exact", str(key_type), lab, review))
        timings["finalise"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t_start
        metrics.ROUND_SECONDS.labels(role="querier").observe(timings["total"])
        for state in targets:
            statuses.setdefault(state, "unavailable")
            if not statuses[state].startswith("ok"):  # nobody (else) was checked against this State
                for tr in travellers:
                    tr.not_checked.setdefault(state, state_reason(statuses[state]))
        hits_by_state: dict[str, int] = {}  # travellers with at least one hit, per State
        for tr in travellers:
            for state in {hit.state for hit in tr.hits}:
                hits_by_state[state] = hits_by_state.get(state, 0) + 1
        for c in counts:
            hits_by_state[c.state] = c.hits
        event = round_event(
            options,
            round_id=result.round_id if result is not None else round_id,
            mode=str(mode),
            targets=targets,
            statuses=statuses,
            travellers=len(manifest),
            items_by_state={s: len(b) for s, b in to_send.items()},
            hits_by_state=hits_by_state,
            excluded_by_state=excluded_by_state,
            epochs={s: p.epoch_id for s, p in plans.items()},
            cached_by_state={s: len(p.cached) for s, p in plans.items()},
            started=t_start,
            human_review=sum(hit.review_required for tr in travellers for hit in tr.hits),
            replayed=bool(result is not None and result.replayed),
        )
        _log.info(
            "query finished",
            extra={
                "round_id": result.round_id if result else "",
                "states": statuses,
                "ms": round(timings["total"] * 1000),
            },
        )
        report = ScreenReport(travellers, counts=counts, statuses=statuses, timings=timings, details=details)
        return report, event


def _query_keys(records: Sequence[PersonRecord], key_types: Sequence[str]) -> QueryKeys:
    """The distinct match keys of ``records`` of the round's key types (the defaults when none given)."""
    return query_keys(records, [KeyType(k) for k in key_types]) if key_types else query_keys(records)


def _mark_keyless(
    travellers: Sequence[TravellerResult],
    state: str,
    keys: QueryKeys,
    effective_key_types: Sequence[str],
    sent: Sequence[int],
) -> None:
    """A holder that narrowed the key types evaluated only keys of ``effective_key_types``: a traveller none
    of whose keys *sent in this round* (``sent``: positions in ``keys.keys``) is of those types was not
    checked against it. Keys answered from the cache were evaluated in an earlier round and are not judged."""
    if not effective_key_types:
        return
    allowed = set(effective_key_types)
    in_round = set(sent)
    owners: dict[int, bool] = {}
    for k, o in zip(keys.pair_key.tolist(), keys.pair_owner.tolist(), strict=True):
        if k not in in_round:
            continue
        owners[o] = owners.get(o, False) or keys.key_types[k] in allowed
    for o, usable in owners.items():
        if not usable:
            travellers[o].not_checked.setdefault(state, "no match key of a type the State accepts")


def _refusal_details(code: str, reasons: Sequence[str], retry_after_s: int) -> dict[str, object]:
    """What a holder's refusal tells the querier: status name, every reason code, retry-after."""
    out: dict[str, object] = {"code": code, "reasons": list(reasons)}
    if retry_after_s:
        out["retry_after_s"] = int(retry_after_s)
    return out
