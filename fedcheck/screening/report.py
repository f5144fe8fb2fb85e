"""Screening results and their two renderings (an officer's table, machine-readable JSON).

The JSON shape is the documented contract of ``fedcheck screen`` and ``fedcheck query``::

    [{"traveller": "<id>", "hits": [{"state": "FRA", "mode": "exact", "key_type": "document",
                                     "label": {"category": ..., "reference": ...}}]}]

Cardinality rounds reveal only a count per State, rendered as ``{"counts": [{"state", "mode", "hits"}]}``.

A traveller that was *not* checked against some requested State (kept out by the querier's protection policy,
no usable key, or the State did not answer) carries ``"not_checked": {"<State>": "<reason>"}``; an entry
without ``not_checked`` was checked against every requested State. An empty ``hits`` list is "no hit" only
for the States it was checked against.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fedcheck.trust.policy import EXCLUSION_CAUSES

__all__ = [
    "Hit", "ScreenReport", "StateCount", "TravellerResult",
    "exclusion_reason", "rejected_rows", "state_reason",
]


def exclusion_reason(cause_text: str) -> str:
    """Why a traveller was kept out of a State's round by the querier's protection policy."""
    return f"excluded: protected person, {cause_text}"


def state_reason(status: str) -> str:
    """Why nobody was checked against a State that did not answer (``status``: unavailable, timeout,
    refused)."""
    return f"State {status}"


def rejected_rows(rejections: Sequence[Any]) -> list[dict[str, Any]]:
    """Manifest rows the reader rejected (objects with ``where``/``reason``), as report entries: the line
    number when there is one, where, and why -- never the row's content."""
    out: list[dict[str, Any]] = []
    for r in rejections:
        where = str(r.where)
        num = where[5:] if where.startswith("line ") else ""
        out.append({"line": int(num) if num.isdigit() else None, "where": where, "reason": str(r.reason)})
    return out


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
    #: requested States (``"FRA (fuzzy)"`` for the fuzzy round of ``--mode both``) this traveller was NOT
    #: checked against, and why; empty = checked against every requested State
    not_checked: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"traveller": self.traveller, "hits": [h.to_json() for h in self.hits]}
        if self.not_checked:
            out["not_checked"] = dict(sorted(self.not_checked.items()))
        return out


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
    #: manifest rows the reader rejected, never screened: ``{"line", "where", "reason"}``
    #: (:func:`rejected_rows`)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def hit_travellers(self) -> list[TravellerResult]:
        return [t for t in self.travellers if t.hits]

    @property
    def not_fully_screened(self) -> list[TravellerResult]:
        """Travellers not checked against at least one requested State."""
        return [t for t in self.travellers if t.not_checked]

    @property
    def nothing_answered(self) -> bool:
        """States were asked and none of them answered: nothing was screened."""
        return bool(self.statuses) and not any(v.startswith("ok") for v in self.statuses.values())

    @property
    def complete(self) -> bool:
        """Every requested State answered, every traveller was checked against every one of them, and no
        manifest row was rejected."""
        return (all(v.startswith("ok") for v in self.statuses.values()) and not self.not_fully_screened
                and not self.rejected)

    def not_checked_json(self) -> list[dict[str, Any]]:
        """``[{"traveller", "not_checked": {State: reason}}]`` for every traveller not fully screened."""
        return [{"traveller": t.traveller, "not_checked": dict(sorted(t.not_checked.items()))}
                for t in self.not_fully_screened]

    def summary(self) -> dict[str, Any]:
        """The counts behind the summary line (JSON ``summary``)."""
        return {
            "travellers": len(self.travellers),
            "fully_screened": len(self.travellers) - len(self.not_fully_screened),
            "not_fully_screened": len(self.not_fully_screened),
            "with_hits": len(self.hit_travellers),
            "rejected_rows": len(self.rejected),
            "nothing_screened": self.nothing_answered,
            "complete": self.complete,
        }

    def to_json(self) -> str:
        if self.counts and not any(t.hits for t in self.travellers):
            doc: dict[str, Any] = {"counts": [c.__dict__ for c in self.counts], "statuses": self.statuses}
            if self.not_fully_screened:
                doc["not_checked"] = self.not_checked_json()
            return json.dumps(doc, indent=2)
        return json.dumps([t.to_json() for t in self.travellers], indent=2)

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
        lines.extend(self._not_checked_lines(show_names))
        if self.rejected:
            lines.append(f"{len(self.rejected)} manifest row(s) rejected, not screened: "
                         + ", ".join(f"{r['where']} ({r['reason']})" for r in self.rejected))
        lines.append(self._summary_line())
        n_review = sum(1 for t in self.travellers for h in t.hits if h.review_required)
        if n_review:
            lines.append(
                f"HUMAN REVIEW REQUIRED: {n_review} hit(s) marked [REVIEW] are leads for an official, "
                "never grounds for automatic action."
            )
        if self.timings:
            lines.append("Timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in self.timings.items()))
        return "\n".join(lines)

    def _summary_line(self) -> str:
        n = len(self.travellers)
        n_hit = len(self.hit_travellers)
        rejected = (f"; {len(self.rejected)} manifest row(s) rejected, not screened" if self.rejected else "")
        if self.nothing_answered:
            return f"no State answered: nothing was screened ({n} travellers NOT CHECKED{rejected})."
        if not self.statuses and not self.not_fully_screened:  # offline screening against local lists
            return f"{n} travellers screened, {n_hit} with at least one hit{rejected}."
        partial = len(self.not_fully_screened)
        hits = ("hits counted per State only" if self.counts and not n_hit
                else f"{n_hit} with at least one hit")
        return (f"{n} travellers: {n - partial} fully screened against all requested States, {partial} not "
                f"fully screened{' (see NOT CHECKED)' if partial else ''}, {hits}{rejected}.")

    def _not_checked_lines(self, show_names: bool) -> list[str]:
        """``NOT CHECKED`` lines: one per State reason that applies to every traveller (a State that did not
        answer), then one per traveller for the rest (e.g. kept out by the protection policy)."""
        partial = self.not_fully_screened
        if not partial:
            return []
        lines: list[str] = []
        everyone: dict[str, str] = {}
        if len(self.travellers) > 1:
            states = set.intersection(*(set(t.not_checked) for t in self.travellers))
            for s in sorted(states):
                reasons = {t.not_checked[s] for t in self.travellers}
                if len(reasons) == 1:
                    everyone[s] = reasons.pop()
            for reason, states_ in _by_reason(everyone).items():
                lines.append(f"ALL {len(self.travellers)} travellers NOT CHECKED against "
                             f"{', '.join(states_)} ({reason})")
        for t in partial:
            rest = {s: r for s, r in t.not_checked.items() if s not in everyone}
            if not rest:
                continue
            who = "  ".join(x for x in (t.traveller, t.name if show_names else "") if x)
            lines.append(f"{who}  NOT CHECKED against "
                         + "; ".join(f"{', '.join(st)} ({r})" for r, st in _by_reason(rest).items()))
        return lines


def _by_reason(not_checked: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for state, reason in sorted(not_checked.items()):
        out.setdefault(reason, []).append(state)
    return out


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
