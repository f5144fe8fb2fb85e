"""Independent ristretto255 decoder (RFC 9496 §4.3.1) in Python integers — a *test oracle* only.

Used by the generator of ``ristretto255_invalid_elements.json`` and by ``tests/test_oprf.py`` to cross-check
libsodium's decoding. Never imported by fedcheck itself (runtime code composes libsodium only).
"""

from __future__ import annotations

__all__ = ["P", "decode", "decode_reason"]

P = 2**255 - 19
D = (-121665 * pow(121666, -1, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _neg(x: int) -> bool:
    return (x % P) & 1 == 1


def _abs(x: int) -> int:
    return (-x) % P if _neg(x) else x % P


def _sqrt_ratio_m1(u: int, v: int) -> tuple[bool, int]:
    r = (u * pow(v, 3, P)) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    check = v * r * r % P
    correct = check == u % P
    flipped = check == (-u) % P
    flipped_i = check == (-u * SQRT_M1) % P
    if flipped or flipped_i:
        r = r * SQRT_M1 % P
    return correct or flipped, _abs(r)


def decode_reason(enc: bytes) -> str | None:
    """``None`` if ``enc`` is a valid ristretto255 encoding, else the RFC 9496 reason it is rejected."""
    if len(enc) != 32:
        return "wrong length"
    s = int.from_bytes(enc, "little")
    if s >= P:
        return "non-canonical field element"
    if _neg(s):
        return "negative field element"
    ss = s * s % P
    u1 = (1 - ss) % P
    u2 = (1 + ss) % P
    u2_sqr = u2 * u2 % P
    v = (-(D * u1 * u1) - u2_sqr) % P
    was_square, invsqrt = _sqrt_ratio_m1(1, v * u2_sqr % P)
    den_x = invsqrt * u2 % P
    den_y = invsqrt * den_x * v % P
    x = _abs(2 * s * den_x)
    y = u1 * den_y % P
    t = x * y % P
    if not was_square:
        return "non-square x^2"
    if _neg(t):
        return "negative xy"
    if y == 0:
        return "y = 0"
    return None


def decode(enc: bytes) -> bool:
    return decode_reason(enc) is None
