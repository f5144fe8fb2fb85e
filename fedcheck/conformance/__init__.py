"""The evaluators' conformance suite: ``fedcheck conformance run --target HOST:PORT`` (see
docs/conformance.md).

Why it exists: a State deciding whether to admit a partner must be able to test that partner's node over the
wire
without trusting its authors. Cases live in :mod:`fedcheck.conformance.cases`; the profile the node imports in
:mod:`fedcheck.conformance.profile`; malformed messages as data in ``bad_inputs.json``. It must never judge a
node with the node's own code paths: it blinds, verifies and finalises on its own side.
"""

from __future__ import annotations

from fedcheck.conformance.model import REGISTRY, Case, CaseResult, Status, case
from fedcheck.conformance.profile import Profile, build_profile, write_watchlist
from fedcheck.conformance.runner import Report, run_suite
from fedcheck.conformance.session import TargetConfig

__all__ = [
    "REGISTRY",
    "Case",
    "CaseResult",
    "Profile",
    "Report",
    "Status",
    "TargetConfig",
    "build_profile",
    "case",
    "run_suite",
    "write_watchlist",
]
