"""``fedcheck watchlist import --config node.toml FILE [--format ...] [--source NAME]``.

Replaces the named source's list in the node's sealed store atomically (an interrupted import keeps the
previous list intact; re-importing the same file changes nothing). Reports counts and rejections (row and
reason, never the identity); progress on stderr in a terminal. A running node notices the new list
version and builds a new epoch in the background. Exit 0 on success, 2 on errors.

Warnings of the reader (e.g. unknown CSV columns -- named, with "did you mean" for a near miss of a known
column --, unmapped nationalities, unparseable dates) go to stderr (``--output json``: a ``warnings`` list).

Rejected rows: by default the list is **not** replaced when more than 10 % of the rows read are rejected
(``--max-rejected N`` rows or ``P%`` of the rows read; ``--allow-rejected`` imports the rest whatever the
count). A mistaken export (wrong delimiter, renamed columns) then cannot silently empty a watchlist.

Empty files: an import that reads no record at all (a header-only CSV from a broken export job, an empty
file, every row rejected) does **not** replace a source that holds records (exit 2, ``empty_import``);
``--allow-empty`` empties it deliberately. Importing nothing into an empty source is allowed.

KEK problems name ``node.kek``, the config file and the KEK file or variable; a KEK that cannot open the
store's keyring (``keyring_unsealable``: typically the config still names the old KEK after ``node
rotate-kek``) names the keyring.

``fedcheck watchlist status --config node.toml [--output json|text]``: record count and list version (one
JSON line by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedcheck.node.config import NodeConfig
    from fedcheck.storage.sqlite import SqliteWatchlistStore

__all__ = ["DEFAULT_MAX_REJECTED", "register"]

#: default ``--max-rejected``: more rejected rows than this refuses to replace the list
DEFAULT_MAX_REJECTED = "10%"
_SHOWN = 20
#: files of the node's store under ``data_dir`` (as :func:`fedcheck.node.app.open_store` names them)
_STORE_FILE = "watchlist.sqlite"


def register(sub: Any) -> None:
    parser = sub.add_parser("watchlist", help="manage a node's watchlist")
    wsub = parser.add_subparsers(dest="watchlist_command", metavar="ACTION", required=True)
    imp = wsub.add_parser("import", help="import (replace) a watchlist from a file")
    imp.add_argument("--config", required=True, help="node TOML file")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument(
        "--format",
        dest="fmt",
        default=None,
        help="csv, jsonl, un-xml, ftm (default: from the file name/content)",
    )
    imp.add_argument("--source", default="default", help="list name; each source is replaced independently")
    imp.add_argument("--output", choices=("text", "json"), default="text", help="report format")
    imp.add_argument(
        "--max-rejected",
        default=DEFAULT_MAX_REJECTED,
        metavar="N|P%",
        help="refuse to replace the list when more rows than this are rejected: a row count, or a percentage "
        "of the rows read (default: %(default)s)",
    )
    imp.add_argument(
        "--allow-rejected",
        action="store_true",
        help="replace the list with the valid rows however many rows are rejected",
    )
    imp.add_argument(
        "--allow-empty",
        action="store_true",
        help="replace the list even when the file holds no record (empties the source deliberately)",
    )
    imp.set_defaults(func=_import)
    show = wsub.add_parser("status", help="record count and list version")
    show.add_argument("--config", required=True, help="node TOML file")
    show.add_argument(
        "--output", choices=("json", "text"), default="json", help="report format (default: %(default)s)"
    )
    show.set_defaults(func=_status)


def _max_rejected(text: str) -> tuple[float, bool]:
    """``N`` -> (N, False); ``P%`` -> (P, True)."""
    from fedcheck.errors import InvalidInput

    t = text.strip()
    pct = t.endswith("%")
    try:
        value = float(t[:-1].strip()) if pct else int(t)
    except ValueError:
        value = -1.0
    if value < 0 or (pct and value > 100):
        raise InvalidInput(
            "--max-rejected: a row count (e.g. 0, 25) or a percentage of the rows read (e.g. 10%)",
            reason="bad_max_rejected",
        )
    return float(value), pct


def _too_many(rejected: int, read: int, limit: tuple[float, bool]) -> bool:
    value, pct = limit
    if pct:
        return read > 0 and rejected * 100 > value * read
    return rejected > value


def _import(args: argparse.Namespace) -> int:
    from fedcheck.errors import InvalidInput
    from fedcheck.node.config import load_node_config
    from fedcheck.progress import Progress

    limit = _max_rejected(args.max_rejected)
    cfg = load_node_config(args.config)
    records, rejected, warnings = _read(args.file, args.fmt)
    read = len(records) + len(rejected)
    if not args.allow_rejected and _too_many(len(rejected), read, limit):
        share = f"{100 * len(rejected) / read:.0f} %" if read else "0 %"
        message = (
            f"{len(rejected)} of {read} rows rejected ({share}), more than --max-rejected "
            f"{args.max_rejected} allows: the {args.source!r} list was NOT replaced (fix the rows, or pass "
            "--max-rejected / --allow-rejected to import the valid rows)"
        )
        if args.output == "json":
            print(json.dumps({
                "replaced": False, "read": read, "rejected": len(rejected),
                "rejections": [{"where": w, "reason": r} for w, r in rejected],
                "warnings": [{"where": w, "reason": r} for w, r in warnings],
            }))
        else:
            _print_warnings(warnings)
            _print_rejections(rejected, sys.stderr)
        raise InvalidInput(message, reason="too_many_rejected")
    if not records and not args.allow_empty:
        held = _source_size(cfg.data_dir / _STORE_FILE, args.source)
        if held:
            if args.output == "json":
                print(json.dumps({
                    "replaced": False, "read": read, "rejected": len(rejected), "held": held,
                    "rejections": [{"where": w, "reason": r} for w, r in rejected],
                    "warnings": [{"where": w, "reason": r} for w, r in warnings],
                }))
            else:
                _print_warnings(warnings)
                _print_rejections(rejected, sys.stderr)
            what = f"{read} rows, all rejected" if read else "no record"
            raise InvalidInput(
                f"{args.file} holds {what}: importing it would remove all {held} records of the "
                f"{args.source!r} list, which was NOT replaced (a header-only or truncated export?). "
                "To empty the list deliberately, import an empty file with --allow-empty",
                reason="empty_import",
            )
    store = _open_store(cfg)
    # a bar on an interactive stderr only (silent when not a TTY, in CI, or with NO_PROGRESS)
    with Progress(len(records), desc=f"import {cfg.state}", unit="records") as bar:

        def progress(done: int, total: int | None) -> None:
            bar.update(done - bar.count)

        try:
            report = store.replace_list(records, source=args.source, progress=progress, total=len(records))
        finally:
            store.close()
    report.rejected = rejected + report.rejected
    doc = report.to_dict()
    doc["read"] = report.read + len(rejected)
    if args.output == "json":
        doc["rejections"] = [{"where": w, "reason": r} for w, r in report.rejected]
        doc["warnings"] = [{"where": w, "reason": r} for w, r in warnings]
        print(json.dumps(doc))
    else:
        _print_warnings(warnings)
        print(
            f"{cfg.state}: read {doc['read']}, added {report.added}, updated {report.updated}, "
            f"unchanged {report.unchanged}, removed {report.removed}, rejected {len(report.rejected)}"
            + (f", warnings {len(warnings)}" if warnings else "")
        )
        _print_rejections(report.rejected, sys.stdout)
    return 0


def _print_warnings(warnings: list[tuple[str, str]]) -> None:
    for where, reason in warnings[:_SHOWN]:
        print(f"fedcheck: warning: {where}: {reason}", file=sys.stderr)
    if len(warnings) > _SHOWN:
        print(f"fedcheck: warning: ... and {len(warnings) - _SHOWN} more warnings "
              "(--output json lists them all)", file=sys.stderr)


def _print_rejections(rejected: list[tuple[str, str]], stream: Any) -> None:
    for where, reason in rejected[:_SHOWN]:
        print(f"  rejected {where}: {reason}", file=stream)
    if len(rejected) > _SHOWN:
        print(f"  ... and {len(rejected) - _SHOWN} more", file=stream)


def _check_file(p: Path) -> None:
    from fedcheck.errors import FormatError

    if not p.exists():
        raise FormatError(f"file not found: {p}", reason="file_not_found")
    if p.is_dir():
        raise FormatError(f"{p} is a directory, not a watchlist file", reason="is_directory")
    if not p.is_file():
        raise FormatError(
            f"{p} is not a regular file (a device, pipe or socket): give the watchlist file itself",
            reason="not_regular_file",
        )


def _read(path: str, fmt: str | None) -> tuple[list[Any], list[tuple[str, str]], list[tuple[str, str]]]:
    """(records, rejected rows, warnings) -- rows and warnings as (where, reason). The readers name unknown
    CSV columns and, for a header without ``id``, a ';' or tab delimiter (``records.io.read_csv``)."""
    p = Path(path)
    _check_file(p)
    if fmt in ("paxlst", "mrz", "ftm"):
        from fedcheck.formats import read_external

        result = read_external(p, fmt)
    else:
        from fedcheck.records.io import read_records

        result = read_records(p, fmt)
    return (
        list(result.records),
        [(str(r.where), str(r.reason)) for r in result.rejected],
        [(str(w.where), str(w.reason)) for w in result.warnings],
    )


def _status(args: argparse.Namespace) -> int:
    from fedcheck.node.config import load_node_config

    cfg = load_node_config(args.config)
    store = _open_store(cfg)
    try:
        doc = {"state": cfg.state, "records": store.count(), "version": store.list_version()}
    finally:
        store.close()
    if args.output == "text":
        sys.stdout.write(f"{doc['state']}: {doc['records']} records, list version {doc['version']}\n")
    else:
        sys.stdout.write(json.dumps(doc) + "\n")  # one line, newline-terminated (for scripts and `jq`)
    return 0


def _open_store(cfg: NodeConfig) -> SqliteWatchlistStore:
    """:func:`fedcheck.node.app.open_store`: KEK errors name ``node.kek``, the config file, the KEK file or
    variable and, for a KEK that does not open it, the store's keyring."""
    from fedcheck.node.app import open_store

    return open_store(cfg)


def _source_size(db: Path, source: str) -> int:
    """Records ``source`` holds in the store at ``db`` (0 when there is no store yet). Read-only and without
    the KEK: source names and record ids are the store's only plaintext columns."""
    import sqlite3

    from fedcheck.errors import StorageUnavailable

    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT COUNT(*) FROM records WHERE source=?", (source,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return 0  # a store created but never imported into
        # unreadable or locked: refuse rather than assume the source is empty (the guard would be skipped)
        raise StorageUnavailable() from None
    return int(row[0])
