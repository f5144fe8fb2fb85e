"""``fedcheck screen``: offline screening of a manifest against a watchlist file (no servers)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fedcheck.records import DEFAULT_KEY_TYPES, KeyType
from fedcheck.screening.inputs import load_manifest, load_watchlist

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "screen",
        help="screen a manifest against a watchlist in-process (the real protocol, no servers)",
        description="Runs the exact-match protocol between an in-process holder and querier. "
        "Watchlists: CSV, JSON Lines, UN SC XML, FtM JSONL. Manifests: CSV, JSON Lines, PAXLST, MRZ.",
    )
    p.add_argument("--watchlist", required=True, help="watchlist file")
    p.add_argument("--watchlist-format", default=None, help="csv|jsonl|un-xml|ftm (default: from the file)")
    p.add_argument("--manifest", required=True, help="manifest file")
    p.add_argument("--manifest-format", default=None, help="csv|jsonl|paxlst|mrz (default: from the file)")
    p.add_argument("--mode", choices=["exact", "cardinality", "fuzzy", "both"], default="exact")
    p.add_argument("--key-types", default=",".join(str(k) for k in DEFAULT_KEY_TYPES),
                   help="comma-separated match key types (default: %(default)s)")
    p.add_argument("--state", default="LOCAL", help="label for the holder in the output")
    p.add_argument("--threshold", default="0.8",
                   help="fuzzy modes: Dice similarity threshold in (0, 1] (default: %(default)s)")
    p.add_argument("--year-tolerance", type=int, default=0,
                   help="fuzzy modes: birth years may differ by this much (default: %(default)s)")
    p.add_argument("--key-bits", type=int, choices=[1024, 2048, 3072], default=2048,
                   help="fuzzy modes: Paillier modulus size (1024 for tests only; default: %(default)s)")
    p.add_argument("--fuzzy-kind", choices=["name", "face"], default="name",
                   help="fuzzy modes: compare names or the records' face_embedding (default: %(default)s)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedcheck.protocol.exact import Mode
    from fedcheck.screening.offline import screen_exact

    key_types = [KeyType(k.strip()) for k in args.key_types.split(",") if k.strip()]
    watchlist = load_watchlist(args.watchlist, args.watchlist_format)
    manifest = load_manifest(args.manifest, args.manifest_format)
    mode = args.mode
    if mode in ("fuzzy", "both"):
        from fedcheck.screening.fuzzy import screen_fuzzy_into

        report = screen_exact(watchlist, manifest, state=args.state, mode=Mode.EXACT, key_types=key_types) \
            if mode == "both" else None
        report = screen_fuzzy_into(report, watchlist, manifest, state=args.state, threshold=args.threshold,
                                   year_tolerance=args.year_tolerance, key_bits=args.key_bits,
                                   kind=args.fuzzy_kind)
    else:
        report = screen_exact(watchlist, manifest, state=args.state, mode=Mode(mode), key_types=key_types)
    out = report.to_json() if args.format == "json" else report.to_table()
    sys.stdout.write(out + "\n")
    return 0
