"""``fedcheck conformance``: run the evaluators' suite against a node, or write the profile it must import.

Exit codes of ``run``: 0 conformant, 1 a required case failed (or, with ``--strict``, was skipped), 2 usage or
configuration error (the CLI's usual mapping of :class:`fedcheck.errors.FedcheckError`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "conformance",
        help="test a node against the fedcheck.v1 contract (evaluators' suite)",
        description="Conformance suite for fedcheck nodes: see docs/conformance.md.",
    )
    csub = p.add_subparsers(dest="conformance_command", metavar="ACTION")

    run = csub.add_parser("run", help="run the suite against a node",
                          description="Run the conformance cases against HOST:PORT and report.")
    run.add_argument("--target", required=True, help="node address, HOST:PORT")
    run.add_argument("--ca", type=Path, help="federation CA certificate (PEM)")
    run.add_argument("--crl", type=Path, help="federation revocation list (PEM, signed by --ca): the node's "
                     "signed epoch announcements are checked against it")
    run.add_argument("--expect-state", metavar="CODE", help="the State code the node under test must be "
                     "(its signed epoch announcements must come from that State's node certificate)")
    run.add_argument("--cert", type=Path, help="client certificate for mutual TLS (an evaluator certificate "
                     "`fedcheck pki issue --role evaluator --state EVA`, or a node certificate)")
    run.add_argument("--key", type=Path, help="private key of --cert (PEM, or sealed: see --kek)")
    run.add_argument("--kek", metavar="file:PATH|env:VAR",
                     help="operator KEK that opens sealed private keys (fedcheck.trust.atrest); see also "
                     "--coordinator-kek")
    run.add_argument("--partner-cert", type=Path, help="certificate that signs requests (default: --cert)")
    run.add_argument("--partner-key", type=Path, help="private key of --partner-cert (default: --key)")
    run.add_argument("--stranger-cert", type=Path,
                     help="federation certificate (evaluator or node) of a State the node's policy does not "
                     "list (enables policy.stranger_refused)")
    run.add_argument("--stranger-key", type=Path, help="private key of --stranger-cert")
    run.add_argument("--server-name", help="TLS name to verify the node's certificate against")
    run.add_argument("--insecure-dev", action="store_true",
                     help="plain-text connection to a development node (transport cases are skipped)")
    run.add_argument("--dev-identity",
                     help="identity claimed with --insecure-dev (default: <role>.<STATE> of --cert)")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="also test this coordinator (enables the coordinator.* cases)")
    run.add_argument("--coordinator-cert", type=Path,
                     help="node certificate of a federation member that submits the coordinator cases' "
                     "rounds (default: --partner-cert when it is a node certificate)")
    run.add_argument("--coordinator-key", type=Path,
                     help="private key of --coordinator-cert (PEM, or sealed: see --coordinator-kek)")
    run.add_argument("--coordinator-kek", metavar="file:PATH|env:VAR",
                     help="KEK that opens a sealed --coordinator-key, when it is not the --kek of the other "
                     "keys (e.g. the member's node KEK; default: --kek)")
    run.add_argument("--coordinator-server-name", help="TLS name to verify the coordinator's certificate "
                     "against")
    run.add_argument("--profile", default="standard", help="conformance profile (default: %(default)s)")
    run.add_argument("--case", action="append", dest="cases", metavar="ID",
                     help="run only this case id or id prefix (repeatable), e.g. --case oprf")
    run.add_argument("--purpose", default="conformance", help="purpose code of the suite's rounds")
    run.add_argument("--legal-basis", default="conformance-test", help="legal-basis reference of the rounds")
    run.add_argument("--epoch-wait", type=float, default=0.0, metavar="SECONDS",
                     help="how long epoch.key_rotation may wait for the node to start a new epoch")
    run.add_argument("--budget-cap", type=int, default=20_000,
                     help="spend the test partner's budget only if at most this many items remain")
    run.add_argument("--timeout", type=float, default=20.0, help="per-call deadline in seconds")
    run.add_argument("--strict", action="store_true", help="a skipped required case also fails the run")
    run.add_argument("--format", choices=["table", "json", "junit"], default="table")
    run.add_argument("--output", type=Path, help="write the report here (default: standard output)")
    run.add_argument("--quiet", action="store_true", help="no per-case progress on standard error")
    run.set_defaults(func=_run)

    prof = csub.add_parser("profile", help="write the profile watchlist the node under test imports",
                           description="Write the deterministic conformance watchlist (canonical JSON Lines) "
                           "for `fedcheck watchlist import --source conformance` on the node under test "
                           "(its own source, so the node's real list is kept).")
    prof.add_argument("--profile", default="standard", help="conformance profile (default: %(default)s)")
    prof.add_argument("--out", type=Path, required=True, help="output file (.jsonl)")
    prof.set_defaults(func=_profile)

    lst = csub.add_parser("list", help="list the cases (id, required, spec)")
    lst.add_argument("--format", choices=["table", "json"], default="table")
    lst.set_defaults(func=_list)

    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])


def _run(args: argparse.Namespace) -> int:
    from fedcheck.conformance.report import render
    from fedcheck.conformance.runner import run_suite
    from fedcheck.conformance.session import TargetConfig

    config = TargetConfig(
        target=args.target, ca=args.ca, crl=args.crl, expect_state=args.expect_state, cert=args.cert,
        key=args.key,
        partner_cert=args.partner_cert, partner_key=args.partner_key, stranger_cert=args.stranger_cert,
        stranger_key=args.stranger_key,
        insecure_dev=args.insecure_dev, dev_identity=args.dev_identity, server_name=args.server_name,
        timeout_s=args.timeout, epoch_wait_s=args.epoch_wait, purpose=args.purpose,
        legal_basis=args.legal_basis,
        budget_cap=args.budget_cap, kek=args.kek, coordinator=args.coordinator,
        coordinator_cert=args.coordinator_cert, coordinator_key=args.coordinator_key,
        coordinator_kek=args.coordinator_kek,
        coordinator_server_name=args.coordinator_server_name,
    )

    def progress(r: Any) -> None:
        if not args.quiet:
            print(f"{r.status.value.upper():4} {r.case_id}", file=sys.stderr, flush=True)

    report = run_suite(config, profile=args.profile, select=args.cases, strict=args.strict,
                       on_result=progress)
    text = render(report, args.format)
    if args.output is not None:
        args.output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        if args.format != "table":
            print(render(report, "table").splitlines()[-1], file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return report.exit_code


def _profile(args: argparse.Namespace) -> int:
    from fedcheck.conformance.profile import load_profile, write_watchlist

    prof = load_profile(args.profile)
    n = write_watchlist(prof, args.out)
    print(f"wrote {n} records of profile {prof.name!r} to {args.out}; import them on the node under test "
          f"with `fedcheck watchlist import --config NODE.toml --source conformance {args.out}` (its own "
          "source: the default source would replace the node's real list) and let it build a new epoch",
          file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    import json

    import fedcheck.conformance.cases  # noqa: F401 - fills the registry
    from fedcheck.conformance.model import REGISTRY

    if args.format == "json":
        doc = [{"id": c.id, "group": c.group, "required": c.required, "spec": c.spec, "title": c.title,
                "description": c.description} for c in REGISTRY]
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 0
    for c in REGISTRY:
        sys.stdout.write(f"{c.id:45} {'required' if c.required else 'optional':8}  {c.title}\n")
    return 0
