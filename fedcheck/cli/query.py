"""``fedcheck query --config <querying node> --manifest FILE [...]``: one round through the coordinator.

``--mode fuzzy`` runs an encrypted similarity round (hits: State + opaque reference); ``--follow-up`` then
asks each hit's holder, and only that holder, for the labels; ``--mode both`` runs exact, then fuzzy.
``--fuzzy-kind face`` compares the travellers' ``face_embedding`` instead of names. Large manifests are split
into sub-rounds (one progress line each on stderr).

``fedcheck query follow-up --config NODE.toml --round ROUND_ID [--reference fz-T.N ...] [--states S]``
follows up hits of an earlier fuzzy round later, from the round state the querier node keeps sealed
(``querier-fuzzy.sqlite``, 24 h); holders keep a round open for their ``release_ttl_seconds`` only.

Every round (exact, cardinality, fuzzy -- one event for all its sub-rounds --, each follow-up, and a re-check
answered entirely from the querier's result cache) is recorded in the querying node's own audit log,
``audit-querier.jsonl`` next to its ``audit.jsonl`` (a separate file: the running node holds the lock of its
own log), signed with the node's audit key: request terms, States, outcomes and counts, never names or
documents (:func:`fedcheck.node.querier.round_event`). A round that cannot be recorded is not reported (exit
2). Verify it like any audit log: ``fedcheck audit verify --log DATA/audit-querier.jsonl --public-key
DATA/audit-signing.key.pub.pem``.

Prints per traveller which States hit, on which key type, with the label (table or ``--format json``; the JSON
shape is the one documented in :mod:`fedcheck.screening.report`). A traveller that was not checked against
some requested State -- kept out by the querier's protection policy (``excluded: protected person, ...``),
with no usable key, or because the State was unavailable, timed out or refused -- is listed as ``NOT CHECKED``
(JSON: ``not_checked: {State: reason}`` on its entry); manifest rows the reader rejected are listed (JSON:
``rejected: [{line, where, reason}]``, never their content); the summary line counts the travellers fully
screened against all requested States, and says "no State answered: nothing was screened" when none answered
(JSON: ``summary``).

Exit codes: 0 round completed, every target answered and every traveller was checked against every requested
State; 1 round completed but incomplete: some State was unavailable, timed out or refused, some traveller was
not checked against some requested State, or some manifest row was rejected; 2 error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "query", help="screen a manifest against partner States through the coordinator",
        epilog="exit codes: 0 every traveller checked against every requested State; 1 incomplete (a State "
        "did not answer, a traveller NOT CHECKED against some State, or manifest rows rejected); 2 error",
    )
    p.add_argument("action", nargs="?", choices=("run", "follow-up"), default="run",
                   help="run (default) a round, or follow-up hits of an earlier fuzzy round (--round)")
    p.add_argument("--config", required=True, help="the querying node's TOML file")
    p.add_argument("--manifest", default=None, help="travellers (csv, jsonl, paxlst, mrz); required for run")
    p.add_argument("--round", default="", help="follow-up: the fuzzy round (or sub-round) id")
    p.add_argument("--reference", nargs="+", default=[], metavar="fz-T.N",
                   help="follow-up: only these hit references (default: every hit of the round)")
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
    p.add_argument("--key-bits", type=int, choices=(1024, 2048, 3072), default=2048,
                   help="fuzzy: Paillier modulus size (1024: tests only, holders refuse it by default; "
                   "default: %(default)s)")
    p.add_argument("--fuzzy-kind", choices=("name", "face"), default="name",
                   help="fuzzy: compare names (bigram Dice + birth year) or face embeddings (default: name)")
    p.add_argument("--year-window", default="", metavar="FROM:TO",
                   help="fuzzy: birth years the DOB check covers (default 1900:2030, narrowed to the "
                   "holders' listed years; listed years outside it are not checked)")
    p.add_argument("--sub-round-travellers", type=int, default=0,
                   help="fuzzy: travellers per sub-round (default: as many as the limits allow)")
    p.add_argument("--states", default="", help="comma-separated holder States (default: all partners)")
    p.add_argument("--purpose", default=None, help="purpose code (default: from the config)")
    p.add_argument("--legal-basis", default=None, help="legal basis reference (default: from the config)")
    p.add_argument("--deadline", type=_deadline, default=None,
                   help="round deadline in seconds, 1..600 (the coordinator also caps it at its "
                        "max_deadline_seconds, 60 by default)")
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


def _year_window(text: str) -> tuple[int, int] | None:
    from fedcheck.errors import InvalidInput

    if not text:
        return None
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise InvalidInput("--year-window: FROM:TO, e.g. 1930:2010", reason="bad_year_window") from None
    return a, b


def _progress(line: str) -> None:
    print(f"fedcheck: {line}", file=sys.stderr, flush=True)


def _deadline(text: str) -> float:
    """``--deadline``: a number of seconds in 1..600 (0 or a negative value would time every State out)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= value <= 600:
        raise argparse.ArgumentTypeError(f"{text} must be between 1 and 600 seconds")
    return value


