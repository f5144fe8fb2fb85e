"""RFC 9497 (OPRF) over ristretto255-SHA512, modes OPRF (0x00) and VOPRF (0x01), batched.

Why this module exists: the exact-match protocol needs an oblivious PRF whose holder key is committed per
epoch and whose evaluations a querier can verify (VOPRF batched DLEQ proofs). Everything here composes
libsodium's ristretto255 primitives (through ``rbcl``) and :mod:`hashlib` SHA-512 — there is no hand-written
curve or hash arithmetic. Functions carry the RFC's names in snake_case and work on whole sequences, so the
per-item cost is one C call (plus the RFC's SHA-512 hashing) rather than layers of Python wrappers.

What it must never do: accept a non-canonical, invalid or identity element (:class:`InvalidElement`), leak
whether a proof failed for one reason or another (:class:`VerificationError` is opaque), or put a secret
scalar into a ``repr``.

Elements and scalars are the RFC's 32-byte serialisations (``bytes``).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import rbcl

from fedcheck.errors import InvalidElement, InvalidInput, VerificationError

__all__ = [
    "ELEMENT_SIZE",
    "GENERATOR",
    "IDENTITY",
    "OUTPUT_SIZE",
    "PROOF_SIZE",
    "SCALAR_SIZE",
    "SUITE_ID",
    "KeyPair",
    "OprfMode",
    "blind",
    "blind_evaluate",
    "blind_evaluate_verifiable",
    "context_string",
    "derive_key_pair",
    "derive_public_key",
    "deserialize_element",
    "evaluate",
    "expand_message_xmd",
    "finalize",
    "finalize_unblinded",
    "generate_key_pair",
    "generate_proof",
    "hash_to_group",
    "hash_to_scalar",
    "random_scalar",
    "sum_elements",
    "unblind",
    "verify_finalize",
    "verify_proof",
]

SUITE_ID = b"ristretto255-SHA512"
ELEMENT_SIZE = 32
SCALAR_SIZE = 32
OUTPUT_SIZE = 64
PROOF_SIZE = 2 * SCALAR_SIZE
#: canonical encoding of the ristretto255 identity (libsodium's ``is_valid_point`` accepts it; RFC 9497
#: does not)
IDENTITY = bytes(ELEMENT_SIZE)

_S = rbcl._sodium  # ctypes CDLL: calls release the GIL, so evaluation scales with threads
_ZERO_SCALAR = bytes(SCALAR_SIZE)
_SHA512_BLOCK = 128
# SHA-512 state after absorbing Z_pad (exactly one block): copying it saves one compression per hash_to_group
_ZPAD_STATE = hashlib.sha512(bytes(_SHA512_BLOCK))


class OprfMode(IntEnum):
    """RFC 9497 protocol modes implemented here (POPRF, 0x02, is not)."""

    OPRF = 0x00
    VOPRF = 0x01


@dataclass(frozen=True)
class KeyPair:
    """A server key pair; the secret scalar is kept out of ``repr``. Unpacks as ``sk, pk``."""

    sk: bytes = field(repr=False)
    pk: bytes

    def __iter__(self) -> Iterator[bytes]:
        return iter((self.sk, self.pk))


def context_string(mode: int) -> bytes:
    """``"OPRFV1-" || I2OSP(mode, 1) || "-" || identifier`` (RFC 9497 §3.1)."""
    return b"OPRFV1-" + bytes([int(OprfMode(mode))]) + b"-" + SUITE_ID


def _i2osp2(n: int) -> bytes:
    return n.to_bytes(2, "big")


def _lp(data: bytes) -> bytes:
    """Length-prefixed (2 bytes, big-endian), as in the RFC's transcripts."""
    return len(data).to_bytes(2, "big") + data


