"""Tags and sealed labels derived from OPRF outputs (the symmetric half of the labeled PSI).

Why: the exact-match index publishes, per holder match key, a short *tag* (for a vectorised lookup) and
a label sealed under a key only someone who knows the match key *and* obtained its OPRF evaluation can
derive. Both are pure functions of the OPRF result, kept here so the holder (sealing) and querier (opening)
share one definition.

- ``tag = SHA-512("fedcheck/v1/tag" || lp(epoch_id) || N)[:8]`` where ``N = k * HashToGroup(x)`` (the RFC's
  unblinded element). Computable from ``N`` alone, so cardinality mode needs no input.
- ``key || nonce = HKDF-SHA512(ikm = Finalize(x, N), salt = index salt,
  info = "fedcheck/v1/label" || lp(epoch_id), L = 44)``; the per-index random salt means two indexes built
  from the same list (for different audiences) never reuse a (key, nonce) pair.
- ``sealed = ChaCha20Poly1305(key).encrypt(nonce, pad32(plaintext), aad = "fedcheck/v1/label" ||
  lp(epoch_id) || salt || tag)``.

Never: return partial plaintext of a label that failed to open, or say why it failed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcheck.errors import VerificationError

__all__ = [
    "LABEL_PAD",
    "SALT_SIZE",
    "TAG_SIZE",
    "label_aad_prefix",
    "open_label",
    "seal_label",
    "tag_digests",
]

TAG_SIZE = 8
SALT_SIZE = 16
#: label plaintexts are padded to a multiple of this many bytes so ciphertext length leaks less
LABEL_PAD = 32
_TAG_DOMAIN = b"fedcheck/v1/tag"
_LABEL_DOMAIN = b"fedcheck/v1/label"
_SHA512 = hashes.SHA512()


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def tag_digests(epoch_id: str, unblinded: Sequence[bytes]) -> bytes:
    """Concatenated 8-byte big-endian tags, one per unblinded element (read with ``np.frombuffer('>u8')``)."""
    prefix = hashlib.sha512(_TAG_DOMAIN + _lp(epoch_id.encode()))
    out = []
    for n in unblinded:
        h = prefix.copy()
        h.update(n)
        out.append(h.digest()[:TAG_SIZE])
    return b"".join(out)


def label_aad_prefix(epoch_id: str, salt: bytes) -> bytes:
    return _LABEL_DOMAIN + _lp(epoch_id.encode()) + salt


def _key_nonce(prf_output: bytes, epoch_id: str, salt: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(_SHA512, 44, salt, _LABEL_DOMAIN + _lp(epoch_id.encode())).derive(prf_output)
    return okm[:32], okm[32:]


def seal_label(prf_output: bytes, epoch_id: str, salt: bytes, tag: bytes, plaintext: bytes) -> bytes:
    """Seal one label (plaintext padded with spaces, which JSON ignores, to a multiple of ``LABEL_PAD``)."""
    key, nonce = _key_nonce(prf_output, epoch_id, salt)
    pad = -len(plaintext) % LABEL_PAD
    aad = label_aad_prefix(epoch_id, salt) + tag
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext + b" " * pad, aad)


def open_label(prf_output: bytes, epoch_id: str, salt: bytes, tag: bytes, sealed: bytes) -> bytes:
    """Open one label; wrong key, tag, epoch or any tampering -> the opaque :class:`VerificationError`."""
    key, nonce = _key_nonce(prf_output, epoch_id, salt)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, sealed, label_aad_prefix(epoch_id, salt) + tag)
    except InvalidTag:
        raise VerificationError() from None
