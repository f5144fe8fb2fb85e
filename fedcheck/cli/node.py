"""``fedcheck node serve --config nodes/<STATE>/node.toml``: run a State's node until SIGTERM/SIGINT.

Scriptable: prints a JSON line ``{"event": "listening", "port": ...}`` on stdout when bound; readiness is the
standard gRPC health check turning SERVING once the first epoch index is ready. Logs are JSON lines on stderr
(or the configured file). Exit 0 after a graceful drain, 2 on configuration errors.
"""

from __future__ import annotations

import argparse
import logging
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
    sec.add_argument("--states", default="FRA,KEN,UNX", help="comma-separated State codes")
    sec.set_defaults(func=_dev_secrets)


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

    from fedcheck.node.devfed import prepare_secrets

    states = [s.strip() for s in args.states.split(",") if s.strip()]
    files = prepare_secrets(Path(args.out), states)
    print(json.dumps({name: str(f.cert) for name, f in files.items()}))
    return 0
