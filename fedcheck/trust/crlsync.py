"""CRL distribution through the coordinator: may a fetched CRL replace ours, and installing it if so.

Why: without it a revocation reaches a node only when its operator copies the new CRL file by hand. Nodes
now fetch the coordinator's CRL (``Coordinator.GetCrl``) and install it when it is newer. The coordinator is
*not* trusted for this: the federation CA's signature is the only trust anchor. A coordinator (or anyone on
its path) can withhold or delay a CRL, but cannot

- forge one (issuer must be the CA's subject, signature must verify under the CA key: ``crl_wrong_issuer``,
  ``crl_bad_signature``),
- roll a node back to an older one (the CRL number must be strictly greater than the installed one:
  ``crl_rollback``), or swap in another CRL under a number already installed (``crl_number_reused``),
- replay an expired one (``nextUpdate`` passed: ``crl_stale``) or pass off one dated in the future beyond the
  clock-skew margin (``crl_not_yet_valid``).

Every refusal is a :class:`CrlRefused` with one of these reason codes (plus ``crl_malformed``,
``crl_too_large``, ``crl_no_number``, ``crl_no_next_update``, ``crl_empty``). Same number and identical DER is
``unchanged`` (nothing written). The installed CRL that is compared against is trusted local state; if it is
missing, unreadable or not signed by the CA, any valid candidate replaces it (so a broken file heals).

:func:`accept_crl` is pure; :func:`sync_crl_file` adds reading and atomically replacing the node's
``[tls] crl`` file (temp file + fsync + ``os.replace``), which :class:`fedcheck.rpc.tls.PeerVerifier`
re-reads; :class:`CrlSyncer` runs that periodically in a background thread (transport-free: it is given a
``fetch`` callable); :class:`CrlFile` is the coordinator's side (its CRL file's bytes, re-read on change).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from cryptography import x509

from fedcheck.errors import ConfigError, FedcheckError, InvalidInput, Unavailable
from fedcheck.trust import pki as _pki
from fedcheck.trust.atrest import atomic_write

__all__ = [
    "DEFAULT_SKEW",
    "MAX_CRL_BYTES",
    "CrlDecision",
    "CrlFile",
    "CrlRefused",
    "CrlSyncer",
    "accept_crl",
    "sync_crl_file",
]

_log = logging.getLogger(__name__)

#: Largest CRL accepted (:data:`fedcheck.trust.pki.MAX_CRL_BYTES`).
MAX_CRL_BYTES = _pki.MAX_CRL_BYTES
#: How far a CRL's thisUpdate may lie in the future (the CA itself backdates it by 5 minutes).
DEFAULT_SKEW = dt.timedelta(minutes=5)
#: Serialises read-compare-replace of CRL files within this process (the CLI and a node's thread use it).
_INSTALL_LOCK = threading.Lock()


class CrlRefused(FedcheckError):
    """A candidate CRL that must not replace the installed one; :attr:`reason` says why (module docstring)."""

    status = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class CrlDecision:
    """What :func:`accept_crl` decided about a candidate that was not refused."""

    #: ``update``: the candidate is newer and valid, install it; ``unchanged``: it is the installed CRL
    action: Literal["update", "unchanged"]
    #: the candidate's CRL number
    number: int
    #: the installed CRL's number (None: no installed CRL, or one that is unreadable / not the CA's)
    previous_number: int | None
    #: serials the candidate revokes
    revoked: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    #: the candidate as PEM (what is written: the node's CRL file is PEM)
    pem: bytes

    @property
    def updated(self) -> bool:
        return self.action == "update"


def _parse(data: bytes) -> _pki.RevocationList:
    try:
        return _pki.parse_crl(data)
    except InvalidInput as exc:  # crl_empty, crl_too_large, crl_malformed
        raise CrlRefused(exc.message, reason=exc.reason) from None


def _number(crl: _pki.RevocationList) -> int | None:
    try:
        return crl.number
    except ValueError:  # a malformed extension block
        raise CrlRefused("the CRL's extensions cannot be parsed", reason="crl_malformed") from None


def _installed_number(current: bytes | None, ca: x509.Certificate) -> tuple[int | None, bytes | None]:
    """(number, DER) of the installed CRL; (None, None) when there is none usable (missing, garbage, not the
    CA's): trusted local state, but a broken file must not block a valid replacement."""
    if not current:
        return None, None
    try:
        crl = _parse(current)
        if not crl.is_signed_by(ca):
            return None, None
        return _number(crl), crl.der
    except CrlRefused:
        return None, None


def accept_crl(
    current: bytes | None,
    candidate: bytes,
    ca_cert: bytes | x509.Certificate,
    now: dt.datetime,
    *,
    max_skew: dt.timedelta = DEFAULT_SKEW,
) -> CrlDecision:
    """Decide whether ``candidate`` (PEM or DER) may replace the installed CRL ``current`` (PEM/DER, or None).

    Returns a :class:`CrlDecision` (``update`` or ``unchanged``); raises :class:`CrlRefused` (reason code) for
    anything else, :class:`~fedcheck.errors.ConfigError` when ``ca_cert`` itself is unreadable. Checked in
    order: size and syntax, issuer = the CA's subject, CA signature, a CRL number, the number against the
    installed one (lower: rollback; equal: identical DER is ``unchanged``, else refused), then for an update
    thisUpdate not after ``now + max_skew`` and nextUpdate present and not passed.
    """
    ca = (
        ca_cert
        if isinstance(ca_cert, x509.Certificate)
        else _pki.load_ca_certificate(ca_cert, name="the CA certificate")
    )
    crl = _parse(candidate)
    if not crl.is_issued_by(ca):
        raise CrlRefused("the CRL is not issued by the federation CA", reason="crl_wrong_issuer")
    if not crl.is_signed_by(ca):
        raise CrlRefused(
            "the CRL's signature does not verify under the federation CA", reason="crl_bad_signature"
        )
    number = _number(crl)
    if number is None:
        raise CrlRefused("the CRL has no CRL number, so it cannot be ordered", reason="crl_no_number")
    der = crl.der
    previous, previous_der = _installed_number(current, ca)
    decision = CrlDecision(
        action="update",
        number=number,
        previous_number=previous,
        revoked=len(crl.serials),
        this_update=crl.last_update,
        next_update=crl.next_update,
        pem=crl.pem,
    )
    if previous is not None:
        if number < previous:
            raise CrlRefused(
                f"CRL number {number} is older than the installed {previous} (rollback)",
                reason="crl_rollback",
            )
        if number == previous:
            if der == previous_der:
                return replace(decision, action="unchanged")
            raise CrlRefused(
                f"CRL number {number} is installed with different contents", reason="crl_number_reused"
            )
    if crl.last_update > now + max_skew:
        raise CrlRefused(
            f"the CRL's thisUpdate {crl.last_update:%Y-%m-%d %H:%M:%S} UTC is in the future",
            reason="crl_not_yet_valid",
        )
    nxt = crl.next_update
    if nxt is None:
        raise CrlRefused("the CRL has no nextUpdate", reason="crl_no_next_update")
    if now > nxt:
        raise CrlRefused(f"the CRL is stale (nextUpdate was {nxt:%Y-%m-%d %H:%M:%S} UTC)", reason="crl_stale")
    return decision


def _now() -> dt.datetime:
    """The trust layer's clock (:mod:`fedcheck.trust.pki`), looked up per call so one patch moves both."""
    return _pki._now()


def sync_crl_file(
    path: Path, candidate: bytes, ca_pem: bytes, *, now: dt.datetime | None = None
) -> CrlDecision:
    """:func:`accept_crl` against the CRL file at ``path``, and on ``update`` replace the file atomically
    (temp file in the same directory, fsync, ``os.replace``, directory fsync; the file's mode is kept).

    A missing file counts as no installed CRL. Raises :class:`CrlRefused`, or :class:`ConfigError`
    (``crl_unreadable`` / ``crl_write_failed``) when the file cannot be read or written."""
    path = Path(path)
    with _INSTALL_LOCK:
        try:
            current: bytes | None = path.read_bytes()
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            current, mode = None, 0o644
        except OSError as exc:
            raise ConfigError(
                f"CRL file {path} cannot be read ({exc.strerror or exc})", reason="crl_unreadable"
            ) from None
        decision = accept_crl(current, candidate, ca_pem, now or _now())
        if decision.updated:
            try:
                atomic_write(path, decision.pem, mode=mode)
            except OSError as exc:
                raise ConfigError(
                    f"CRL file {path} cannot be replaced ({exc.strerror or exc})", reason="crl_write_failed"
                ) from None
        return decision


class CrlSyncer:
    """Fetch a CRL every ``interval`` seconds (first after ``initial_delay``) and install it if newer.

    ``fetch`` returns candidate CRL bytes (e.g. ``GrpcCoordinatorClient.get_crl``). Never raises out of the
    thread: an update is logged at info (with the CRL number), a refusal or a failed fetch at warning (with
    the reason code); nothing above debug when unchanged. :meth:`stop` ends the thread."""

    def __init__(
        self,
        fetch: Callable[[], bytes],
        crl_path: Path,
        ca_pem: bytes,
        *,
        interval: float,
        initial_delay: float | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ConfigError("CRL sync interval must be positive", reason="config_limits")
        self._fetch = fetch
        self._path = Path(crl_path)
        self._ca_pem = ca_pem
        self._interval = float(interval)
        self._initial = min(self._interval, 5.0) if initial_delay is None else max(0.0, initial_delay)
        self._on_stop = on_stop
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        #: outcomes so far (for tests and metrics): "update", "unchanged", "refused", "error"
        self.outcomes: list[str] = []

    def sync_once(self) -> CrlDecision:
        """One fetch and install; raises (:class:`CrlRefused`, transport or file errors)."""
        return sync_crl_file(self._path, self._fetch(), self._ca_pem)

    def run_once(self) -> CrlDecision | None:
        """:meth:`sync_once`, logged, never raising; returns the decision or None (refused / failed)."""
        try:
            decision = self.sync_once()
        except CrlRefused as exc:
            self._record("refused")
            _log.warning(
                "CRL from the coordinator refused: %s (reason=%s); keeping %s",
                exc.message,
                exc.reason,
                self._path,
                extra={"reason": exc.reason, "status": "refused"},
            )
            return None
        except FedcheckError as exc:
            self._record("error")
            _log.warning(
                "CRL sync failed: %s (reason=%s)",
                exc.message,
                exc.reason,
                extra={"reason": exc.reason, "status": "error"},
            )
            return None
        except Exception as exc:  # never let the thread die on an unexpected error
            self._record("error")
            _log.warning(
                "CRL sync failed: %s (reason=crl_sync_error)",
                type(exc).__name__,
                extra={"reason": "crl_sync_error", "status": "error"},
            )
            return None
        self._record(decision.action)
        if decision.updated:
            _log.info(
                "CRL updated from the coordinator: number %d (was %s), %d revoked, next update %s; installed"
                " at %s",
                decision.number,
                "none" if decision.previous_number is None else decision.previous_number,
                decision.revoked,
                f"{decision.next_update:%Y-%m-%d %H:%M:%S} UTC" if decision.next_update else "-",
                self._path,
                extra={"status": "updated", "count": decision.revoked},
            )
        else:
            _log.debug("CRL unchanged: number %d", decision.number)
        return decision

    def _record(self, outcome: str) -> None:
        if len(self.outcomes) >= 1000:
            del self.outcomes[:500]
        self.outcomes.append(outcome)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="crl-sync", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        delay = self._initial
        while not self._stopped.wait(delay):
            self.run_once()
            delay = self._interval

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; ``on_stop`` (e.g. closing the channel: cancels a fetch in flight) runs first."""
        self._stopped.set()
        if self._on_stop is not None:
            try:
                self._on_stop()
            except Exception:  # pragma: no cover - closing must not break shutdown
                _log.debug("CRL sync: on_stop failed", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class CrlFile:
    """The coordinator's side of ``GetCrl``: the bytes of its ``[tls] crl`` file, re-read when the file's
    (mtime, size, inode) changes. Served as they are: callers verify them (:func:`accept_crl`)."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._sig: tuple[int, int, int] | None = None
        self._data = b""

    @property
    def path(self) -> Path:
        return self._path

    def current_crl(self) -> bytes:
        """The file's current bytes; :class:`Unavailable` (``crl_unreadable``) if it cannot be read."""
        try:
            with open(self._path, "rb") as fh:
                st = os.fstat(fh.fileno())
                sig = (st.st_mtime_ns, st.st_size, st.st_ino)
                with self._lock:
                    if sig == self._sig:
                        return self._data
                data = fh.read(MAX_CRL_BYTES + 1)
        except OSError:
            raise Unavailable(
                "the coordinator's revocation list is unavailable", reason="crl_unreadable"
            ) from None
        if not data:
            raise Unavailable("the coordinator's revocation list is empty", reason="crl_unreadable")
        with self._lock:
            self._sig, self._data = sig, data
        return data
