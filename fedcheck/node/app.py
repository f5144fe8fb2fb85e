"""Wiring a node from its configuration: store, epochs, policy, budget, audit, TLS, gRPC server, metrics, and
the CRL sync with the coordinator (``[tls] crl_sync_seconds``; :mod:`fedcheck.trust.crlsync`).

Why separate from :mod:`fedcheck.cli.node`: tests and the demo start nodes in-process or as processes from the
same code path; the CLI only parses arguments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedcheck._proto.fedcheck.v1 import node_pb2, node_pb2_grpc
from fedcheck.errors import ConfigError
from fedcheck.node import metrics
from fedcheck.node.announce import AnnouncementSigner
from fedcheck.node.config import (
    NodeConfig,
    check_tls_files,
    check_tls_identity,
    explain_tls_key,
    require_listen,
    resolve_path,
)
from fedcheck.node.epochs import Audience, Epoch, EpochManager
from fedcheck.node.fuzzy import FuzzyService, FuzzySettings
from fedcheck.node.fuzzyseal import AnswerSigner
from fedcheck.node.querier import QuerierCache, QueryRunner, open_querier_audit
from fedcheck.node.replay import ReplayGuard
from fedcheck.node.service import AuditFn, NodeService, audience_key
from fedcheck.protocol.exact import IndexEntry
from fedcheck.rpc.clients import GrpcCoordinatorClient, make_channel
from fedcheck.rpc.server import RunningServer, start_server
from fedcheck.rpc.servicers import NodeServicer
from fedcheck.rpc.tls import PeerVerifier, TlsIdentity
from fedcheck.storage.sqlite import SqliteWatchlistStore
from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey, explain_kek_mismatch, load_kek
from fedcheck.trust.audit import SignedHead, ensure_signing_key, load_signing_key, open_audit_log
from fedcheck.trust.budget import BudgetLedger
from fedcheck.trust.crlsync import CrlDecision, CrlSyncer, sync_crl_file

__all__ = [
    "CRL_FETCH_TIMEOUT_S",
    "NodeApp",
    "audit_paths",
    "crl_syncer",
    "fetch_crl_once",
    "load_tls",
    "open_audit",
    "open_querier",
    "open_store",
]

_log = logging.getLogger("fedcheck.node")

#: deadline of one GetCrl call to the coordinator
CRL_FETCH_TIMEOUT_S = 20.0


def open_store(cfg: NodeConfig, kek: KeyEncryptionKey | None = None) -> SqliteWatchlistStore:
    """The node's sealed watchlist store (keyring and database under ``data_dir``); a KEK that does not open
    the keyring is named with ``node.kek``, the config file and the keyring path (``keyring_unsealable``)."""
    kek = kek or load_kek(cfg.kek, setting="node.kek", source=cfg.path)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    keyring = cfg.data_dir / "keyring.json"
    with explain_kek_mismatch(f"the store keyring {keyring}", cfg.kek, setting="node.kek", source=cfg.path,
                              reason="keyring_unsealable"):
        sealer = EnvelopeSealer.open_or_create(keyring, kek)
    return SqliteWatchlistStore(cfg.data_dir / "watchlist.sqlite", sealer)


def load_tls(cfg: NodeConfig, kek: KeyEncryptionKey | None) -> TlsIdentity | None:
    if cfg.tls is None:
        return None
    check_tls_files(cfg.tls, cfg.path)
    with explain_tls_key(cfg.tls, "node.kek"):
        return TlsIdentity.load(cfg.tls.cert, cfg.tls.key, cfg.tls.ca, cfg.tls.crl, kek=kek)


def audit_paths(cfg: NodeConfig) -> tuple[Path, Path]:
    """(signing key, log) paths of the node's audit log: ``[audit] signing_key`` / ``log`` or ``data_dir``."""
    table = cfg.raw.get("audit", {})
    key_path = (
        resolve_path(cfg.path.parent if cfg.path else cfg.data_dir, str(table["signing_key"]))
        if "signing_key" in table
        else cfg.data_dir / "audit-signing.key"
    )
    log_path = (
        resolve_path(cfg.path.parent if cfg.path else cfg.data_dir, str(table["log"]))
        if "log" in table
        else cfg.data_dir / "audit.jsonl"
    )
    return key_path, log_path


