"""Per-holder, per-partner data-sharing policy and the querier's safeguards, from the node's TOML.

Why this exists: each State keeps its own legislation and sovereignty by enforcing its own policy *in its
own node*: who may query, in which mode, on which match-key types, for which purposes, how much, and which
label fields each partner sees. The coordinator only narrows a round to what every holder allows and reports
why.

Holder side (:class:`HolderPolicy`): default deny -- a partner not listed may not query.
:meth:`HolderPolicy.decide` returns a :class:`Decision` that is either *allowed* (possibly *narrowed*: fewer
modes, key types or label fields than asked, with reasons) or *refused* with status ``PERMISSION_DENIED`` or
``RESOURCE_EXHAUSTED`` and reason codes. Withheld entries (e.g. a notice under challenge) are simply left
out of that partner's index (:meth:`HolderPolicy.filter_entries`), so a withheld entry is indistinguishable
from absence.

Querier side (:class:`QuerierPolicy`): records flagged e.g. ``refugee`` / ``asylum_seeker`` are kept out of
any round that includes a State of their nationality (UNHCR: never share a refugee's data with the country
of origin), and hits from chosen sources are marked "human review required".

Schema and reasoning: ``docs/policy.md``. Unknown keys are configuration errors (a typo must not silently
widen access). Reason codes never contain identities.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fedcheck.codes import STATE_CODE_RE, did_you_mean
from fedcheck.errors import ConfigError, LimitExceeded, PolicyDenied
from fedcheck.trust.budget import BudgetLedger, BudgetLimit

__all__ = [
    "ALL_KEY_TYPES",
    "ALL_MODES",
    "EXCLUSION_CAUSES",
    "POLICY_TABLE_KEYS",
    "BudgetLedger",
    "BudgetLimit",
    "Decision",
    "Exclusion",
    "HolderPolicy",
    "NodePolicy",
    "PartnerPolicy",
    "QuerierPolicy",
    "RoundRequest",
    "exclusion_causes",
    "load_policy",
]

#: Modes a holder can allow (wire names).
ALL_MODES: tuple[str, ...] = ("exact", "cardinality", "fuzzy")
#: Match-key types a holder can allow (values of ``fedcheck.records.keys.KeyType``).
ALL_KEY_TYPES: tuple[str, ...] = ("document", "name_dob", "name_yob_nat", "phonetic_yob")
DEFAULT_LABEL_FIELDS: tuple[str, ...] = ("category", "reference", "listing_date")
#: Fuzzy (Paillier) similarity kinds a holder can allow (``FuzzyParams.kind``).
ALL_FUZZY_KINDS: tuple[str, ...] = ("name", "face")
#: Key types that already disclose name matching: a partner allowed one of them may get name similarity.
NAME_KEY_TYPES: tuple[str, ...] = ("name_dob", "name_yob_nat", "phonetic_yob")
DEFAULT_PROTECTED_FLAGS: tuple[str, ...] = ("refugee", "asylum_seeker")

OK = "OK"
PERMISSION_DENIED = "PERMISSION_DENIED"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"

_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")
_PARTNER_KEYS = frozenset(
    {
        "modes",
        "key_types",
        "fuzzy_kinds",
        "label_fields",
        "purposes",
        "require_legal_basis",
        "max_batch",
        "budget_per_epoch",
        "budget_per_day",
        "withheld",
        "evaluator",
    }
)
#: not allowed in [policy.holder.defaults]: letting evaluator certificates stand in for a State is per partner
_PER_PARTNER_ONLY_KEYS = frozenset({"evaluator"})
_HOLDER_KEYS = frozenset({"max_batch", "defaults", "partners"})
_QUERIER_KEYS = frozenset(
    {"protected_flags", "exclude_if_nationality_unknown", "human_review_sources", "human_review_categories"}
)
#: what may sit directly under ``[policy]``: its sub-tables, or the keys of the flat form :func:`_subtable`
#: accepts (checked by :func:`fedcheck.node.config.load_node_config`, which names the config file)
POLICY_TABLE_KEYS = frozenset({"holder", "querier"}) | _HOLDER_KEYS | _QUERIER_KEYS


# ----------------------------------------------------------------------------------------------------
# parsing helpers
# ----------------------------------------------------------------------------------------------------


def _check_keys(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """Refuse keys of ``table`` not in ``allowed``, with a "did you mean" for each near miss (``purpose`` ->
    ``purposes``, ``partner`` -> ``partners``) and the known keys otherwise."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        hints = "; ".join(_key_hint(str(key), allowed, where) for key in unknown)
        raise ConfigError(f"{where}: unknown key(s) {unknown}: {hints}", reason="policy_unknown_key")


