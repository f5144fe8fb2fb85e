"""Query budgets: items evaluated per partner per epoch and per UTC day, persisted in SQLite (WAL).

Why this exists: a partner that can evaluate unlimited blinded elements can enumerate a holder's list (e.g.
every plausible document number). Deployed contact-discovery services were enumerated exactly that way;
their defence is a budget counted in items *evaluated*, charged before the evaluation, with a retry-after
hint. The holder cannot tell a repeat from a new item (it only sees blinded elements), so legitimate re-
checks are the querier's job to avoid (it caches finalised outputs per holder and epoch).

:meth:`BudgetLedger.charge` is atomic (``BEGIN IMMEDIATE``; ``synchronous=FULL`` so an acknowledged charge
survives a crash) and all-or-nothing: a batch that does not fit is refused whole, recorded as a refusal, and
raises :class:`fedcheck.errors.BudgetExhausted` with ``retry_after_s``. A database failure (locked, I/O
error) charges nothing and raises :class:`fedcheck.errors.StorageUnavailable`, which the services audit like
any refusal. Partner codes and counts only -- nothing here ever sees an identity.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedcheck.errors import BudgetExhausted, ConfigError, InvalidInput
from fedcheck.sqlite_guard import storage_errors, storage_failed

__all__ = ["BudgetLedger", "BudgetLimit", "BudgetRemaining", "Refusal"]

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    partner TEXT NOT NULL,
    period TEXT NOT NULL,          -- 'epoch' or 'day'
    period_key TEXT NOT NULL,      -- epoch id or UTC date
    used INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (partner, period, period_key)
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    partner TEXT NOT NULL,
    items INTEGER NOT NULL,
    epoch TEXT NOT NULL,
    day TEXT NOT NULL,
    reason TEXT NOT NULL,
    retry_after_s INTEGER NOT NULL
);
"""


#: names the ledger in the log line of a database failure (:mod:`fedcheck.sqlite_guard`)
_WHAT = "budget ledger"


@dataclass(frozen=True)
class BudgetLimit:
    """Items a partner may have evaluated per epoch and per UTC day (``None`` = no limit for that period)."""

    per_epoch: int | None = None
    per_day: int | None = None

    def __post_init__(self) -> None:
        for value in (self.per_epoch, self.per_day):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError("budget limits must be non-negative integers", reason="bad_budget")


@dataclass(frozen=True)
class BudgetRemaining:
    """What is left (``None`` = unlimited) in the given epoch and the current UTC day."""

    partner: str
    epoch: str
    day: str
    per_epoch: int | None
    per_day: int | None

    @property
    def items(self) -> int | None:
        """The binding constraint: the smaller of the two remainders (``None`` if both unlimited)."""
        values = [v for v in (self.per_epoch, self.per_day) if v is not None]
        return min(values) if values else None


@dataclass(frozen=True)
class Refusal:
    at: float
    partner: str
    items: int
    epoch: str
    day: str
    reason: str
    retry_after_s: int


