"""Holder-signed epoch announcements: what lets a querier trust an epoch key and an index it got via a relay.

Why: a querier learns a holder's epoch public key from the coordinator's ``ListNodes`` and downloads the index
through the coordinator's relay. Unsigned, a malicious coordinator could substitute its own key k', an index
built under k' and evaluations with valid DLEQ proofs under k' -- and so suppress or forge every hit. The
holder therefore signs, with its node certificate key (:func:`fedcheck.trust.pki.sign_payload`), an
:class:`~fedcheck.rpc.messages.EpochAnnouncement` (State, epoch id, public key, the SHA-256 of the index the
partner's audience downloads, validity window and -- on an index download -- the requesting partner's State
and the audience key the index was built for); the querier verifies it against the federation CA and CRL
(certificate role ``node``, certificate State = the target State, partner State = its own State), checks the
downloaded index against the announced digest and verifies every evaluation proof under the announced key. A
coordinator can still drop or delay, never substitute -- neither its own key or index nor the holder-signed
index of another partner's audience (narrower: hits suppressed; broader: withheld entries exposed).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

from fedcheck.errors import FedcheckError, VerificationError
from fedcheck.rpc import serde
from fedcheck.rpc.messages import EpochAnnouncement, SignedEnvelope
from fedcheck.trust.pki import RevocationList, sign_payload, verify_payload

__all__ = ["AnnouncementSigner", "verify_announcement"]

#: clock tolerance when checking an announcement's validity window
DEFAULT_SKEW_MS = 600_000


class AnnouncementSigner:
    """Signs (and caches) a holder's announcements with its node certificate key; thread-safe."""

    def __init__(self, state: str, cert_pem: bytes, key_pem: bytes) -> None:
        self._state = state
        self._cert = cert_pem
        self._key = key_pem
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, bytes, bytes, int, int, str, str], SignedEnvelope] = {}

    def sign(
        self,
        epoch_id: str,
        public_key: bytes,
        index_sha256: bytes,
        valid_from_ms: int,
        valid_until_ms: int,
        *,
        partner_state: str = "",
        audience: str = "",
    ) -> SignedEnvelope:
        """``partner_state`` / ``audience``: for an index download, the verified requesting partner's State
        and the audience key of the index served (empty for the audience-free NodeInfo announcement)."""
        key = (epoch_id, public_key, index_sha256, valid_from_ms, valid_until_ms, partner_state, audience)
        with self._lock:
            env = self._cache.get(key)
        if env is not None:
            return env
        payload = serde.epoch_announcement_to_bytes(
            EpochAnnouncement(
                self._state, epoch_id, public_key, index_sha256, valid_from_ms, valid_until_ms,
                partner_state=partner_state, audience=audience,
            )
        )
        env = SignedEnvelope(payload, sign_payload(self._key, payload), self._cert)
        with self._lock:
            if len(self._cache) > 256:  # epochs x partners; old epochs are never asked for again
                self._cache.clear()
            self._cache[key] = env
        return env


def _fail() -> VerificationError:
    return VerificationError("holder epoch announcement failed verification", reason="announcement_invalid")


def verify_announcement(
    env: SignedEnvelope | None,
    *,
    ca_pem: bytes | None,
    crl: Callable[[], RevocationList | None],
    state: str,
    epoch_id: str,
    public_key: bytes | None = None,
    index_sha256: bytes | None = None,
    partner_state: str | None = None,
    now_ms: int | None = None,
    skew_ms: int = DEFAULT_SKEW_MS,
) -> EpochAnnouncement:
    """Check ``env`` is ``state``'s own signed announcement of ``epoch_id`` (and of ``public_key`` /
    ``index_sha256`` when given, and made for ``partner_state`` when given: an index announcement must name
    the querier's own State), currently valid. Raises :class:`VerificationError`
    (``announcement_invalid``) on anything else, including a missing announcement."""
    if env is None or not ca_pem:
        raise _fail()
    try:
        signer = verify_payload(env.certificate_pem, ca_pem, crl(), env.payload, env.signature)
        ann = serde.epoch_announcement_from_bytes(env.payload)
    except FedcheckError:
        raise _fail() from None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    ok = (
        signer.role == "node"
        and signer.state == state
        and ann.state == state
        and ann.epoch_id == epoch_id
        and len(ann.epoch_public_key) == 32
        and ann.valid_from_unix_ms - skew_ms <= now <= ann.valid_until_unix_ms + skew_ms
        and (public_key is None or hmac.compare_digest(ann.epoch_public_key, public_key))
        and (index_sha256 is None or hmac.compare_digest(ann.index_sha256, index_sha256))
        and (partner_state is None or (bool(partner_state) and ann.partner_state == partner_state))
    )
    if not ok:
        raise _fail()
    return ann