# --------------------------------------------------------------------------------------------- hashing


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 §5.3.1 with SHA-512."""
    if len(dst) > 255:
        raise InvalidInput("DST longer than 255 bytes")
    ell = -(-len_in_bytes // 64)
    if ell > 255 or len_in_bytes > 65535:
        raise InvalidInput("expand_message_xmd output too long")
    dst_prime = dst + bytes([len(dst)])
    h = _ZPAD_STATE.copy()
    h.update(msg + len_in_bytes.to_bytes(2, "big") + b"\x00" + dst_prime)
    b0 = h.digest()
    b = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
    out = [b]
    for i in range(2, ell + 1):
        b = hashlib.sha512(bytes(x ^ y for x, y in zip(b0, b, strict=True)) + bytes([i]) + dst_prime).digest()
        out.append(b)
    return b"".join(out)[:len_in_bytes]


def _h2g_dst(mode: int) -> bytes:
    return b"HashToGroup-" + context_string(mode)


def _h2s_dst(mode: int) -> bytes:
    return b"HashToScalar-" + context_string(mode)


def hash_to_group(inputs: Sequence[bytes], mode: int) -> list[bytes]:
    """HashToGroup per input: ``ristretto255 from_hash(expand_message_xmd(x, DST, 64))``."""
    dst_prime = _h2g_dst(mode)
    dst_prime += bytes([len(dst_prime)])
    tail = b"\x00\x40\x00" + dst_prime
    tail1 = b"\x01" + dst_prime
    zpad = _ZPAD_STATE.copy
    sha512 = hashlib.sha512
    from_hash = _S.crypto_core_ristretto255_from_hash
    buf = ctypes.create_string_buffer(ELEMENT_SIZE)
    out: list[bytes] = []
    append = out.append
    for x in inputs:
        h = zpad()
        h.update(x)
        h.update(tail)
        from_hash(buf, sha512(h.digest() + tail1).digest())
        append(buf.raw)
    return out


def hash_to_scalar(msg: bytes, mode: int, dst: bytes | None = None) -> bytes:
    """HashToScalar: ``expand_message_xmd(msg, DST, 64)`` read little-endian, reduced mod the group order."""
    uniform = expand_message_xmd(msg, _h2s_dst(mode) if dst is None else dst, 64)
    return bytes(rbcl.crypto_core_ristretto255_scalar_reduce(uniform))


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar (RFC 9497 RandomScalar)."""
    while True:
        s = bytes(rbcl.crypto_core_ristretto255_scalar_random())
        if s != _ZERO_SCALAR:
            return s


# --------------------------------------------------------------------------------------------- elements


def deserialize_element(data: bytes) -> bytes:
    """DeserializeElement: reject wrong length, non-canonical, off-group and identity encodings.

    Two checks libsodium's ``is_valid_point`` lacks: the identity (RFC 9497) and bit 255 set (libsodium
    masks it off, so ``s + 2^255`` would otherwise decode as ``s``; RFC 9496 requires rejection).
    """
    if (
        not isinstance(data, bytes)
        or len(data) != ELEMENT_SIZE
        or data == IDENTITY
        or data[31] & 0x80
        or _S.crypto_core_ristretto255_is_valid_point(data) != 1
    ):
        raise InvalidElement("not a canonical non-identity ristretto255 element")
    return data


def _check_scalar(s: bytes, what: str) -> None:
    if not isinstance(s, bytes) or len(s) != SCALAR_SIZE:
        raise InvalidInput(f"{what} must be a {SCALAR_SIZE}-byte scalar")
    # canonical (< L) and non-zero: reducing a zero-extended copy must leave it unchanged
    if s == _ZERO_SCALAR or bytes(rbcl.crypto_core_ristretto255_scalar_reduce(s + bytes(32))) != s:
        raise InvalidInput(f"{what} is not a canonical non-zero scalar")


def _mul(scalar: bytes, element: bytes) -> bytes:
    """``scalar * element`` without libsodium's identity refusal (callers check where the RFC requires)."""
    buf = ctypes.create_string_buffer(ELEMENT_SIZE)
    _S.crypto_scalarmult_ristretto255(buf, scalar, element)
    return buf.raw


def _mul_base(scalar: bytes) -> bytes:
    buf = ctypes.create_string_buffer(ELEMENT_SIZE)
    _S.crypto_scalarmult_ristretto255_base(buf, scalar)
    return buf.raw


def _add(p: bytes, q: bytes) -> bytes:
    buf = ctypes.create_string_buffer(ELEMENT_SIZE)
    _S.crypto_core_ristretto255_add(buf, p, q)
    return buf.raw


#: the ristretto255 base point
GENERATOR = _mul_base((1).to_bytes(32, "little"))


def sum_elements(elements: Sequence[bytes]) -> bytes:
    """Sum of (deserialised) elements; the identity for an empty sequence."""
    total = IDENTITY
    for e in elements:
        deserialize_element(e)
        total = _add(total, e)
    return total


def _scalar_mul_many(scalar: bytes, elements: Sequence[bytes]) -> list[bytes]:
    """``scalar * E`` for each element, deserialising each (one C call per item; the C call decodes and
    rejects off-group input and returns -1 on an identity input or result). libsodium ignores bit 255 when
    decoding, which RFC 9496 forbids, so that bit is checked here (tests/vectors/ristretto255_invalid*).
    """
    mult = _S.crypto_scalarmult_ristretto255
    buf = ctypes.create_string_buffer(ELEMENT_SIZE)
    out: list[bytes] = []
    append = out.append
    for e in elements:
        if type(e) is not bytes or len(e) != ELEMENT_SIZE or e[31] & 0x80 or mult(buf, scalar, e) != 0:
            raise InvalidElement("not a canonical non-identity ristretto255 element")
        append(buf.raw)
    return out


# --------------------------------------------------------------------------------------------- keys