class BudgetLedger:
    """Persistent per-partner budget ledger. Thread-safe; several processes may share the file.

    ``limits`` maps partner State codes to :class:`BudgetLimit` (typically
    :meth:`fedcheck.trust.policy.HolderPolicy.budget_limits`); a partner without an entry is counted but not
    limited (whether it may query at all is the policy's decision). ``epoch_retry_after_s`` is the hint given
    when an epoch budget is spent and the caller does not say when the epoch ends.

    ``epoch_window_seconds`` (nodes pass ``node.epoch_seconds``): the per-epoch budget is counted per *time
    window* of that length (aligned to the Unix epoch), whatever epoch id the caller names. Epoch ids change
    on every list import (and the previous epoch stays served), so counting per epoch id would let a partner's
    budget refill on each import; a window does not reset early. ``budget_per_day`` (UTC day) is the hard
    bound in any case. Without a window, the period is the epoch id as given (tests, tools).
    """

    def __init__(
        self,
        path: Path | str,
        limits: Mapping[str, BudgetLimit] | None = None,
        *,
        epoch_retry_after_s: int = 3600,
        clock: Callable[[], float] = time.time,
        epoch_window_seconds: int | None = None,
    ) -> None:
        if epoch_window_seconds is not None and epoch_window_seconds < 1:
            raise ConfigError("epoch_window_seconds must be positive", reason="bad_budget")
        self._window = epoch_window_seconds
        self._path = str(path)
        self._limits = dict(limits or {})
        self._epoch_retry = int(epoch_retry_after_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    # -- configuration -------------------------------------------------------------------------------
    def set_limits(self, limits: Mapping[str, BudgetLimit]) -> None:
        """Replace the limits (e.g. after a policy reload). Usage already counted is kept."""
        with self._lock:
            self._limits = dict(limits)

    def limit(self, partner: str) -> BudgetLimit:
        with self._lock:
            return self._limits.get(partner, BudgetLimit())

    # -- periods --------------------------------------------------------------------------------------
    def _day(self, now: float) -> str:
        return dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()

    @staticmethod
    def _seconds_to_midnight(now: float) -> int:
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
        return max(1, int(midnight.timestamp() - now + 0.999))

    def _epoch_period(self, epoch: str, now: float) -> tuple[str, float | None]:
        """(period key, end of the period as Unix time or None) of the per-epoch budget."""
        if self._window is None:
            return epoch, None
        start = int(now // self._window) * self._window
        return f"window:{start}", float(start + self._window)

    def _used(self, partner: str, period: str, key: str) -> int:
        row = self._db.execute(
            "SELECT used FROM usage WHERE partner=? AND period=? AND period_key=?", (partner, period, key)
        ).fetchone()
        return int(row[0]) if row else 0

    # -- operations -----------------------------------------------------------------------------------
    def charge(
        self, partner: str, items: int, epoch: str, *, epoch_ends_unix: float | None = None
    ) -> BudgetRemaining:
        """Charge ``items`` evaluations to ``partner`` in ``epoch`` and today, or refuse the whole batch.

        Returns what remains after the charge. Raises :class:`BudgetExhausted` (``retry_after_s`` = time until
        the exhausted period resets; for an epoch, ``epoch_ends_unix`` if given) after recording the refusal,
        :class:`StorageUnavailable` (nothing charged) if the database fails.
        """
        if not isinstance(items, int) or isinstance(items, bool) or items < 0:
            raise InvalidInput("items must be a non-negative integer", reason="bad_items")
        if not partner or not epoch:
            raise InvalidInput("partner and epoch are required", reason="bad_budget_key")
        with self._lock:
            limit = self._limits.get(partner, BudgetLimit())
            now = self._clock()
            day = self._day(now)
            epoch, window_end = self._epoch_period(epoch, now)
            if window_end is not None:
                epoch_ends_unix = window_end
            with storage_errors(_WHAT, log=_log):  # e.g. "database is locked" after the busy timeout
                self._db.execute("BEGIN IMMEDIATE")
            try:
                used_epoch = self._used(partner, "epoch", epoch)
                used_day = self._used(partner, "day", day)
                retry = 0
                reasons: list[str] = []
                if limit.per_epoch is not None and used_epoch + items > limit.per_epoch:
                    reasons.append("epoch_budget_exhausted")
                    hint = (
                        self._epoch_retry if epoch_ends_unix is None else int(epoch_ends_unix - now + 0.999)
                    )
                    retry = max(retry, max(1, hint))
                if limit.per_day is not None and used_day + items > limit.per_day:
                    reasons.append("daily_budget_exhausted")
                    retry = max(retry, self._seconds_to_midnight(now))
                if reasons:
                    reason = ",".join(reasons)
                    self._db.execute(
                        "INSERT INTO refusals (at, partner, items, epoch, day, reason, retry_after_s)"
                        " VALUES (?,?,?,?,?,?,?)",
                        (now, partner, items, epoch, day, reason, retry),
                    )
                    self._db.execute("COMMIT")
                    raise BudgetExhausted(
                        f"query budget exhausted for this period ({reason})",
                        retry_after_s=retry,
                        reason=reasons[0],
                        reasons=tuple(reasons),
                    )
                for period, key in (("epoch", epoch), ("day", day)):
                    self._db.execute(
                        "INSERT INTO usage (partner, period, period_key, used, updated) VALUES (?,?,?,?,?)"
                        " ON CONFLICT(partner, period, period_key)"
                        " DO UPDATE SET used = used + excluded.used, updated = excluded.updated",
                        (partner, period, key, items, now),
                    )
                self._db.execute("COMMIT")
            except BudgetExhausted:
                raise
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                raise storage_failed(exc, _WHAT, log=_log) from exc
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            return self._remaining(partner, limit, epoch, day, used_epoch + items, used_day + items)

    @staticmethod
    def _remaining(
        partner: str, limit: BudgetLimit, epoch: str, day: str, used_epoch: int, used_day: int
    ) -> BudgetRemaining:
        return BudgetRemaining(
            partner=partner,
            epoch=epoch,
            day=day,
            per_epoch=None if limit.per_epoch is None else max(0, limit.per_epoch - used_epoch),
            per_day=None if limit.per_day is None else max(0, limit.per_day - used_day),
        )

    def remaining(self, partner: str, epoch: str | None = None) -> BudgetRemaining:
        """Remaining budget in ``epoch`` (default: the partner's most recently charged epoch) and today.
        :class:`StorageUnavailable` if the database fails."""
        with self._lock, storage_errors(_WHAT, log=_log):
            limit = self._limits.get(partner, BudgetLimit())
            now = self._clock()
            day = self._day(now)
            if epoch is not None or self._window is not None:
                epoch = self._epoch_period(epoch or "", now)[0]
            if epoch is None:
                row = self._db.execute(
                    "SELECT period_key FROM usage WHERE partner=? AND period='epoch'"
                    " ORDER BY updated DESC LIMIT 1",
                    (partner,),
                ).fetchone()
                epoch = str(row[0]) if row else ""
            used_epoch = self._used(partner, "epoch", epoch) if epoch else 0
            return self._remaining(partner, limit, epoch, day, used_epoch, self._used(partner, "day", day))

    def refusals(self, *, since: float | None = None, partner: str | None = None) -> list[Refusal]:
        """Recorded refusals, oldest first (for metrics and ``fedcheck audit refusals``)."""
        sql = "SELECT at, partner, items, epoch, day, reason, retry_after_s FROM refusals WHERE at >= ?"
        args: list[object] = [since if since is not None else 0.0]
        if partner is not None:
            sql += " AND partner = ?"
            args.append(partner)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            Refusal(float(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]), int(r[6]))
            for r in rows
        ]

    def reset(self, partner: str | None = None) -> None:
        """Operator action: forget usage (all partners, or one). Refusal history is kept."""
        with self._lock:
            if partner is None:
                self._db.execute("DELETE FROM usage")
            else:
                self._db.execute("DELETE FROM usage WHERE partner = ?", (partner,))

    def prune(self, *, keep_days: int = 30) -> int:
        """Drop usage rows not updated for ``keep_days`` (old epochs and days). Returns rows removed."""
        cutoff = self._clock() - keep_days * 86400
        with self._lock:
            cur = self._db.execute("DELETE FROM usage WHERE updated < ?", (cutoff,))
            return int(cur.rowcount)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> BudgetLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BudgetLedger(partners={len(self._limits)})"
