"""One mapping of SQLite failures for the holders' own stores (budget ledger, replay guard).

A database failure (locked after the busy timeout, disk full, I/O error) is logged with its cause and raised
as :class:`fedcheck.errors.StorageUnavailable` (``UNAVAILABLE`` ``storage_unavailable``), which the services
audit like any refusal; the SQLite text never reaches a caller.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator

from fedcheck.errors import StorageUnavailable

__all__ = ["storage_errors", "storage_failed"]

_log = logging.getLogger(__name__)


def storage_failed(exc: sqlite3.Error, what: str, *, log: logging.Logger | None = None) -> StorageUnavailable:
    """Log ``<what> failed`` (with ``exc``; on ``log``, by default this module's) and return the
    :class:`StorageUnavailable` to raise."""
    (log or _log).error("%s failed", what, exc_info=exc)
    return StorageUnavailable()


@contextlib.contextmanager
def storage_errors(what: str, *, log: logging.Logger | None = None) -> Iterator[None]:
    """Raise a :class:`sqlite3.Error` inside the block as :class:`StorageUnavailable` (:func:`storage_failed`;
    ``what`` names the store in the log line, e.g. ``"budget ledger"``)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise storage_failed(exc, what, log=log) from exc
