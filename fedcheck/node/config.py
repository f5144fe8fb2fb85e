"""A State's node configuration, read from one TOML file (``nodes/<STATE>/node.toml``).

Why TOML and relative paths: an operator copies a directory from ``nodes/`` and edits it; every path in the
file is resolved against the file's own directory so the same tree works wherever it is checked out.
Policy tables (``[policy]``, ``[partners.<STATE>]``) are passed as-is to :mod:`fedcheck.trust.policy`.

Why strict: a typo (``epoch_second``, ``[querrier]``) silently falling back to a default is worse than a
refusal, so an unknown table or key is a :class:`~fedcheck.errors.ConfigError` naming it and the file (with a
"did you mean" suggestion). ``[fuzzy]`` and ``[policy.*]`` are checked by their own parsers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcheck.codes import STATE_CODE_RE, did_you_mean
from fedcheck.errors import ConfigError, VerificationError
from fedcheck.node.replay import DEFAULT_MAX_REPLAYS, DEFAULT_MAX_WAITERS
from fedcheck.trust.atrest import explain_unsealing
from fedcheck.trust.pki import check_own_certificate, load_crl
from fedcheck.trust.policy import POLICY_TABLE_KEYS, NodePolicy

__all__ = [
    "DEFAULT_CRL_SYNC_SECONDS",
    "MAX_BATCH_LIMIT",
    "MAX_CRL_SYNC_SECONDS",
    "MAX_FREE_REPLAYS_LIMIT",
    "MAX_REPLAY_WAITERS_LIMIT",
    "STATE_CODE_RE",
    "NodeConfig",
    "QuerierSettings",
    "TlsPaths",
    "check_keys",
    "check_listen",
    "check_metrics_port",
    "check_state_code",
    "check_tables",
    "check_tls_files",
    "check_tls_identity",
    "explain_tls_key",
    "load_node_config",
    "parse_tls",
    "require_listen",
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
_TLS_KEYS = ("cert", "key", "ca", "crl", "crl_sync_seconds")
#: default [tls] crl_sync_seconds: how often a node fetches the coordinator's CRL (0 = never)
DEFAULT_CRL_SYNC_SECONDS = 300.0
#: largest [tls] crl_sync_seconds (a week; CRLs are valid 30 days by default)
MAX_CRL_SYNC_SECONDS = 7 * 86400
_NODE_KEYS = (
    "state", "listen", "data_dir", "kek", "insecure_dev", "epoch_seconds", "max_batch", "index_chunk_bytes",
    "workers", "grace_seconds", "list_poll_seconds", "max_skew_seconds", "max_free_replays",
    "max_replay_waiters",
)
_QUERIER_TABLE_KEYS = ("unit", "official", "purpose", "legal_basis", "deadline_seconds", "max_index_mb")
#: top-level tables of a node config and their keys (None: checked by the table's own parser)
_NODE_TABLES: dict[str, tuple[str, ...] | None] = {
    "node": _NODE_KEYS,
    "tls": _TLS_KEYS,
    "metrics": ("port", "address"),
    "logging": ("file",),
    "audit": ("signing_key", "log", "retention_days"),
    "coordinator": ("address",),
    "querier": _QUERIER_TABLE_KEYS,
    "fuzzy": None,  # fedcheck.node.fuzzy.FuzzySettings (unknown keys refused there)
    "policy": None,  # fedcheck.trust.policy (unknown keys refused there)
    "partners": None,  # State codes
}


def check_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str, source: Path) -> None:
    """Refuse unknown keys of ``table`` (``where`` is its dotted name, ``""`` for the document's top level):
    one :class:`ConfigError` naming every unknown key and ``source``, with a "did you mean" suggestion."""
    known = sorted(set(allowed))
    problems: list[str] = []
    for key in table:
        if key in known:
            continue
        close = did_you_mean(str(key), known)
        if where:
            text = f"unknown key {where}.{key}"
            hint = f"did you mean {where}.{close}?" if close else f"known keys: {', '.join(known)}"
        elif isinstance(table[key], dict):
            text = f"unknown table [{key}]"
            hint = f"did you mean [{close}]?" if close else "known tables: " + ", ".join(
                f"[{k}]" for k in known
            )
        else:
            text = f"unknown top-level key {key!r}"
            hint = "keys belong in a table such as [node]"
        problems.append(f"{text} ({hint})")
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}", reason="config_unknown_key")


def check_tables(doc: Mapping[str, Any], tables: Mapping[str, Iterable[str] | None], source: Path) -> None:
    """Refuse unknown top-level tables of ``doc`` and unknown keys of each known table (``tables``: table name
    -> its keys, ``None`` for a table checked by its own parser); a known name that is no table is
    ``config_type``."""
    check_keys(doc, tables, "", source)
    for name, keys in tables.items():
        table = _table(doc, name)
        if keys is not None:
            check_keys(table, keys, name, source)


def check_state_code(code: Any, where: str) -> str:
    """A State (or federation) code as everywhere in fedcheck: upper-case, 2-8 letters/digits (e.g. FRA)."""
    if not isinstance(code, str) or not STATE_CODE_RE.match(code):
        raise ConfigError(
            f"{where} must be an upper-case State code such as FRA (ISO 3166-1 alpha-3; 2-8 letters/digits),"
            f" not {code!r}",
            reason="config_state",
        )
    return code


def check_listen(address: str, where: str) -> str:
    """``HOST:PORT`` (``[v6]:PORT``; ``unix:PATH``) for a server's ``listen``; port 0 = any free port."""
    if address.startswith(("unix:", "unix-abstract:")):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"{where} must be HOST:PORT (e.g. 127.0.0.1:50061), not {address!r}", reason="config_listen"
        )
    return address


