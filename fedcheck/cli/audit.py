"""``fedcheck audit verify|export|tail|refusals|keygen``: the audit log for operators and oversight bodies.

``verify`` exits 1 when any modification, reordering, insertion, deletion or truncation is found; a log with
no events yet (a freshly started node: empty file, signed genesis head) verifies. Thin layer over
:mod:`fedcheck.trust.audit` (and :mod:`fedcheck.trust.budget` for budget refusals).

Every command works on a node's ``audit.jsonl`` (requests it answered as a holder), on its
``audit-querier.jsonl`` (the rounds it ran as the querying State: ``fedcheck query``; same signing key, same
public key) and on the coordinator's log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedcheck.errors import ConfigError, InvalidInput
from fedcheck.trust.atrest import load_kek
from fedcheck.trust.audit import (
    export_report,
    generate_signing_key,
    is_refusal,
    load_public_key,
    read_entries,
    save_signing_key,
    verify_log,
)
from fedcheck.trust.budget import BudgetLedger

__all__ = ["register"]


def _anchor(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    seq, sep, h = text.partition(":")
    if not sep or not seq.isdigit() or len(h) != 64:
        raise InvalidInput("--expected-head must be SEQ:HASH (64 hex digits)", reason="bad_anchor")
    return int(seq), h.lower()


def _date(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            "dates are ISO 8601, e.g. 2025-01-31 or 2025-01-31T12:00", reason="bad_date"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _public_key(path: str) -> Ed25519PublicKey:
    """``--public-key``: errors name the option, the path and the problem (missing, private key, not PEM)."""
    try:
        return load_public_key(Path(path))
    except ConfigError as exc:
        raise ConfigError(f"--public-key: {exc.message}", reason=exc.reason) from None


def _verify(args: argparse.Namespace) -> int:
    report = verify_log(
        Path(args.log), _public_key(args.public_key), expected_head=_anchor(args.expected_head)
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        print(
            f"OK: {report.entries} entries, seq {report.first_seq}..{report.last_seq}, "
            f"head {report.head_seq}, last hash {report.last_hash}"
        )
        if report.checkpoint_seq is not None:
            print(f"  retention checkpoint at seq {report.checkpoint_seq}")
        if report.torn_tail:
            print(
                "  note: torn final line from an append (never acknowledged, dropped on next open)"
            )
    else:
        print(f"FAILED: {len(report.errors)} problem(s) in {args.log}", file=sys.stderr)
        for err in report.errors:
            print(f"  - {err}", file=sys.stderr)
        if any("under the given public key" in err for err in report.errors):
            print(
                f"  hint: is --public-key {args.public_key} this log's key (the .pub.pem written next to its "
                "signing key)? If it is, that file was forged.",
                file=sys.stderr,
            )
    return 0 if report.ok else 1


def _export(args: argparse.Namespace) -> int:
    text = export_report(
        Path(args.log),
        _public_key(args.public_key),
        fmt=args.format,
        since=_date(args.since),
        until=_date(args.until),
        expected_head=_anchor(args.expected_head),
    )
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"report written to {args.out}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _tail(args: argparse.Namespace) -> int:
    for entry in deque(read_entries(Path(args.log)), maxlen=args.n):
        print(json.dumps({"seq": entry.seq, "time": entry.time, **entry.event}, ensure_ascii=False))
    return 0


def _refusals(args: argparse.Namespace) -> int:
    count = 0
    for entry in read_entries(Path(args.log)):
        ev = entry.event
        if is_refusal(ev) and (
            args.partner is None
            or args.partner in (ev.get("partner"), ev.get("querier"), ev.get("holder"))
            or args.partner in (ev.get("targets") or [])  # the querying node's own rounds
        ):
            count += 1
            print(json.dumps({"seq": entry.seq, "time": entry.time, **ev}, ensure_ascii=False))
    if args.budget_db:
        with BudgetLedger(Path(args.budget_db)) as ledger:
            for r in ledger.refusals(partner=args.partner):
                count += 1
                when = dt.datetime.fromtimestamp(r.at, dt.UTC).isoformat()
                print(
                    json.dumps(
                        {
                            "source": "budget",
                            "time": when,
                            "partner": r.partner,
                            "items": r.items,
                            "epoch_id": r.epoch,
                            "reason": r.reason,
                            "retry_after_s": r.retry_after_s,
                        }
                    )
                )
    print(f"{count} refusal(s)", file=sys.stderr)
    return 0


def _keygen(args: argparse.Namespace) -> int:
    kek = load_kek(args.kek, setting="--kek") if args.kek else None
    if kek is None:
        print(
            "fedcheck: warning: no --kek given, signing key written unencrypted (development only)",
            file=sys.stderr,
        )
    pub = save_signing_key(Path(args.out), generate_signing_key(), kek)
    print(f"signing key: {args.out}\npublic key:  {pub} (give this to the oversight body)")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("audit", help="audit log: verify, export, tail, refusals, keygen")
    audit = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    p = audit.add_parser(
        "verify", help="verify chain, signatures, head and checkpoint; exit 1 on any problem"
    )
    p.add_argument("--log", required=True, help="audit.jsonl, audit-querier.jsonl or the coordinator's log")
    p.add_argument("--public-key", required=True, help="the log's Ed25519 public key (PEM)")
    p.add_argument("--expected-head", help="external anchor SEQ:HASH published earlier (detects rollback)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_verify)

    p = audit.add_parser("export", help="report for an oversight body (counts, refusals, verification)")
    p.add_argument("--log", required=True)
    p.add_argument("--public-key", required=True)
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--since", help="ISO date/time (UTC if no offset)")
    p.add_argument("--until")
    p.add_argument("--expected-head")
    p.add_argument("--out")
    p.set_defaults(func=_export)

    p = audit.add_parser("tail", help="print the last N events")
    p.add_argument("--log", required=True)
    p.add_argument("-n", type=int, default=20)
    p.set_defaults(func=_tail)

    p = audit.add_parser("refusals", help="list refused requests (policy, budget, authentication)")
    p.add_argument("--log", required=True)
    p.add_argument("--partner")
    p.add_argument("--budget-db", help="also list refusals recorded by the budget ledger")
    p.set_defaults(func=_refusals)

    p = audit.add_parser("keygen", help="generate the log's Ed25519 signing key (sealed with --kek)")
    p.add_argument("--out", required=True)
    p.add_argument("--kek", help="operator KEK: file:PATH or env:VAR")
    p.set_defaults(func=_keygen)
