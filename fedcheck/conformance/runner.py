"""Running the suite: select cases, run each in order against one session, collect results.

Why a runner separate from the CLI: tests run the suite in-process against real and broken nodes and assert on
individual case results; the CLI only adds argument parsing and report files.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fedcheck.conformance.model import REGISTRY, Case, CaseFailed, CaseResult, CaseSkipped, Registry, Status
from fedcheck.conformance.profile import Profile, load_profile
from fedcheck.conformance.session import Session, TargetConfig

__all__ = ["Report", "run_suite"]


@dataclass(frozen=True)
class Report:
    """All results of one run, plus what was tested."""

    target: str
    profile: str
    results: tuple[CaseResult, ...]
    started_unix: float
    duration_s: float
    node: dict[str, object] = field(default_factory=dict)
    strict: bool = False

    def by_id(self) -> dict[str, CaseResult]:
        return {r.case_id: r for r in self.results}

    def count(self, status: Status) -> int:
        return sum(r.status is status for r in self.results)

    @property
    def required_failures(self) -> list[CaseResult]:
        """Required cases that failed (and, in strict mode, required cases that were skipped)."""
        bad = {Status.FAIL, Status.SKIP} if self.strict else {Status.FAIL}
        return [r for r in self.results if r.required and r.status in bad]

    @property
    def conformant(self) -> bool:
        return not self.required_failures

    @property
    def exit_code(self) -> int:
        return 0 if self.conformant else 1


def _run_one(c: Case, session: Session) -> CaseResult:
    t0 = time.perf_counter()
    details: dict[str, object] = {}
    try:
        evidence = c.func(session) or "ok"
        status = Status.PASS
    except CaseSkipped as exc:
        status, evidence = Status.SKIP, exc.reason
    except CaseFailed as exc:
        status, evidence, details = Status.FAIL, exc.evidence, dict(exc.details)
    except Exception as exc:  # the suite's own crash is a failure with evidence, never a pass
        status = Status.FAIL
        evidence = f"case raised {type(exc).__name__}: {exc}"
        details = {"traceback": traceback.format_exc(limit=6)}
    return CaseResult(c.id, c.group, c.title, c.spec, c.required, status, evidence, time.perf_counter() - t0,
                      details)


def run_suite(
    config: TargetConfig,
    *,
    profile: Profile | str = "standard",
    select: Sequence[str] | None = None,
    registry: Registry | None = None,
    strict: bool = False,
    on_result: Callable[[CaseResult], None] | None = None,
) -> Report:
    """Run the selected cases (ids or id prefixes; all by default) against ``config.target``."""
    import fedcheck.conformance.cases  # noqa: F401 - fills REGISTRY

    prof = load_profile(profile) if isinstance(profile, str) else profile
    reg = registry or REGISTRY
    cases = reg.select(list(select) if select else None)
    session = Session(config, prof)
    started = time.time()
    t0 = time.perf_counter()
    results: list[CaseResult] = []
    try:
        for c in cases:
            r = _run_one(c, session)
            results.append(r)
            if on_result is not None:
                on_result(r)
    finally:
        session.close()
    first = session.info_history[0] if session.info_history else None
    node: dict[str, object] = {}
    if first is not None:
        node = {"state": first.state, "epoch_id": first.epoch_id, "index_size": int(first.index_size),
                "max_batch": int(first.limits.max_batch), "protocol_versions": list(first.protocol_versions)}
    return Report(config.target, prof.name, tuple(results), started, time.perf_counter() - t0, node, strict)
