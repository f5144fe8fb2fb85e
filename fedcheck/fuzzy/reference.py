"""Plaintext reference of the encrypted decision: the same integers, computed with numpy.

The encrypted protocol is correct iff its hit bits equal :func:`name_margins` ``>= 0`` pair for pair
(tests/test_fuzzy_roles.py checks this on 10^5 pairs). Also the fast engine for matching-quality studies.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from fedcheck.fuzzy.encoding import DOB_PENALTY, NAME_DIMS, face_threshold, name_bigrams, quantise_face

__all__ = ["face_margins", "name_margins", "name_matrix", "names_to_sets"]


def name_matrix(sets: Sequence[frozenset[int]]) -> npt.NDArray[np.int32]:
    """0/1 matrix (rows = names) over the public bigram dimensions."""
    m = np.zeros((len(sets), NAME_DIMS), dtype=np.int32)
    for i, s in enumerate(sets):
        m[i, list(s)] = 1
    return m


def name_margins(
    traveller_sets: Sequence[frozenset[int]],
    traveller_years: Sequence[int | None],
    entry_sets: Sequence[frozenset[int]],
    entry_years: Sequence[int | None],
    theta: Fraction,
    *,
    year_tolerance: int = 0,
    year_base: int = 1900,
    year_count: int = 131,
) -> npt.NDArray[np.int64]:
    """Margins ``m = |X∩Y| - T(|X|,|Y|) + penalty``; a pair is a hit iff ``m >= 0``."""
    x, y = name_matrix(traveller_sets), name_matrix(entry_sets)
    inter = (x @ y.T).astype(np.int64)
    sx = x.sum(axis=1, dtype=np.int64)[:, None]
    sy = y.sum(axis=1, dtype=np.int64)[None, :]
    num, den = theta.numerator, theta.denominator
    t = (num * (sx + sy) + 2 * den - 1) // (2 * den)
    ty = np.array([-10**6 if v is None else v for v in traveller_years], dtype=np.int64)[:, None]
    ey = np.array(
        [-10**6 if v is None or not 0 <= v - year_base < year_count else v for v in entry_years],
        dtype=np.int64,
    )[None, :]
    known = (ty > -10**6) & (ey > -10**6)
    pen = np.where(known & (np.abs(ty - ey) > year_tolerance), DOB_PENALTY, 0)
    return np.asarray(inter - t + pen, dtype=np.int64)


def face_margins(
    travellers: Sequence[Sequence[float]], entries: Sequence[Sequence[float]], theta: Fraction
) -> npt.NDArray[np.int64]:
    """``x_q·y_q - ceil(θ·s²)`` on the quantised grid; hit iff ``>= 0``."""
    xq = np.array([quantise_face(v) for v in travellers], dtype=np.int64)
    yq = np.array([quantise_face(v) for v in entries], dtype=np.int64)
    return np.asarray(xq @ yq.T - face_threshold(theta), dtype=np.int64)


def names_to_sets(names: Sequence[str]) -> list[frozenset[int]]:
    return [name_bigrams(n) for n in names]
