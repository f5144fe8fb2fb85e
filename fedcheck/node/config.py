"""A State's node configuration, read from one TOML file (``nodes/<STATE>/node.toml``).

Why TOML and relative paths: an operator copies a directory from ``nodes/`` and edits it; every path in the
file is resolved against the file's own directory so the same tree works wherever it is checked out.
Policy tables (``[policy]``, ``[partners.<STATE>]``) are passed as-is to :mod:`fedcheck.trust.policy`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcheck.errors import ConfigError
from fedcheck.node.replay import DEFAULT_MAX_REPLAYS, DEFAULT_MAX_WAITERS

__all__ = [
    "MAX_BATCH_LIMIT",
    "MAX_FREE_REPLAYS_LIMIT",
    "MAX_REPLAY_WAITERS_LIMIT",
    "NodeConfig",
    "QuerierSettings",
    "TlsPaths",
    "load_node_config",
    "parse_tls",
    "resolve_kek_spec",
    "resolve_path",
]


#: largest node.max_batch: the proof transcript limit (batch length is a 16-bit field)
MAX_BATCH_LIMIT = 65_535
#: largest node.max_free_replays: free answers of one duplicated round stay a handful (coordinator retries)
MAX_FREE_REPLAYS_LIMIT = 100
#: largest node.max_replay_waiters: each waiter holds one of the node's 16 RPC worker threads for up to 5 s,
#: and the request it waits for holds another
MAX_REPLAY_WAITERS_LIMIT = 15


def resolve_path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def resolve_kek_spec(base: Path, spec: str) -> str:
    """``file:`` KEK paths are relative to the config file, like every other path."""
    if spec.startswith("file:"):
        return "file:" + str(resolve_path(base, spec[5:]))
    return spec


@dataclass(frozen=True)
class TlsPaths:
    cert: Path
    key: Path
    ca: Path
    crl: Path | None


@dataclass(frozen=True)
class QuerierSettings:
    """Defaults for ``fedcheck query`` run with this node's identity."""

    unit: str = ""
    official: str = ""
    purpose: str = "border-screening"
    legal_basis: str = ""
    deadline_seconds: float = 30.0
    #: largest holder index this querier downloads ([querier] max_index_mb, default 512 MB)
    max_index_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class NodeConfig:
    state: str
    listen: str
    data_dir: Path
    kek: str
    tls: TlsPaths | None
    insecure_dev: bool = False
    epoch_seconds: int = 86400
    max_batch: int = 4096
    index_chunk_bytes: int = 256 * 1024
    workers: int = 0
    grace_seconds: float = 5.0
    list_poll_seconds: float = 2.0
    max_skew_seconds: int = 600
    #: free answers of one answered, duplicated round (then ``replay_limit``); fedcheck.node.replay
    max_free_replays: int = DEFAULT_MAX_REPLAYS
    #: duplicates that may wait on one pending round at a time (more get ``round_in_progress`` at once)
    max_replay_waiters: int = DEFAULT_MAX_WAITERS
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    log_file: Path | None = None
    coordinator: str = ""
    partners: tuple[str, ...] = ()
    querier: QuerierSettings = field(default_factory=QuerierSettings)
    #: the raw TOML document (policy tables are read by fedcheck.trust.policy)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    path: Path | None = None


def _get(table: dict[str, Any], key: str, kind: type, default: Any = None, *, where: str) -> Any:
    value = table.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key} must be a {kind.__name__}", reason="config_type")
    return value


def parse_tls(
    table: Any, base: Path, *, owner: str, insecure: bool, check_types: bool = True
) -> TlsPaths | None:
    """The ``[tls]`` table of a node or coordinator config (``None`` when there is none: whether that is
    allowed is the caller's rule). The CRL is required unless ``<owner>.insecure_dev``: without it a revoked
    partner or coordinator certificate would still be accepted.

    ``check_types=False`` keeps the coordinator loader's historical leniency (``crl`` taken as written, not
    type-checked) so no configuration it accepted before is refused now."""
    if not isinstance(table, dict):
        return None
    crl = _get(table, "crl", str, where="tls") if check_types else table.get("crl")
    if not crl and not insecure:
        raise ConfigError(
            f"tls.crl is required (revocation is checked on every call); only {owner}.insecure_dev may"
            " omit it",
            reason="config_tls",
        )
    try:
        return TlsPaths(
            resolve_path(base, table["cert"]),
            resolve_path(base, table["key"]),
            resolve_path(base, table["ca"]),
            resolve_path(base, crl) if crl else None,
        )
    except KeyError as exc:
        raise ConfigError(f"tls.{exc.args[0]} is required", reason="config_tls") from None


