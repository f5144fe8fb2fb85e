"""Issuance from a CSR: the State keeps its key; the CA checks the CSR and uses the same leaf builder."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedcheck.cli.main import main
from fedcheck.errors import ConfigError, InvalidInput, VerificationError
from fedcheck.trust.atrest import KeyEncryptionKey, is_sealed_file
from fedcheck.trust.pki import (
    CsrFiles,
    PeerIdentity,
    create_ca,
    create_csr,
    csr_fingerprint,
    identity_from_cert,
    issue_certificate,
    load_crl,
    load_private_key_pem,
    sign_csr,
    sign_payload,
    verify_payload,
    write_crl,
)

PAYLOAD = b"\x08\x01serialised-round-request"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("csr")
    ca_kek, fra_kek = KeyEncryptionKey.generate(), KeyEncryptionKey.generate()  # sovereign: separate KEKs
    create_ca(root / "ca", federation="FED", kek=ca_kek)
    write_crl(root / "ca", kek=ca_kek)
    req = create_csr(root / "fra", role="node", state="FRA", kek=fra_kek)
    cert = sign_csr(root / "ca", req.csr.read_bytes(), root / "issued", ca_kek=ca_kek)
    return {"root": root, "ca_kek": ca_kek, "fra_kek": fra_kek, "req": req, "cert": cert}


def _csr(
    key: object, cn: str | None = "node.FRA", ou: str | None = "node", hosts: tuple[str, ...] = ("localhost",)
) -> bytes:
    attrs = []
    if ou is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def test_csr_issued_certificate_verifies_and_key_stays_sealed(fed: dict[str, object]) -> None:
    root, req, cert_path = fed["root"], fed["req"], fed["cert"]
    assert isinstance(root, Path) and isinstance(req, CsrFiles) and isinstance(cert_path, Path)
    fra_kek, ca_kek = fed["fra_kek"], fed["ca_kek"]
    assert isinstance(fra_kek, KeyEncryptionKey) and isinstance(ca_kek, KeyEncryptionKey)
    assert req.key == root / "fra" / "node.FRA.key.sealed" and is_sealed_file(req.key)
    assert b"PRIVATE KEY" not in req.csr.read_bytes()
    # the CA side never held a private key for the State: only the cert and the CA copy were written
    assert sorted(p.name for p in (root / "issued").iterdir()) == ["ca.crt.pem", "node.FRA.crt.pem"]
    assert not [p for p in (root / "ca").iterdir() if "FRA" in p.name]
    # the State's key opens only under the State's KEK
    with pytest.raises(VerificationError):
        load_private_key_pem(req.key, ca_kek)
    key_pem = load_private_key_pem(req.key, fra_kek)
    pem = cert_path.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == key.public_key()
    assert identity_from_cert(pem) == PeerIdentity("node", "FRA", cert.serial_number)
    ca_pem = (root / "ca" / "ca.crt.pem").read_bytes()
    crl = load_crl(root / "ca" / "crl.pem", ca_pem=ca_pem)
    ident = verify_payload(pem, ca_pem, crl, PAYLOAD, sign_payload(key_pem, PAYLOAD))
    assert ident.name == "node.FRA"
    assert str(cert.serial_number) in (root / "ca" / "ca.json").read_text()
    assert csr_fingerprint(req.csr.read_bytes()) == csr_fingerprint(req.csr.read_bytes())


def test_csr_certificate_has_same_shape_as_issued(fed: dict[str, object], tmp_path: Path) -> None:
    root, cert_path, ca_kek = fed["root"], fed["cert"], fed["ca_kek"]
    assert isinstance(root, Path) and isinstance(cert_path, Path) and isinstance(ca_kek, KeyEncryptionKey)
    direct = issue_certificate(root / "ca", tmp_path, role="node", state="FRA", kek=ca_kek)
    a = x509.load_pem_x509_certificate(cert_path.read_bytes())
    b = x509.load_pem_x509_certificate(direct.cert.read_bytes())
    assert a.subject == b.subject and a.issuer == b.issuer
    assert a.not_valid_after_utc - a.not_valid_before_utc == b.not_valid_after_utc - b.not_valid_before_utc
    skip = {x509.SubjectKeyIdentifier.oid}
    ea = {e.oid: (e.critical, e.value) for e in a.extensions if e.oid not in skip}
    eb = {e.oid: (e.critical, e.value) for e in b.extensions if e.oid not in skip}
    assert ea == eb


def test_csr_requested_extensions_ignored(fed: dict[str, object], tmp_path: Path) -> None:
    root, ca_kek = fed["root"], fed["ca_kek"]
    assert isinstance(root, Path) and isinstance(ca_kek, KeyEncryptionKey)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FED"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "node"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "node.DEU"),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("deu.example.org")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = sign_csr(root / "ca", csr.public_bytes(serialization.Encoding.PEM), tmp_path, ca_kek=ca_kek)
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["deu.example.org"]


def _bad(fed: dict[str, object], tmp_path: Path, pem: bytes) -> InvalidInput:
    root, ca_kek = fed["root"], fed["ca_kek"]
    assert isinstance(root, Path) and isinstance(ca_kek, KeyEncryptionKey)
    with pytest.raises(InvalidInput) as info:
        sign_csr(root / "ca", pem, tmp_path / "out", ca_kek=ca_kek)
    assert not (tmp_path / "out").exists()
    return info.value


def test_tampered_csr_refused(fed: dict[str, object], tmp_path: Path) -> None:
    req = fed["req"]
    assert isinstance(req, CsrFiles)
    der = x509.load_pem_x509_csr(req.csr.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert der.count(b"node.FRA") == 1
    forged = x509.load_der_x509_csr(der.replace(b"node.FRA", b"node.DEU"))  # identity swapped after signing
    pem = forged.public_bytes(serialization.Encoding.PEM)
    assert _bad(fed, tmp_path, pem).reason == "csr_bad_signature"
    assert _bad(fed, tmp_path, b"not a csr").reason == "bad_csr"


def test_wrong_key_type_refused(fed: dict[str, object], tmp_path: Path) -> None:
    p384 = _csr(ec.generate_private_key(ec.SECP384R1()))
    assert _bad(fed, tmp_path, p384).reason == "csr_key_type"
    rsa_csr = _csr(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert _bad(fed, tmp_path, rsa_csr).reason == "csr_key_type"


@pytest.mark.parametrize(
    ("cn", "ou", "reason"),
    [
        ("node.fra", "node", "bad_state"),
        ("admin.FRA", "admin", "bad_role"),
        ("node.FRA", "coordinator", "csr_bad_name"),
        ("nodeFRA", "node", "csr_bad_name"),
        ("node.FRA", None, "csr_bad_name"),
        (None, "node", "csr_bad_name"),
        ("ca.FED", "node", "csr_bad_name"),
    ],
)
def test_bad_name_refused(
    fed: dict[str, object], tmp_path: Path, cn: str | None, ou: str | None, reason: str
) -> None:
    pem = _csr(ec.generate_private_key(ec.SECP256R1()), cn=cn, ou=ou)
    assert _bad(fed, tmp_path, pem).reason == reason


def test_missing_hosts_and_foreign_federation_refused(fed: dict[str, object], tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert _bad(fed, tmp_path, _csr(key, hosts=())).reason == "bad_host"
    other = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EVIL"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "node"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "node.FRA"),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    assert _bad(fed, tmp_path, other).reason == "csr_bad_name"


def test_create_csr_validates_and_never_overwrites_a_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        create_csr(tmp_path, role="admin", state="FRA")
    with pytest.raises(InvalidInput):
        create_csr(tmp_path, role="node", state="fra")
    with pytest.raises(InvalidInput):
        create_csr(tmp_path, role="node", state="FRA", hosts=("bad host",))
    first = create_csr(tmp_path, role="node", state="FRA")
    assert first.key.name == "node.FRA.key.pem" and (first.key.stat().st_mode & 0o777) == 0o600
    before = first.key.read_bytes()
    with pytest.raises(ConfigError) as info:
        create_csr(tmp_path, role="node", state="FRA", kek=KeyEncryptionKey.generate())
    assert info.value.reason == "key_exists" and first.key.read_bytes() == before


# ----------------------------------------------------------------------------------------------------
# mutual TLS on loopback with CSR-issued certificates on both sides
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(fed: dict[str, object]) -> Iterator[tuple[int, list[str]]]:
    root, req, cert_path, fra_kek = fed["root"], fed["req"], fed["cert"], fed["fra_kek"]
    assert isinstance(root, Path) and isinstance(req, CsrFiles) and isinstance(cert_path, Path)
    assert isinstance(fra_kek, KeyEncryptionKey)
    creds = grpc.ssl_server_credentials(
        [(load_private_key_pem(req.key, fra_kek), cert_path.read_bytes())],
        root_certificates=(root / "ca" / "ca.crt.pem").read_bytes(),
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
    yield port, peers
    srv.stop(None)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_mutual_tls_with_csr_issued_certificates(
    fed: dict[str, object], server: tuple[int, list[str]], host: str, tmp_path: Path
) -> None:
    port, peers = server
    root, ca_kek = fed["root"], fed["ca_kek"]
    assert isinstance(root, Path) and isinstance(ca_kek, KeyEncryptionKey)
    coord_kek = KeyEncryptionKey.generate()
    req = create_csr(tmp_path / "coord", role="coordinator", state="FED", kek=coord_kek)
    cert = sign_csr(root / "ca", req.csr.read_bytes(), tmp_path / "coord", ca_kek=ca_kek)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(tmp_path / "coord" / "ca.crt.pem").read_bytes(),
        private_key=load_private_key_pem(req.key, coord_kek),
        certificate_chain=cert.read_bytes(),
    )
    with grpc.secure_channel(f"{host}:{port}", creds) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert peers[-1] == "coordinator.FED"


def test_csr_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_kek, fra_kek = tmp_path / "ca.kek", tmp_path / "fra.kek"
    assert main(["pki", "gen-kek", "--out", str(ca_kek)]) == 0
    assert main(["pki", "gen-kek", "--out", str(fra_kek)]) == 0
    ca = tmp_path / "ca"
    assert main(["pki", "init-ca", "--dir", str(ca), "--federation", "FED", "--kek", f"file:{ca_kek}"]) == 0
    state = tmp_path / "fra"
    csr_args = ["pki", "csr", "--role", "node", "--state", "FRA", "--out", str(state)]
    capsys.readouterr()
    assert main([*csr_args, "--hosts", "localhost", "fra.example.org", "--kek", f"file:{fra_kek}"]) == 0
    fingerprint = capsys.readouterr().out.split("(SHA-256): ")[1].split()[0]
    csr = state / "node.FRA.csr.pem"
    assert is_sealed_file(state / "node.FRA.key.sealed")
    # a second csr run would replace a live key: refused
    assert main([*csr_args, "--kek", f"file:{fra_kek}"]) == 2
    assert "key_exists" in capsys.readouterr().err
    out = tmp_path / "issued"
    sign = ["pki", "sign-csr", "--ca", str(ca), "--csr", str(csr), "--out", str(out)]
    assert main([*sign, "--days", "30", "--ca-kek", f"file:{ca_kek}"]) == 0
    printed = capsys.readouterr().out
    assert "issued node.FRA" in printed and fingerprint in printed
    cert = x509.load_pem_x509_certificate((out / "node.FRA.crt.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "fra.example.org"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    assert main(["pki", "show", str(out / "node.FRA.crt.pem"), "--ca", str(ca / "ca.crt.pem")]) == 0
    # tampered CSR, wrong CA KEK, missing file: exit 2 with a reason code
    tampered = tmp_path / "t.csr.pem"
    der = x509.load_pem_x509_csr(csr.read_bytes()).public_bytes(serialization.Encoding.DER)
    tampered.write_bytes(
        x509.load_der_x509_csr(der.replace(b"node.FRA", b"node.DEU")).public_bytes(serialization.Encoding.PEM)
    )
    capsys.readouterr()
    bad = ["pki", "sign-csr", "--ca", str(ca), "--csr", str(tampered), "--out", str(out)]
    assert main([*bad, "--ca-kek", f"file:{ca_kek}"]) == 2
    assert "csr_bad_signature" in capsys.readouterr().err
    assert main([*sign, "--ca-kek", f"file:{fra_kek}"]) == 2
    missing = ["pki", "sign-csr", "--ca", str(ca), "--csr", str(tmp_path / "nope"), "--out", str(out)]
    assert main([*missing, "--ca-kek", f"file:{ca_kek}"]) == 2
    assert "csr_unreadable" in capsys.readouterr().err
