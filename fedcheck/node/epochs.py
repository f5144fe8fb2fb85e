"""Epochs: the node's OPRF key and per-audience indexes, rebuilt in the background and swapped atomically.

Why: building an index costs one scalar multiplication per match key, so it runs on a background thread using
all cores (the OPRF layer releases the GIL) while the node still serves the previous epoch; the previous epoch
also stays available for queriers that downloaded its index just before the swap. An epoch ends when its time
is up or the watchlist changed. Epochs are persisted (key sealed) so a restart serves the same epoch.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fedcheck.errors import FedcheckError, PreconditionFailed
from fedcheck.protocol.exact import EpochKey, ExactHolder, IndexEntry, default_workers
from fedcheck.records.keys import DEFAULT_KEY_TYPES, KeyType, match_keys
from fedcheck.storage.base import EpochRecord, WatchlistStore

__all__ = ["Audience", "Epoch", "EpochManager", "IndexBlob", "index_entries"]

_log = logging.getLogger("fedcheck.node.epochs")


@dataclass(frozen=True)
class Audience:
    """One shape of index: an entry filter (withheld, key types, label fields) and whether labels go in."""

    audience_id: str
    select: Callable[[list[IndexEntry]], list[IndexEntry]]
    with_labels: bool = True


@dataclass(frozen=True)
class IndexBlob:
    """A serialised index as streamed to partners."""

    data: bytes = field(repr=False)
    sha256: bytes
    entries: int


@dataclass
class Epoch:
    epoch_id: str
    key: EpochKey
    holder: ExactHolder
    started_unix_ms: int
    list_version: str
    size: int
    indexes: dict[str, IndexBlob]

    @property
    def public_key(self) -> bytes:
        return self.key.public_key

    def index_for(self, audience_id: str) -> IndexBlob:
        blob = self.indexes.get(audience_id)
        if blob is None:
            raise PreconditionFailed(
                "no index for this partner in the current epoch yet", reason="index_not_ready"
            )
        return blob


def index_entries(
    records: Sequence[object], key_types: Sequence[KeyType] = DEFAULT_KEY_TYPES
) -> list[IndexEntry]:
    """Every match key of every listed person, carrying the person's full label (audiences narrow it)."""
    out: list[IndexEntry] = []
    for rec in records:
        label = rec.label.to_dict()  # type: ignore[attr-defined]
        for mk in match_keys(rec, key_types):  # type: ignore[arg-type]
            out.append(IndexEntry(mk.value, str(mk.key_type), label))
    return out


def _new_epoch_id(state: str) -> str:
    return f"{state}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