def load_node_config(path: str | Path) -> NodeConfig:
    """Parse and validate a node TOML file; raises :class:`ConfigError` naming the offending key."""
    p = Path(path).resolve()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError:
        raise ConfigError(f"cannot read node config {p}", reason="config_missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"node config is not valid TOML: {exc}", reason="config_syntax") from None
    base = p.parent
    node = doc.get("node")
    if not isinstance(node, dict):
        raise ConfigError("node config needs a [node] table", reason="config_missing_table")
    state = _get(node, "state", str, where="node")
    if not state or not state.isalnum() or not state.isupper():
        raise ConfigError("node.state must be an upper-case State code", reason="config_state")
    insecure = bool(_get(node, "insecure_dev", bool, False, where="node"))
    tls = parse_tls(doc.get("tls"), base, owner="node", insecure=insecure)
    if tls is None and not insecure:
        raise ConfigError(
            "a [tls] table (cert, key, ca, optional crl) is required", reason="config_tls"
        )
    if tls is None:
        # insecure_dev only drops transport security: request envelopes are still verified against the
        # federation CA (and CRL), so the CA (with the node's own certificate) stays required
        raise ConfigError(
            "node.insecure_dev = true still verifies signed requests: a [tls] table with the federation "
            "ca (and the node's cert/key) is required",
            reason="config_tls",
        )
    metrics = doc.get("metrics", {})
    logging_t = doc.get("logging", {})
    coord = doc.get("coordinator", {})
    q = doc.get("querier", {})
    partners = doc.get("partners", {})
    if not isinstance(partners, dict):
        raise ConfigError("[partners] must be a table of State codes", reason="config_partners")
    log_file = _get(logging_t, "file", str, where="logging")
    cfg = NodeConfig(
        state=state,
        listen=_get(node, "listen", str, "127.0.0.1:0", where="node"),
        data_dir=resolve_path(base, _get(node, "data_dir", str, f"var/{state}", where="node")),
        kek=resolve_kek_spec(base, _get(node, "kek", str, "", where="node")),
        tls=tls,
        insecure_dev=insecure,
        epoch_seconds=_get(node, "epoch_seconds", int, 86400, where="node"),
        max_batch=_get(node, "max_batch", int, 4096, where="node"),
        index_chunk_bytes=_get(node, "index_chunk_bytes", int, 256 * 1024, where="node"),
        workers=_get(node, "workers", int, 0, where="node"),
        grace_seconds=_get(node, "grace_seconds", float, 5.0, where="node"),
        list_poll_seconds=_get(node, "list_poll_seconds", float, 2.0, where="node"),
        max_skew_seconds=_get(node, "max_skew_seconds", int, 600, where="node"),
        max_free_replays=_get(node, "max_free_replays", int, DEFAULT_MAX_REPLAYS, where="node"),
        max_replay_waiters=_get(node, "max_replay_waiters", int, DEFAULT_MAX_WAITERS, where="node"),
        metrics_port=_get(metrics, "port", int, None, where="metrics"),
        metrics_address=_get(metrics, "address", str, "127.0.0.1", where="metrics"),
        log_file=resolve_path(base, log_file) if log_file else None,
        coordinator=_get(coord, "address", str, "", where="coordinator"),
        partners=tuple(sorted(partners)),
        querier=QuerierSettings(
            unit=_get(q, "unit", str, "", where="querier"),
            official=_get(q, "official", str, "", where="querier"),
            purpose=_get(q, "purpose", str, "border-screening", where="querier"),
            legal_basis=_get(q, "legal_basis", str, "", where="querier"),
            deadline_seconds=_get(q, "deadline_seconds", float, 30.0, where="querier"),
            max_index_bytes=_get(q, "max_index_mb", int, 512, where="querier") * 1024 * 1024,
        ),
        raw=doc,
        path=p,
    )
    if not cfg.kek:
        raise ConfigError(
            "node.kek is required (file:PATH or env:VAR): the store is sealed at rest", reason="config_kek"
        )
    if not 1 <= cfg.max_batch <= MAX_BATCH_LIMIT:
        # the VOPRF proof transcript encodes the batch length in 16 bits (RFC 9497 batched DLEQ)
        raise ConfigError(f"node.max_batch must be in 1..{MAX_BATCH_LIMIT}", reason="config_limits")
    if not 1 <= cfg.querier.max_index_bytes // (1024 * 1024) <= 65536:
        raise ConfigError("querier.max_index_mb must be in 1..65536", reason="config_limits")
    if not 1024 <= cfg.index_chunk_bytes <= 4 * 1024 * 1024:
        raise ConfigError("node.index_chunk_bytes must be in 1 KiB..4 MiB", reason="config_limits")
    if not 0 <= cfg.max_free_replays <= MAX_FREE_REPLAYS_LIMIT:
        raise ConfigError(
            f"node.max_free_replays must be in 0..{MAX_FREE_REPLAYS_LIMIT}", reason="config_limits"
        )
    if not 0 <= cfg.max_replay_waiters <= MAX_REPLAY_WAITERS_LIMIT:
        raise ConfigError(
            f"node.max_replay_waiters must be in 0..{MAX_REPLAY_WAITERS_LIMIT}", reason="config_limits"
        )
    if cfg.epoch_seconds < 10:
        raise ConfigError("node.epoch_seconds must be at least 10", reason="config_epoch")
    return cfg
