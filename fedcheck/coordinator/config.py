"""Coordinator configuration from TOML: its TLS identity, where each State's node listens, limits.

Strict like the node config (:mod:`fedcheck.node.config`): an unknown table or key (``max_deadline_second``,
``[node.NLD]`` for ``[nodes.NLD]``) is a configuration error naming it and the file, never a silent default or
a silently dropped member; ``[nodes.<STATE>]`` codes follow the federation's State code rule.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedcheck.codes import STATE_CODE_RE
from fedcheck.errors import ConfigError
from fedcheck.node.config import (
    MAX_BATCH_LIMIT,
    TlsPaths,
    check_keys,
    check_listen,
    check_metrics_port,
    check_state_code,
    check_tables,
    parse_tls,
    resolve_kek_spec,
    resolve_path,
)

__all__ = ["CoordinatorConfig", "load_coordinator_config"]

_COORDINATOR_KEYS = (
    "listen", "data_dir", "kek", "insecure_dev", "max_batch", "max_deadline_seconds", "result_ttl_seconds",
    "grace_seconds",
)
#: top-level tables of a coordinator config and their keys (None: [nodes.<STATE>] tables, checked below)
_TABLES: dict[str, tuple[str, ...] | None] = {
    "coordinator": _COORDINATOR_KEYS,
    "tls": ("cert", "key", "ca", "crl"),
    "nodes": None,
    "metrics": ("port", "address"),
    "logging": ("file",),
    "audit": ("signing_key", "log", "retention_days"),
}
_MEMBER_KEYS = ("address", "audit_public_key")


@dataclass(frozen=True)
class CoordinatorConfig:
    listen: str
    data_dir: Path
    nodes: dict[str, str]
    tls: TlsPaths | None
    kek: str = ""
    insecure_dev: bool = False
    max_batch: int = 10_000
    max_deadline_seconds: float = 120.0
    result_ttl_seconds: float = 900.0
    grace_seconds: float = 5.0
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    log_file: Path | None = None
    #: the coordinator's own signed audit log (``[audit]``: ``signing_key``, ``log``, ``retention_days``)
    audit_key: Path | None = None
    audit_log: Path | None = None
    audit_retention_days: int | None = None
    #: holders' audit public keys (``[nodes.<STATE>] audit_public_key``): the signed audit head each
    #: evaluation reply carries is verified against them and the result recorded in the round's audit entry
    audit_public_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    path: Path | None = None


def load_coordinator_config(path: str | Path) -> CoordinatorConfig:
    """Parse and validate a coordinator TOML file; raises :class:`ConfigError` naming the offending key.

    ``coordinator.listen`` may be absent here (``rotate-kek``); the coordinator then refuses to *serve*."""
    p = Path(path).resolve()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError:
        raise ConfigError(f"cannot read coordinator config {p}", reason="config_missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"coordinator config {p} is not valid TOML: {exc}", reason="config_syntax"
        ) from None
    base = p.parent
    c = doc.get("coordinator")
    if not isinstance(c, dict):
        # a misspelt [coordinater] is the usual cause: say so (its unknown-table error, with "did you mean")
        try:
            check_keys(doc, _TABLES, "", p)
            unknown = ""
        except ConfigError as exc:
            unknown = "; " + exc.message.removeprefix(f"{p}: ")
        raise ConfigError(
            f"coordinator config {p} needs a [coordinator] table{unknown}", reason="config_missing_table"
        )
    check_tables(doc, _TABLES, p)
    insecure = bool(c.get("insecure_dev", False))
    tls = parse_tls(doc.get("tls"), base, owner="coordinator", insecure=insecure, check_types=False)
    if tls is None and not insecure:
        raise ConfigError(
            "a [tls] table (cert, key, ca and crl) is required unless coordinator.insecure_dev = true",
            reason="config_tls",
        )
    nodes_t = doc.get("nodes", {})
    nodes: dict[str, str] = {}
    audit_keys: dict[str, Ed25519PublicKey] = {}
    for state, table in nodes_t.items():
        _member_code(state, p)
        if not isinstance(table, dict) or not isinstance(table.get("address"), str):
            raise ConfigError(f"nodes.{state}.address is required", reason="config_nodes")
        check_keys(table, _MEMBER_KEYS, f"nodes.{state}", p)
        nodes[state] = table["address"]
        if "audit_public_key" in table:
            audit_keys[state] = _holder_audit_key(base, state, table["audit_public_key"])
    if not nodes:
        raise ConfigError("the coordinator needs at least one [nodes.<STATE>] entry", reason="config_nodes")
    metrics = doc.get("metrics", {})
    log_file = doc.get("logging", {}).get("file")
    audit_t = doc.get("audit", {})
    data_dir = resolve_path(base, str(c.get("data_dir", "var/coordinator")))
    listen = c.get("listen", "")
    if not isinstance(listen, str):
        raise ConfigError("coordinator.listen must be HOST:PORT (a str)", reason="config_type")
    if listen:
        check_listen(listen, "coordinator.listen")
    try:
        cfg = CoordinatorConfig(
            listen=listen,
            data_dir=data_dir,
            nodes=nodes,
            tls=tls,
            kek=resolve_kek_spec(base, str(c.get("kek", ""))),
            insecure_dev=insecure,
            max_batch=int(c.get("max_batch", 10_000)),
            max_deadline_seconds=float(c.get("max_deadline_seconds", 120.0)),
            result_ttl_seconds=float(c.get("result_ttl_seconds", 900.0)),
            grace_seconds=float(c.get("grace_seconds", 5.0)),
            metrics_port=int(metrics["port"]) if "port" in metrics else None,
            metrics_address=str(metrics.get("address", "127.0.0.1")),
            log_file=resolve_path(base, str(log_file)) if log_file else None,
            audit_key=resolve_path(base, str(audit_t["signing_key"]))
            if "signing_key" in audit_t
            else data_dir / "audit-signing.key",
            audit_log=resolve_path(base, str(audit_t["log"]))
            if "log" in audit_t
            else data_dir / "audit.jsonl",
            audit_retention_days=int(audit_t["retention_days"]) if "retention_days" in audit_t else None,
            audit_public_keys=audit_keys,
            raw=doc,
            path=p,
        )
    except (TypeError, ValueError):
        raise ConfigError("coordinator config has a value of the wrong type", reason="config_type") from None
    if not 1 <= cfg.max_batch <= MAX_BATCH_LIMIT:  # a holder could not prove a larger batch anyway
        raise ConfigError(f"coordinator.max_batch must be in 1..{MAX_BATCH_LIMIT}", reason="config_limits")
    check_metrics_port(cfg.metrics_port)
    return cfg


def _member_code(state: str, source: Path) -> None:
    """``[nodes.<STATE>]``: a State code (upper-case); a lower-case ``[nodes.bel]`` gets "did you mean
    [nodes.BEL]?" and the file."""
    try:
        check_state_code(state, f"[nodes.{state}]")
    except ConfigError as exc:
        upper = state.upper()
        hint = f" (did you mean [nodes.{upper}]?)" if STATE_CODE_RE.match(upper) else ""
        raise ConfigError(f"{source}: {exc.message}{hint}", reason=exc.reason) from None


def _holder_audit_key(base: Path, state: str, value: Any) -> Ed25519PublicKey:
    """``nodes.<STATE>.audit_public_key``: a PEM Ed25519 public key file, relative to the config file."""
    name = f"nodes.{state}.audit_public_key"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a file path", reason="config_type")
    path = resolve_path(base, value)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError:
        raise ConfigError(f"{name}: cannot read {path}", reason="config_audit_key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{name}: {path} is not a PEM public key", reason="config_audit_key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{name}: {path} is not an Ed25519 public key", reason="config_audit_key")
    return key
