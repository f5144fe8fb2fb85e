"""Coordinator configuration from TOML: its TLS identity, where each State's node listens, limits."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedcheck.errors import ConfigError
from fedcheck.node.config import MAX_BATCH_LIMIT, TlsPaths, parse_tls, resolve_kek_spec, resolve_path

__all__ = ["CoordinatorConfig", "load_coordinator_config"]


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


def load_coordinator_config(path: str | Path) -> CoordinatorConfig:
    p = Path(path).resolve()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError:
        raise ConfigError(f"cannot read coordinator config {p}", reason="config_missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"coordinator config is not valid TOML: {exc}", reason="config_syntax") from None
    base = p.parent
    c = doc.get("coordinator")
    if not isinstance(c, dict):
        raise ConfigError("coordinator config needs a [coordinator] table", reason="config_missing_table")
    insecure = bool(c.get("insecure_dev", False))
    tls = parse_tls(doc.get("tls"), base, owner="coordinator", insecure=insecure, check_types=False)
    if tls is None and not insecure:
        raise ConfigError(
            "a [tls] table is required (or coordinator.insecure_dev = true)", reason="config_tls"
        )
    nodes_t = doc.get("nodes", {})
    nodes: dict[str, str] = {}
    audit_keys: dict[str, Ed25519PublicKey] = {}
    for state, table in nodes_t.items():
        if not isinstance(table, dict) or not isinstance(table.get("address"), str):
            raise ConfigError(f"nodes.{state}.address is required", reason="config_nodes")
        nodes[state] = table["address"]
        if "audit_public_key" in table:
            audit_keys[state] = _holder_audit_key(base, state, table["audit_public_key"])
    if not nodes:
        raise ConfigError("the coordinator needs at least one [nodes.<STATE>] entry", reason="config_nodes")
    metrics = doc.get("metrics", {})
    log_file = doc.get("logging", {}).get("file")
    audit_t = doc.get("audit", {})
    if not isinstance(audit_t, dict):
        raise ConfigError("[audit] must be a table", reason="config_type")
    data_dir = resolve_path(base, str(c.get("data_dir", "var/coordinator")))
    try:
        cfg = CoordinatorConfig(
            listen=str(c.get("listen", "127.0.0.1:0")),
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
        )
    except (TypeError, ValueError):
        raise ConfigError("coordinator config has a value of the wrong type", reason="config_type") from None
    if not 1 <= cfg.max_batch <= MAX_BATCH_LIMIT:  # a holder could not prove a larger batch anyway
        raise ConfigError(f"coordinator.max_batch must be in 1..{MAX_BATCH_LIMIT}", reason="config_limits")
    return cfg


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