def _key_hint(key: str, allowed: frozenset[str], where: str) -> str:
    if key in _PER_PARTNER_ONLY_KEYS and where.endswith(".defaults"):
        return f"{key} is set per partner only, in [policy.holder.partners.<STATE>]"
    close = did_you_mean(key, allowed)
    if close:
        return f"did you mean {where}.{close}?"
    return f"{key!r}: known keys are {', '.join(sorted(allowed))}"


def _str_list(
    value: Any, where: str, *, allowed: Sequence[str] | None = None, pattern: re.Pattern[str] = _CODE_RE
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings", reason="policy_type")
    out = tuple(dict.fromkeys(value))
    for v in out:
        if allowed is not None and v not in allowed:
            raise ConfigError(f"{where}: {v!r} is not one of {list(allowed)}", reason="policy_value")
        if allowed is None and not pattern.match(v):
            raise ConfigError(f"{where}: invalid code", reason="policy_value")
    return out


def _opt_int(value: Any, where: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where}: must be an integer >= {minimum}", reason="policy_type")
    return value


def _state(code: Any, where: str) -> str:
    if not isinstance(code, str) or not STATE_CODE_RE.match(code):
        raise ConfigError(f"{where}: State codes are upper-case ISO 3166-1 alpha-3", reason="policy_value")
    return code


# ----------------------------------------------------------------------------------------------------
# holder side
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartnerPolicy:
    """What one partner State may do against this holder. Empty ``purposes`` means no purpose is accepted."""

    partner: str
    modes: tuple[str, ...] = ("exact",)
    key_types: tuple[str, ...] = ("document",)
    label_fields: tuple[str, ...] = ("category", "reference")
    purposes: tuple[str, ...] = ()
    require_legal_basis: bool = True
    max_batch: int = 10_000
    budget: BudgetLimit = field(default_factory=BudgetLimit)
    withheld: frozenset[str] = frozenset()
    #: explicit fuzzy kinds; None = derived from ``key_types`` (see :attr:`effective_fuzzy_kinds`)
    fuzzy_kinds: tuple[str, ...] | None = None
    #: whether ``evaluator`` certificates of this code may sign requests (and get this entry's grants).
    #: Default no: an ``evaluator.FRA`` certificate must not stand in for the member FRA; give a dedicated
    #: conformance code (e.g. ``EVA``) its own entry with ``evaluator = true``
    evaluator: bool = False

    @property
    def effective_fuzzy_kinds(self) -> tuple[str, ...]:
        """Fuzzy kinds this partner may run (mode ``fuzzy`` must be allowed too).

        Explicit ``fuzzy_kinds`` wins. Otherwise a partner allowed a name key type gets ``name`` and ``face``
        (identity matching beyond documents); a documents-only partner gets none, so granting it mode
        ``fuzzy`` alone never opens name or face similarity.
        """
        if self.fuzzy_kinds is not None:
            return self.fuzzy_kinds
        return ALL_FUZZY_KINDS if any(k in NAME_KEY_TYPES for k in self.key_types) else ()

    @classmethod
    def from_toml(
        cls, partner: str, table: Mapping[str, Any], *, default_max_batch: int = 10_000
    ) -> PartnerPolicy:
        where = f"policy.holder.partners.{partner}"
        _check_keys(table, _PARTNER_KEYS, where)
        base = cls(partner=_state(partner, where), max_batch=default_max_batch)
        max_batch = _opt_int(table.get("max_batch"), f"{where}.max_batch", minimum=1)
        rlb = table.get("require_legal_basis", True)
        if not isinstance(rlb, bool):
            raise ConfigError(f"{where}.require_legal_basis: must be true or false", reason="policy_type")
        evaluator = table.get("evaluator", False)
        if not isinstance(evaluator, bool):
            raise ConfigError(f"{where}.evaluator: must be true or false", reason="policy_type")
        return cls(
            partner=partner,
            modes=_str_list(table["modes"], f"{where}.modes", allowed=ALL_MODES)
            if "modes" in table
            else base.modes,
            key_types=(
                _str_list(table["key_types"], f"{where}.key_types", allowed=ALL_KEY_TYPES)
                if "key_types" in table
                else base.key_types
            ),
            label_fields=(
                _str_list(table["label_fields"], f"{where}.label_fields")
                if "label_fields" in table
                else base.label_fields
            ),
            purposes=_str_list(table.get("purposes", []), f"{where}.purposes"),
            require_legal_basis=rlb,
            max_batch=max_batch if max_batch is not None else default_max_batch,
            budget=BudgetLimit(
                per_epoch=_opt_int(table.get("budget_per_epoch"), f"{where}.budget_per_epoch", minimum=0),
                per_day=_opt_int(table.get("budget_per_day"), f"{where}.budget_per_day", minimum=0),
            ),
            withheld=frozenset(
                _str_list(table.get("withheld", []), f"{where}.withheld", pattern=re.compile(r"^\S{1,128}$"))
            ),
            fuzzy_kinds=(
                _str_list(table["fuzzy_kinds"], f"{where}.fuzzy_kinds", allowed=ALL_FUZZY_KINDS)
                if "fuzzy_kinds" in table
                else None
            ),
            evaluator=evaluator,
        )

    @property
    def audience_id(self) -> str:
        """Digest of everything that shapes this partner's index (key types, label fields, withheld set).

        Partners with the same audience id can share one index; the holder builds one index per audience.
        """
        doc = json.dumps(
            {"k": sorted(self.key_types), "l": sorted(self.label_fields), "w": sorted(self.withheld)},
            separators=(",", ":"),
        )
        return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class RoundRequest:
    """What a querier asks of one holder, as the holder sees it after verifying the request signature.

    ``partner`` is the querier's State **from its verified certificate**. ``modes`` is in order of preference
    (normally one). Empty ``key_types`` / ``label_fields`` mean "whatever the holder allows".
    """

    partner: str
    modes: tuple[str, ...]
    purpose: str
    legal_basis: str = ""
    batch_size: int = 0
    key_types: tuple[str, ...] = ()
    label_fields: tuple[str, ...] = ()
    unit: str = ""
    official: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.modes, str):  # tolerate RoundRequest(mode="exact") style single strings
            object.__setattr__(self, "modes", (self.modes,))