def _run(args: argparse.Namespace) -> int:
    from fedcheck.errors import InvalidInput
    from fedcheck.node.app import open_querier
    from fedcheck.node.chunking import run_chunked
    from fedcheck.node.config import load_node_config
    from fedcheck.node.querier import QueryOptions
    from fedcheck.rpc.serde import validate_state
    from fedcheck.screening.inputs import load_manifest_checked
    from fedcheck.screening.report import rejected_rows

    cfg = load_node_config(args.config)
    _check_codes(args.key_types, args.label_fields)
    if args.action == "follow-up":
        return _follow_up(args, cfg)
    if not args.manifest:
        raise InvalidInput("--manifest is required to run a round", reason="missing_manifest")
    manifest, rejections = load_manifest_checked(args.manifest, args.manifest_format)
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
    runner, close = open_querier(cfg)  # with the querier's own audit log: every round, cached re-checks too
    fuzzy_round_id = ""
    try:
        if args.mode in ("fuzzy", "both"):
            from fedcheck.node.fuzzyquery import FuzzyOptions, FuzzyQueryRunner

            report = run_chunked(runner, manifest, options) if args.mode == "both" else None
            fuzzy = FuzzyQueryRunner.for_runner(runner)
            try:
                report = fuzzy.run(
                    manifest, options,
                    FuzzyOptions(threshold=args.threshold, year_tolerance=args.year_tolerance,
                                 key_bits=args.key_bits, kind=args.fuzzy_kind,
                                 year_window=_year_window(args.year_window),
                                 sub_round_travellers=args.sub_round_travellers),
                    report=report, follow_up=args.follow_up, progress=_progress,
                )
            finally:
                fuzzy.close()
            fuzzy_round_id = fuzzy.last_fuzzy.round_id if fuzzy.last_fuzzy is not None else ""
            runner.last_round = fuzzy.last_round if args.mode == "fuzzy" else runner.last_round
        else:
            report = run_chunked(runner, manifest, options)  # rounds <id>.c1..cN above holders' max_batch
    finally:
        close()
    # a re-check answered from the cache submits no round: its id is the one in the querier audit log
    round_id = runner.last_round.round_id if runner.last_round else runner.last_round_id
    if report is not None and "chunks" in report.details:  # split into rounds <id>.c1..cN: report the base id
        round_id = report.details["chunks"]["round_id"]
    if args.mode == "fuzzy":
        round_id = fuzzy_round_id
    report.rejected = rejected_rows(rejections)  # never screened: said in the output, and exit 1
    return _print(args, report, round_id)


