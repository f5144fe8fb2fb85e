"""Plaintext encodings shared by both roles and by the plaintext reference: bigram sets, thresholds, faces.

Both sides must derive *identical* integers from the same inputs, because the encrypted decision is only
defined as "the same integer comparison as :mod:`fedcheck.fuzzy.reference`". Nothing here touches ciphertexts.

Names: the tokens of :func:`fedcheck.records.normalise.name_tokens` (ABD AL-RAHMAN / ABDUL RAHMAN fused,
honorifics dropped), each padded with a blank on both sides, give a *set* of bigrams over a 27-letter
alphabet (729 public dimensions). Padding per token makes the set order-invariant (swapped name order
scores as equal). Dice decision: ``2·|X∩Y| >= θ·(|X|+|Y|)``, i.e. ``|X∩Y| >= T(|X|,|Y|)`` with
``T = ceil(θ·(|X|+|Y|)/2)`` computed with exact fractions.

Faces: L2-normalised embeddings scaled by ``FACE_SCALE`` and rounded to signed ints in ``[-FACE_Q, FACE_Q]``;
decision ``x_q·y_q >= ceil(θ·FACE_SCALE²)`` (cosine on the quantised grid, see docs/fuzzy.md for the error).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from fedcheck.errors import InvalidInput, LimitExceeded
from fedcheck.records.model import usable_norm
from fedcheck.records.normalise import name_tokens

__all__ = [
    "ALPHABET",
    "DOB_PENALTY",
    "FACE_Q",
    "FACE_SCALE",
    "MAX_BIGRAMS",
    "NAME_DIMS",
    "face_threshold",
    "name_bigrams",
    "name_threshold",
    "parse_threshold",
    "quantise_face",
    "threshold_table",
    "year_penalties",
]

ALPHABET = " ABCDEFGHIJKLMNOPQRSTUVWXYZ"
NAME_DIMS = len(ALPHABET) ** 2
#: |X| and |Y| are capped so that every honest margin fits |m| <= 255 (9 bits incl. sign).
MAX_BIGRAMS = 127
#: Added to a pair's margin when the birth years disagree: larger than any intersection, so it forces a miss.
DOB_PENALTY = -128
FACE_Q = 15
FACE_SCALE = 48.0

_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def name_bigrams(name: str) -> frozenset[int]:
    """Bigram-set of a name as dimension indices in ``[0, NAME_DIMS)``; empty for a name with no letters."""
    out: set[int] = set()
    for tok in name_tokens(name):
        padded = f" {tok} "
        for a, b in itertools.pairwise(padded):
            out.add(_INDEX.get(a, 0) * len(ALPHABET) + _INDEX.get(b, 0))
    if len(out) > MAX_BIGRAMS:
        raise LimitExceeded("name: too many bigrams", reason="name_too_long")
    return frozenset(out)


def parse_threshold(value: float | str | Fraction) -> Fraction:
    """Threshold as an exact fraction in (0, 1] (``0.8`` -> 4/5) so both sides compute the same integers."""
    t = Fraction(str(value)) if not isinstance(value, Fraction) else value
    if not 0 < t <= 1:
        raise InvalidInput("threshold: must be in (0, 1]", reason="bad_threshold")
    return t.limit_denominator(1000)


def name_threshold(size_x: int, size_y: int, theta: Fraction) -> int:
    """Minimum intersection for a Dice hit: ``ceil(θ·(|X|+|Y|)/2)``."""
    return math.ceil(theta * (size_x + size_y) / 2)


def threshold_table(size_x: int, theta: Fraction, length: int) -> list[int]:
    """``-T(|X|, y)`` for ``y = 0..length-1``: the querier's per-|Y| offsets (the holder selects by |Y|)."""
    return [-name_threshold(size_x, y, theta) for y in range(length)]


def year_penalties(year: int | None, tolerance: int, base: int, count: int) -> list[int]:
    """Per-year margin offsets: 0 where the entry's year agrees within ``tolerance``, else ``DOB_PENALTY``.

    A traveller without a known year agrees with every year (all zeros).
    """
    if year is None:
        return [0] * count
    return [0 if abs(base + i - year) <= tolerance else DOB_PENALTY for i in range(count)]


def quantise_face(vector: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """L2-normalise, scale by ``FACE_SCALE``, round, clip to ``[-FACE_Q, FACE_Q]``."""
    v = np.asarray(vector, dtype=np.float64)
    if v.ndim != 1 or not 16 <= v.size <= 1024 or not np.all(np.isfinite(v)):
        raise InvalidInput("face_embedding: expected 16..1024 finite floats", reason="bad_embedding")
    norm = usable_norm(v)  # the model's rule: zero, under/overflowing or subnormal norms have no direction
    if norm is None:
        raise InvalidInput("face_embedding: zero vector or norm out of range", reason="bad_embedding")
    q = np.rint(v / norm * FACE_SCALE)
    return np.clip(q, -FACE_Q, FACE_Q).astype(np.int64)


def face_threshold(theta: Fraction) -> int:
    """Integer dot-product threshold equivalent to cosine ``θ`` on the quantised grid."""
    return math.ceil(theta * Fraction(FACE_SCALE) ** 2)


