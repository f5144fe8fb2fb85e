"""``fedcheck query --config <querying node> --manifest FILE [...]``: one round through the coordinator.

``--mode fuzzy`` runs an encrypted similarity round (hits: State + opaque reference); ``--follow-up`` then
asks each hit's holder, and only that holder, for the labels; ``--mode both`` runs exact, then fuzzy.

Prints per traveller which States hit, on which key type, with the label (table or ``--format json``; the JSON
shape is the one documented in :mod:`fedcheck.screening.report`). Exit codes: 0 round completed and every
target answered; 1 round completed but some State was unavailable, timed out or refused; 2 error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("query", help="screen a manifest against partner States through the coordinator")
    p.add_argument("--config", required=True, help="the querying node's TOML file")
    p.add_argument("--manifest", required=True, help="travellers (csv, jsonl, paxlst, mrz)")
    p.add_argument("--manifest-format", default=None, help="force the manifest format")
    p.add_argument("--mode", choices=("exact", "cardinality", "fuzzy", "both"), default="exact",
                   help="both = exact round, then a fuzzy (encrypted similarity) round")
    p.add_argument("--follow-up", action="store_true",
                   help="fuzzy: ask each holder for the labels of its fuzzy hits (a separate, audited "
                   "request; without it holders never learn of a hit and hits show an opaque reference only)")
    p.add_argument("--threshold", default="0.8",
                   help="fuzzy: Dice similarity threshold (default: %(default)s)")
    p.add_argument("--year-tolerance", type=int, default=0,
                   help="fuzzy: birth years may differ by this much (default: %(default)s)")
    p.add_argument("--key-bits", type=int, choices=(2048, 3072), default=2048,
                   help="fuzzy: Paillier modulus size (default: %(default)s)")
    p.add_argument("--states", default="", help="comma-separated holder States (default: all partners)")
    p.add_argument("--purpose", default=None, help="purpose code (default: from the config)")
    p.add_argument("--legal-basis", default=None, help="legal basis reference (default: from the config)")
    p.add_argument("--deadline", type=float, default=None, help="round deadline in seconds")
    p.add_argument("--round-id", default="", help="idempotency key (default: a new UUID)")
    p.add_argument(
        "--key-types", default="", help="comma-separated match-key types to use (default: all)"
    )
    p.add_argument(
        "--label-fields", default="", help="comma-separated label fields to ask for (default: all disclosed)"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--hide-names", action="store_true", help="table without traveller names")
    p.set_defaults(func=_run)


def _check_codes(key_types: str, label_fields: str) -> None:
    from fedcheck.errors import InvalidInput
    from fedcheck.trust.policy import ALL_KEY_TYPES

    for k in (x.strip() for x in key_types.split(",")):
        if k and k not in ALL_KEY_TYPES:
            raise InvalidInput(f"--key-types: unknown key type (one of {', '.join(ALL_KEY_TYPES)})")
    for f in (x.strip() for x in label_fields.split(",")):
        if f and not f.replace("_", "").isalnum():
            raise InvalidInput("--label-fields: field names are letters, digits and '_'")


def _run(args: argparse.Namespace) -> int:
    from fedcheck.node.app import open_querier
    from fedcheck.node.config import load_node_config
    from fedcheck.node.querier import QueryOptions
    from fedcheck.rpc.serde import validate_state
    from fedcheck.screening.inputs import load_manifest

    cfg = load_node_config(args.config)
    _check_codes(args.key_types, args.label_fields)
    manifest = load_manifest(args.manifest, args.manifest_format)
    states = tuple(validate_state(s.strip()) for s in args.states.split(",") if s.strip())
    q = cfg.querier
    options = QueryOptions(
        mode="exact" if args.mode in ("fuzzy", "both") else args.mode,
        states=states,
        purpose=args.purpose or q.purpose,
        legal_basis=args.legal_basis if args.legal_basis is not None else q.legal_basis,
        unit=q.unit,
        official=q.official,
        deadline_seconds=args.deadline or q.deadline_seconds,
        round_id=args.round_id,
        key_types=tuple(k.strip() for k in args.key_types.split(",") if k.strip()),
        label_fields=tuple(f.strip() for f in args.label_fields.split(",") if f.strip()),
    )
    runner, close = open_querier(cfg)
    try:
        if args.mode in ("fuzzy", "both"):
            from fedcheck.node.fuzzyquery import FuzzyOptions, FuzzyQueryRunner

            report = runner.run(manifest, options) if args.mode == "both" else None
            fuzzy = FuzzyQueryRunner.for_runner(runner)
            report = fuzzy.run(
                manifest, options,
                FuzzyOptions(threshold=args.threshold, year_tolerance=args.year_tolerance,
                             key_bits=args.key_bits),
                report=report, follow_up=args.follow_up,
            )
            runner.last_round = fuzzy.last_round if args.mode == "fuzzy" else runner.last_round
        else:
            report = runner.run(manifest, options)
    finally:
        close()
    if args.format == "json":
        doc: dict[str, Any] = {
            "round_id": runner.last_round.round_id if runner.last_round else "",
            "mode": args.mode,
            "statuses": report.statuses,
            "details": report.details,
            "timings": {k: round(v, 4) for k, v in report.timings.items()},
        }
        if args.mode == "cardinality":
            doc["counts"] = [c.__dict__ for c in report.counts]
        else:
            doc["travellers"] = json.loads(report.to_json())
        print(json.dumps(doc, indent=2))
    else:
        print(report.to_table(show_names=not args.hide_names))
    ok = all(s.startswith("ok") for s in report.statuses.values())
    if not ok:
        print(
            "fedcheck: some States did not answer: "
            + ", ".join(f"{s}={v}" for s, v in sorted(report.statuses.items()) if not v.startswith("ok")),
            file=sys.stderr,
        )
    return 0 if ok else 1
