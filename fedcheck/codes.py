"""Rules shared by every parser that reads names from an operator: the State code pattern and "did you mean".

Why one module: config files, policy tables, wire messages and CSV headers all check the same State codes and
suggest the same way for a near miss; each caller keeps its own error type, reason code and wording.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["STATE_CODE_RE", "did_you_mean"]

#: State (and federation) codes everywhere in fedcheck: upper-case, 2-8 letters/digits (e.g. FRA, KEN, UNX)
STATE_CODE_RE = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")


def did_you_mean(word: str, known: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The name of ``known`` closest to ``word`` (a typo'd key, table or column), or None when none is close
    enough (:func:`difflib.get_close_matches` with ``cutoff``)."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=cutoff)
    return close[0] if close else None