def derive_key_pair(seed: bytes, info: bytes, mode: int) -> KeyPair:
    """DeriveKeyPair (RFC 9497 §3.2.1)."""
    if len(seed) != 32:
        raise InvalidInput("seed must be 32 bytes")
    derive_input = seed + _lp(info)
    dst = b"DeriveKeyPair" + context_string(mode)
    for counter in range(256):
        sk = hash_to_scalar(derive_input + bytes([counter]), mode, dst)
        if sk != _ZERO_SCALAR:
            return KeyPair(sk, _mul_base(sk))
    raise InvalidInput("DeriveKeyPairError")  # pragma: no cover - probability 2^-2000


def derive_public_key(sk: bytes) -> bytes:
    """``pk = sk * G`` for a canonical non-zero scalar."""
    _check_scalar(sk, "key")
    return _mul_base(sk)


def generate_key_pair() -> KeyPair:
    """A fresh random key pair (RFC 9497 GenerateKeyPair)."""
    sk = random_scalar()
    return KeyPair(sk, _mul_base(sk))


# --------------------------------------------------------------------------------------------- protocol


def blind(
    inputs: Sequence[bytes], mode: int, *, blinds: Sequence[bytes] | None = None
) -> tuple[list[bytes], list[bytes]]:
    """Blind: returns ``(blinds, blinded_elements)``; ``blinds`` may be given (test vectors, common blind)."""
    if blinds is None:
        blinds = [random_scalar() for _ in inputs]
    else:
        if len(blinds) != len(inputs):
            raise InvalidInput("one blind per input")
        for b in set(blinds):
            _check_scalar(b, "blind")
        blinds = list(blinds)
    elements = hash_to_group(inputs, mode)
    mult = _S.crypto_scalarmult_ristretto255
    buf = ctypes.create_string_buffer(ELEMENT_SIZE)
    blinded: list[bytes] = []
    for r, e in zip(blinds, elements, strict=True):
        # an identity HashToGroup output (or product) makes the C call return -1: the RFC's InvalidInputError
        if e == IDENTITY or mult(buf, r, e) != 0:
            raise InvalidElement("input hashes to the identity element")
        blinded.append(buf.raw)
    return list(blinds), blinded


def blind_evaluate(sk: bytes, blinded_elements: Sequence[bytes]) -> list[bytes]:
    """BlindEvaluate (OPRF mode): ``sk * B`` for each blinded element; invalid/identity input is rejected."""
    _check_scalar(sk, "key")
    return _scalar_mul_many(sk, blinded_elements)


def _composites_fast(
    k: bytes, b: bytes, cs: Sequence[bytes], ds: Sequence[bytes], mode: int
) -> tuple[bytes, bytes]:
    m = _composite_m(b, cs, ds, mode, also_z=False)[0]
    return m, _mul(k, m)


def _composite_m(
    b: bytes, cs: Sequence[bytes], ds: Sequence[bytes], mode: int, *, also_z: bool
) -> tuple[bytes, bytes]:
    """ComputeComposites: ``M = sum d_i C_i`` (and ``Z = sum d_i D_i`` for the verifier)."""
    if len(cs) != len(ds) or not cs:
        raise InvalidInput("proof needs equally many (>0) blinded and evaluated elements")
    if len(cs) > 0xFFFF:
        raise InvalidInput("proof batch larger than 65535 elements")
    seed_dst = b"Seed-" + context_string(mode)
    seed = hashlib.sha512(_lp(b) + _lp(seed_dst)).digest()
    prefix = _lp(seed)
    dst = _h2s_dst(mode)
    m = z = IDENTITY
    for i, (c, d) in enumerate(zip(cs, ds, strict=True)):
        di = hash_to_scalar(prefix + _i2osp2(i) + _lp(c) + _lp(d) + b"Composite", mode, dst)
        m = _add(_mul(di, c), m)
        if also_z:
            z = _add(_mul(di, d), z)
    return m, z


def _challenge(b: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes, mode: int) -> bytes:
    transcript = _lp(b) + _lp(m) + _lp(z) + _lp(t2) + _lp(t3) + b"Challenge"
    return hash_to_scalar(transcript, mode)


def generate_proof(
    k: bytes,
    a: bytes,
    b: bytes,
    cs: Sequence[bytes],
    ds: Sequence[bytes],
    *,
    r: bytes | None = None,
    mode: int = OprfMode.VOPRF,
) -> bytes:
    """GenerateProof: batched DLEQ proof that ``log_A(B) == log_{C_i}(D_i)`` for all i; returns ``c || s``."""
    m, z = _composites_fast(k, b, cs, ds, mode)
    if r is None:
        r = random_scalar()
    else:
        _check_scalar(r, "proof nonce")
    t2 = _mul(r, a)
    t3 = _mul(r, m)
    c = _challenge(b, m, z, t2, t3, mode)
    s = bytes(rbcl.crypto_core_ristretto255_scalar_sub(r, rbcl.crypto_core_ristretto255_scalar_mul(c, k)))
    return c + s


