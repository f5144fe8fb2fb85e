"""Federation PKI: a CA, certificates bound to (role, State), revocation, and end-to-end request signatures.

Why this exists: all node and coordinator traffic is mutual TLS, and the querying State is taken from a
verified certificate, never from a request field. Because the coordinator *relays* requests, TLS alone only
proves the coordinator's identity to a holder; the querier therefore signs each request with its certificate
key (:func:`sign_payload`), and the holder checks that signature against the federation CA and CRL
(:func:`verify_payload`), which returns the querier's :class:`PeerIdentity`.

Certificates: ECDSA P-256 / SHA-256. Subject ``CN=<role>.<STATE>, OU=<role>, O=<federation>``; SAN carries
the hosts (DNS names and IP addresses; default ``localhost`` and ``127.0.0.1`` so gRPC's hostname check
passes on loopback); EKU serverAuth + clientAuth; the CA is ``pathlen:0`` so it can only issue leaves.

Files (PEM)::

    ca_dir/ca.crt.pem       CA certificate (distribute to every node)
    ca_dir/ca.key[.sealed]  CA private key (offline in production)
    ca_dir/ca.json          issued serials, revocations, CRL number (no secrets)
    ca_dir/crl.pem          signed revocation list (distribute to every node)
    out_dir/<role>.<STATE>.crt.pem, out_dir/<role>.<STATE>.key[.sealed], out_dir/ca.crt.pem
    state_dir/<role>.<STATE>.csr.pem, state_dir/<role>.<STATE>.key[.sealed]   (create_csr, on the State side)

Issuance from a CSR (recommended in production): the State runs :func:`create_csr` (its key never leaves it,
sealed under its own KEK), the CA operator runs :func:`sign_csr` on the CSR alone. Both :func:`sign_csr` and
:func:`issue_certificate` build the certificate with the same internal builder, so extensions, EKUs and
validity rules are identical; nothing but the public key, the ``<role>.<STATE>`` name and the SAN hosts is
taken from a CSR (requested extensions are ignored).

Private keys at rest: with a ``kek`` they are written in the sealed-file format of
:mod:`fedcheck.trust.atrest` (AES-256-GCM envelope under the operator's KEK; one rotation tool for every
secret). Without a ``kek`` they are written as unencrypted PKCS#8 PEM with mode 0600 -- development only,
and logged as a warning. :func:`load_private_key_pem` returns the PEM bytes grpc needs in memory for either
form.

Nothing here logs or raises with key material or identities in the message, except
:func:`check_own_certificate`: it tells an operator at startup which identity their *own* certificate carries.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcheck.errors import ConfigError, InvalidInput, Unauthenticated
from fedcheck.trust.atrest import (
    KeyEncryptionKey,
    atomic_write,
    is_sealed_file,
    open_sealed_file,
    seal_bytes,
)

__all__ = [
    "MAX_CRL_BYTES",
    "ROLES",
    "CertFiles",
    "CsrFiles",
    "PeerIdentity",
    "RevocationList",
    "check_own_certificate",
    "check_revocation",
    "create_ca",
    "create_csr",
    "csr_fingerprint",
    "federation_of",
    "identity_from_cert",
    "issue_certificate",
    "load_ca_certificate",
    "load_crl",
    "load_private_key_pem",
    "parse_crl",
    "require_identity",
    "revoke",
    "rotate_certificate",
    "sign_csr",
    "sign_payload",
    "verify_certificate",
    "verify_payload",
    "write_crl",
]

log = logging.getLogger(__name__)

#: Roles a federation certificate can carry.
ROLES: frozenset[str] = frozenset({"node", "coordinator", "evaluator"})
_STATE_RE = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")
_SIGN_CONTEXT = b"fedcheck-request-signature-v1\x00"
_KEY_AAD = b"fedcheck-private-key-v1"
_CA_CERT = "ca.crt.pem"
_CA_KEY_PLAIN = "ca.key.pem"
_CA_KEY_SEALED = "ca.key.sealed"
_CA_STATE = "ca.json"
_CRL = "crl.pem"
_CLOCK_SKEW = dt.timedelta(minutes=5)
#: Largest CRL accepted (a CRL of 100,000 revocations is about 4 MB).
MAX_CRL_BYTES = 8 * 1024 * 1024
#: CA key types a CRL signature is checked under: the federation CA is ECDSA P-256 (``create_ca``), and a CRL
#: signed under any other key type is refused rather than verified by a weaker or unexpected algorithm
_ISSUER_KEY_TYPES = (ec.EllipticCurvePublicKey,)
# verify_certificate's messages that check_own_certificate tells apart (same reason code)
_NOT_A_CA = "trust anchor is not a CA certificate"
_LACKS_EXTENSIONS = "certificate lacks required extensions"


@dataclass(frozen=True)
class CertFiles:
    """Paths written by :func:`issue_certificate`: the leaf certificate, its private key, the CA certificate.
    """

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class CsrFiles:
    """Paths written by :func:`create_csr`: the certificate signing request and the State's private key."""

    csr: Path
    key: Path