def _print(args: argparse.Namespace, report: Any, round_id: str) -> int:
    if args.format == "json":
        doc: dict[str, Any] = {
            "round_id": round_id,
            "mode": "follow-up" if args.action == "follow-up" else args.mode,
            "statuses": report.statuses,
            "details": report.details,
            "timings": {k: round(v, 4) for k, v in report.timings.items()},
        }
        if args.mode == "cardinality":
            doc["counts"] = [c.__dict__ for c in report.counts]
            doc["not_checked"] = report.not_checked_json()
        else:
            doc["travellers"] = json.loads(report.to_json())
        doc["rejected"] = report.rejected
        doc["summary"] = report.summary()
        print(json.dumps(doc, indent=2))
    else:
        print(report.to_table(show_names=not args.hide_names))
        if round_id:  # what the audit logs need
            print(f"Round id: {round_id}")
        fuzzy_id = report.details.get("fuzzy", {}).get("round_id", "")
        if fuzzy_id and fuzzy_id != round_id:  # what `fedcheck query follow-up --round` needs (--mode both)
            print(f"Fuzzy round id: {fuzzy_id}")
    ok = all(s.startswith("ok") for s in report.statuses.values())
    if not ok:
        print(
            "fedcheck: some States did not answer: "
            + ", ".join(f"{s}={v}" for s, v in sorted(report.statuses.items()) if not v.startswith("ok")),
            file=sys.stderr,
        )
    if report.nothing_answered:
        print("fedcheck: no State answered: nothing was screened", file=sys.stderr)
    elif report.not_fully_screened:
        print(f"fedcheck: {len(report.not_fully_screened)} traveller(s) NOT CHECKED against some requested "
              "State", file=sys.stderr)
    if report.rejected:
        print(f"fedcheck: {len(report.rejected)} manifest row(s) rejected, not screened", file=sys.stderr)
    return 0 if report.complete else 1


def _follow_up(args: argparse.Namespace, cfg: Any) -> int:
    """Follow up hits of an earlier fuzzy round from the sealed round state this node kept."""
    from fedcheck.errors import FedcheckError, InvalidInput
    from fedcheck.node.app import open_querier
    from fedcheck.node.fuzzyquery import FuzzyQueryRunner, select_hits
    from fedcheck.node.querier import QueryOptions
    from fedcheck.rpc.serde import validate_round_id, validate_state
    from fedcheck.screening.report import ScreenReport, TravellerResult

    if not args.round:
        raise InvalidInput("follow-up needs --round ROUND_ID", reason="missing_round")
    validate_round_id(args.round)
    states = tuple(validate_state(s.strip()) for s in args.states.split(",") if s.strip())
    q = cfg.querier
    options = QueryOptions(
        purpose=args.purpose or q.purpose,
        legal_basis=args.legal_basis if args.legal_basis is not None else q.legal_basis,
        unit=q.unit, official=q.official, deadline_seconds=args.deadline or q.deadline_seconds,
    )
    runner, close = open_querier(cfg)
    fuzzy = FuzzyQueryRunner.for_runner(runner)
    try:
        if fuzzy.store is None:
            raise InvalidInput("this node keeps no fuzzy round state", reason="no_round_state")
        rnd = fuzzy.store.get(args.round)
        hits = select_hits(rnd, args.round, args.reference, states)
        report = ScreenReport([TravellerResult(rid, name) for rid, name in rnd.travellers])
        released: dict[tuple[str, str, int, int], dict[str, str]] = {}
        for state in sorted({h.state for h in hits}):
            try:
                released.update(fuzzy.follow_up(rnd, state, options, hits))
                report.statuses[state] = "ok"
            except FedcheckError as exc:
                report.statuses[state] = f"follow-up refused ({exc.reason})"
                report.details[state] = {"code": exc.status, "reasons": [exc.reason], "message": exc.message}
                print(f"fedcheck: {state}: {exc.message} [{exc.reason}]", file=sys.stderr)
        fuzzy.add_hits(report, rnd, released, None, hits)
        report.details["fuzzy"] = {"round_id": rnd.round_id, "claimed": len(hits),
                                   "released": len(released), "sub_rounds": len(rnd.sub_rounds)}
    finally:
        fuzzy.close()
        close()
    return _print(args, report, rnd.round_id)
