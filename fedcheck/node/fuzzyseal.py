"""Integrity and confidentiality of fuzzy answers against the relaying coordinator.

Why: the coordinator relays every ``FuzzyScore`` and ``FuzzyRelease`` answer and knows the querier's Paillier
public key. Unsigned, it could fabricate an all-miss score response (suppress every hit) or forged hits, and
it would read and could alter released labels. So (docs/threat-model.md, "Fuzzy checks"):

* **Attestation**: the holder signs, with its node certificate key (:func:`fedcheck.trust.pki.sign_payload`,
  under the context prefix :data:`ATTESTATION_CONTEXT`), a digest over (kind, holder State, querier State,
  round id, SHA-256 of the querier-signed payload, SHA-256 of the answer bytes). The querier recomputes the
  digest and verifies the signature against the federation CA and CRL: certificate role ``node`` and
  State = the State it asked. A relay can still drop or delay an answer, never substitute or alter one.
* **Sealed labels**: the querier puts a fresh X25519 public key into the signed ``FuzzyReleasePayload``; the
  holder seals the ``LabelResponse`` to it (ephemeral X25519, HKDF-SHA256, ChaCha20-Poly1305 from
  ``cryptography``; round id, querier and holder State bound in the HKDF info and the AAD). The coordinator
  only ever sees ``ephemeral public key || ciphertext``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcheck.errors import FedcheckError, InvalidInput, VerificationError
from fedcheck.rpc.messages import SignedEnvelope
from fedcheck.trust.pki import RevocationList, sign_payload, verify_payload

__all__ = [
    "ATTESTATION_CONTEXT",
    "AnswerSigner",
    "ReplyKey",
    "answer_digest",
    "open_labels",
    "seal_labels",
    "verify_answer",
]

#: Prefix of every signed answer digest: a holder signature over a fuzzy answer can never pass for a signed
#: request, an epoch announcement or an audit head (those sign other encodings without this prefix).
ATTESTATION_CONTEXT = b"fedcheck-fuzzy-answer-v1\0"
_SEAL_CONTEXT = b"fedcheck-fuzzy-release-seal-v1\0"
KIND_SCORE = "score"
KIND_RELEASE = "release"


def _lp(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def answer_digest(
    kind: str, holder_state: str, querier_state: str, round_id: str, request_payload: bytes, answer: bytes
) -> bytes:
    """SHA-256 over the answer's context: what the holder signs and the querier recomputes."""
    return hashlib.sha256(
        ATTESTATION_CONTEXT
        + b"".join(_lp(x.encode()) for x in (kind, holder_state, querier_state, round_id))
        + hashlib.sha256(request_payload).digest()
        + hashlib.sha256(answer).digest()
    ).digest()


class AnswerSigner:
    """Signs fuzzy answers with the holder's node certificate key."""

    def __init__(self, state: str, cert_pem: bytes, key_pem: bytes) -> None:
        self._state = state
        self._cert = cert_pem
        self._key = key_pem

    def sign(
        self, kind: str, querier_state: str, round_id: str, request_payload: bytes, answer: bytes
    ) -> SignedEnvelope:
        digest = answer_digest(kind, self._state, querier_state, round_id, request_payload, answer)
        return SignedEnvelope(digest, sign_payload(self._key, ATTESTATION_CONTEXT + digest), self._cert)


def verify_answer(
    env: SignedEnvelope | None,
    *,
    ca_pem: bytes | None,
    crl: Callable[[], RevocationList | None],
    kind: str,
    holder_state: str,
    querier_state: str,
    round_id: str,
    request_payload: bytes,
    answer: bytes,
) -> None:
    """Raise :class:`VerificationError` (``answer_unverified``) unless ``env`` is ``holder_state``'s node
    signature over exactly this answer to exactly this request (missing attestation included)."""
    fail = VerificationError("holder answer failed verification (altered or not from the holder)",
                             reason="answer_unverified")
    if env is None or not ca_pem:
        raise fail
    digest = answer_digest(kind, holder_state, querier_state, round_id, request_payload, answer)
    if not hmac.compare_digest(env.payload, digest):
        raise fail
    try:
        signer = verify_payload(
            env.certificate_pem, ca_pem, crl(), ATTESTATION_CONTEXT + digest, env.signature
        )
    except FedcheckError:
        raise fail from None
    if signer.role != "node" or signer.state != holder_state:
        raise fail


def _seal_params(
    querier_state: str, holder_state: str, round_id: str, eph_pub: bytes, reply_pub: bytes
) -> bytes:
    return _SEAL_CONTEXT + b"".join(
        _lp(x) for x in (querier_state.encode(), holder_state.encode(), round_id.encode(), eph_pub, reply_pub)
    )


def _key(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class ReplyKey:
    """The querier's one-follow-up X25519 key pair (never stored: a follow-up is opened when it returns)."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public = _raw(self._private.public_key())

    def open(self, sealed: bytes, *, querier_state: str, holder_state: str, round_id: str) -> bytes:
        return open_labels(self._private, sealed, querier_state=querier_state, holder_state=holder_state,
                           round_id=round_id)


def seal_labels(
    plaintext: bytes, reply_public_key: bytes, *, querier_state: str, holder_state: str, round_id: str
) -> bytes:
    """``ephemeral X25519 public key (32) || ChaCha20-Poly1305 ciphertext`` of ``plaintext``."""
    try:
        peer = X25519PublicKey.from_public_bytes(reply_public_key)
    except ValueError:
        raise InvalidInput("reply_public_key must be a 32-byte X25519 key", reason="bad_reply_key") from None
    eph = X25519PrivateKey.generate()
    eph_pub = _raw(eph.public_key())
    try:
        shared = eph.exchange(peer)
    except ValueError:  # low-order point: all-zero shared secret
        raise InvalidInput("reply_public_key is not a usable X25519 key", reason="bad_reply_key") from None
    info = _seal_params(querier_state, holder_state, round_id, eph_pub, reply_public_key)
    # a fresh key per message (ephemeral sender key): a fixed nonce is safe
    return eph_pub + ChaCha20Poly1305(_key(shared, info)).encrypt(bytes(12), plaintext, info)


def open_labels(
    private: X25519PrivateKey, sealed: bytes, *, querier_state: str, holder_state: str, round_id: str
) -> bytes:
    fail = VerificationError("sealed follow-up answer could not be opened", reason="answer_unverified")
    if len(sealed) < 32 + 16:
        raise fail
    eph_pub = sealed[:32]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        info = _seal_params(querier_state, holder_state, round_id, eph_pub, _raw(private.public_key()))
        return ChaCha20Poly1305(_key(shared, info)).decrypt(bytes(12), sealed[32:], info)
    except (ValueError, InvalidTag):
        raise fail from None