@dataclass(frozen=True)
class PeerIdentity:
    """Who a verified certificate belongs to. ``serial`` is the certificate serial (rotation gives a new
    one).
    """

    role: str
    state: str
    serial: int

    @property
    def name(self) -> str:
        return f"{self.role}.{self.state}"


class RevocationList:
    """A parsed CRL (:func:`parse_crl`, :func:`load_crl`). :meth:`is_revoked` answers for a serial;
    :func:`verify_payload` checks the CA signature, :func:`check_revocation` staleness and revocation.
    """

    def __init__(self, crl: x509.CertificateRevocationList) -> None:
        self._crl = crl
        self._serials = frozenset(r.serial_number for r in crl)

    def is_revoked(self, serial: int) -> bool:
        return serial in self._serials

    @property
    def serials(self) -> frozenset[int]:
        return self._serials

    @property
    def last_update(self) -> dt.datetime:
        """thisUpdate (UTC)."""
        return self._crl.last_update_utc

    @property
    def next_update(self) -> dt.datetime | None:
        return self._crl.next_update_utc

    @property
    def number(self) -> int | None:
        """The CRL number (None: the CRL has none). Raises ValueError if its extensions cannot be parsed."""
        try:
            return int(self._crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            return None

    @property
    def der(self) -> bytes:
        return self._crl.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self._crl.public_bytes(serialization.Encoding.PEM)

    def is_issued_by(self, ca_cert: x509.Certificate) -> bool:
        """The CRL's issuer is ``ca_cert``'s subject (the name only: see :meth:`is_signed_by`)."""
        return bool(self._crl.issuer == ca_cert.subject)

    def is_signed_by(self, ca_cert: x509.Certificate) -> bool:
        """Issued by ``ca_cert``'s subject and signed by its key. Never raises: a crafted CRL or an unusable
        CA key is simply not signed by the CA."""
        pub = ca_cert.public_key()
        if not isinstance(pub, _ISSUER_KEY_TYPES):
            return False
        try:
            return self.is_issued_by(ca_cert) and bool(self._crl.is_signature_valid(pub))
        except (TypeError, ValueError, UnsupportedAlgorithm):
            return False

    def __repr__(self) -> str:
        return f"RevocationList(revoked={len(self._serials)})"


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_role_state(role: str, state: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {sorted(ROLES)}", reason="bad_role")
    if not _STATE_RE.match(state):
        raise InvalidInput(
            "State code must be 2-8 upper-case letters/digits (ISO 3166-1 alpha-3)", reason="bad_state"
        )


def _write_key(path_stem: Path, key: ec.EllipticCurvePrivateKey, kek: KeyEncryptionKey | None) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if kek is not None:
        path = path_stem.with_name(path_stem.name + ".key.sealed")
        atomic_write(path, seal_bytes(pem, kek, aad=_KEY_AAD))
    else:
        path = path_stem.with_name(path_stem.name + ".key.pem")
        log.warning("private key written unencrypted (no KEK given): development use only")
        atomic_write(path, pem)
    return path


def load_private_key_pem(path: Path, kek: KeyEncryptionKey | None) -> bytes:
    """PKCS#8 PEM bytes of a private key file (sealed under ``kek``, or plaintext PEM for development).

    This is what ``grpc.ssl_server_credentials`` / ``ssl_channel_credentials`` and :func:`sign_payload` take.
    Raises ConfigError (missing / sealed but no KEK) or VerificationError (wrong KEK, tampered file).
    """
    p = Path(path)
    try:
        sealed = is_sealed_file(p)
    except OSError:
        raise ConfigError("private key file missing or unreadable", reason="key_unreadable") from None
    if sealed:
        if kek is None:
            raise ConfigError("private key is sealed: a KEK is required", reason="kek_required")
        return open_sealed_file(p, kek, aad=_KEY_AAD)
    data = p.read_bytes()
    if not data.startswith(b"-----BEGIN PRIVATE KEY-----"):
        raise ConfigError("private key file is neither sealed nor PKCS#8 PEM", reason="key_format")
    return data


def _load_private_key(path: Path, kek: KeyEncryptionKey | None) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(load_private_key_pem(path, kek), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("private key is not an EC key", reason="key_format")
    return key


def _ca_key_path(ca_dir: Path) -> Path:
    sealed = ca_dir / _CA_KEY_SEALED
    return sealed if sealed.exists() else ca_dir / _CA_KEY_PLAIN


def _load_ca(
    ca_dir: Path, kek: KeyEncryptionKey | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / _CA_CERT).read_bytes())
    except (OSError, ValueError):
        raise ConfigError("CA certificate missing or unreadable", reason="ca_unreadable") from None
    return cert, _load_private_key(_ca_key_path(ca_dir), kek)


def _load_state(ca_dir: Path) -> dict[str, object]:
    try:
        doc = json.loads((ca_dir / _CA_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError("CA state file missing or corrupt", reason="ca_unreadable") from None
    if not isinstance(doc, dict):
        raise ConfigError("CA state file corrupt", reason="ca_unreadable")
    return doc


def _save_state(ca_dir: Path, doc: dict[str, object]) -> None:
    atomic_write(ca_dir / _CA_STATE, json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"), mode=0o644)


def _serial() -> int:
    return x509.random_serial_number()


def _parse_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise InvalidInput("invalid host name in SAN", reason="bad_host") from None
            names.append(x509.DNSName(host))
    return names


# ----------------------------------------------------------------------------------------------------
# leaf issuance (one builder for issue_certificate and sign_csr)
# ----------------------------------------------------------------------------------------------------


def _build_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    *,
    role: str,
    state: str,
    hosts: list[x509.GeneralName],
    days: int,
) -> x509.Certificate:
    """The federation leaf for ``<role>.<state>`` over ``public_key``: the only place leaves are built.

    Subject ``O=<federation>, OU=<role>, CN=<role>.<state>``; validity from now - skew to ``days`` later,
    capped at the CA's expiry; BasicConstraints CA:false, KeyUsage digitalSignature (both critical); EKU
    serverAuth + clientAuth; SAN ``hosts``; SKI / AKI. Callers check role/State before calling.
    """
    federation = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(federation)),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{role}.{state}"),
        ]
    )
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _store_leaf(
    ca_path: Path, ca_cert: x509.Certificate, cert: x509.Certificate, out: Path, *, role: str, state: str
) -> tuple[Path, Path]:
    """Write ``out/<role>.<state>.crt.pem`` and the CA copy, record the serial in ``ca.json``."""
    cert_path = out / f"{role}.{state}.crt.pem"
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    ca_copy = out / _CA_CERT
    if ca_copy.resolve() != (ca_path / _CA_CERT).resolve():
        atomic_write(ca_copy, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    doc = _load_state(ca_path)
    issued = doc.setdefault("issued", {})
    assert isinstance(issued, dict)
    issued[str(cert.serial_number)] = {
        "subject": f"{role}.{state}",
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
    _save_state(ca_path, doc)
    return cert_path, ca_copy


# ----------------------------------------------------------------------------------------------------
# CA operations
# ----------------------------------------------------------------------------------------------------


def create_ca(
    out_dir: Path, *, federation: str, days: int = 3650, kek: KeyEncryptionKey | None = None
) -> Path:
    """Create a federation CA in ``out_dir``; returns the CA certificate path. Refuses to overwrite a CA."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / _CA_CERT).exists():
        raise ConfigError("a CA already exists in this directory", reason="ca_exists")
    if not _STATE_RE.match(federation):
        raise InvalidInput("federation code must be 2-8 upper-case letters/digits", reason="bad_federation")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ca.{federation}"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(out / "ca", key, kek)
    atomic_write(out / _CA_CERT, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _save_state(out, {"federation": federation, "issued": {}, "revoked": {}, "crl_number": 0})
    return out / _CA_CERT


def issue_certificate(
    ca_dir: Path,
    out_dir: Path,
    *,
    role: str,
    state: str,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
    kek: KeyEncryptionKey | None = None,
    ca_kek: KeyEncryptionKey | None = None,
) -> CertFiles:
    """Issue a fresh key pair and certificate for ``<role>.<state>`` into ``out_dir``.

    ``kek`` seals the new private key (the node operator's KEK); ``ca_kek`` opens the CA key (defaults to
    ``kek``). Issuing again for the same identity is rotation: a new key and serial with overlapping validity;
    the previous certificate stays valid until it expires or is revoked (see :func:`rotate_certificate`).
    """
    _check_role_state(role, state)
    ca_path = Path(ca_dir)
    ca_cert, ca_key = _load_ca(ca_path, ca_kek if ca_kek is not None else kek)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_leaf(
        ca_cert, ca_key, key.public_key(), role=role, state=state, hosts=_parse_hosts(hosts), days=days
    )
    stem = out / f"{role}.{state}"
    key_path = _write_key(stem, key, kek)
    # remove a stale key of the other form so loaders never pick up the previous key by accident
    for other in (stem.with_name(stem.name + ".key.pem"), stem.with_name(stem.name + ".key.sealed")):
        if other != key_path:
            other.unlink(missing_ok=True)
    cert_path, ca_copy = _store_leaf(ca_path, ca_cert, cert, out, role=role, state=state)
    return CertFiles(cert=cert_path, key=key_path, ca=ca_copy)


def create_csr(
    out_dir: Path,
    *,
    role: str,
    state: str,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    kek: KeyEncryptionKey | None = None,
) -> CsrFiles:
    """State side of CSR issuance: generate the ECDSA P-256 key locally and a CSR for ``<role>.<state>``.

    Writes ``out_dir/<role>.<state>.key.sealed`` (sealed under the State's own ``kek``; plaintext PEM without
    one, development only) and ``out_dir/<role>.<state>.csr.pem`` (``CN=<role>.<state>, OU=<role>``, SAN
    ``hosts``). Only the CSR goes to the CA operator (:func:`sign_csr`); put the returned certificate next to
    the key. Refuses (ConfigError ``key_exists``) if a key for this identity is already in ``out_dir``, so the
    key of a live certificate is never replaced by accident: for rotation use a fresh directory and switch
    over once the new certificate is back.
    """
    _check_role_state(role, state)
    names = _parse_hosts(hosts)
    if not names:
        raise InvalidInput("at least one SAN host is required", reason="bad_host")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{role}.{state}"
    for existing in (stem.with_name(stem.name + ".key.pem"), stem.with_name(stem.name + ".key.sealed")):
        if existing.exists():
            raise ConfigError(
                "a private key for this identity already exists in the output directory", reason="key_exists"
            )
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"{role}.{state}"),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path = _write_key(stem, key, kek)
    csr_path = stem.with_name(stem.name + ".csr.pem")
    atomic_write(csr_path, csr.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return CsrFiles(csr=csr_path, key=key_path)


def _csr_identity(csr: x509.CertificateSigningRequest, federation: str) -> tuple[str, str]:
    """(role, State) of a CSR subject: exactly one ``CN=<role>.<STATE>`` and one ``OU=<role>``; an ``O`` is
    allowed only if it names this federation; nothing else.
    """
    bad = InvalidInput("CSR subject must be CN=<role>.<STATE>, OU=<role>", reason="csr_bad_name")
    allowed = {NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.ORGANIZATION_NAME}
    attrs = list(csr.subject)
    if any(a.oid not in allowed for a in attrs) or any(len(rdn) != 1 for rdn in csr.subject.rdns):
        raise bad
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    orgs = csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if len(cns) != 1 or len(ous) != 1 or len(orgs) > 1:
        raise bad
    if orgs and str(orgs[0].value) != federation:
        raise InvalidInput("CSR subject names another federation", reason="csr_bad_name")
    role, dot, state = str(cns[0].value).partition(".")
    if not dot or role != str(ous[0].value):
        raise bad
    _check_role_state(role, state)
    return role, state


def _csr_hosts(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidInput("CSR carries no SAN hosts", reason="bad_host") from None
    except ValueError:
        raise InvalidInput("CSR extensions are malformed", reason="bad_csr") from None
    hosts: list[str] = []
    for name in san:
        if isinstance(name, x509.DNSName):
            hosts.append(name.value)
        elif isinstance(name, x509.IPAddress) and not isinstance(
            name.value, ipaddress.IPv4Network | ipaddress.IPv6Network
        ):
            hosts.append(str(name.value))
        else:
            raise InvalidInput("CSR SAN may only carry DNS names and IP addresses", reason="bad_host")
    if not hosts:
        raise InvalidInput("CSR carries no SAN hosts", reason="bad_host")
    return _parse_hosts(hosts)


def sign_csr(
    ca_dir: Path,
    csr_pem: bytes,
    out_dir: Path,
    *,
    days: int = 365,
    ca_kek: KeyEncryptionKey | None = None,
) -> Path:
    """CA side of CSR issuance: check a State's CSR and issue its certificate; returns the certificate path.

    Checks, in order (each an :class:`InvalidInput` with the reason code in brackets): PEM CSR (``bad_csr``),
    its self-signature (``csr_bad_signature``), an ECDSA P-256 key (``csr_key_type``), the subject
    ``CN=<role>.<STATE>, OU=<role>`` with a valid role and upper-case State code (``csr_bad_name``,
    ``bad_role``, ``bad_state``), SAN DNS/IP hosts (``bad_host``). Only the public key, the name and the hosts
    are used; requested extensions are ignored and the certificate is built exactly as by
    :func:`issue_certificate` (same builder). Writes ``out_dir/<role>.<STATE>.crt.pem`` and
    ``out_dir/ca.crt.pem`` and records the serial in ``ca.json``; no private key is read or written except
    the CA's (``ca_kek``). The CSR proves possession of the key, not who sent it: confirm its fingerprint
    (:func:`csr_fingerprint`) with the State out of band.
    """
    try:
        csr = x509.load_pem_x509_csr(bytes(csr_pem))
    except (ValueError, TypeError):
        raise InvalidInput("not a PEM certificate signing request", reason="bad_csr") from None
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, TypeError):
        signature_ok = False
    if not signature_ok:
        raise InvalidInput("CSR signature is invalid", reason="csr_bad_signature")
    try:
        pub = csr.public_key()
    except (ValueError, TypeError):
        raise InvalidInput("CSR key must be ECDSA P-256", reason="csr_key_type") from None
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise InvalidInput("CSR key must be ECDSA P-256", reason="csr_key_type")
    ca_path = Path(ca_dir)
    ca_cert, ca_key = _load_ca(ca_path, ca_kek)
    federation = str(ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)
    role, state = _csr_identity(csr, federation)
    hosts = _csr_hosts(csr)
    if pub == ca_key.public_key():
        raise InvalidInput("CSR key is the CA key", reason="csr_key_type")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cert = _build_leaf(ca_cert, ca_key, pub, role=role, state=state, hosts=hosts, days=days)
    cert_path, _ = _store_leaf(ca_path, ca_cert, cert, out, role=role, state=state)
    return cert_path


def csr_fingerprint(csr_pem: bytes) -> str:
    """SHA-256 of the CSR's public key (SubjectPublicKeyInfo DER), hex, for out-of-band confirmation."""
    try:
        csr = x509.load_pem_x509_csr(bytes(csr_pem))
    except (ValueError, TypeError):
        raise InvalidInput("not a PEM certificate signing request", reason="bad_csr") from None
    spki = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize().hex()


def rotate_certificate(
    ca_dir: Path,
    out_dir: Path,
    *,
    role: str,
    state: str,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
    kek: KeyEncryptionKey | None = None,
    ca_kek: KeyEncryptionKey | None = None,
    revoke_previous: bool = False,
) -> tuple[CertFiles, int | None]:
    """Re-issue ``<role>.<state>`` with a new key; the old cert is archived as ``*.crt.pem.<serial>``.

    Returns the new files and the previous serial. The previous certificate keeps working (overlapping
    validity) so peers can pick up the new one; pass ``revoke_previous=True`` (or call :func:`revoke` later,
    then :func:`write_crl`) to end the overlap, e.g. after a key compromise.
    """
    out = Path(out_dir)
    cert_path = out / f"{role}.{state}.crt.pem"
    previous: int | None = None
    if cert_path.exists():
        previous = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
        atomic_write(out / f"{role}.{state}.crt.pem.{previous}", cert_path.read_bytes(), mode=0o644)
    files = issue_certificate(
        ca_dir, out, role=role, state=state, hosts=hosts, days=days, kek=kek, ca_kek=ca_kek
    )
    if revoke_previous and previous is not None:
        revoke(ca_dir, previous)
        write_crl(ca_dir, kek=ca_kek if ca_kek is not None else kek)
    return files, previous


def revoke(ca_dir: Path, serial: int, *, reason: str = "unspecified") -> None:
    """Record ``serial`` as revoked in the CA state. Call :func:`write_crl` to publish it."""
    ca_path = Path(ca_dir)
    doc = _load_state(ca_path)
    issued = doc.get("issued", {})
    revoked = doc.setdefault("revoked", {})
    assert isinstance(issued, dict) and isinstance(revoked, dict)
    if str(serial) not in issued:
        raise InvalidInput("serial was not issued by this CA", reason="unknown_serial")
    revoked.setdefault(str(serial), {"time": _now().isoformat(), "reason": reason})
    _save_state(ca_path, doc)


def write_crl(ca_dir: Path, *, days: int = 30, kek: KeyEncryptionKey | None = None) -> Path:
    """Sign and write ``ca_dir/crl.pem`` listing every revoked serial; valid for ``days`` (then stale)."""
    ca_path = Path(ca_dir)
    ca_cert, ca_key = _load_ca(ca_path, kek)
    doc = _load_state(ca_path)
    revoked = doc.get("revoked", {})
    assert isinstance(revoked, dict)
    number = int(str(doc.get("crl_number", 0))) + 1
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _CLOCK_SKEW)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial_text, info in sorted(revoked.items()):
        when = dt.datetime.fromisoformat(str(info["time"])) if isinstance(info, dict) else now
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(serial_text)).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    doc["crl_number"] = number
    _save_state(ca_path, doc)
    path = ca_path / _CRL
    atomic_write(path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return path


def parse_crl(data: bytes) -> RevocationList:
    """Parse a CRL (PEM or DER, at most :data:`MAX_CRL_BYTES`). Does NOT check its signature
    (:meth:`RevocationList.is_signed_by`). Raises :class:`InvalidInput`: ``crl_empty``, ``crl_too_large``,
    ``crl_malformed``."""
    if not data:
        raise InvalidInput("the CRL is empty", reason="crl_empty")
    if len(data) > MAX_CRL_BYTES:
        raise InvalidInput(f"the CRL is larger than {MAX_CRL_BYTES} bytes", reason="crl_too_large")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return RevocationList(x509.load_pem_x509_crl(data.lstrip()))
        return RevocationList(x509.load_der_x509_crl(data))
    except ValueError:
        raise InvalidInput("not an X.509 CRL (neither PEM nor DER)", reason="crl_malformed") from None


def load_crl(path: Path, *, ca_pem: bytes | None = None) -> RevocationList:
    """Load a CRL file (:func:`parse_crl`). With ``ca_pem`` its signature is checked here;
    :func:`verify_payload` always checks it.
    """
    try:
        with open(path, "rb") as fh:
            result = parse_crl(fh.read(MAX_CRL_BYTES + 1))
    except (OSError, InvalidInput):
        raise ConfigError("revocation list missing or unreadable", reason="crl_unreadable") from None
    if ca_pem is not None and not result.is_signed_by(_load_cert(ca_pem)):
        raise ConfigError("revocation list is not signed by the federation CA", reason="crl_untrusted")
    return result


# ----------------------------------------------------------------------------------------------------
# identities and verification
# ----------------------------------------------------------------------------------------------------


def _load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Unauthenticated("certificate is not valid PEM", reason="bad_certificate") from None


def load_ca_certificate(pem: bytes, *, name: str = "CA certificate") -> x509.Certificate:
    """Parse a configured CA certificate (PEM); :class:`ConfigError` ``ca_unreadable`` (``name`` says which
    file) if it is not one."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError(f"{name} is not a PEM certificate", reason="ca_unreadable") from None


def _validity_fault(cert: x509.Certificate, when: dt.datetime) -> str | None:
    """``not_yet_valid`` / ``expired`` if ``when`` lies outside ``cert``'s validity window, else None."""
    if when < cert.not_valid_before_utc:
        return "not_yet_valid"
    if when > cert.not_valid_after_utc:
        return "expired"
    return None


def check_revocation(crl: RevocationList | None, serial: int, now: dt.datetime) -> None:
    """The revocation check of a certificate ``serial`` against a CRL whose signature was already checked:
    :class:`Unauthenticated` ``crl_stale`` once ``now`` is past its nextUpdate (fails closed), ``revoked``
    if it lists ``serial``. ``crl=None`` (development only) checks nothing."""
    if crl is None:
        return
    nxt = crl.next_update
    if nxt is not None and now > nxt:
        raise Unauthenticated("revocation list is stale", reason="crl_stale")
    if crl.is_revoked(serial):
        raise Unauthenticated("certificate revoked", reason="revoked")


def identity_from_cert(pem: bytes) -> PeerIdentity:
    """Parse ``CN=<role>.<STATE>`` / ``OU=<role>`` of a certificate. Does NOT verify it (see
    :func:`verify_certificate`).
    """
    cert = _load_cert(pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(cns) != 1 or len(ous) != 1:
        raise Unauthenticated("certificate subject is not a federation identity", reason="bad_identity")
    role, _, state = str(cns[0].value).partition(".")
    if role != str(ous[0].value) or role not in ROLES or not _STATE_RE.match(state):
        raise Unauthenticated("certificate subject is not a federation identity", reason="bad_identity")
    return PeerIdentity(role=role, state=state, serial=cert.serial_number)


def verify_certificate(
    cert_pem: bytes, ca_pem: bytes, crl: RevocationList | None, *, now: dt.datetime | None = None
) -> PeerIdentity:
    """Verify a leaf against the CA: issuer + signature, both validity windows, EKU, not revoked.

    ``crl=None`` skips revocation (development only); a CRL that is not signed by the CA or is past its
    ``next_update`` fails closed. Raises :class:`Unauthenticated` with a reason code on any failure.
    """
    when = now or _now()
    ca = _load_cert(ca_pem)
    cert = _load_cert(cert_pem)
    try:
        ca_bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        ca_bc = None
    if ca_bc is None or not ca_bc.ca:
        raise Unauthenticated(_NOT_A_CA, reason="untrusted_issuer")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise Unauthenticated(
            "certificate not issued by the federation CA", reason="untrusted_issuer"
        ) from None
    for c in (ca, cert):
        window = _validity_fault(c, when)
        if window is not None:
            message = "certificate expired" if window == "expired" else "certificate not yet valid"
            raise Unauthenticated(message, reason=window)
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise Unauthenticated(_LACKS_EXTENSIONS, reason="bad_certificate") from None
    if bc.ca or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise Unauthenticated("certificate not valid for client authentication", reason="bad_certificate")
    if crl is not None:
        if not crl.is_signed_by(ca):
            raise Unauthenticated("revocation list not signed by the federation CA", reason="crl_untrusted")
        check_revocation(crl, cert.serial_number, when)
    return identity_from_cert(cert_pem)


def federation_of(ca_pem: bytes) -> str:
    """The federation code of a CA certificate (its ``O``, e.g. ``FED``: ``create_ca(federation=...)``)."""
    ca = load_ca_certificate(ca_pem)
    orgs = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if len(orgs) != 1:
        raise ConfigError("CA certificate names no federation (O=<code>)", reason="ca_unreadable")
    return str(orgs[0].value)


def check_own_certificate(
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes,
    crl: RevocationList | None,
    *,
    role: str,
    state: str,
    now: dt.datetime | None = None,
    cert_name: str = "certificate",
    key_name: str = "private key",
    ca_name: str = "CA certificate",
    crl_name: str = "revocation list",
) -> PeerIdentity:
    """Startup check of a process' *own* TLS identity; raises :class:`ConfigError` saying what is wrong.

    A node or coordinator must refuse to start rather than serve with a certificate its peers will refuse (or,
    worse, one that names another State). Checked, in order: the certificate matches ``key_pem``
    (``tls_key_mismatch``); it is issued by ``ca_pem``, a CA (``tls_cert_untrusted``); it and the CA are
    within their validity windows (``tls_cert_expired`` / ``tls_cert_not_yet_valid``); it is
    ``<role>.<state>`` (``tls_identity``) and a leaf valid for TLS server and client authentication
    (``tls_cert_invalid``); with ``crl``: the CRL is signed by the CA (``crl_untrusted``), not stale
    (``crl_stale``) and does not list it (``tls_cert_revoked``). The ``*_name`` strings (e.g. ``"TLS
    certificate /etc/fed/node.FRA.crt.pem (tls.cert)"``) name the files in the messages. All but the key
    match, the expected identity and serverAuth are :func:`verify_certificate`'s checks (what peers apply).
    """
    when = now or _now()
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError(f"{cert_name} is not a PEM certificate", reason="tls_cert_invalid") from None
    ca = load_ca_certificate(ca_pem, name=ca_name)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{key_name} is not a PEM private key", reason="key_format") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ConfigError(
            f"{cert_name} does not match its {key_name} (a key of another certificate?)",
            reason="tls_key_mismatch",
        )
    # chain, validity, leaf and CRL checks are verify_certificate's (what peers apply to this certificate);
    # its refusal is translated below, reported in this function's documented order
    fault: Unauthenticated | None = None
    try:
        verify_certificate(cert_pem, ca_pem, crl, now=when)
    except Unauthenticated as exc:
        fault = exc
    reason = fault.reason if fault is not None else None
    if fault is not None and reason == "untrusted_issuer":
        if fault.message == _NOT_A_CA:
            raise ConfigError(f"{ca_name} is not a CA certificate", reason="tls_cert_untrusted")
        raise ConfigError(f"{cert_name} is not issued by the {ca_name}", reason="tls_cert_untrusted")
    if reason in ("not_yet_valid", "expired"):
        for c, name in ((cert, cert_name), (ca, ca_name)):
            window = _validity_fault(c, when)
            if window == "not_yet_valid":
                raise ConfigError(
                    f"{name} is not valid before {c.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
                    reason="tls_cert_not_yet_valid",
                )
            if window == "expired":
                raise ConfigError(
                    f"{name} expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
                    reason="tls_cert_expired",
                )
    try:
        ident = identity_from_cert(cert_pem)
    except Unauthenticated:
        raise ConfigError(
            f"{cert_name} is not a federation identity (CN=<role>.<STATE>, OU=<role>);"
            f" expected {role}.{state}",
            reason="tls_identity",
        ) from None
    if ident.role != role or ident.state != state:
        raise ConfigError(f"{cert_name} is {ident.name}, expected {role}.{state}", reason="tls_identity")
    if fault is not None and reason == "bad_certificate":
        if fault.message == _LACKS_EXTENSIONS:
            raise ConfigError(
                f"{cert_name} lacks BasicConstraints / ExtendedKeyUsage", reason="tls_cert_invalid"
            )
        raise ConfigError(
            f"{cert_name} is not valid for TLS server and client authentication", reason="tls_cert_invalid"
        )
    # verify_certificate checked the leaf for client authentication; a process' own certificate also serves
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise ConfigError(
            f"{cert_name} is not valid for TLS server and client authentication", reason="tls_cert_invalid"
        )
    if reason == "crl_untrusted":
        raise ConfigError(f"{crl_name} is not signed by the {ca_name}", reason="crl_untrusted")
    if crl is not None and reason == "crl_stale":
        raise ConfigError(
            f"{crl_name} is stale (next update was {crl.next_update:%Y-%m-%d %H:%M:%S} UTC): install a fresh"
            " CRL from the CA operator",
            reason="crl_stale",
        )
    if reason == "revoked":
        raise ConfigError(
            f"{cert_name} ({ident.name}, serial {cert.serial_number}) is revoked in the {crl_name}",
            reason="tls_cert_revoked",
        )
    if fault is not None:  # pragma: no cover - every reason verify_certificate raises is translated above
        raise ConfigError(f"{cert_name} is not valid: {fault.message}", reason="tls_cert_invalid")
    return ident


def sign_payload(key_pem: bytes, payload: bytes) -> bytes:
    """ECDSA P-256/SHA-256 (DER) signature over a domain-separated ``payload`` (the serialised request)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError("signing key is not a PEM private key", reason="key_format") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("signing key is not an EC key", reason="key_format")
    return key.sign(_SIGN_CONTEXT + payload, ec.ECDSA(hashes.SHA256()))


def verify_payload(
    cert_pem: bytes,
    ca_pem: bytes,
    crl: RevocationList | None,
    payload: bytes,
    signature: bytes,
    *,
    now: dt.datetime | None = None,
) -> PeerIdentity:
    """Verify the signer's certificate (:func:`verify_certificate`) and its signature over ``payload``.

    Returns the signer's identity: this, not any request field, is who is asking. Raises
    :class:`Unauthenticated` (reason ``bad_signature`` for a signature that does not match the payload).
    """
    identity = verify_certificate(cert_pem, ca_pem, crl, now=now)
    pub = _load_cert(cert_pem).public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise Unauthenticated("certificate key is not EC", reason="bad_certificate")
    try:
        pub.verify(signature, _SIGN_CONTEXT + payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Unauthenticated("request signature invalid", reason="bad_signature") from None
    return identity


def require_identity(
    identity: PeerIdentity, *, role: str | None = None, state: str | None = None
) -> PeerIdentity:
    """Raise :class:`Unauthenticated` (``identity_mismatch``) unless ``identity`` has the expected role/State.

    Use it to tie a TLS peer to the request signer, or a configured partner to the certificate presented.
    """
    if (role is not None and identity.role != role) or (state is not None and identity.state != state):
        raise Unauthenticated(
            "peer identity does not match the expected identity", reason="identity_mismatch"
        )
    return identity