@dataclass(frozen=True)
class Decision:
    """Outcome of :meth:`HolderPolicy.decide`.

    ``status`` is ``"OK"``, ``"PERMISSION_DENIED"`` or ``"RESOURCE_EXHAUSTED"``; ``reasons`` are reason codes
    (``narrowed_*`` for an allowed-but-narrowed request, others for refusals).
    """

    allowed: bool
    status: str
    reasons: list[str]
    effective_modes: tuple[str, ...] = ()
    effective_key_types: tuple[str, ...] = ()
    effective_label_fields: tuple[str, ...] = ()
    max_batch: int = 0
    audience_id: str = ""

    @property
    def narrowed(self) -> bool:
        return self.allowed and any(r.startswith("narrowed_") for r in self.reasons)

    @property
    def mode(self) -> str:
        """The mode to run (first effective mode); empty when refused."""
        return self.effective_modes[0] if self.effective_modes else ""

    def raise_for_status(self) -> Decision:
        """Raise :class:`PolicyDenied` / :class:`LimitExceeded` for a refusal; return self otherwise."""
        if self.allowed:
            return self
        first = self.reasons[0] if self.reasons else "policy_denied"
        message = "holder policy refuses the request: " + ", ".join(self.reasons)
        reasons = tuple(self.reasons) or (first,)
        if self.status == RESOURCE_EXHAUSTED:
            raise LimitExceeded(message, reason=first, reasons=reasons)
        raise PolicyDenied(message, reason=first, reasons=reasons)