def require_listen(listen: str, owner: str, source: Path | None, example: str) -> str:
    """``<owner>.listen`` of a server about to serve: without it the server refuses to start (rather than
    bind a random port); ``example`` is the hint in parentheses."""
    if not listen:
        where = f" in {source}" if source else ""
        raise ConfigError(
            f'{owner}.listen is required to serve{where}: set listen = "HOST:PORT" in [{owner}] ({example})',
            reason="config_listen",
        )
    return listen


def check_metrics_port(port: int | None) -> None:
    """``[metrics] port``: absent (no metrics endpoint) or a TCP port."""
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError("metrics.port must be in 1..65535", reason="config_limits")


def _table(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table", reason="config_type")
    return value


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
    #: [tls] crl_sync_seconds: fetch the coordinator's CRL this often and install it when newer (0 = off;
    #: only with [coordinator] address and [tls] crl; fedcheck.trust.crlsync)
    crl_sync_seconds: float = DEFAULT_CRL_SYNC_SECONDS
    #: the raw TOML document (policy tables are read by fedcheck.trust.policy)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    path: Path | None = None
    #: the parsed ``[policy]`` tables (holder and querier side), checked by :func:`load_node_config`
    policy: NodePolicy = field(default_factory=lambda: NodePolicy.from_toml({}), repr=False)


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
    for name in ("cert", "key", "ca"):
        if name in table and not isinstance(table[name], str):
            raise ConfigError(f"tls.{name} must be a file path (a str)", reason="config_type")
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


def check_tls_files(paths: TlsPaths, source: Path | None) -> None:
    """Each ``[tls]`` file must be a readable file: a :class:`ConfigError` names the key, the path and the
    config file (``TlsIdentity.load`` alone only says that *some* file is missing)."""
    where = f" in {source}" if source is not None else ""
    for key, path in (("cert", paths.cert), ("key", paths.key), ("ca", paths.ca), ("crl", paths.crl)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"tls.{key} = {path}{where}: cannot read it ({exc.strerror or exc})", reason="tls_files"
            ) from None
        if not os.path.isfile(path):
            raise ConfigError(f"tls.{key} = {path}{where}: not a file", reason="tls_files")


def explain_tls_key(paths: TlsPaths, kek_key: str) -> contextlib.AbstractContextManager[None]:
    """Around loading the ``[tls]`` key: its errors name the file and the KEK setting (``node.kek`` /
    ``coordinator.kek``). A key sealed under another KEK stays a :class:`VerificationError` (the type callers
    and tests expect), now saying which file could not be opened instead of only "verification failed"."""
    return explain_unsealing(
        f"tls.key {paths.key}",
        f"the KEK of {kek_key}",
        mismatch="a key sealed under another KEK (another node's key?), or the file was altered",
        sealed=f"set {kek_key} (file:PATH or env:VAR)",
        reason="tls_key_unsealable",
        error=VerificationError,
        name_errors=("key_format", "key_unreadable"),
    )


def check_tls_identity(
    cert_pem: bytes, key_pem: bytes, ca_pem: bytes, paths: TlsPaths, *, role: str, state: str
) -> None:
    """Refuse to start with a TLS identity peers would refuse, or that names someone else (the PEMs as loaded
    from ``paths``, the key opened with the KEK): the certificate must match its key, chain to ``[tls] ca``,
    be valid now, be ``<role>.<state>`` and not be revoked in ``[tls] crl``
    (:func:`fedcheck.trust.pki.check_own_certificate`). Raises :class:`ConfigError`."""
    crl = None
    if paths.crl is not None:
        try:
            crl = load_crl(paths.crl)
        except ConfigError:
            raise ConfigError(
                f"tls.crl = {paths.crl}: not a readable revocation list (PEM or DER, at most 8 MB)",
                reason="crl_unreadable",
            ) from None
    check_own_certificate(
        cert_pem,
        key_pem,
        ca_pem,
        crl,
        role=role,
        state=state,
        cert_name=f"TLS certificate {paths.cert} (tls.cert)",
        key_name=f"private key {paths.key} (tls.key)",
        ca_name=f"CA {paths.ca} (tls.ca)",
        crl_name=f"CRL {paths.crl} (tls.crl)",
    )


def load_node_config(path: str | Path) -> NodeConfig:
    """Parse and validate a node TOML file; raises :class:`ConfigError` naming the offending key.

    ``node.listen`` may be absent here (``watchlist``, ``query`` and ``rotate-kek`` do not listen): the node
    then refuses to *serve* (:meth:`fedcheck.node.app.NodeApp.start`) instead of binding a random port."""
    p = Path(path).resolve()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError:
        raise ConfigError(f"cannot read node config {p}", reason="config_missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"node config {p} is not valid TOML: {exc}", reason="config_syntax") from None
    base = p.parent
    node = doc.get("node")
    if not isinstance(node, dict):
        raise ConfigError(f"node config {p} needs a [node] table", reason="config_missing_table")
    check_tables(doc, _NODE_TABLES, p)
    # [policy] itself: its sub-tables (or the flat form); what is inside them is checked by the policy parser
    check_keys(_table(doc, "policy"), POLICY_TABLE_KEYS, "policy", p)
    if "state" not in node:
        raise ConfigError("node.state is required (this node's State code, e.g. FRA)", reason="config_state")
    state = check_state_code(node["state"], "node.state")
    insecure = bool(_get(node, "insecure_dev", bool, False, where="node"))
    tls = parse_tls(doc.get("tls"), base, owner="node", insecure=insecure)
    if tls is None and not insecure:
        raise ConfigError(
            "a [tls] table (cert, key, ca and crl) is required; only node.insecure_dev may omit crl",
            reason="config_tls",
        )
    if tls is None:
        # insecure_dev only drops transport security: request envelopes are still verified against the
        # federation CA (and CRL), so the CA (with the node's own certificate) stays required
        raise ConfigError(
            "node.insecure_dev = true still verifies signed requests: a [tls] table with the federation "
            "ca (and the node's cert/key) is required",
            reason="config_tls",
        )
    metrics = _table(doc, "metrics")
    logging_t = _table(doc, "logging")
    coord = _table(doc, "coordinator")
    q = _table(doc, "querier")
    audit_t = _table(doc, "audit")
    partners = doc.get("partners", {})
    if not isinstance(partners, dict):
        raise ConfigError("[partners] must be a table of State codes", reason="config_partners")
    for code in partners:
        check_state_code(code, f"partners.{code}")
    for key in ("signing_key", "log"):
        _get(audit_t, key, str, where="audit")
    retention = _get(audit_t, "retention_days", int, where="audit")
    if retention is not None and retention < 1:
        raise ConfigError("audit.retention_days must be at least 1", reason="config_limits")
    listen = _get(node, "listen", str, "", where="node")
    if listen:
        check_listen(listen, "node.listen")
    log_file = _get(logging_t, "file", str, where="logging")
    crl_sync = _get(_table(doc, "tls"), "crl_sync_seconds", float, DEFAULT_CRL_SYNC_SECONDS, where="tls")
    if crl_sync != 0 and not 1 <= crl_sync <= MAX_CRL_SYNC_SECONDS:
        raise ConfigError(
            f"tls.crl_sync_seconds must be 0 (off) or in 1..{MAX_CRL_SYNC_SECONDS}, not {crl_sync:g}",
            reason="config_limits",
        )
    cfg = NodeConfig(
        state=state,
        listen=listen,
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
        crl_sync_seconds=crl_sync,
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
    check_metrics_port(cfg.metrics_port)
    # policy tables: unknown keys, State codes and values are refused by their parser (fedcheck.trust.policy);
    # the error names this file, as every other config error does
    try:
        policy = NodePolicy.from_toml(doc)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc.message}", reason=exc.reason) from None
    return dataclasses.replace(cfg, policy=policy)
