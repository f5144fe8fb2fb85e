"""Mutual TLS for every fedcheck hop, and the caller's identity taken from its verified certificate.

Why here: gRPC checks the chain against the federation CA during the handshake, but not revocation and not our
``<role>.<STATE>`` naming; :class:`PeerVerifier` adds both (CRL re-read when the file changes) so a handler
always gets a :class:`~fedcheck.trust.pki.PeerIdentity`, never a State from a request field. Plain text exists
only behind ``insecure_dev`` (an explicit config key / flag the demo does not use).

Every refusal of a peer here is logged (warning, rate-limited per certificate serial and reason code) with the
certificate's subject CN, serial and the reason code, never key material. Refusals during the TLS handshake
itself (a certificate not issued by the federation CA, or outside its validity) happen inside gRPC's C core
before any Python code runs and cannot be logged here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from fedcheck.errors import ConfigError, FedcheckError, Unauthenticated
from fedcheck.trust import pki as _pki
from fedcheck.trust.atrest import KeyEncryptionKey
from fedcheck.trust.pki import (
    PeerIdentity,
    RevocationList,
    check_revocation,
    identity_from_cert,
    load_crl,
    load_private_key_pem,
    verify_certificate,
)

__all__ = [
    "DEV_IDENTITY_KEY",
    "REFUSAL_LOG_INTERVAL_S",
    "PeerVerifier",
    "TlsIdentity",
    "channel_credentials",
    "server_credentials",
]

_log = logging.getLogger(__name__)

# : Metadata key an insecure-dev client uses to claim an identity (honoured ONLY when the server is
# insecure_dev).
DEV_IDENTITY_KEY = "fedcheck-dev-identity"

#: A refused peer is logged at most once per (certificate serial, reason code) per this many seconds, so a
#: misbehaving peer retrying in a loop cannot flood the log; the next line counts what was suppressed.
REFUSAL_LOG_INTERVAL_S = 60.0
#: bound on the rate limiter's memory (distinct serial/reason pairs remembered at once)
_REFUSAL_LOG_KEYS = 4096
#: refusal reasons that are this node's own CRL's fault, not the peer's
_OWN_CRL_REASONS = frozenset({"crl_stale", "crl_unreadable", "crl_untrusted"})


def _monotonic() -> float:
    """The rate limiter's clock (a function of its own so tests can move it)."""
    return time.monotonic()


def _peer_summary(pem: bytes | None) -> tuple[str, int | None]:
    """(subject CN, serial) of a presented certificate, read WITHOUT verifying it, for the refusal log only.

    The CN is reduced to printable ASCII and 64 characters: the certificate may be a stranger's.
    """
    if pem is None:
        return "-", None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return "?", None
    try:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        cns = []
    cn = str(cns[0].value) if cns else ""
    cn = "".join(ch if " " <= ch <= "~" else "?" for ch in cn)[:64] or "-"
    return cn, cert.serial_number


@dataclass(frozen=True)
class TlsIdentity:
    """A process' TLS material in memory: its certificate, private key, the federation CA and CRL path."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes
    crl_path: Path | None = None

    @classmethod
    def load(
        cls, cert: Path, key: Path, ca: Path, crl: Path | None = None, *, kek: KeyEncryptionKey | None = None
    ) -> TlsIdentity:
        """Read PEM files; ``key`` may be sealed under the operator KEK (``fedcheck.trust.atrest``)."""
        try:
            cert_pem = Path(cert).read_bytes()
            ca_pem = Path(ca).read_bytes()
        except OSError:
            raise ConfigError(
                "TLS certificate or CA file missing or unreadable", reason="tls_files"
            ) from None
        key_pem = load_private_key_pem(Path(key), kek)
        if crl is not None and not Path(crl).exists():
            raise ConfigError("revocation list file missing", reason="crl_unreadable")
        return cls(cert_pem, key_pem, ca_pem, Path(crl) if crl is not None else None)

    @property
    def identity(self) -> PeerIdentity:
        return identity_from_cert(self.cert_pem)


def server_credentials(tls: TlsIdentity) -> grpc.ServerCredentials:
    """Server side of mutual TLS: a client certificate signed by the federation CA is required."""
    return grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem, require_client_auth=True
    )


def channel_credentials(tls: TlsIdentity) -> grpc.ChannelCredentials:
    """Client side of mutual TLS: trust only the federation CA, present our own certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
    )


