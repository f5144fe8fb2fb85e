"""Federation PKI: issuance, identities, CRL, request signatures, key protection, rotation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from fedcheck.errors import ConfigError, InvalidInput, Unauthenticated, VerificationError
from fedcheck.trust.atrest import KeyEncryptionKey
from fedcheck.trust.pki import (
    CertFiles,
    PeerIdentity,
    create_ca,
    identity_from_cert,
    issue_certificate,
    load_crl,
    load_private_key_pem,
    require_identity,
    revoke,
    rotate_certificate,
    sign_payload,
    verify_certificate,
    verify_payload,
    write_crl,
)

PAYLOAD = b"\x08\x01serialised-round-request"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("pki")
    kek = KeyEncryptionKey.generate()
    create_ca(root / "ca", federation="FED", kek=kek)
    fra = issue_certificate(root / "ca", root / "fra", role="node", state="FRA", kek=kek)
    deu = issue_certificate(root / "ca", root / "deu", role="node", state="DEU", kek=kek)
    coord = issue_certificate(root / "ca", root / "coord", role="coordinator", state="FED", kek=kek)
    crl = load_crl(write_crl(root / "ca", kek=kek))
    return {"root": root, "kek": kek, "fra": fra, "deu": deu, "coord": coord, "crl": crl}


def _pem(files: CertFiles) -> bytes:
    return files.cert.read_bytes()


def test_certificate_shape(fed: dict[str, object]) -> None:
    fra = fed["fra"]
    assert isinstance(fra, CertFiles)
    cert = x509.load_pem_x509_certificate(fra.cert.read_bytes())
    assert cert.subject.rfc4514_string().startswith("CN=node.FRA,OU=node")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ident = identity_from_cert(fra.cert.read_bytes())
    assert ident == PeerIdentity("node", "FRA", cert.serial_number)
    assert ident.name == "node.FRA"
    assert identity_from_cert(_pem(fed["coord"])).role == "coordinator"  # type: ignore[arg-type]


def test_private_key_sealed_at_rest(fed: dict[str, object]) -> None:
    fra = fed["fra"]
    kek = fed["kek"]
    assert isinstance(fra, CertFiles) and isinstance(kek, KeyEncryptionKey)
    assert fra.key.name.endswith(".key.sealed")
    assert b"PRIVATE KEY" not in fra.key.read_bytes()
    assert fra.key.stat().st_mode & 0o077 == 0
    pem = load_private_key_pem(fra.key, kek)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(VerificationError):
        load_private_key_pem(fra.key, KeyEncryptionKey.generate())
    with pytest.raises(ConfigError):
        load_private_key_pem(fra.key, None)
    ca_key = fra.key.parent.parent / "ca" / "ca.key.sealed"
    assert b"PRIVATE KEY" not in ca_key.read_bytes()


def test_sign_and_verify(fed: dict[str, object]) -> None:
    fra, crl, kek = fed["fra"], fed["crl"], fed["kek"]
    assert isinstance(fra, CertFiles) and isinstance(kek, KeyEncryptionKey)
    key_pem = load_private_key_pem(fra.key, kek)
    sig = sign_payload(key_pem, PAYLOAD)
    ident = verify_payload(_pem(fra), fra.ca.read_bytes(), crl, PAYLOAD, sig)  # type: ignore[arg-type]
    assert (ident.role, ident.state) == ("node", "FRA")
    with pytest.raises(Unauthenticated) as err:
        verify_payload(_pem(fra), fra.ca.read_bytes(), crl, PAYLOAD + b"x", sig)  # type: ignore[arg-type]
    assert err.value.reason == "bad_signature"


def test_another_states_certificate_is_identity_mismatch(fed: dict[str, object]) -> None:
    fra, deu, crl, kek = fed["fra"], fed["deu"], fed["crl"], fed["kek"]
    assert isinstance(fra, CertFiles) and isinstance(deu, CertFiles) and isinstance(kek, KeyEncryptionKey)
    # DEU signs; a relay claims the request came from FRA by attaching FRA's certificate -> bad signature
    sig = sign_payload(load_private_key_pem(deu.key, kek), PAYLOAD)
    with pytest.raises(Unauthenticated):
        verify_payload(_pem(fra), fra.ca.read_bytes(), crl, PAYLOAD, sig)  # type: ignore[arg-type]
    # DEU signs with its own certificate -> verified as DEU, and a check expecting FRA refuses it
    ident = verify_payload(_pem(deu), fra.ca.read_bytes(), crl, PAYLOAD, sig)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated) as err:
        require_identity(ident, role="node", state="FRA")
    assert err.value.reason == "identity_mismatch"
    assert require_identity(ident, role="node", state="DEU") is ident


def test_wrong_ca(fed: dict[str, object], tmp_path: Path) -> None:
    fra, crl = fed["fra"], fed["crl"]
    assert isinstance(fra, CertFiles)
    create_ca(tmp_path / "rogue", federation="FED")
    rogue = issue_certificate(tmp_path / "rogue", tmp_path / "r", role="node", state="FRA")
    sig = sign_payload(load_private_key_pem(rogue.key, None), PAYLOAD)
    with pytest.raises(Unauthenticated) as err:
        verify_payload(_pem(rogue), fra.ca.read_bytes(), crl, PAYLOAD, sig)  # type: ignore[arg-type]
    assert err.value.reason == "untrusted_issuer"
    # a CRL signed by a rogue CA is not accepted either
    rogue_crl = load_crl(write_crl(tmp_path / "rogue"))
    with pytest.raises(Unauthenticated) as err:
        verify_certificate(_pem(fra), fra.ca.read_bytes(), rogue_crl)
    assert err.value.reason == "crl_untrusted"
    with pytest.raises(ConfigError):
        load_crl(tmp_path / "rogue" / "crl.pem", ca_pem=fra.ca.read_bytes())


def test_expired_and_not_yet_valid(fed: dict[str, object]) -> None:
    fra, crl = fed["fra"], fed["crl"]
    assert isinstance(fra, CertFiles)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    with pytest.raises(Unauthenticated) as err:
        verify_certificate(_pem(fra), fra.ca.read_bytes(), None, now=future)
    assert err.value.reason == "expired"
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with pytest.raises(Unauthenticated) as err:
        verify_certificate(_pem(fra), fra.ca.read_bytes(), None, now=past)
    assert err.value.reason == "not_yet_valid"
    # stale CRL fails closed
    stale = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    with pytest.raises(Unauthenticated) as err:
        verify_certificate(_pem(fra), fra.ca.read_bytes(), crl, now=stale)  # type: ignore[arg-type]
    assert err.value.reason == "crl_stale"


def test_expired_certificate_issued_short(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca", federation="FED")
    files = issue_certificate(tmp_path / "ca", tmp_path / "n", role="node", state="ITA", days=0)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_certificate(_pem(files), files.ca.read_bytes(), None, now=later)


def test_revocation_and_rotation(tmp_path: Path) -> None:
    kek = KeyEncryptionKey.generate()
    ca = tmp_path / "ca"
    create_ca(ca, federation="FED", kek=kek)
    first = issue_certificate(ca, tmp_path / "n", role="node", state="ESP", kek=kek)
    old_pem = _pem(first)
    old_key = load_private_key_pem(first.key, kek)
    second, previous = rotate_certificate(ca, tmp_path / "n", role="node", state="ESP", kek=kek)
    assert previous == identity_from_cert(old_pem).serial
    new_pem = _pem(second)
    assert new_pem != old_pem and load_private_key_pem(second.key, kek) != old_key
    assert (tmp_path / "n" / f"node.ESP.crt.pem.{previous}").exists()
    ca_pem = (ca / "ca.crt.pem").read_bytes()
    crl = load_crl(write_crl(ca, kek=kek), ca_pem=ca_pem)
    # overlap: both certificates valid until the old one is revoked
    verify_certificate(old_pem, ca_pem, crl)
    verify_certificate(new_pem, ca_pem, crl)
    assert previous is not None
    revoke(ca, previous)
    crl = load_crl(write_crl(ca, kek=kek), ca_pem=ca_pem)
    assert crl.is_revoked(previous)
    sig = sign_payload(old_key, PAYLOAD)
    with pytest.raises(Unauthenticated) as err:
        verify_payload(old_pem, ca_pem, crl, PAYLOAD, sig)
    assert err.value.reason == "revoked"
    verify_certificate(new_pem, ca_pem, crl)
    with pytest.raises(InvalidInput):
        revoke(ca, 12345)


def test_bad_inputs(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca", federation="FED")
    with pytest.raises(ConfigError):
        create_ca(tmp_path / "ca", federation="FED")
    with pytest.raises(InvalidInput):
        issue_certificate(tmp_path / "ca", tmp_path / "o", role="admin", state="FRA")
    with pytest.raises(InvalidInput):
        issue_certificate(tmp_path / "ca", tmp_path / "o", role="node", state="fr a")
    with pytest.raises(Unauthenticated):
        identity_from_cert(b"not a certificate")
    # the CA certificate itself is not a federation identity
    with pytest.raises(Unauthenticated):
        identity_from_cert((tmp_path / "ca" / "ca.crt.pem").read_bytes())


def _crafted_crl_der(crl_der: bytes) -> bytes:
    """The CRL with its signature algorithm replaced by an unknown OID (ecdsa-with-SHA256 -> ...4.3.9)."""
    oid = bytes.fromhex("06082a8648ce3d040302")
    assert oid in crl_der
    return crl_der.replace(oid, oid[:-1] + b"\x09")


def test_parse_crl_pem_der_and_refusals(tmp_path: Path) -> None:
    from fedcheck.trust.pki import MAX_CRL_BYTES, parse_crl

    create_ca(tmp_path / "ca", federation="FED")
    files = issue_certificate(tmp_path / "ca", tmp_path / "n", role="node", state="FRA")
    serial = identity_from_cert(_pem(files))
    revoke(tmp_path / "ca", serial.serial)
    pem = write_crl(tmp_path / "ca").read_bytes()
    crl = parse_crl(b"\n" + pem)
    assert crl.number == 1 and crl.serials == frozenset({serial.serial}) and crl.pem == pem
    assert crl.next_update is not None and crl.last_update < crl.next_update
    der = parse_crl(crl.der)
    assert der.der == crl.der and der.is_signed_by(x509.load_pem_x509_certificate(files.ca.read_bytes()))
    (tmp_path / "crl.der").write_bytes(crl.der)
    assert load_crl(tmp_path / "crl.der", ca_pem=files.ca.read_bytes()).is_revoked(serial.serial)
    for data, reason in [
        (b"", "crl_empty"),
        (b"0" * (MAX_CRL_BYTES + 1), "crl_too_large"),
        (b"hello", "crl_malformed"),
        (files.ca.read_bytes(), "crl_malformed"),
    ]:
        with pytest.raises(InvalidInput) as err:
            parse_crl(data)
        assert err.value.reason == reason
    (tmp_path / "empty.pem").write_bytes(b"")
    with pytest.raises(ConfigError) as cerr:
        load_crl(tmp_path / "empty.pem")
    assert cerr.value.reason == "crl_unreadable"
    # a crafted CRL (unknown signature algorithm) is refused as not signed by the CA
    (tmp_path / "crafted.der").write_bytes(_crafted_crl_der(crl.der))
    with pytest.raises(ConfigError) as cerr:
        load_crl(tmp_path / "crafted.der", ca_pem=files.ca.read_bytes())
    assert cerr.value.reason == "crl_untrusted"


def test_check_revocation(fed: dict[str, object], tmp_path: Path) -> None:
    from fedcheck.trust.pki import check_revocation

    crl = fed["crl"]
    assert not isinstance(crl, (dict, str)) and crl is not None
    now = dt.datetime.now(dt.UTC)
    check_revocation(None, 1, now + dt.timedelta(days=400))  # no CRL: nothing to check (development)
    check_revocation(crl, 1, now)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated) as err:
        check_revocation(crl, 1, now + dt.timedelta(days=31))  # type: ignore[arg-type]
    assert err.value.reason == "crl_stale"
    create_ca(tmp_path / "ca", federation="FED")
    files = issue_certificate(tmp_path / "ca", tmp_path / "n", role="node", state="FRA")
    serial = identity_from_cert(_pem(files)).serial
    revoke(tmp_path / "ca", serial)
    with pytest.raises(Unauthenticated) as err:
        check_revocation(load_crl(write_crl(tmp_path / "ca")), serial, now)
    assert err.value.reason == "revoked"


def test_check_own_certificate_translates_verify_certificate(tmp_path: Path) -> None:
    from fedcheck.trust.pki import check_own_certificate, load_ca_certificate

    create_ca(tmp_path / "ca", federation="FED")
    fra = issue_certificate(tmp_path / "ca", tmp_path / "n", role="node", state="FRA")
    ca_pem = fra.ca.read_bytes()
    key_pem = load_private_key_pem(fra.key, None)
    crl = load_crl(write_crl(tmp_path / "ca"))

    def own(
        ca: bytes = ca_pem, revocations: object = crl, state: str = "FRA", **kw: object
    ) -> PeerIdentity:
        return check_own_certificate(
            _pem(fra), key_pem, ca, revocations, role="node", state=state,  # type: ignore[arg-type]
            cert_name="C", ca_name="A", crl_name="L", **kw,  # type: ignore[arg-type]
        )

    assert own().name == "node.FRA"
    now = dt.datetime.now(dt.UTC)
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"ca": _pem(fra)}, "tls_cert_untrusted", "A is not a CA certificate"),
        ({"now": now + dt.timedelta(days=400)}, "tls_cert_expired", "C expired on"),
        ({"now": now - dt.timedelta(days=1)}, "tls_cert_not_yet_valid", "C is not valid before"),
        ({"now": now + dt.timedelta(days=31)}, "crl_stale", "L is stale (next update was"),
        ({"ca": b"junk"}, "ca_unreadable", "A is not a PEM certificate"),
    ]
    create_ca(tmp_path / "rogue", federation="FED")
    rogue = load_crl(write_crl(tmp_path / "rogue"))
    cases.append(({"revocations": rogue}, "crl_untrusted", "L is not signed"))
    revoke(tmp_path / "ca", fra_serial := identity_from_cert(_pem(fra)).serial)
    revoked = load_crl(write_crl(tmp_path / "ca"))
    cases.append(
        ({"revocations": revoked}, "tls_cert_revoked", f"C (node.FRA, serial {fra_serial}) is revoked")
    )
    # two faults: the identity is reported before the revocation, as before
    cases.append(
        ({"revocations": revoked, "state": "DEU"}, "tls_identity", "C is node.FRA, expected node.DEU")
    )
    for kw, reason, message in cases:
        with pytest.raises(ConfigError) as err:
            own(**kw)  # type: ignore[arg-type]
        assert (err.value.reason, err.value.message[: len(message)]) == (reason, message), kw
    assert load_ca_certificate(ca_pem).subject == x509.load_pem_x509_certificate(ca_pem).subject