class _Entry(Protocol):
    @property
    def key_type(self) -> str: ...

    @property
    def label(self) -> Mapping[str, str]: ...


E = TypeVar("E", bound=_Entry)


@dataclass(frozen=True)
class HolderPolicy:
    """This node's policy as a holder: one :class:`PartnerPolicy` per partner allowed to query (default
    deny).
    """

    partners: Mapping[str, PartnerPolicy]
    max_batch: int = 10_000

    @classmethod
    def from_toml(cls, doc: Mapping[str, Any]) -> HolderPolicy:
        """Build from the ``[policy.holder]`` table (or a whole node document / ``[policy]`` table)."""
        table = _subtable(doc, "holder")
        _check_keys(table, _HOLDER_KEYS, "policy.holder")
        default_max = _opt_int(table.get("max_batch"), "policy.holder.max_batch", minimum=1) or 10_000
        defaults = table.get("defaults", {})
        partners_t = table.get("partners", {})
        if not isinstance(defaults, Mapping) or not isinstance(partners_t, Mapping):
            raise ConfigError("policy.holder.defaults / partners must be tables", reason="policy_type")
        _check_keys(defaults, _PARTNER_KEYS - _PER_PARTNER_ONLY_KEYS, "policy.holder.defaults")
        partners: dict[str, PartnerPolicy] = {}
        for code, ptable in partners_t.items():
            if not isinstance(ptable, Mapping):
                raise ConfigError("policy.holder.partners entries must be tables", reason="policy_type")
            merged = {**defaults, **ptable}
            partners[code] = PartnerPolicy.from_toml(code, merged, default_max_batch=default_max)
        return cls(partners=partners, max_batch=default_max)

    def partner(self, code: str) -> PartnerPolicy | None:
        return self.partners.get(code)

    def evaluator_refused(self, role: str, code: str) -> bool:
        """True for an ``evaluator`` signer whose code is a partner State not marked ``evaluator = true``:
        such a certificate must not get that State's modes, labels and budget. (An evaluator code that is no
        partner at all gets nothing anyway: ``partner_not_allowed``.)"""
        if role != "evaluator":
            return False
        p = self.partners.get(code)
        return p is not None and not p.evaluator

    def decide(self, request: RoundRequest) -> Decision:
        """Allowed (maybe narrowed) or refused, with every reason found (so the operator sees them all)."""
        p = self.partners.get(request.partner)
        if p is None:
            return Decision(False, PERMISSION_DENIED, ["partner_not_allowed"])
        refusals: list[str] = []
        narrowed: list[str] = []
        if request.purpose not in p.purposes:
            refusals.append("purpose_not_accepted")
        if p.require_legal_basis and not request.legal_basis.strip():
            refusals.append("legal_basis_required")
        modes = tuple(m for m in request.modes if m in p.modes)
        if not modes:
            refusals.append("mode_not_allowed")
        elif len(modes) < len(request.modes):
            narrowed.append("narrowed_modes")
        asked_keys = request.key_types or p.key_types
        keys = tuple(k for k in asked_keys if k in p.key_types)
        if not keys:
            refusals.append("key_types_not_allowed")
        elif len(keys) < len(asked_keys):
            narrowed.append("narrowed_key_types")
        asked_labels = request.label_fields or p.label_fields
        labels = tuple(f for f in asked_labels if f in p.label_fields)
        if len(labels) < len(asked_labels):
            narrowed.append("narrowed_label_fields")
        if refusals:
            return Decision(False, PERMISSION_DENIED, refusals, max_batch=p.max_batch)
        if request.batch_size > p.max_batch:
            return Decision(False, RESOURCE_EXHAUSTED, ["batch_too_large"], max_batch=p.max_batch)
        return Decision(True, OK, narrowed, modes, keys, labels, p.max_batch, p.audience_id)

    # -- what goes into a partner's index -------------------------------------------------------------
    def is_withheld(self, partner: str, reference: str) -> bool:
        p = self.partners.get(partner)
        return p is None or reference in p.withheld

    def label_view(self, partner: str, label: Mapping[str, str]) -> dict[str, str]:
        """The label fields disclosed to ``partner`` (others dropped)."""
        p = self.partners.get(partner)
        if p is None:
            return {}
        return {k: v for k, v in label.items() if k in p.label_fields}

    def filter_entries(self, partner: str, entries: Iterable[E]) -> list[E]:
        """``partner``'s view of index entries: withheld references removed entirely (indistinguishable from
        absence), key types outside the partner's allowance removed, labels narrowed to disclosed fields.

        Entries are frozen dataclasses with ``key_type`` and ``label`` (e.g.
        ``fedcheck.protocol.exact.IndexEntry``); narrowed labels are set with :func:`dataclasses.replace`.
        """
        p = self.partners.get(partner)
        if p is None:
            return []
        out: list[E] = []
        allowed_keys = frozenset(p.key_types)
        fields = frozenset(p.label_fields)
        for entry in entries:
            label = entry.label
            if str(entry.key_type) not in allowed_keys or label.get("reference", "") in p.withheld:
                continue
            if any(k not in fields for k in label):
                narrowed = {k: v for k, v in label.items() if k in fields}
                entry = dataclasses.replace(entry, label=narrowed)  # type: ignore[type-var]
            out.append(entry)
        return out

    def audiences(self) -> dict[str, list[str]]:
        """Audience id -> partners sharing it (one index per audience)."""
        groups: dict[str, list[str]] = {}
        for code, p in sorted(self.partners.items()):
            groups.setdefault(p.audience_id, []).append(code)
        return groups

    def budget_limits(self) -> dict[str, BudgetLimit]:
        """Per-partner limits for :class:`fedcheck.trust.budget.BudgetLedger`."""
        return {code: p.budget for code, p in self.partners.items()}


