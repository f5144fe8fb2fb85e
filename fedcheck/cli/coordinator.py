"""``fedcheck coordinator serve --config nodes/coordinator/coordinator.toml``: run the federation coordinator.

Prints ``{"event": "listening", "port": ...}`` on stdout once serving (health SERVING); JSON-lines logs.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    parser = sub.add_parser("coordinator", help="run the federation coordinator")
    csub = parser.add_subparsers(dest="coordinator_command", metavar="ACTION", required=True)
    serve = csub.add_parser("serve", help="serve the coordinator described by a TOML config")
    serve.add_argument("--config", required=True, help="coordinator TOML file")
    serve.add_argument("--insecure-dev", action="store_true", help="plain-text transport, development only")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from fedcheck.coordinator.app import CoordinatorApp
    from fedcheck.coordinator.config import load_coordinator_config
    from fedcheck.node.logs import configure_json_logging

    cfg = load_coordinator_config(args.config)
    if args.insecure_dev:
        cfg = dataclasses.replace(cfg, insecure_dev=True)
    configure_json_logging(logging.DEBUG if args.verbose > 1 else logging.INFO, file=cfg.log_file)
    return CoordinatorApp(cfg).serve_forever()
