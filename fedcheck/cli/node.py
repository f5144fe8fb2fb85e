"""``fedcheck node serve --config nodes/<STATE>/node.toml``: run a State's node until SIGTERM/SIGINT.

Scriptable: prints a JSON line ``{"event": "listening", "port": ...}`` on stdout when bound; readiness is the
standard gRPC health check turning SERVING once the first epoch index is ready. Logs are JSON lines on stderr
(or the configured file). Exit 0 after a graceful drain, 2 on configuration errors.

``fedcheck node dev-secrets --out var [--states FRA,KEN,UNX,DEU]`` writes a development CA, certificates, KEKs
and audit keys where ``nodes/`` expects them (default: all four States of the shipped configs); it refuses a
directory that already holds a development CA.

``fedcheck node rotate-kek --config NODE.toml --new-kek file:PATH`` re-wraps every data key of a stopped
node under a new operator KEK: the store keyring (watchlist rows, sealed OPRF epoch keys, querier cache),
the sealed TLS key and the audit signing key. Ciphertexts are untouched; re-running after an interruption
completes it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    parser = sub.add_parser("node", help="run a State's sovereign node")
    node_sub = parser.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    serve = node_sub.add_parser("serve", help="serve the node described by a TOML config")
    serve.add_argument("--config", required=True, help="node TOML file (see nodes/)")
    serve.add_argument(
        "--insecure-dev",
        action="store_true",
        help="plain-text transport for local development only (never in a federation)",
    )
    serve.set_defaults(func=_serve)
    sec = node_sub.add_parser("dev-secrets", help="create a development CA, certificates, KEKs (demo only)")
    sec.add_argument("--out", required=True, help="directory the nodes/ configs point at (e.g. var)")
    sec.add_argument(
        "--states",
        default=None,
        help="comma-separated State codes (default: FRA,KEN,UNX,DEU, the States of the nodes/ configs)",
    )
    sec.set_defaults(func=_dev_secrets)
    rot = node_sub.add_parser(
        "rotate-kek", help="re-wrap the node's data keys under a new KEK (node stopped)"
    )
    rot.add_argument("--config", required=True, help="node TOML file (its node.kek is the current KEK)")
    rot.add_argument("--new-kek", required=True, help="the new KEK: file:PATH or env:VAR")
    rot.set_defaults(func=_rotate_kek)


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from fedcheck.node.app import NodeApp
    from fedcheck.node.config import load_node_config
    from fedcheck.node.logs import configure_json_logging

    cfg = load_node_config(args.config)
    if args.insecure_dev:
        cfg = dataclasses.replace(cfg, insecure_dev=True)
    configure_json_logging(logging.DEBUG if args.verbose > 1 else logging.INFO, file=cfg.log_file)
    return NodeApp(cfg).serve_forever()


def _dev_secrets(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fedcheck.node.devfed import DEMO_STATES, prepare_secrets

    states = [s.strip() for s in args.states.split(",") if s.strip()] if args.states else list(DEMO_STATES)
    files = prepare_secrets(Path(args.out), states)
    print(json.dumps({name: str(f.cert) for name, f in files.items()}))
    return 0


def _rotate_kek(args: argparse.Namespace) -> int:
    import json

    from fedcheck.node.app import audit_paths
    from fedcheck.node.config import load_node_config
    from fedcheck.trust.atrest import load_kek
    from fedcheck.trust.rotation import rotate_kek

    cfg = load_node_config(args.config)
    key_path, log_path = audit_paths(cfg)
    files = {"audit_signing_key": key_path}
    if cfg.tls is not None:
        files["tls_key"] = cfg.tls.key
    done = rotate_kek(
        load_kek(cfg.kek, setting="node.kek", source=cfg.path), load_kek(args.new_kek, setting="--new-kek"),
        sealed_files=files,
        keyring=cfg.data_dir / "keyring.json",
        # a running node holds the audit log lock (and a keyring copy in memory)
        lock_path=log_path.with_name(log_path.name + ".lock"), what="node",
    )
    print(json.dumps({"state": cfg.state, "rotated": done}))
    print(rotated_kek_hint("node", args.config, cfg.kek, args.new_kek), file=sys.stderr)
    return 0


def kek_spec_for_config(spec: str) -> str:
    """``spec`` as it must be written into a config file: ``file:`` paths in configs are relative to the
    config file, on the command line to the working directory, so a ``file:`` path becomes absolute."""
    from pathlib import Path

    kind, _, where = spec.partition(":")
    if kind == "file" and where:
        return "file:" + str(Path(where).expanduser().resolve())
    return spec


def rotated_kek_hint(table: str, config: str, old_spec: str, new_spec: str) -> str:
    """What the operator must do after ``rotate-kek``: the exact ``kek = ...`` line for ``[table]``."""
    import json

    line = f"kek = {json.dumps(kek_spec_for_config(new_spec))}"
    return (
        f"now set {line} in the [{table}] table of {config} (it still names the old KEK "
        f"{old_spec or '(none)'}), then destroy the old KEK"
    )
