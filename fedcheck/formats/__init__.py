"""Readers for the formats States actually hold: PAXLST manifests, ICAO 9303 MRZs, FollowTheMoney streams.

Each reader maps its format onto :mod:`fedcheck.records` and returns the same :class:`ReadResult` as
:func:`fedcheck.records.io.read_records`, so ``fedcheck query/screen --manifest`` and ``watchlist import``
treat every source alike. This package never matches, stores or logs identities; it only converts.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from fedcheck.errors import FormatError
from fedcheck.records.io import ReadResult, read_input_bytes

__all__ = [
    "MANIFEST_FORMATS",
    "WATCHLIST_FORMATS",
    "read_external",
    "read_manifest",
    "read_watchlist_extra",
    "sniff_manifest_format",
]

#: Querier-side traveller formats handled here; ``csv``/``jsonl`` go to ``records.io.read_records``.
MANIFEST_FORMATS = ("paxlst", "mrz")
#: Holder-side list formats handled here (the UN XML list lives in :mod:`fedcheck.records.io`).
WATCHLIST_FORMATS = ("ftm",)

_PAXLST_SUFFIXES = frozenset({".edi", ".edifact", ".paxlst", ".api"})
_MRZ_LINE = re.compile(r"^[A-Z0-9<]{30}$|^[A-Z0-9<]{36}$|^[A-Z0-9<]{44}$")


def sniff_manifest_format(path: str | Path) -> str | None:
    """``"paxlst"``, ``"mrz"`` or ``None`` (not ours: let :func:`read_records` sniff CSV/JSONL)."""
    p = Path(path)
    if p.suffix.lower() in _PAXLST_SUFFIXES:
        return "paxlst"
    if p.suffix.lower() == ".mrz":
        return "mrz"
    head = read_input_bytes(p, limit=4096).decode("utf-8", errors="replace").lstrip("\ufeff \r\n\t")
    if head[:3] in ("UNA", "UNB", "UNH"):
        return "paxlst"
    for line in head.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        return "mrz" if _MRZ_LINE.match(line.replace(" ", "")) and "<" in line else None
    return None


def read_manifest(
    path: str | Path,
    fmt: str | None = None,
    *,
    strict_mrz: bool = True,
    reference_date: dt.date | None = None,
) -> ReadResult:
    """Travellers from a PAXLST interchange, an MRZ batch, or (delegated) CSV/JSONL; ``fmt=None`` sniffs.

    A malformed PAXLST message raises :class:`FormatError` (one bad segment makes the whole message
    untrustworthy); MRZ blocks are rejected one by one (``strict_mrz=False`` keeps zones with bad check
    digits, flagged ``mrz_check_failed``).
    """
    fmt = fmt or sniff_manifest_format(path)
    if fmt == "paxlst":
        from fedcheck.formats.paxlst import read_paxlst

        return read_paxlst(path, reference_date=reference_date)
    if fmt == "mrz":
        from fedcheck.formats.mrz import read_mrz_file

        return read_mrz_file(path, strict=strict_mrz, reference_date=reference_date)
    from fedcheck.records.io import read_records

    return read_records(path, fmt)


def read_watchlist_extra(path: str | Path, fmt: str, *, targets_only: bool = False) -> ReadResult:
    """Watchlist formats beyond :func:`read_records`: ``"ftm"`` (FollowTheMoney / OpenSanctions JSON Lines).

    For the counts (read, imported, skipped by reason) call :func:`fedcheck.formats.ftm.read_ftm` directly.
    """
    if fmt in ("ftm", "opensanctions"):
        from fedcheck.formats.ftm import read_ftm

        return read_ftm(path, targets_only=targets_only).to_read_result()
    raise FormatError(
        f"unknown watchlist format {fmt!r}; expected one of {WATCHLIST_FORMATS}", reason="bad_format"
    )


def read_external(path: str | Path, fmt: str | None = None) -> ReadResult:
    """One call for every format this package owns (``paxlst``, ``mrz``, ``ftm``); ``None`` sniffs a manifest.

    The shared loader of ``screen``/``query``/``watchlist import`` uses this, so it need not know which side a
    format belongs to. Defaults are the safe ones: MRZs with failed check digits are rejected.
    """
    if fmt in WATCHLIST_FORMATS or fmt == "opensanctions":
        return read_watchlist_extra(path, fmt)
    return read_manifest(path, fmt)
