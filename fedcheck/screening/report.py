"""Screening results and their two renderings (an officer's table, machine-readable JSON).

The JSON shape is the documented contract of ``fedcheck screen`` and ``fedcheck query``::

    [{"traveller": "<id>", "hits": [{"state": "FRA", "mode": "exact", "key_type": "document",
                                     "label": {"category": ..., "reference": ...}}]}]

Cardinality rounds reveal only a count per State, rendered as ``{"counts": [{"state", "mode", "hits"}]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fedcheck.trust.policy import EXCLUSION_CAUSES

__all__ = ["Hit", "ScreenReport", "StateCount", "TravellerResult"]


@dataclass(frozen=True)
class Hit:
    state: str
    mode: str  # "exact" | "fuzzy"
    key_type: str
    label: dict[str, str] = field(default_factory=dict)
    #: set by the querier's policy for sources whose hits need a human decision
    review_required: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "mode": self.mode, "key_type": self.key_type,
                               "label": dict(self.label)}
        if self.review_required:
            out["review_required"] = True
        return out


@dataclass
class TravellerResult:
    traveller: str
    name: str = ""
    hits: list[Hit] = field(default_factory=list)


@dataclass(frozen=True)
class StateCount:
    state: str
    mode: str
    hits: int


@dataclass
class ScreenReport:
    travellers: list[TravellerResult]
    counts: list[StateCount] = field(default_factory=list)
    #: per-State round status (ok/timeout/unavailable/refused + reason), empty offline
    statuses: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: per-State governance details of a federated round: ``code`` (e.g. PERMISSION_DENIED), ``reasons``,
    #: ``retry_after_s``, ``narrowed`` (policy narrowing codes), effective ``key_types`` / ``label_fields``,
    #: ``excluded`` (travellers the querier's own policy kept out of this State's round) and
    #: ``excluded_causes`` (count per cause code), ``audit_head``
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def hit_travellers(self) -> list[TravellerResult]:
        return [t for t in self.travellers if t.hits]

    def to_json(self) -> str:
        if self.counts and not any(t.hits for t in self.travellers):
            return json.dumps({"counts": [c.__dict__ for c in self.counts], "statuses": self.statuses},
                              indent=2)
        return json.dumps(
            [{"traveller": t.traveller, "hits": [h.to_json() for h in t.hits]} for t in self.travellers],
            indent=2,
        )

    def to_table(self, *, show_names: bool = True) -> str:
        lines: list[str] = []
        if self.statuses:
            lines.append("States: " + ", ".join(f"{s}={st}" for s, st in sorted(self.statuses.items())))
        for state, d in sorted(self.details.items()):
            lines.extend(_detail_lines(state, d))
        for c in self.counts:
            lines.append(f"{c.state}: {c.hits} traveller key(s) hit ({c.mode} mode, identities not revealed)")
        header = ("TRAVELLER", "NAME" if show_names else "", "STATE", "MODE", "KEY TYPES", "CATEGORY",
                  "REFERENCE")
        rows = [header]
        for t in self.hit_travellers:
            for h, key_types in _group(t.hits):
                rows.append((t.traveller, t.name if show_names else "", h.state, h.mode, key_types,
                             h.label.get("category", ""),
                             h.label.get("reference", "") + (" [REVIEW]" if h.review_required else "")))
        if len(rows) > 1:
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for r in rows:
                lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        n_hit = len(self.hit_travellers)
        lines.append(f"{len(self.travellers)} travellers screened, {n_hit} with at least one hit.")
        n_review = sum(1 for t in self.travellers for h in t.hits if h.review_required)
        if n_review:
            lines.append(
                f"HUMAN REVIEW REQUIRED: {n_review} hit(s) marked [REVIEW] are leads for an official, "
                "never grounds for automatic action."
            )
        if self.timings:
            lines.append("Timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in self.timings.items()))
        return "\n".join(lines)


def _detail_lines(state: str, d: dict[str, Any]) -> list[str]:
    """Policy outcome of one State, for the officer: refusal with codes, narrowing, querier exclusions."""
    out: list[str] = []
    if d.get("code") or (d.get("reasons") and not d.get("narrowed")):
        text = f"{state}: refused {d.get('code', '')}: {', '.join(d.get('reasons', ()))}".replace(" :", ":")
        if d.get("retry_after_s"):
            text += f" (retry after {d['retry_after_s']} s)"
        out.append(text)
    if d.get("narrowed"):
        parts = [", ".join(d["narrowed"])]
        if d.get("key_types"):
            parts.append("key types " + ",".join(d["key_types"]))
        if d.get("label_fields"):
            parts.append("label fields " + ",".join(d["label_fields"]))
        out.append(f"{state}: narrowed by holder policy: " + "; ".join(parts))
    if d.get("excluded"):
        causes = ", ".join(EXCLUSION_CAUSES.get(c, c) for c in d.get("excluded_causes", {}))
        out.append(f"{state}: {d['excluded']} traveller(s) not sent (querier policy: protected person, "
                   f"{causes or 'State of nationality'})")
    return out


def _group(hits: Sequence[Hit]) -> list[tuple[Hit, str]]:
    """One table row per (State, mode, listed entry), with the key types that matched it."""
    groups: dict[tuple[str, str, str], tuple[Hit, list[str]]] = {}
    for h in hits:
        k = (h.state, h.mode, h.label.get("reference", ""))
        _, types = groups.setdefault(k, (h, []))
        if h.key_type not in types:
            types.append(h.key_type)
    return [(h, ",".join(types)) for h, types in groups.values()]