# ----------------------------------------------------------------------------------------------------
# querier side
# ----------------------------------------------------------------------------------------------------


class _ManifestRecord(Protocol):
    @property
    def record_id(self) -> str: ...

    @property
    def nationalities(self) -> tuple[str, ...]: ...

    @property
    def flags(self) -> frozenset[str]: ...


R = TypeVar("R", bound=_ManifestRecord)


#: Exclusion causes (the last field of :attr:`Exclusion.reason`, ``protected_flag:<flag>:<cause>``) and the
#: text an officer is shown for each.
EXCLUSION_CAUSES: Mapping[str, str] = {
    "state_of_nationality": "State of nationality",
    "nationality_unknown": "nationality unknown",
}


@dataclass(frozen=True)
class Exclusion:
    """A manifest record kept out of a round, and why (stays on the querying node; audit counts only)."""

    record_id: str
    reason: str

    @property
    def cause(self) -> str:
        """``state_of_nationality`` (a target is one of its nationalities) or ``nationality_unknown``."""
        return self.reason.rsplit(":", 1)[-1]

    @property
    def cause_text(self) -> str:
        """The cause as an officer reads it (:data:`EXCLUSION_CAUSES`)."""
        return EXCLUSION_CAUSES.get(self.cause, self.cause)


def exclusion_causes(excluded: Iterable[Exclusion]) -> dict[str, int]:
    """How many exclusions of each cause (``{"nationality_unknown": 2}``): what a report needs to say *why*
    travellers were not sent, without naming them."""
    counts: dict[str, int] = {}
    for e in excluded:
        counts[e.cause] = counts.get(e.cause, 0) + 1
    return counts