def open_audit(cfg: NodeConfig, kek: KeyEncryptionKey) -> tuple[AuditFn, Callable[[], None]]:
    """The node's signed, hash-chained audit log (:mod:`fedcheck.trust.audit`); the signing key is created on
    first start (or by ``fedcheck node dev-secrets``), sealed under the KEK, with its public half next to it
    for the oversight body. Appending returns the signed head, which travels with each evaluation reply.

    The log is locked while open: a second node on the same ``data_dir`` gets ``audit_locked`` naming it."""
    key_path, log_path = audit_paths(cfg)
    ensure_signing_key(key_path, kek)
    log = open_audit_log(
        log_path,
        load_signing_key(key_path, kek),
        retention_days=cfg.raw.get("audit", {}).get("retention_days"),
        owner="node",
        data_dir=cfg.data_dir,
    )

    def append(event: Mapping[str, Any]) -> SignedHead:
        return log.append_anchored(event)[1]

    return append, log.close


class NodeApp:
    """A running (or ready-to-run) node."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        kek = load_kek(cfg.kek, setting="node.kek", source=cfg.path)
        # the TLS identity is checked before anything under data_dir is opened: a node must not start with a
        # certificate that is not its own node.<STATE>, expired, revoked, of another CA or not its key's
        self.tls = load_tls(cfg, kek)
        if self.tls is not None and cfg.tls is not None:
            check_tls_identity(
                self.tls.cert_pem, self.tls.key_pem, self.tls.ca_pem, cfg.tls, role="node", state=cfg.state
            )
        self.policy = cfg.policy
        with contextlib.ExitStack() as opened:  # a failure below closes what was opened so far
            # the audit log's lock also keeps a second node off this data_dir (audit_locked names it)
            self.audit, self._close_audit = open_audit(cfg, kek)
            opened.callback(self._close_audit)
            self.store = open_store(cfg, kek)
            opened.callback(self.store.close)
            # insecure_dev: plain-text transport (the TLS hop names itself in metadata), but signed requests
            # are still verified against the federation CA and CRL of [tls]
            self.verifier = PeerVerifier(self.tls, insecure_dev=cfg.insecure_dev)
            self.budget = BudgetLedger(
                cfg.data_dir / "budget.sqlite",
                self.policy.holder.budget_limits(),
                epoch_retry_after_s=cfg.epoch_seconds,
                # per-epoch budgets count per epoch_seconds window: a list import (new epoch) must not refill
                # them
                epoch_window_seconds=cfg.epoch_seconds,
            )
            opened.callback(self.budget.close)
            self.replay = ReplayGuard(
                cfg.data_dir / "replay.sqlite",
                window_seconds=cfg.max_skew_seconds,
                max_replays=cfg.max_free_replays,
                max_waiters=cfg.max_replay_waiters,
            )
            opened.callback(self.replay.close)
            self._init_services(cfg)
            opened.pop_all()
        self.server: RunningServer | None = None
        self._stop_metrics: Callable[[], None] | None = None
        self._stopped = threading.Event()
        #: background CRL sync with the coordinator, while serving ([tls] crl_sync_seconds)
        self.crl_sync: CrlSyncer | None = None

    def _init_services(self, cfg: NodeConfig) -> None:
        self.epochs = EpochManager(
            self.store,
            cfg.state,
            epoch_seconds=cfg.epoch_seconds,
            audiences=self._audiences,
            workers=cfg.workers,
            poll_seconds=cfg.list_poll_seconds,
            on_progress=metrics.EPOCH_BUILD_PROGRESS.set,
            on_epoch=self._on_epoch,
            policy_digest=policy_digest(cfg.raw),
        )
        self.service = NodeService(
            state=cfg.state,
            epochs=self.epochs,
            policy=self.policy.holder,
            budget=self.budget,
            audit=self.audit,
            ca_pem=self.tls.ca_pem if self.tls else b"",
            crl=self.verifier.crl,
            max_batch=cfg.max_batch,
            index_chunk_bytes=cfg.index_chunk_bytes,
            max_skew_seconds=cfg.max_skew_seconds,
            replay=self.replay,
            # epoch announcements signed with the node certificate key: queriers verify keys and indexes
            # that reach them through the coordinator
            announcer=(
                AnnouncementSigner(cfg.state, self.tls.cert_pem, self.tls.key_pem) if self.tls else None
            ),
        )
        fuzzy = FuzzySettings.from_toml(cfg.raw)
        if fuzzy.enabled:  # fuzzy (Paillier) rounds: served and advertised in NodeInfo.modes
            self.service.fuzzy = FuzzyService(
                state=cfg.state, store=self.store, epochs=self.epochs, policy=self.policy.holder,
                budget=self.budget, audit=self.audit, ca_pem=self.tls.ca_pem if self.tls else b"",
                crl=self.verifier.crl, settings=fuzzy, max_skew_seconds=cfg.max_skew_seconds,
                replay=self.replay,
                # every fuzzy answer signed with the node certificate key (fedcheck.node.fuzzyseal)
                signer=AnswerSigner(cfg.state, self.tls.cert_pem, self.tls.key_pem) if self.tls else None,
            )

    def _audiences(self) -> list[Audience]:
        out: list[Audience] = []
        seen: set[str] = set()
        for partners in self.policy.holder.audiences().values():
            for code in partners:
                p = self.policy.holder.partners[code]
                key = audience_key(p.audience_id, p.modes)
                if key in seen:
                    continue
                seen.add(key)
                out.append(Audience(key, self._selector(code), with_labels="exact" in p.modes))
        return out

    def _selector(self, partner: str) -> Callable[[list[IndexEntry]], list[IndexEntry]]:
        def select(entries: list[IndexEntry]) -> list[IndexEntry]:
            return self.policy.holder.filter_entries(partner, entries)

        return select

    @staticmethod
    def _on_epoch(epoch: Epoch) -> None:
        metrics.INDEX_SIZE.set(epoch.size)
        metrics.EPOCH_STARTED.set(epoch.started_unix_ms / 1000)

    def start(self) -> int:
        """Bind the gRPC server and metrics, then start epochs; health turns SERVING once an epoch is ready.

        Refuses (:class:`ConfigError`, nothing left running) without ``node.listen``, or when the listen or
        metrics address cannot be bound (e.g. another node holds the port)."""
        example = 'e.g. "127.0.0.1:50061"; port 0 only if any free port will do'
        listen = require_listen(self.cfg.listen, "node", self.cfg.path, example)
        servicer = NodeServicer(self.service, self.verifier)
        self.server = start_server(
            listen,
            [lambda s: node_pb2_grpc.add_NodeServicer_to_server(servicer, s)],
            [node_pb2.DESCRIPTOR.services_by_name["Node"].full_name],
            tls=None if self.cfg.insecure_dev else self.tls,
            insecure_dev=self.cfg.insecure_dev,
            what="node.listen",
        )
        try:
            if self.cfg.metrics_port is not None:
                self._stop_metrics = metrics.serve_metrics(self.cfg.metrics_port, self.cfg.metrics_address)
            self.epochs.start()
        except BaseException:
            self.server.stop(0)
            self.server = None
            if self._stop_metrics is not None:
                self._stop_metrics()
                self._stop_metrics = None
            raise
        threading.Thread(target=self._mark_ready, name="ready", daemon=True).start()
        self.crl_sync = crl_syncer(self.cfg, self.tls)
        if self.crl_sync is not None:
            self.crl_sync.start()
        return self.server.port

    def _mark_ready(self) -> None:
        while not self._stopped.is_set():
            if self.epochs.wait_ready(0.2):
                if self.server is not None:
                    self.server.set_serving(True)
                _log.info(
                    "node serving",
                    extra={"state": self.cfg.state, "port": self.server.port if self.server else 0},
                )
                return

    def stop(self) -> None:
        """Graceful: health NOT_SERVING, drain in-flight calls for ``grace_seconds``, then close stores."""
        self._stopped.set()
        if self.crl_sync is not None:
            self.crl_sync.stop()
            self.crl_sync = None
        if self.server is not None:
            self.server.stop(self.cfg.grace_seconds)
        if self._stop_metrics is not None:
            self._stop_metrics()
            self._stop_metrics = None
        self.epochs.stop()
        self.budget.close()
        self.replay.close()
        self._close_audit()
        self.store.close()

    def serve_forever(self) -> int:
        try:
            port = self.start()
        except BaseException:
            self.stop()  # close stores and release the data_dir lock before the error is reported
            raise
        done = threading.Event()

        def _signal(signum: int, _frame: object) -> None:
            done.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        print(json.dumps({"event": "listening", "state": self.cfg.state, "port": port}), flush=True)
        while not done.wait(0.5):
            pass
        self.stop()
        print(json.dumps({"event": "stopped", "state": self.cfg.state}), flush=True)
        return 0


def policy_digest(raw: Mapping[str, Any]) -> str:
    """SHA-256 of the node's ``[policy]`` tables in canonical JSON: what an epoch's indexes were built under.

    Why: partners cache finalised outputs per holder epoch (and budgets must not refill), so a policy change
    (a partner removed, an entry withheld, label fields narrowed) must start a new epoch rather than leave the
    old indexes and the partners' caches serving what the new policy no longer allows.
    """
    text = json.dumps(raw.get("policy", {}), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def open_querier(cfg: NodeConfig) -> tuple[QueryRunner, Callable[[], None]]:
    """A :class:`QueryRunner` with this node's identity, talking to the configured coordinator.

    Returns the runner and a ``close()`` callable. Request signatures need the node's certificate key, even if
    the transport is ``insecure_dev``.
    """
    if not cfg.coordinator:
        raise ConfigError("[coordinator] address is required to run queries", reason="config_coordinator")
    if cfg.tls is None:
        raise ConfigError("a [tls] table is required to sign requests", reason="config_tls")
    kek = load_kek(cfg.kek, setting="node.kek", source=cfg.path)
    tls = load_tls(cfg, kek)
    assert tls is not None
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    sealer = EnvelopeSealer.open_or_create(cfg.data_dir / "keyring.json", kek)
    cache = QuerierCache(cfg.data_dir / "querier-cache.sqlite", sealer)
    client = _coordinator_client(cfg, tls)
    runner = QueryRunner(
        state=cfg.state,
        coordinator=client,
        cache=cache,
        cert_pem=tls.cert_pem,
        key_pem=tls.key_pem,
        policy=cfg.policy.querier,
        ca_pem=tls.ca_pem,  # holders' epoch announcements are verified against the federation CA + CRL
        crl=PeerVerifier(tls).crl,
        max_index_bytes=cfg.querier.max_index_bytes,
    )
    runner.audit = open_querier_audit(cfg)  # every round this node runs is audited (demo, CLI, tests alike)

    def close() -> None:
        client.close()
        cache.close()

    return runner, close


def _coordinator_client(cfg: NodeConfig, tls: TlsIdentity) -> GrpcCoordinatorClient:
    """A client of ``[coordinator] address`` with this node's TLS identity (or the insecure_dev hop)."""
    channel = make_channel(cfg.coordinator, None if cfg.insecure_dev else tls, insecure_dev=cfg.insecure_dev)
    return GrpcCoordinatorClient(channel, dev_identity=f"node.{cfg.state}" if cfg.insecure_dev else None)


