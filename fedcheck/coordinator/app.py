"""Wiring the coordinator: TLS identity, channels to every node, round engine, gRPC server, metrics, and the
CRL it serves to nodes (``GetCrl``: its ``[tls] crl`` file, re-read on change; nodes verify it themselves)."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from collections.abc import Callable

from fedcheck._proto.fedcheck.v1 import coordinator_pb2, coordinator_pb2_grpc
from fedcheck.coordinator.config import CoordinatorConfig
from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.node import metrics
from fedcheck.node.config import check_tls_files, check_tls_identity, explain_tls_key, require_listen
from fedcheck.rpc.clients import GrpcNodeClient, NodeTransport, make_channel
from fedcheck.rpc.server import RunningServer, start_server
from fedcheck.rpc.servicers import CoordinatorServicer
from fedcheck.rpc.tls import PeerVerifier, TlsIdentity
from fedcheck.trust.atrest import load_kek
from fedcheck.trust.audit import ensure_signing_key, load_signing_key, open_audit_log
from fedcheck.trust.crlsync import CrlFile
from fedcheck.trust.pki import federation_of

__all__ = ["CoordinatorApp"]

_log = logging.getLogger("fedcheck.coordinator")


class CoordinatorApp:
    def __init__(self, cfg: CoordinatorConfig) -> None:
        self.cfg = cfg
        kek = load_kek(cfg.kek, setting="coordinator.kek", source=cfg.path) if cfg.kek else None
        self.tls: TlsIdentity | None = None
        if cfg.tls is not None:
            check_tls_files(cfg.tls, cfg.path)
            with explain_tls_key(cfg.tls, "coordinator.kek"):
                self.tls = TlsIdentity.load(cfg.tls.cert, cfg.tls.key, cfg.tls.ca, cfg.tls.crl, kek=kek)
            # refuse to start as anything but coordinator.<federation code of the CA>, or with a certificate
            # that is expired, revoked, of another CA or not the key's
            check_tls_identity(
                self.tls.cert_pem, self.tls.key_pem, self.tls.ca_pem, cfg.tls,
                role="coordinator", state=federation_of(self.tls.ca_pem),
            )
        if cfg.insecure_dev and self.tls is not None:
            # plain-text transport: callers *declare* their TLS hop in metadata (development only). Request
            # signatures are still verified against [tls] ca/crl, so nobody can act as another State, but the
            # hop itself is unauthenticated -- never run a federation like this.
            _log.warning(
                "coordinator runs with insecure_dev: TLS is OFF and caller hop identities are self-declared"
                " (fedcheck-dev-identity); request signatures are still verified. Development only."
            )
        self.verifier = PeerVerifier(self.tls, insecure_dev=cfg.insecure_dev)
        # served to members by GetCrl as the CA signed it (CRL distribution; the coordinator is not trusted
        # for it: nodes check the CA signature, CRL number and validity before installing it)
        self.crl_file = CrlFile(cfg.tls.crl) if cfg.tls is not None and cfg.tls.crl is not None else None
        key_path = cfg.audit_key or cfg.data_dir / "audit-signing.key"
        # normally created by `fedcheck node dev-secrets` or `audit keygen`
        if ensure_signing_key(key_path, kek) and kek is None:
            _log.warning("no coordinator KEK: audit signing key written unencrypted (development only)")
        # its lock also keeps a second coordinator off this data_dir
        self.audit_log = open_audit_log(
            cfg.audit_log or cfg.data_dir / "audit.jsonl", load_signing_key(key_path, kek),
            retention_days=cfg.audit_retention_days, owner="coordinator", data_dir=cfg.data_dir,
        )
        with contextlib.ExitStack() as opened:  # a failure below closes what was opened so far
            opened.callback(self.audit_log.close)
            self.store = RoundStore(cfg.data_dir / "rounds.sqlite")
            opened.callback(self.store.close)
            self.clients = {
                state: GrpcNodeClient(
                    make_channel(addr, self.tls, insecure_dev=cfg.insecure_dev),
                    dev_identity="coordinator.FED" if self.tls is None else None,
                )
                for state, addr in cfg.nodes.items()
            }
            for client in self.clients.values():
                opened.callback(client.close)
            transports: dict[str, NodeTransport] = dict(self.clients)
            self.engine = RoundEngine(
                transports,
                self.store,
                ca_pem=self.tls.ca_pem if self.tls else b"",
                crl=self.verifier.crl,
                max_batch=cfg.max_batch,
                max_deadline_seconds=cfg.max_deadline_seconds,
                result_ttl_seconds=cfg.result_ttl_seconds,
                verify_signatures=self.tls is not None,
                audit=self.audit_log.append,
                audit_public_keys=cfg.audit_public_keys,
            )
            opened.pop_all()
        self.server: RunningServer | None = None
        self._stop_metrics: Callable[[], None] | None = None

    def start(self) -> int:
        """Bind the gRPC server and metrics; refuses (:class:`ConfigError`, nothing left running) without
        ``coordinator.listen`` or when an address cannot be bound (e.g. another process holds the port)."""
        listen = require_listen(self.cfg.listen, "coordinator", self.cfg.path, 'e.g. "127.0.0.1:50050"')
        servicer = CoordinatorServicer(self.engine, self.verifier, self.crl_file)
        self.server = start_server(
            listen,
            [lambda s: coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, s)],
            [coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name],
            tls=self.tls,
            insecure_dev=self.cfg.insecure_dev,
            max_workers=32,
            what="coordinator.listen",
        )
        if self.cfg.metrics_port is not None:
            try:
                self._stop_metrics = metrics.serve_metrics(self.cfg.metrics_port, self.cfg.metrics_address)
            except BaseException:
                self.server.stop(0)
                self.server = None
                raise
        self.server.set_serving(True)
        _log.info("coordinator serving", extra={"port": self.server.port, "states": sorted(self.cfg.nodes)})
        return self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(self.cfg.grace_seconds)
        if self._stop_metrics is not None:
            self._stop_metrics()
            self._stop_metrics = None
        self.engine.close()
        for c in self.clients.values():
            c.close()
        self.store.close()
        self.audit_log.close()

    def serve_forever(self) -> int:
        try:
            port = self.start()
        except BaseException:
            self.stop()  # release the audit lock and stores before the error is reported
            raise
        done = threading.Event()

        def _signal(signum: int, _frame: object) -> None:
            done.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        print(json.dumps({"event": "listening", "role": "coordinator", "port": port}), flush=True)
        while not done.wait(0.5):
            pass
        self.stop()
        print(json.dumps({"event": "stopped", "role": "coordinator"}), flush=True)
        return 0
