"""Screening jobs composed from the protocol roles: the offline harness and result reporting.

Sits above :mod:`fedcheck.protocol` (no transport): ``fedcheck screen`` runs a holder and a querier in one
process; ``fedcheck query`` reuses :mod:`fedcheck.screening.report` and :mod:`fedcheck.screening.manifest`
for its output and its key bookkeeping.
"""

from __future__ import annotations

from fedcheck.screening.manifest import QueryKeys, query_keys
from fedcheck.screening.report import Hit, ScreenReport, StateCount, TravellerResult

__all__ = ["Hit", "QueryKeys", "ScreenReport", "StateCount", "TravellerResult", "query_keys"]
