"""Cases, outcomes and the registry of the conformance suite.

Why: an evaluator compares runs across nodes and releases, so every case has a stable id, the spec section it
checks, whether conformance requires it, and a result that carries evidence (what was sent, what came back),
in the manner of gRPC's interop test cases. Cases are plain functions registered with :func:`case`; they pass
by returning, and fail or skip by raising :class:`CaseFailed` / :class:`CaseSkipped` (or calling
:func:`check`). Anything else they raise is a failure too, with the exception as evidence: a suite must never
turn its own crash into a pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedcheck.conformance.session import Session

__all__ = [
    "GROUPS",
    "REGISTRY",
    "Case",
    "CaseFailed",
    "CaseFunc",
    "CaseResult",
    "CaseSkipped",
    "Registry",
    "Status",
    "case",
    "check",
]


class Status(StrEnum):
    """Outcome of one case."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


#: Case groups in run order: epoch after every other case that uses the cached index and key (it may wait for
#: or trigger a new epoch, after which they are stale), budget last of the node's groups (it spends the test
#: partner's budget, which need not refill with a new epoch id: holders may count it per time window), then
#: coordinator (it only runs with --coordinator and talks to another service).
GROUPS: tuple[str, ...] = (
    "services",
    "version",
    "transport",
    "index",
    "oprf",
    "exact",
    "cardinality",
    "fuzzy",
    "bad_input",
    "policy",
    "epoch",
    "budget",
    "coordinator",
)

_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


class CaseFailed(Exception):
    """Raised by a case: the node did not behave as the spec requires. ``evidence`` says what was seen."""

    def __init__(self, evidence: str, **details: Any) -> None:
        super().__init__(evidence)
        self.evidence = evidence
        self.details = details


class CaseSkipped(Exception):
    """Raised by a case: it cannot run against this target (feature not advertised, credentials missing)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check(condition: bool, evidence: str, **details: Any) -> None:
    """Fail the running case with ``evidence`` unless ``condition`` holds."""
    if not condition:
        raise CaseFailed(evidence, **details)


CaseFunc = Callable[["Session"], "str | None"]


@dataclass(frozen=True)
class Case:
    """One named check. ``func`` returns evidence for a pass (or None) and raises to fail or skip."""

    id: str
    group: str
    title: str
    spec: str
    required: bool
    func: CaseFunc = field(repr=False, compare=False)
    #: free-form description for docs and reports; defaults to the function docstring
    description: str = ""
    #: what the case needs: "partner" (signed requests), "tls", "fuzzy", ...
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    """The outcome of running one case against one target."""

    case_id: str
    group: str
    title: str
    spec: str
    required: bool
    status: Status
    evidence: str
    duration_s: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.case_id,
            "group": self.group,
            "title": self.title,
            "spec": self.spec,
            "required": self.required,
            "status": str(self.status),
            "evidence": self.evidence,
            "duration_s": round(self.duration_s, 4),
            "details": self.details,
        }


class Registry:
    """Ordered, id-unique collection of cases (ids are the suite's public, stable interface)."""

    def __init__(self) -> None:
        self._cases: dict[str, Case] = {}

    def add(self, c: Case) -> Case:
        if not _ID.match(c.id):
            raise ValueError(f"case id {c.id!r} must be dotted snake_case (group.name)")
        if c.group not in GROUPS:
            raise ValueError(f"case {c.id!r}: unknown group {c.group!r}")
        if not c.id.startswith(c.group + "."):
            raise ValueError(f"case id {c.id!r} must start with its group {c.group!r}")
        if c.id in self._cases:
            raise ValueError(f"duplicate case id {c.id!r}")
        self._cases[c.id] = c
        return c

    def get(self, case_id: str) -> Case:
        return self._cases[case_id]

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._cases

    def __iter__(self) -> Iterator[Case]:
        order = {g: i for i, g in enumerate(GROUPS)}
        return iter(sorted(self._cases.values(), key=lambda c: order[c.group]))

    def __len__(self) -> int:
        return len(self._cases)

    def select(self, patterns: list[str] | None) -> list[Case]:
        """Cases whose id equals or starts with one of ``patterns`` (all when None/empty), in run order."""
        cases = list(self)
        if not patterns:
            return cases
        return [c for c in cases if any(c.id == p or c.id.startswith(p.rstrip(".") + ".") for p in patterns)]


#: The suite's cases; :mod:`fedcheck.conformance.cases` fills it on import.
REGISTRY = Registry()


def case(
    id: str,
    *,
    title: str,
    spec: str,
    required: bool = True,
    needs: tuple[str, ...] = (),
    registry: Registry | None = None,
) -> Callable[[CaseFunc], CaseFunc]:
    """Register the decorated function as a case; the group is the id's first component."""

    def deco(func: CaseFunc) -> CaseFunc:
        (registry or REGISTRY).add(
            Case(
                id=id,
                group=id.split(".", 1)[0],
                title=title,
                spec=spec,
                required=required,
                func=func,
                description=" ".join((func.__doc__ or title).split()),
                needs=needs,
            )
        )
        return func

    return deco