@dataclass(frozen=True)
class QuerierPolicy:
    """This node's safeguards as a querier."""

    protected_flags: frozenset[str] = frozenset(DEFAULT_PROTECTED_FLAGS)
    exclude_if_nationality_unknown: bool = True
    human_review_sources: frozenset[str] = frozenset()
    human_review_categories: frozenset[str] = frozenset()

    @classmethod
    def from_toml(cls, doc: Mapping[str, Any]) -> QuerierPolicy:
        table = _subtable(doc, "querier")
        _check_keys(table, _QUERIER_KEYS, "policy.querier")
        unknown = table.get("exclude_if_nationality_unknown", True)
        if not isinstance(unknown, bool):
            raise ConfigError(
                "policy.querier.exclude_if_nationality_unknown: true or false", reason="policy_type"
            )
        sources = _str_list(table.get("human_review_sources", []), "policy.querier.human_review_sources")
        for s in sources:
            _state(s, "policy.querier.human_review_sources")
        return cls(
            protected_flags=frozenset(
                _str_list(
                    table.get("protected_flags", list(DEFAULT_PROTECTED_FLAGS)),
                    "policy.querier.protected_flags",
                )
            ),
            exclude_if_nationality_unknown=unknown,
            human_review_sources=frozenset(sources),
            human_review_categories=frozenset(
                _str_list(table.get("human_review_categories", []), "policy.querier.human_review_categories")
            ),
        )

    def filter_manifest(
        self, records: Iterable[R], target_states: Iterable[str]
    ) -> tuple[list[R], list[Exclusion]]:
        """Split a manifest into records that may go to a round over ``target_states`` and those excluded.

        A record with a protected flag is excluded when a target is one of its nationalities, or (by default)
        when its nationality is unknown. Run a separate round without that State to check such a record.
        """
        targets = frozenset(target_states)
        kept: list[R] = []
        excluded: list[Exclusion] = []
        for rec in records:
            flags = sorted(self.protected_flags.intersection(rec.flags))
            if flags:
                if not rec.nationalities:
                    if self.exclude_if_nationality_unknown:
                        excluded.append(
                            Exclusion(rec.record_id, f"protected_flag:{flags[0]}:nationality_unknown")
                        )
                        continue
                elif targets.intersection(rec.nationalities):
                    excluded.append(
                        Exclusion(rec.record_id, f"protected_flag:{flags[0]}:state_of_nationality")
                    )
                    continue
            kept.append(rec)
        return kept, excluded

    def requires_human_review(
        self, holder_state: str, label: Mapping[str, str], *, record_flags: Iterable[str] = ()
    ) -> bool:
        """True when a hit must be reviewed by an official before any action: from a listed source (holder
        State or label category), or concerning a person with a protected flag."""
        return (
            holder_state in self.human_review_sources
            or label.get("category", "") in self.human_review_categories
            or bool(self.protected_flags.intersection(record_flags))
        )


# ----------------------------------------------------------------------------------------------------
# node document
# ----------------------------------------------------------------------------------------------------


def _subtable(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """Accept a whole node document, its ``[policy]`` table, or the ``[policy.<name>]`` table itself."""
    if "policy" in doc and isinstance(doc["policy"], Mapping):
        doc = doc["policy"]
    if name in doc:
        sub = doc[name]
        if not isinstance(sub, Mapping):
            raise ConfigError(f"policy.{name} must be a table", reason="policy_type")
        return sub
    if "holder" in doc or "querier" in doc:
        return {}
    own = _HOLDER_KEYS if name == "holder" else _QUERIER_KEYS
    return doc if own.intersection(doc) else {}


@dataclass(frozen=True)
class NodePolicy:
    holder: HolderPolicy
    querier: QuerierPolicy

    @classmethod
    def from_toml(cls, doc: Mapping[str, Any]) -> NodePolicy:
        return cls(HolderPolicy.from_toml(doc), QuerierPolicy.from_toml(doc))


def load_policy(path: Path | str) -> NodePolicy:
    """Read a node TOML file (or a policy-only TOML) and parse its ``[policy]`` section."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError:
        raise ConfigError("policy file missing or unreadable", reason="policy_unreadable") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file is not valid TOML: {exc}", reason="policy_syntax") from None
    try:
        return NodePolicy.from_toml(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", reason=exc.reason) from None
