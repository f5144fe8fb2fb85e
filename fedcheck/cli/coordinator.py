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
    rot = csub.add_parser(
        "rotate-kek", help="re-wrap the coordinator's sealed TLS and audit keys under a new KEK (stopped)"
    )
    rot.add_argument("--config", required=True, help="coordinator TOML file")
    rot.add_argument("--new-kek", required=True, help="file:PATH or env:VAR holding the new KEK")
    rot.set_defaults(func=_rotate_kek)


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


def _rotate_kek(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from fedcheck.cli.node import rotated_kek_hint
    from fedcheck.coordinator.config import load_coordinator_config
    from fedcheck.trust.atrest import load_kek
    from fedcheck.trust.rotation import rotate_kek

    cfg = load_coordinator_config(args.config)
    files: dict[str, Path] = {}
    if cfg.audit_key is not None:
        files["audit_signing_key"] = cfg.audit_key
    if cfg.tls is not None:
        files["tls_key"] = cfg.tls.key
    lock = cfg.audit_log.with_name(cfg.audit_log.name + ".lock") if cfg.audit_log is not None else None
    done = rotate_kek(load_kek(cfg.kek, setting="coordinator.kek", source=cfg.path),
                      load_kek(args.new_kek, setting="--new-kek"), sealed_files=files, lock_path=lock,
                      what="coordinator")
    print(json.dumps({"coordinator": True, "rotated": done}))
    print(rotated_kek_hint("coordinator", args.config, cfg.kek, args.new_kek), file=sys.stderr)
    return 0
