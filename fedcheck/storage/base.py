"""The watchlist store interface a node depends on (SQLite today, PostgreSQL later).

Why an interface: a State's operators may already run a database; the node only needs atomic list replacement,
a content version to know when to rebuild its epoch index, and durable epoch state so a restart serves the
same epoch. Records and secrets are sealed by the implementation; callers see plaintext domain objects only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from fedcheck.records.model import PersonRecord

__all__ = ["EpochRecord", "ImportReport", "ProgressFn", "WatchlistStore"]

#: ``progress(done, total_or_None)`` called periodically during long imports.
ProgressFn = Callable[[int, "int | None"], None]


@dataclass
class ImportReport:
    """Counts of one import; ``rejected`` holds ``(where, reason)`` pairs, never record contents."""

    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    version: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def to_dict(self) -> dict[str, object]:
        return {
            "read": self.read,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "rejected": len(self.rejected),
            "version": self.version,
        }


@dataclass(frozen=True)
class EpochRecord:
    """A persisted epoch: its OPRF key (plaintext only in memory) and the serialised index per audience."""

    epoch_id: str
    created_unix_ms: int
    list_version: str
    key_bytes: bytes = field(repr=False)
    indexes: dict[str, bytes] = field(default_factory=dict, repr=False)


class WatchlistStore(Protocol):
    """Watchlist records plus the node's durable epoch state."""

    def replace_list(
        self,
        records: Iterable[PersonRecord],
        *,
        source: str = "default",
        progress: ProgressFn | None = None,
        total: int | None = None,
    ) -> ImportReport:
        """Make ``source``'s list exactly ``records``, atomically: on any failure the previous list stays."""
        ...

    def iter_records(self) -> Iterator[PersonRecord]:
        """Every record of every source."""
        ...

    def count(self) -> int: ...

    def list_version(self) -> str:
        """Opaque value that changes whenever the list content changes."""
        ...

    def save_epoch(self, epoch: EpochRecord, *, keep: int = 2) -> None:
        """Persist an epoch (key sealed) and drop all but the newest ``keep``."""
        ...

    def load_epochs(self) -> list[EpochRecord]:
        """Persisted epochs, newest first."""
        ...

    def get_meta(self, key: str) -> bytes | None: ...

    def put_meta(self, key: str, value: bytes) -> None: ...

    def close(self) -> None: ...