class EpochManager:
    """Owns the current and previous :class:`Epoch`; a daemon thread rebuilds when needed."""

    def __init__(
        self,
        store: WatchlistStore,
        state: str,
        *,
        epoch_seconds: int,
        audiences: Callable[[], list[Audience]],
        workers: int = 0,
        poll_seconds: float = 2.0,
        on_progress: Callable[[float], None] | None = None,
        on_epoch: Callable[[Epoch], None] | None = None,
        policy_digest: str = "",
    ) -> None:
        self._store = store
        #: digest of the holder policy the indexes are built under; a restored epoch built under another
        #: policy is not served (its indexes and the partners' caches reflect the old policy)
        self._policy_digest = policy_digest
        self._state = state
        self._epoch_seconds = epoch_seconds
        self._audiences = audiences
        self._workers = workers or default_workers()
        self._poll = poll_seconds
        self._on_progress = on_progress or (lambda _p: None)
        self._on_epoch = on_epoch or (lambda _e: None)
        self._lock = threading.Lock()
        self._current: Epoch | None = None
        self._previous: Epoch | None = None
        self._building = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str = ""

    # -- public --------------------------------------------------------------------------------------------

    @property
    def building(self) -> bool:
        return self._building

    def current(self) -> Epoch:
        with self._lock:
            if self._current is None:
                raise PreconditionFailed("epoch index not ready yet", reason="index_not_ready")
            return self._current

    def previous(self) -> Epoch | None:
        """The epoch the current one replaced, while it is still served (else ``None``)."""
        with self._lock:
            return self._previous

    def get(self, epoch_id: str) -> Epoch:
        """The epoch ``epoch_id`` if still served (current or previous), else FAILED_PRECONDITION."""
        with self._lock:
            for ep in (self._current, self._previous):
                if ep is not None and ep.epoch_id == epoch_id:
                    return ep
        raise PreconditionFailed("epoch is no longer served; refresh the index", reason="epoch_changed")

    def epoch_ends_unix(self, epoch: Epoch) -> float:
        return epoch.started_unix_ms / 1000 + self._epoch_seconds

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def start(self) -> None:
        self._restore()
        self._thread = threading.Thread(target=self._loop, name="epoch-builder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def rebuild_now(self) -> Epoch:
        """Build a fresh epoch synchronously (used by rotation commands and tests)."""
        return self._build()

    # -- internals -----------------------------------------------------------------------------------------

    def _restore(self) -> None:
        try:
            saved = self._store.load_epochs()
        except FedcheckError as exc:
            _log.warning("cannot restore persisted epochs", extra={"reason": exc.reason})
            return
        if saved and self._policy_digest:
            built_under = (self._store.get_meta(f"epoch_policy:{saved[0].epoch_id}") or b"").decode()
            if built_under != self._policy_digest:
                _log.warning(
                    "holder policy changed since the last epoch was built: building a new epoch",
                    extra={"epoch_id": saved[0].epoch_id, "reason": "policy_changed"},
                )
                return
        restored: list[Epoch] = []
        for rec in saved[:2]:
            key = EpochKey.from_bytes(rec.key_bytes)
            indexes = {a: IndexBlob(b, hashlib.sha256(b).digest(), 0) for a, b in rec.indexes.items()}
            size = int(self._store.get_meta(f"epoch_size:{rec.epoch_id}") or b"0")
            restored.append(
                Epoch(
                    rec.epoch_id, key, ExactHolder(key), rec.created_unix_ms, rec.list_version, size, indexes
                )
            )
        if restored:
            with self._lock:
                self._current = restored[0]
                self._previous = restored[1] if len(restored) > 1 else None
            self._ready.set()
            self._on_epoch(restored[0])
            _log.info("restored epoch", extra={"epoch_id": restored[0].epoch_id})

    def _needs_build(self) -> bool:
        with self._lock:
            cur = self._current
        if cur is None:
            return True
        if time.time() * 1000 - cur.started_unix_ms >= self._epoch_seconds * 1000:
            return True
        return self._store.list_version() != cur.list_version

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._needs_build():
                    self._build()
            except FedcheckError as exc:
                self.last_error = exc.reason
                _log.error("epoch build failed", extra={"reason": exc.reason})
            except Exception:  # keep serving the previous epoch; the next poll retries
                self.last_error = "internal"
                _log.exception("epoch build failed")
            self._stop.wait(self._poll)

    def _build(self) -> Epoch:
        self._building = True
        self._on_progress(0.0)
        t0 = time.perf_counter()
        try:
            version = self._store.list_version()
            records = list(self._store.iter_records())
            entries = index_entries(records)
            self._on_progress(0.1)
            epoch_id = _new_epoch_id(self._state)
            key = EpochKey.generate(epoch_id)
            holder = ExactHolder(key)
            distinct = list(dict.fromkeys(e.key for e in entries))
            done = [0]

            def evaluated(n: int) -> None:  # the OPRF evaluations are 0.1 .. 0.8 of the build gauge
                done[0] += n
                self._on_progress(0.1 + 0.7 * done[0] / max(1, len(distinct)))

            holder.evaluate_keys(distinct, workers=self._workers, progress=evaluated)  # the expensive part
            self._on_progress(0.8)
            indexes: dict[str, IndexBlob] = {}
            for aud in self._audiences():
                selected = aud.select(entries)
                idx = holder.build_index(selected, workers=self._workers, with_labels=aud.with_labels)
                data = idx.to_bytes()
                indexes[aud.audience_id] = IndexBlob(data, hashlib.sha256(data).digest(), len(idx))
            started = int(time.time() * 1000)
            epoch = Epoch(epoch_id, key, holder, started, version, len({e.key for e in entries}), indexes)
            self._store.save_epoch(
                EpochRecord(
                    epoch_id, started, version, key.to_bytes(), {a: b.data for a, b in indexes.items()}
                )
            )
            self._store.put_meta(f"epoch_size:{epoch_id}", str(epoch.size).encode())
            self._store.put_meta(f"epoch_policy:{epoch_id}", self._policy_digest.encode())
            with self._lock:
                self._previous, self._current = self._current, epoch
            self._ready.set()
            self._on_progress(1.0)
            self._on_epoch(epoch)
            _log.info(
                "epoch built",
                extra={
                    "epoch_id": epoch_id,
                    "index_size": epoch.size,
                    "audiences": len(indexes),
                    "ms": round((time.perf_counter() - t0) * 1000),
                },
            )
            return epoch
        finally:
            self._building = False
