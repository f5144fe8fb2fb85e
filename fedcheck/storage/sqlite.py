"""SQLite watchlist store: WAL, one transaction per import, records and epoch keys sealed at rest.

Why SQLite: embedded, no server to run for a small State, crash-safe. An import is a single ``BEGIN
IMMEDIATE``
transaction, so a killed import leaves the previous list intact and concurrent readers (the serving node) see
either the old or the new list. Each record is sealed with the node's :class:`~fedcheck.trust.atrest.Sealer`
(AAD binds it to its row); unchanged-detection uses an HMAC under a sealed store key, so no plaintext-derived
hash is stored in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedcheck.errors import IntegrityError, VerificationError
from fedcheck.records.model import PersonRecord
from fedcheck.storage.base import EpochRecord, ImportReport, ProgressFn
from fedcheck.storage.codec import record_from_json, record_to_json
from fedcheck.trust.atrest import Sealer

__all__ = ["SqliteWatchlistStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    source TEXT NOT NULL, record_id TEXT NOT NULL, mac BLOB NOT NULL, blob BLOB NOT NULL,
    PRIMARY KEY (source, record_id));
CREATE TABLE IF NOT EXISTS epochs (
    epoch_id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL, list_version TEXT NOT NULL,
    key_blob BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS epoch_indexes (
    epoch_id TEXT NOT NULL, audience TEXT NOT NULL, blob BLOB NOT NULL, PRIMARY KEY (epoch_id, audience));
"""
_PROGRESS_EVERY = 500


class SqliteWatchlistStore:
    """:class:`~fedcheck.storage.base.WatchlistStore` over one SQLite file; thread-safe."""

    def __init__(self, path: Path, sealer: Sealer) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._sealer = sealer
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self._path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._mac_key = self._store_key()

    # -- helpers ---------------------------------------------------------------------------------------------

    def _store_key(self) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k='mac_key'").fetchone()
            if row is not None:
                try:
                    return self._sealer.open(bytes(row[0]), b"fedcheck-store-mac-key")
                except VerificationError:
                    raise VerificationError() from None
            key = secrets.token_bytes(32)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('mac_key', ?)",
                (self._sealer.seal(key, b"fedcheck-store-mac-key"),),
            )
            row = self._db.execute("SELECT v FROM meta WHERE k='mac_key'").fetchone()
            return self._sealer.open(bytes(row[0]), b"fedcheck-store-mac-key")

    @staticmethod
    def _aad(source: str, record_id: str) -> bytes:
        return b"fedcheck-record-v1\x00" + source.encode() + b"\x00" + record_id.encode()

    def _version_of_macs(self) -> str:
        h = hashlib.sha256()
        for (mac,) in self._db.execute("SELECT mac FROM records ORDER BY source, record_id"):
            h.update(bytes(mac))
        return h.hexdigest()[:32]

    # -- records ---------------------------------------------------------------------------------------------

    def replace_list(
        self,
        records: Iterable[PersonRecord],
        *,
        source: str = "default",
        progress: ProgressFn | None = None,
        total: int | None = None,
    ) -> ImportReport:
        report = ImportReport()
        with self._lock:
            existing = {
                rid: bytes(mac)
                for rid, mac in self._db.execute(
                    "SELECT record_id, mac FROM records WHERE source=?", (source,)
                )
            }
            seen: set[str] = set()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for rec in records:
                    report.read += 1
                    if rec.record_id in seen:
                        report.rejected.append((f"record {report.read}", "duplicate record_id"))
                        continue
                    seen.add(rec.record_id)
                    plain = record_to_json(rec)
                    mac = hmac.new(self._mac_key, plain, hashlib.sha256).digest()
                    old = existing.get(rec.record_id)
                    if old is not None and hmac.compare_digest(old, mac):
                        report.unchanged += 1
                    else:
                        blob = self._sealer.seal(plain, self._aad(source, rec.record_id))
                        self._db.execute(
                            "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
                            (source, rec.record_id, mac, blob),
                        )
                        if old is None:
                            report.added += 1
                        else:
                            report.updated += 1
                    if progress is not None and report.read % _PROGRESS_EVERY == 0:
                        progress(report.read, total)
                gone = [rid for rid in existing if rid not in seen]
                self._db.executemany(
                    "DELETE FROM records WHERE source=? AND record_id=?", [(source, rid) for rid in gone]
                )
                report.removed = len(gone)
                version = self._version_of_macs()
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('list_version', ?)", (version.encode(),)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            report.version = version
            if progress is not None:
                progress(report.read, total)
        return report

    def iter_records(self) -> Iterator[PersonRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source, record_id, blob FROM records ORDER BY source, record_id"
            ).fetchall()
        for source, rid, blob in rows:
            yield record_from_json(self._sealer.open(bytes(blob), self._aad(source, rid)))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def list_version(self) -> str:
        value = self.get_meta("list_version")
        return value.decode() if value else "empty"

    # -- meta and epochs -------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def put_meta(self, key: str, value: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def save_epoch(self, epoch: EpochRecord, *, keep: int = 2) -> None:
        aad = b"fedcheck-epoch-key-v1\x00" + epoch.epoch_id.encode()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?)",
                    (
                        epoch.epoch_id,
                        epoch.created_unix_ms,
                        epoch.list_version,
                        self._sealer.seal(epoch.key_bytes, aad),
                    ),
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO epoch_indexes VALUES (?, ?, ?)",
                    [(epoch.epoch_id, a, b) for a, b in epoch.indexes.items()],
                )
                old = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT epoch_id FROM epochs ORDER BY created_ms DESC, epoch_id DESC"
                    ).fetchall()[keep:]
                ]
                for eid in old:
                    self._db.execute("DELETE FROM epochs WHERE epoch_id=?", (eid,))
                    self._db.execute("DELETE FROM epoch_indexes WHERE epoch_id=?", (eid,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def load_epochs(self) -> list[EpochRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT epoch_id, created_ms, list_version, key_blob FROM epochs ORDER BY created_ms DESC"
            ).fetchall()
            out: list[EpochRecord] = []
            for eid, created, version, key_blob in rows:
                aad = b"fedcheck-epoch-key-v1\x00" + str(eid).encode()
                try:
                    key = self._sealer.open(bytes(key_blob), aad)
                except VerificationError:
                    raise IntegrityError(
                        "stored epoch key does not open", reason="epoch_key_corrupt"
                    ) from None
                idx = {
                    str(a): bytes(b)
                    for a, b in self._db.execute(
                        "SELECT audience, blob FROM epoch_indexes WHERE epoch_id=?", (eid,)
                    )
                }
                out.append(EpochRecord(str(eid), int(created), str(version), key, idx))
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteWatchlistStore({self._path.name})"
