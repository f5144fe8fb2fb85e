"""Holder-side replay protection: one evaluation per (querier State, round id), persisted across restarts.

Why: the coordinator relays signed rounds, so it (or anyone on the path who captured one) could replay a
signed round to burn the querier's budget or re-run an old query. Together with the freshness check on the
signed ``issued_at`` (``node.max_skew_seconds``), a holder accepts each (querier, round id) once:

* an *exact* duplicate (same signed payload, hence the same batch digest) of an **answered** request gets the
  stored answer again and is **not charged** a second time (a coordinator retry must not cost the querier);
* claims have a state: ``pending`` from :meth:`ReplayGuard.begin` until the owner either
  completes it (:meth:`~ReplayGuard.complete`: charged, evaluated, audited; the answer is stored) or
  releases it (:meth:`~ReplayGuard.release`: refused, e.g. budget spent: nothing was answered). A duplicate
  arriving while the first is pending waits briefly for that outcome; if it is released, the waiter takes the
  claim over (and is charged like a new request); if it is still pending, the waiter is refused with
  ``ABORTED`` ``round_in_progress`` (retry after). So nothing is ever evaluated without a charge, however many
  identical requests race (a pending duplicate used to be answered for free even when the first one's charge
  then failed). Pending claims of a process that died are dropped on open;
* the same round id with a different payload is refused (``FAILED_PRECONDITION`` ``round_id_reused``);
* free duplicates are bounded: an answered claim is answered again at most ``max_replays`` times (default 3,
  counted per claim and persisted); beyond that, ``RESOURCE_EXHAUSTED`` ``replay_limit``
  (:class:`ReplayLimitExceeded`; its ``first`` flag is set only for the first refusal, which the caller
  audits -- later ones are counted in metrics only, so duplicates cannot flood the audit log). At most
  ``max_waiters`` duplicates wait on one pending claim; more are refused at once with ``ABORTED``
  ``round_in_progress`` (no thread pile-up);
* a claim whose :meth:`~ReplayGuard.complete` or :meth:`~ReplayGuard.release` failed in the database (disk
  full, I/O error) is remembered as abandoned in memory: the next identical request takes it over (and is
  charged) instead of waiting for ``ABORTED`` until the row is pruned;
* a database failure in :meth:`~ReplayGuard.begin` or :meth:`~ReplayGuard.claim` (locked, I/O error) raises
  :class:`~fedcheck.errors.StorageUnavailable` (``UNAVAILABLE`` ``storage_unavailable``), which the services
  audit like any refusal; nothing was recorded (each write is one statement).

Keys: exact rounds are claimed under their round id; the fuzzy paths' :meth:`~ReplayGuard.claim` keys are
:func:`fuzzy_key` / :func:`release_key`, whose ``/`` no round id can contain (``serde.validate_round_id``:
``[A-Za-z0-9._:-]``), so an exact round ``fuzzy:r1`` never collides with the same querier's fuzzy round ``r1``
(keys of earlier versions, ``fuzzy:``/``release:``, are renamed on open).

Entries only need to outlive the freshness window: an older request is refused as stale anyway, so rows older
than ``2 x max_skew`` are pruned. Digests of signed payloads and the answers (evaluated group elements and
proofs, which the relaying coordinator sees anyway), never request payload bytes.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedcheck.errors import Aborted, LimitExceeded, PreconditionFailed
from fedcheck.sqlite_guard import storage_errors

__all__ = [
    "DEFAULT_MAX_REPLAYS",
    "DEFAULT_MAX_WAITERS",
    "Claim",
    "ReplayGuard",
    "ReplayLimitExceeded",
    "fuzzy_key",
    "release_key",
]

_log = logging.getLogger(__name__)

#: free answers of one answered claim (coordinator retries); then ``replay_limit``
DEFAULT_MAX_REPLAYS = 3
#: duplicates that may wait on one pending claim at a time; more get ``round_in_progress`` at once
DEFAULT_MAX_WAITERS = 4


class ReplayLimitExceeded(LimitExceeded):
    """``RESOURCE_EXHAUSTED`` ``replay_limit``: an answered request was duplicated too often. ``first`` is
    True only for the first refusal of a claim (audit that one; later ones are not audited again)."""

    def __init__(self, *, first: bool) -> None:
        super().__init__("this round was already answered too often", reason="replay_limit")
        self.first = first


def fuzzy_key(round_id: str) -> str:
    """The :meth:`ReplayGuard.claim` key of a fuzzy round (``/``: never part of an exact round id)."""
    return "fuzzy/" + round_id


def release_key(payload_sha: str) -> str:
    """The :meth:`ReplayGuard.claim` key of a fuzzy follow-up (its signed payload's SHA-256, hex)."""
    return "release/" + payload_sha


#: names the guard in the log line of a database failure (:mod:`fedcheck.sqlite_guard`)
_WHAT = "replay store"


_SCHEMA = """
DROP TABLE IF EXISTS seen;
CREATE TABLE IF NOT EXISTS claims (
    querier TEXT NOT NULL, round_id TEXT NOT NULL, digest TEXT NOT NULL, at REAL NOT NULL,
    state TEXT NOT NULL,            -- 'pending' or 'answered'
    owner TEXT NOT NULL,            -- token of the pending owner ('' once answered)
    answer BLOB,                    -- the stored answer of an answered claim (opaque to the guard)
    replays INTEGER NOT NULL DEFAULT 0,  -- duplicates answered (or refused) from the stored answer
    PRIMARY KEY (querier, round_id));
"""

_PENDING = "pending"
_ANSWERED = "answered"


@dataclass(frozen=True)
class Claim:
    """Outcome of :meth:`ReplayGuard.begin`.

    ``fresh``: the caller now owns a pending claim and must :meth:`~ReplayGuard.complete` or
    :meth:`~ReplayGuard.release` it (with ``token``). Otherwise ``answer`` is the stored answer of the
    identical, already answered request (answer it again without charging).
    """

    fresh: bool
    token: str = ""
    answer: bytes | None = field(default=None, repr=False)


class ReplayGuard:
    """(querier, round id) -> payload digest, claim state and stored answer, in SQLite (WAL); thread-safe.

    ``wait_seconds``: how long a duplicate of a pending claim waits for its outcome before ``ABORTED``.
    """

    def __init__(
        self,
        path: Path,
        *,
        window_seconds: float,
        clock: Callable[[], float] | None = None,
        wait_seconds: float = 5.0,
        max_replays: int = DEFAULT_MAX_REPLAYS,
        max_waiters: int = DEFAULT_MAX_WAITERS,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._window = float(window_seconds)
        self._wait = float(wait_seconds)
        self._clock = clock or time.time
        self._max_replays = int(max_replays)
        self._max_waiters = int(max_waiters)
        #: (querier, round id) -> duplicates currently waiting on its pending claim
        self._waiters: dict[tuple[str, str], int] = {}
        #: tokens of pending claims whose complete()/release() failed in the database: taken over by the next
        #: identical request (in memory only: a restart drops every pending claim anyway)
        self._abandoned: set[str] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {str(r[1]) for r in self._db.execute("PRAGMA table_info(claims)")}
        if "replays" not in columns:  # a database of an earlier version
            self._db.execute("ALTER TABLE claims ADD COLUMN replays INTEGER NOT NULL DEFAULT 0")
        # a pending claim of a previous process never answered anything (the answer leaves only after
        # complete()): forget it, so the round can be retried (and is charged again)
        self._db.execute("DELETE FROM claims WHERE state=?", (_PENDING,))
        # claim() keys of earlier versions (``fuzzy:``/``release:``, which an exact round id could equal):
        # only claim() leaves an answered row without an answer, so exact rounds named ``fuzzy:...`` stay
        for old, new in (("fuzzy:", "fuzzy/"), ("release:", "release/")):
            self._db.execute(
                "UPDATE OR IGNORE claims SET round_id=? || substr(round_id, ?)"
                " WHERE answer IS NULL AND substr(round_id, 1, ?)=?",
                (new, len(old) + 1, len(old), old),
            )

    def _row(self, querier: str, round_id: str) -> tuple[str, str, str, bytes | None, int] | None:
        row = self._db.execute(
            "SELECT digest, state, owner, answer, replays FROM claims WHERE querier=? AND round_id=?",
            (querier, round_id),
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), str(row[1]), str(row[2]), None if row[3] is None else bytes(row[3]), int(row[4])

    def _prune(self, now: float) -> None:
        # older requests are refused as stale anyway; a pending claim that old belongs to a dead request
        self._db.execute("DELETE FROM claims WHERE at < ?", (now - 2 * self._window,))

    @staticmethod
    def _check_digest(stored: str, digest: str) -> None:
        if not hmac.compare_digest(stored, digest):
            raise PreconditionFailed(
                "round_id already used with a different payload", reason="round_id_reused"
            )

    def begin(self, querier: str, round_id: str, digest: str, *, wait_seconds: float | None = None) -> Claim:
        """Claim (querier, round id) for an evaluation, or get the stored answer of an identical answered one.

        A duplicate of a *pending* claim waits up to ``wait_seconds`` (default: the guard's) for its outcome:
        answered -> that answer; released -> the caller takes the claim over (``fresh``); still pending ->
        :class:`~fedcheck.errors.Aborted` (``round_in_progress``). Another payload under the same id ->
        :class:`PreconditionFailed` (``round_id_reused``). A database failure ->
        :class:`~fedcheck.errors.StorageUnavailable` (nothing recorded).
        """
        deadline = time.monotonic() + (self._wait if wait_seconds is None else wait_seconds)
        key = (querier, round_id)
        waiting = False
        with self._changed:
            now = self._clock()
            try:
                with storage_errors(_WHAT, log=_log):
                    self._prune(now)
                    while True:
                        row = self._row(querier, round_id)
                        if row is None:
                            token = secrets.token_hex(16)
                            self._db.execute(
                                "INSERT INTO claims (querier, round_id, digest, at, state, owner, answer)"
                                " VALUES (?,?,?,?,?,?,NULL)",
                                (querier, round_id, digest, now, _PENDING, token),
                            )
                            return Claim(True, token)
                        stored, state, owner, answer, replays = row
                        self._check_digest(stored, digest)
                        if state == _ANSWERED:
                            if answer is None:  # recorded by claim(): its caller refuses every duplicate
                                raise PreconditionFailed(
                                    "this round was already answered", reason="round_id_reused"
                                )
                            if replays > self._max_replays:  # already refused (and audited) once: no write
                                raise ReplayLimitExceeded(first=False)
                            self._db.execute(
                                "UPDATE claims SET replays=? WHERE querier=? AND round_id=?",
                                (replays + 1, querier, round_id),
                            )
                            if replays + 1 > self._max_replays:
                                raise ReplayLimitExceeded(first=True)
                            return Claim(False, "", answer)
                        if owner in self._abandoned:  # its owner failed to complete or release it: take over
                            token = secrets.token_hex(16)
                            self._db.execute(
                                "UPDATE claims SET owner=?, at=? WHERE querier=? AND round_id=? AND owner=?",
                                (token, now, querier, round_id, owner),
                            )
                            self._abandoned.discard(owner)
                            return Claim(True, token)
                        left = deadline - time.monotonic()
                        if left <= 0 or (not waiting and self._waiters.get(key, 0) >= self._max_waiters):
                            raise Aborted(
                                "an identical request is still being evaluated; retry shortly",
                                retry_after_s=1,
                                reason="round_in_progress",
                            )
                        if not waiting:
                            waiting = True
                            self._waiters[key] = self._waiters.get(key, 0) + 1
                        self._changed.wait(left)
            finally:
                if waiting:
                    left_waiting = self._waiters.get(key, 1) - 1
                    if left_waiting > 0:
                        self._waiters[key] = left_waiting
                    else:
                        self._waiters.pop(key, None)

    def complete(self, querier: str, round_id: str, token: str, answer: bytes) -> None:
        """Mark the caller's pending claim answered and store ``answer`` for identical duplicates."""
        with self._changed:
            try:
                self._db.execute(
                    "UPDATE claims SET state=?, owner='', answer=?, at=?"
                    " WHERE querier=? AND round_id=? AND owner=?",
                    (_ANSWERED, answer, self._clock(), querier, round_id, token),
                )
            except sqlite3.Error:
                # not answered after all: never leave the claim pending (an honest retry would get ABORTED
                # until the row is pruned)
                self._forget(querier, round_id, token)
                raise
            finally:
                self._changed.notify_all()

    def claim(self, querier: str, round_id: str, digest: str) -> bool:
        """Record (querier, round id) once, for callers that refuse *every* duplicate (fuzzy rounds).

        True if new (recorded as answered, without a stored answer), False if it exists with the same payload
        (pending or answered). Raises :class:`PreconditionFailed` (``round_id_reused``) for another payload,
        :class:`~fedcheck.errors.StorageUnavailable` if the database fails (nothing recorded). ``round_id`` is
        a :func:`fuzzy_key` or :func:`release_key`.
        """
        now = self._clock()
        with self._changed, storage_errors(_WHAT, log=_log):
            self._prune(now)
            row = self._row(querier, round_id)
            if row is not None:
                self._check_digest(row[0], digest)
                return False
            self._db.execute(
                "INSERT INTO claims (querier, round_id, digest, at, state, owner, answer)"
                " VALUES (?,?,?,?,?,'',NULL)",
                (querier, round_id, digest, now, _ANSWERED),
            )
            return True

    def release(self, querier: str, round_id: str, digest_or_token: str) -> None:
        """Forget a claim whose evaluation was refused afterwards (e.g. budget), so nothing was answered.

        Takes the pending claim's token (:meth:`begin`) or, for :meth:`claim`, the payload digest.
        """
        with self._changed:
            try:
                self._db.execute(
                    "DELETE FROM claims WHERE querier=? AND round_id=?"
                    " AND (owner=? OR (owner='' AND digest=?))",
                    (querier, round_id, digest_or_token, digest_or_token),
                )
            except sqlite3.Error:
                # the row stays; remember the pending claim as abandoned so the next identical request takes
                # it over (the caller is already failing: do not mask its error)
                if digest_or_token:
                    self._abandoned.add(digest_or_token)
            finally:
                self._changed.notify_all()

    def _forget(self, querier: str, round_id: str, token: str) -> None:
        """Drop the caller's pending claim after a failed complete(); in memory if the database fails too."""
        try:
            self._db.execute(
                "DELETE FROM claims WHERE querier=? AND round_id=? AND owner=? AND state=?",
                (querier, round_id, token, _PENDING),
            )
        except sqlite3.Error:
            self._abandoned.add(token)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"ReplayGuard(window={self._window:.0f}s)"
