"""Federation certificates work for gRPC mutual TLS on loopback (grpc health service, no fedcheck proto)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedcheck.trust.atrest import KeyEncryptionKey
from fedcheck.trust.pki import (
    create_ca,
    identity_from_cert,
    issue_certificate,
    load_private_key_pem,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, KeyEncryptionKey]]:
    root = tmp_path_factory.mktemp("mtls")
    kek = KeyEncryptionKey.generate()
    create_ca(root / "ca", federation="FED", kek=kek)
    files = issue_certificate(root / "ca", root / "srv", role="node", state="FRA", kek=kek)
    creds = grpc.ssl_server_credentials(
        [(load_private_key_pem(files.key, kek), files.cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=True,
    )
    peers: list[str] = []

    class Recording(health.HealthServicer):
        def Check(self, request: object, context: grpc.ServicerContext) -> object:
            pem = bytes(context.auth_context()["x509_pem_cert"][0])
            peers.append(identity_from_cert(pem).name)
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(Recording(), srv)
    port = srv.add_secure_port("localhost:0", creds)
    srv.start()
    yield port, root, kek
    srv.stop(None)


def _call(port: int, host: str, ca: bytes, key: bytes | None, cert: bytes | None) -> int:
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(f"{host}:{port}", creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_mutual_tls_accepts_federation_client(
    server: tuple[int, Path, KeyEncryptionKey], host: str
) -> None:
    port, root, kek = server
    client = issue_certificate(root / "ca", root / "cli", role="coordinator", state="FED", kek=kek)
    status = _call(
        port, host, client.ca.read_bytes(), load_private_key_pem(client.key, kek), client.cert.read_bytes()
    )
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_mutual_tls_rejects_missing_or_foreign_client_cert(
    server: tuple[int, Path, KeyEncryptionKey], tmp_path: Path
) -> None:
    port, root, _ = server
    ca = (root / "ca" / "ca.crt.pem").read_bytes()
    with pytest.raises(grpc.RpcError):
        _call(port, "localhost", ca, None, None)
    create_ca(tmp_path / "rogue", federation="FED")
    rogue = issue_certificate(tmp_path / "rogue", tmp_path / "r", role="node", state="DEU")
    with pytest.raises(grpc.RpcError):
        _call(port, "localhost", ca, load_private_key_pem(rogue.key, None), rogue.cert.read_bytes())
    # a client trusting another CA does not accept the server either
    rogue_ca = (tmp_path / "rogue" / "ca.crt.pem").read_bytes()
    with pytest.raises(grpc.RpcError):
        _call(port, "localhost", rogue_ca, load_private_key_pem(rogue.key, None), rogue.cert.read_bytes())
