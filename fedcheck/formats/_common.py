"""Helpers the format readers share: two-digit-year expansion and country codes.

Kept private so that each reader stays a thin mapping from its wire format to :mod:`fedcheck.records`;
nothing here may put identity data into an exception message.
"""

from __future__ import annotations

import datetime as dt

from fedcheck.errors import InvalidInput
from fedcheck.formats._countries import ALPHA2_TO_ALPHA3
from fedcheck.records.normalise import validate_country

__all__ = ["country_from_alpha2", "country_from_icao", "expand_two_digit_year"]


def expand_two_digit_year(yy: int, month: int, day: int, *, reference: dt.date, past: bool) -> int:
    """Pick the century for a ``YYMMDD`` date.

    ``past=True`` (birth dates): the latest century that does not put the date after ``reference``, so a
    traveller is never born in the future. ``past=False`` (expiry, flight times): the century that puts the
    date closest to ``reference``. Month/day only matter for the comparison; validity is the caller's check.
    """
    candidates = [century + yy for century in (1800, 1900, 2000, 2100)]
    if past:
        ok = [y for y in candidates if (y, month, day) <= (reference.year, reference.month, reference.day)]
        return max(ok) if ok else min(candidates)
    return min(candidates, key=lambda y: abs(y - reference.year))


def country_from_icao(code: str) -> str | None:
    """ICAO 9303 / PAXLST country code (alpha-3, ``D<<``, ``XXA`` ...) -> canonical code, or ``None``."""
    code = code.replace("<", "").strip()
    if not code:
        return None
    try:
        return validate_country(code)
    except InvalidInput:
        return None


def country_from_alpha2(code: str) -> str | None:
    """FollowTheMoney country (lower-case alpha-2 or a historic code) -> canonical alpha-3, or ``None``."""
    code = code.strip().lower()
    alpha3 = ALPHA2_TO_ALPHA3.get(code) or (code.upper() if len(code) == 3 else None)
    if alpha3 is None:
        return None
    try:
        return validate_country(alpha3)
    except InvalidInput:
        return None
