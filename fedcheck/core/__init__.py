"""Pure numpy kernels: the exact-match index arrays and vectorised lookups (:mod:`fedcheck.core.index`)."""

from __future__ import annotations

__all__ = ["index"]
