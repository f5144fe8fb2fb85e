"""Encodings and message framing of the fuzzy check."""

from __future__ import annotations

from fractions import Fraction

import pytest

from fedcheck.errors import FormatError, InvalidInput, LimitExceeded
from fedcheck.fuzzy import FuzzyParams, HitClaim, LabelRequest, ScoreRequest
from fedcheck.fuzzy.encoding import name_bigrams, name_threshold, parse_threshold, year_penalties


def test_bigrams_order_invariant_and_canonical() -> None:
    assert name_bigrams("Kim Sok Chol") == name_bigrams("CHOL SOK KIM")
    assert name_bigrams("Abdul Rahman") == name_bigrams("Abd al-Rahman")
    assert name_bigrams("") == frozenset()
    with pytest.raises(LimitExceeded):
        name_bigrams(" ".join(a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJ"))


def test_threshold_is_exact_integer_rule() -> None:
    t = parse_threshold(0.8)
    assert t == Fraction(4, 5)
    assert name_threshold(10, 10, t) == 8 and name_threshold(10, 11, t) == 9  # ceil(8.4)
    with pytest.raises(InvalidInput):
        parse_threshold(1.5)
    assert year_penalties(1970, 1, 1968, 5) == [-128, 0, 0, 0, -128]
    assert year_penalties(None, 0, 1968, 3) == [0, 0, 0]


def test_messages_round_trip_and_reject_garbage() -> None:
    p = FuzzyParams("name", 729, 128, 1900, 131, 1, 24)
    req = ScoreRequest(b"r" * 16, b"\x01" * 256, p, 3, b"\x00" * 10)
    assert ScoreRequest.from_bytes(req.to_bytes()) == req
    lr = LabelRequest(b"r" * 16, (HitClaim(1, 2, 3),))
    assert LabelRequest.from_bytes(lr.to_bytes()) == lr
    with pytest.raises(FormatError):
        ScoreRequest.from_bytes(b"XXXX" + req.to_bytes()[4:])
    with pytest.raises(FormatError):
        LabelRequest.from_bytes(req.to_bytes())
    with pytest.raises(InvalidInput):
        FuzzyParams("name", 729, 128, 1900, 131, 1, 20)
    with pytest.raises(LimitExceeded):
        FuzzyParams("name", 5000, 128, 1900, 131, 1, 24)