def crl_syncer(cfg: NodeConfig, tls: TlsIdentity | None) -> CrlSyncer | None:
    """The node's background CRL sync (not started), or None when off: ``[tls] crl_sync_seconds = 0``, no
    ``[coordinator] address``, or no ``[tls] crl`` file to keep current.

    Every ``crl_sync_seconds`` it fetches the coordinator's CRL, judges it against the federation CA
    (:func:`fedcheck.trust.crlsync.accept_crl`: signature, issuer, CRL number, validity) and, when newer,
    atomically replaces ``[tls] crl``, which the node's :class:`PeerVerifier` then re-reads."""
    if cfg.crl_sync_seconds <= 0 or not cfg.coordinator or tls is None or tls.crl_path is None:
        return None
    client = _coordinator_client(cfg, tls)

    def fetch() -> bytes:
        return client.get_crl(timeout=CRL_FETCH_TIMEOUT_S)

    # closing the channel on stop cancels a fetch in flight, so shutdown never waits for the coordinator
    return CrlSyncer(fetch, tls.crl_path, tls.ca_pem, interval=cfg.crl_sync_seconds, on_stop=client.close)


def fetch_crl_once(cfg: NodeConfig, *, timeout: float = CRL_FETCH_TIMEOUT_S) -> CrlDecision:
    """``fedcheck pki fetch-crl``: fetch the coordinator's CRL once and install it if newer (as the background
    sync does). Raises :class:`~fedcheck.trust.crlsync.CrlRefused` for a CRL that must not be installed,
    :class:`ConfigError` without ``[coordinator] address`` or ``[tls] crl``, transport errors as typed
    :mod:`fedcheck.errors`."""
    if not cfg.coordinator:
        raise ConfigError(
            "[coordinator] address is required to fetch the coordinator's CRL", reason="config_coordinator"
        )
    if cfg.tls is None or cfg.tls.crl is None:
        raise ConfigError("tls.crl is not set: there is no CRL file to update", reason="config_tls")
    tls = load_tls(cfg, load_kek(cfg.kek, setting="node.kek", source=cfg.path))
    assert tls is not None and tls.crl_path is not None
    client = _coordinator_client(cfg, tls)
    try:
        candidate = client.get_crl(timeout=timeout)
    finally:
        client.close()
    return sync_crl_file(tls.crl_path, candidate, tls.ca_pem)
