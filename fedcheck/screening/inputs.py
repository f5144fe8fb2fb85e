"""Loading watchlists and manifests in every supported format, with rejections reported on stderr.

Why one place: ``screen``, ``query`` and ``watchlist import`` must accept the same files and say the same
things about rejected rows (which row, why — never the identity itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedcheck.errors import FormatError
from fedcheck.records import PersonRecord, read_records
from fedcheck.records.io import Rejection

__all__ = [
    "MANIFEST_FORMATS", "WATCHLIST_FORMATS", "load_manifest", "load_manifest_checked", "load_watchlist",
]

WATCHLIST_FORMATS = ("csv", "jsonl", "un-xml", "ftm")
MANIFEST_FORMATS = ("csv", "jsonl", "paxlst", "mrz")


def _read(
    path: str | Path, fmt: str | None, allowed: tuple[str, ...]
) -> tuple[list[PersonRecord], list[Rejection]]:
    p = Path(path)
    try:
        is_file = p.is_file()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        is_file = False
    if not is_file:
        raise FormatError(f"file not found: {p}", reason="file_not_found")
    if fmt is not None and fmt not in allowed:
        raise FormatError(f"unsupported format {fmt!r}; expected one of {', '.join(allowed)}",
                          reason="unsupported_format")
    if fmt in ("paxlst", "mrz", "ftm") or (fmt is None and p.suffix.lower() in (".edi", ".paxlst", ".mrz")):
        from fedcheck.formats import read_external

        result = read_external(p, fmt)
    else:
        result = read_records(p, fmt)
    for rej in result.rejected[:20]:
        print(f"fedcheck: rejected {rej.where}: {rej.reason}", file=sys.stderr)
    if len(result.rejected) > 20:
        print(f"fedcheck: ... and {len(result.rejected) - 20} more rejected", file=sys.stderr)
    return list(result.records), list(result.rejected)


def load_watchlist(path: str | Path, fmt: str | None = None) -> list[PersonRecord]:
    return _read(path, fmt, WATCHLIST_FORMATS)[0]


def load_manifest(path: str | Path, fmt: str | None = None) -> list[PersonRecord]:
    return _read(path, fmt, MANIFEST_FORMATS)[0]


def load_manifest_checked(
    path: str | Path, fmt: str | None = None
) -> tuple[list[PersonRecord], list[Rejection]]:
    """The manifest's records and the rows the reader rejected (where and why, never the row): a rejected row
    is a traveller who is not screened, which the report must say (``fedcheck query``)."""
    return _read(path, fmt, MANIFEST_FORMATS)
