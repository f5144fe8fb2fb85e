"""Holder-side replay protection: one evaluation per (querier State, round id), persisted across restarts.

Why: the coordinator relays signed rounds, so it (or anyone on the path who captured one) could replay a
signed round to burn the querier's budget or re-run an old query. Together with the freshness check on the
signed ``issued_at`` (``node.max_skew_seconds``), a holder accepts each (querier, round id) once:

* an *exact* duplicate (same signed payload, hence the same batch digest) is answered again idempotently and
  **not charged** to the budget a second time (a coordinator retry must not cost the querier);
* the same round id with a different payload is refused (``FAILED_PRECONDITION`` ``round_id_reused``).

Entries only need to outlive the freshness window: an older request is refused as stale anyway, so rows older
than ``2 x max_skew`` are pruned. Digests of signed payloads only, never payload bytes.
"""

from __future__ import annotations

import hmac
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fedcheck.errors import PreconditionFailed

__all__ = ["ReplayGuard"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    querier TEXT NOT NULL, round_id TEXT NOT NULL, digest TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (querier, round_id));
"""


class ReplayGuard:
    """(querier, round id) -> payload digest, in SQLite (WAL); thread-safe."""

    def __init__(
        self, path: Path, *, window_seconds: float, clock: Callable[[], float] | None = None
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._window = float(window_seconds)
        self._clock = clock or time.time
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def claim(self, querier: str, round_id: str, digest: str) -> bool:
        """Record a new evaluation: True if new, False for an exact duplicate of an evaluated one.

        Raises :class:`PreconditionFailed` (``round_id_reused``) when the id was used with another payload.
        """
        now = self._clock()
        with self._lock:
            self._db.execute("DELETE FROM seen WHERE at < ?", (now - 2 * self._window,))
            row = self._db.execute(
                "SELECT digest FROM seen WHERE querier=? AND round_id=?", (querier, round_id)
            ).fetchone()
            if row is not None:
                if hmac.compare_digest(str(row[0]), digest):
                    return False
                raise PreconditionFailed(
                    "round_id already used with a different payload", reason="round_id_reused"
                )
            self._db.execute("INSERT INTO seen VALUES (?,?,?,?)", (querier, round_id, digest, now))
            return True

    def release(self, querier: str, round_id: str, digest: str) -> None:
        """Forget a claim whose evaluation was refused afterwards (e.g. budget), so nothing was answered."""
        with self._lock:
            self._db.execute(
                "DELETE FROM seen WHERE querier=? AND round_id=? AND digest=?", (querier, round_id, digest)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"ReplayGuard(window={self._window:.0f}s)"
