"""Watchlist storage: the :class:`WatchlistStore` interface and its SQLite implementation."""

from __future__ import annotations

from fedcheck.storage.base import EpochRecord, ImportReport, ProgressFn, WatchlistStore
from fedcheck.storage.sqlite import SqliteWatchlistStore

__all__ = ["EpochRecord", "ImportReport", "ProgressFn", "SqliteWatchlistStore", "WatchlistStore"]
