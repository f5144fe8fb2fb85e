"""``fedcheck watchlist import --config node.toml FILE [--format ...] [--source NAME]``.

Replaces the named source's list in the node's sealed store atomically (an interrupted import keeps the
previous list intact; re-importing the same file changes nothing). Reports counts and rejections (row and
reason, never the identity); progress on stderr in a terminal. A running node notices the new list
version and builds a new epoch in the background. Exit 0 on success, 2 on errors.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register"]


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
    imp.set_defaults(func=_import)
    show = wsub.add_parser("status", help="record count and list version")
    show.add_argument("--config", required=True)
    show.set_defaults(func=_status)


def _import(args: argparse.Namespace) -> int:
    from fedcheck.node.app import open_store
    from fedcheck.node.config import load_node_config
    from fedcheck.progress import Progress

    cfg = load_node_config(args.config)
    records, rejected = _read(args.file, args.fmt)
    store = open_store(cfg)
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
        print(json.dumps(doc))
    else:
        print(
            f"{cfg.state}: read {doc['read']}, added {report.added}, updated {report.updated}, "
            f"unchanged {report.unchanged}, removed {report.removed}, rejected {len(report.rejected)}"
        )
        for where, reason in report.rejected[:20]:
            print(f"  rejected {where}: {reason}")
        if len(report.rejected) > 20:
            print(f"  ... and {len(report.rejected) - 20} more")
    return 0


def _read(path: str, fmt: str | None) -> tuple[list[Any], list[tuple[str, str]]]:
    from pathlib import Path

    from fedcheck.errors import FormatError

    p = Path(path)
    if not p.is_file():
        raise FormatError(f"file not found: {p}", reason="file_not_found")
    if fmt in ("paxlst", "mrz", "ftm"):
        from fedcheck.formats import read_external

        result = read_external(p, fmt)
    else:
        from fedcheck.records.io import read_records

        result = read_records(p, fmt)
    return list(result.records), [(str(r.where), str(r.reason)) for r in result.rejected]


def _status(args: argparse.Namespace) -> int:
    from fedcheck.node.app import open_store
    from fedcheck.node.config import load_node_config

    cfg = load_node_config(args.config)
    store = open_store(cfg)
    try:
        print(json.dumps({"state": cfg.state, "records": store.count(), "version": store.list_version()}))
    finally:
        store.close()
    return 0