def verify_proof(
    a: bytes,
    b: bytes,
    cs: Sequence[bytes],
    ds: Sequence[bytes],
    proof: bytes,
    *,
    mode: int = OprfMode.VOPRF,
) -> None:
    """VerifyProof; raises the opaque :class:`VerificationError` on any mismatch."""
    if not isinstance(proof, bytes) or len(proof) != PROOF_SIZE:
        raise VerificationError()
    c, s = proof[:SCALAR_SIZE], proof[SCALAR_SIZE:]
    # canonical scalars only: a proof with s + L would otherwise verify too (malleability)
    for x in (c, s):
        if bytes(rbcl.crypto_core_ristretto255_scalar_reduce(x + bytes(32))) != x:
            raise VerificationError()
    m, z = _composite_m(b, cs, ds, mode, also_z=True)
    t2 = _add(_mul_base(s) if a == GENERATOR else _mul(s, a), _mul(c, b))
    t3 = _add(_mul(s, m), _mul(c, z))
    expected = _challenge(b, m, z, t2, t3, mode)
    if not hmac.compare_digest(expected, c):
        raise VerificationError()


def blind_evaluate_verifiable(
    sk: bytes, pk: bytes, blinded_elements: Sequence[bytes], *, r: bytes | None = None
) -> tuple[list[bytes], bytes]:
    """VOPRF BlindEvaluate: evaluated elements plus one batched DLEQ proof under ``pk``."""
    evaluated = blind_evaluate(sk, blinded_elements)
    proof = generate_proof(sk, GENERATOR, pk, blinded_elements, evaluated, r=r, mode=OprfMode.VOPRF)
    return evaluated, proof


def unblind(blinds: Sequence[bytes], evaluated: Sequence[bytes]) -> list[bytes]:
    """``blind^-1 * E`` per element, deserialising (and so rejecting invalid/identity) each ``E``."""
    if len(blinds) != len(evaluated):
        raise InvalidInput("one blind per evaluated element")
    mult = _S.crypto_scalarmult_ristretto255
    inv = _S.crypto_core_ristretto255_scalar_invert
    sbuf = ctypes.create_string_buffer(SCALAR_SIZE)
    buf = ctypes.create_string_buffer(ELEMENT_SIZE)
    out: list[bytes] = []
    last: bytes | None = None
    for r, e in zip(blinds, evaluated, strict=True):
        if r is not last:
            if inv(sbuf, r) != 0:
                raise InvalidInput("blind is zero")
            last = r
        if type(e) is not bytes or len(e) != ELEMENT_SIZE or e[31] & 0x80 or mult(buf, sbuf.raw, e) != 0:
            raise InvalidElement("not a canonical non-identity ristretto255 element")
        out.append(buf.raw)
    return out


def finalize_unblinded(inputs: Sequence[bytes], unblinded: Sequence[bytes]) -> list[bytes]:
    """The RFC's Finalize hash given already unblinded elements ``N = k * HashToGroup(x)``."""
    sha512 = hashlib.sha512
    return [
        sha512(len(x).to_bytes(2, "big") + x + b"\x00\x20" + n + b"Finalize").digest()
        for x, n in zip(inputs, unblinded, strict=True)
    ]


def finalize(
    inputs: Sequence[bytes], blinds: Sequence[bytes], evaluated: Sequence[bytes], mode: int
) -> list[bytes]:
    """Finalize (OPRF mode, or VOPRF after the proof was checked): 64-byte PRF outputs."""
    OprfMode(mode)
    if len(inputs) != len(evaluated):
        raise InvalidInput("one evaluated element per input")
    return finalize_unblinded(inputs, unblind(blinds, evaluated))


def verify_finalize(
    pk: bytes,
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    evaluated: Sequence[bytes],
    blinded: Sequence[bytes],
    proof: bytes,
) -> list[bytes]:
    """VOPRF Finalize: check the batched proof against ``pk``, then finalise."""
    deserialize_element(pk)
    for e in evaluated:
        deserialize_element(e)
    verify_proof(GENERATOR, pk, blinded, evaluated, proof, mode=OprfMode.VOPRF)
    return finalize(inputs, blinds, evaluated, OprfMode.VOPRF)


def evaluate(sk: bytes, inputs: Sequence[bytes], mode: int) -> list[bytes]:
    """Evaluate: the server-side unblinded PRF, ``Finalize(x, sk * HashToGroup(x))``, per input."""
    _check_scalar(sk, "key")
    elements = hash_to_group(inputs, mode)
    try:
        return finalize_unblinded(inputs, _scalar_mul_many(sk, elements))
    except InvalidElement:
        raise InvalidElement("input hashes to the identity element") from None