def _now() -> dt.datetime:
    """The trust layer's clock (:mod:`fedcheck.trust.pki`), looked up per call so one patch moves both."""
    return _pki._now()


@dataclass(frozen=True)
class _Verified:
    """A cached verdict: identity, the certificate's notAfter, and the CRL generation it was reached on."""

    ident: PeerIdentity
    not_after: dt.datetime
    generation: int


class PeerVerifier:
    """Identity of the TLS peer of a call: chain, validity, EKU and revocation checked, cached per cert.

    The cache only saves the chain/signature work. Every cache hit re-checks what can change without the
    certificate changing: its expiry, the CRL's ``next_update`` (a stale CRL fails closed, as on a fresh
    verification) and the serial against the *current* CRL. Entries are tagged with the CRL generation they
    were verified on: a verification that read a CRL which was replaced while it ran is not cached.
    """

    def __init__(
        self,
        tls: TlsIdentity | None,
        *,
        insecure_dev: bool = False,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if tls is None and not insecure_dev:
            raise ConfigError("TLS material is required unless insecure_dev is set", reason="tls_required")
        self._tls = tls
        self._insecure = insecure_dev
        self._clock = clock or _now
        self._lock = threading.Lock()
        self._crl: RevocationList | None = None
        #: (mtime_ns, size, inode) of the CRL file last loaded: any change re-reads it
        self._crl_sig: tuple[int, int, int] | None = None
        #: bumped on every CRL (re)load; cached verdicts of an older generation are never used
        self._generation = 0
        self._cache: dict[bytes, _Verified] = {}
        #: (serial, reason) -> (when last logged, refusals suppressed since): the refusal log's rate limiter
        self._refusals: dict[tuple[int | None, str], tuple[float, int]] = {}

    @property
    def ca_pem(self) -> bytes:
        if self._tls is None:
            raise ConfigError("no CA configured (insecure_dev)", reason="tls_required")
        return self._tls.ca_pem

    def crl(self) -> RevocationList | None:
        """The current CRL, re-read when its file changes (operators replace it in place)."""
        return self._current_crl()[0]

    def _current_crl(self) -> tuple[RevocationList | None, int]:
        """The current CRL and its generation (re-read when the file's mtime, size or inode changes)."""
        if self._tls is None or self._tls.crl_path is None:
            return None, 0
        path = self._tls.crl_path
        try:
            st = os.stat(path)
        except OSError:
            self._log_own_crl(str(path), "crl_unreadable")
            raise Unauthenticated("revocation list unavailable", reason="crl_unreadable") from None
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        failure: FedcheckError | None = None
        with self._lock:
            if sig != self._crl_sig:
                try:
                    crl = load_crl(path, ca_pem=self._tls.ca_pem)
                except FedcheckError as exc:
                    failure = exc
                else:
                    self._crl = crl
                    self._crl_sig = sig
                    self._generation += 1
                    self._cache.clear()
            if failure is None:
                return self._crl, self._generation
        # the node's own CRL, not the peer, is at fault: say so in this node's log (rate-limited), then refuse
        self._log_own_crl(str(path), failure.reason)
        raise failure

    def _should_log(self, key: tuple[int | None, str]) -> int | None:
        """The rate limiter of both refusal logs: ``None`` while ``key`` was logged less than
        :data:`REFUSAL_LOG_INTERVAL_S` ago (counted as suppressed), else how many were suppressed since."""
        now = _monotonic()
        with self._lock:
            last = self._refusals.get(key)
            if last is not None and now - last[0] < REFUSAL_LOG_INTERVAL_S:
                self._refusals[key] = (last[0], last[1] + 1)
                return None
            if last is None and len(self._refusals) >= _REFUSAL_LOG_KEYS:
                for k, (when, _) in list(self._refusals.items()):
                    if now - when >= REFUSAL_LOG_INTERVAL_S:
                        del self._refusals[k]
                if len(self._refusals) >= _REFUSAL_LOG_KEYS:
                    return None  # a flood of distinct serials: stay quiet rather than grow without bound
            self._refusals[key] = (now, 0)
            return last[1] if last is not None else 0

    def _log_own_crl(self, path: str, reason: str) -> None:
        if self._should_log((None, f"own_crl:{reason}")) is None:
            return
        _log.error(
            "this node's revocation list ([tls] crl = %s) cannot be used (%s): every TLS peer is refused "
            "until the operator installs a valid, current CRL signed by the federation CA (fedcheck pki crl "
            "/ fedcheck pki fetch-crl)", path, reason, extra={"reason": reason},
        )

    def identify(
        self, context: grpc.ServicerContext, *, roles: Sequence[str] = ("node", "coordinator")
    ) -> PeerIdentity:
        """Verified identity of the caller; Unauthenticated if missing, revoked or of a wrong role."""
        pem: bytes | None = None
        if self._insecure:
            claimed = dict(context.invocation_metadata() or ()).get(DEV_IDENTITY_KEY, "node.DEV")
            role, _, state = str(claimed).partition(".")
            ident = PeerIdentity(role=role, state=state, serial=0)
        else:
            auth = context.auth_context()
            raw: Any = auth.get("x509_pem_cert") or []
            pems: list[bytes] = [raw] if isinstance(raw, bytes) else list(raw)
            if not pems:
                self._log_refusal(None, "no_client_cert")
                raise Unauthenticated("a client certificate is required", reason="no_client_cert")
            pem = bytes(pems[0])
            try:
                ident = self._verify(pem)
            except Unauthenticated as exc:
                self._log_refusal(pem, exc.reason)
                raise
        if ident.role not in roles:
            if not self._insecure:
                self._log_refusal(pem, "wrong_role")
            raise Unauthenticated("caller's role may not use this service", reason="wrong_role")
        return ident

    def _log_refusal(self, pem: bytes | None, reason: str) -> None:
        """One warning per (serial, reason) per :data:`REFUSAL_LOG_INTERVAL_S`: CN, serial, reason code. A
        refusal caused by this node's own CRL (stale, unreadable, untrusted) is logged as the node's fault
        only."""
        if reason in _OWN_CRL_REASONS and self._tls is not None:
            self._log_own_crl(str(self._tls.crl_path), reason)
            return
        cn, serial = _peer_summary(pem)
        suppressed = self._should_log((serial, reason))
        if suppressed is None:
            return
        _log.warning(
            "TLS peer refused: CN=%s serial=%s reason=%s%s",
            cn,
            "-" if serial is None else serial,
            reason,
            f" ({suppressed} similar refusal(s) not logged since the last line)" if suppressed else "",
            extra={
                "reason": reason,
                "status": "UNAUTHENTICATED",
                "partner": cn.partition(".")[2] or cn,  # the State of a CN=<role>.<STATE>
                "count": suppressed + 1,  # refusals of this peer and reason this line stands for
                # not in fedcheck.node.logs' allow-list (yet), hence also in the message
                "peer_cn": cn,
                "serial": serial,
            },
        )

    def _verify(self, pem: bytes) -> PeerIdentity:
        crl, generation = self._current_crl()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(pem)
        if cached is not None and cached.generation == generation and now <= cached.not_after:
            # cheap re-checks of what may have changed since: CRL freshness and this serial's revocation (the
            # CRL's signature was checked when it was loaded)
            check_revocation(crl, cached.ident.serial, now)
            return cached.ident
        # (re)verify: first use, a verdict of a replaced CRL, or expired since (fails closed then)
        ident = verify_certificate(pem, self.ca_pem, crl, now=now)
        not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        with self._lock:
            # a CRL reload while we verified (on the old CRL) must not leave our verdict behind in the cache
            if generation == self._generation:
                if len(self._cache) >= 1024:
                    self._cache.clear()
                self._cache[pem] = _Verified(ident, not_after, generation)
        return ident

