"""Holder policy decisions (each rule allowing and refusing), index views, querier safeguards, TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedcheck.errors import ConfigError, LimitExceeded, PolicyDenied
from fedcheck.trust.budget import BudgetLimit
from fedcheck.trust.policy import (
    Decision,
    HolderPolicy,
    QuerierPolicy,
    RoundRequest,
    load_policy,
)

TOML = """
[node]
state = "FRA"

[policy.holder]
max_batch = 5000

[policy.holder.defaults]
purposes = ["border_control"]
require_legal_basis = true

[policy.holder.partners.DEU]
modes = ["exact", "cardinality", "fuzzy"]
key_types = ["document", "name_dob", "name_yob_nat", "phonetic_yob"]
label_fields = ["category", "reference", "listing_date"]
purposes = ["border_control", "visa"]
max_batch = 1000
budget_per_epoch = 100000
budget_per_day = 20000

[policy.holder.partners.ITA]
modes = ["cardinality"]
key_types = ["document"]
label_fields = ["category"]
require_legal_basis = false
withheld = ["NOTICE-2024-17"]

[policy.querier]
protected_flags = ["refugee", "asylum_seeker"]
human_review_sources = ["ITA"]
human_review_categories = ["interpol-red-notice"]
"""


@pytest.fixture()
def policy(tmp_path: Path) -> tuple[HolderPolicy, QuerierPolicy]:
    path = tmp_path / "node.toml"
    path.write_text(TOML)
    node = load_policy(path)
    return node.holder, node.querier


def _req(**kw: object) -> RoundRequest:
    base: dict[str, object] = {
        "partner": "DEU",
        "modes": ("exact",),
        "purpose": "border_control",
        "legal_basis": "Reg-2018/1862 art.36",
        "batch_size": 10,
    }
    base.update(kw)
    return RoundRequest(**base)  # type: ignore[arg-type]


def test_allowed_full(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    d = holder.decide(_req())
    assert d.allowed and d.status == "OK" and d.reasons == [] and not d.narrowed
    assert d.mode == "exact" and d.max_batch == 1000
    assert d.effective_key_types == ("document", "name_dob", "name_yob_nat", "phonetic_yob")
    assert d.raise_for_status() is d


def test_partner_rule(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    d = holder.decide(_req(partner="ESP"))
    assert (d.allowed, d.status, d.reasons) == (False, "PERMISSION_DENIED", ["partner_not_allowed"])
    with pytest.raises(PolicyDenied) as err:
        d.raise_for_status()
    assert err.value.reason == "partner_not_allowed"


def test_purpose_rule(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    assert holder.decide(_req(purpose="visa")).allowed
    d = holder.decide(_req(purpose="marketing"))
    assert not d.allowed and d.reasons == ["purpose_not_accepted"]
    # ITA inherits purposes from [defaults]: border_control only
    assert not holder.decide(_req(partner="ITA", modes=("cardinality",), purpose="visa")).allowed


def test_legal_basis_rule(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    d = holder.decide(_req(legal_basis="  "))
    assert not d.allowed and d.reasons == ["legal_basis_required"]
    ok = holder.decide(_req(partner="ITA", modes=("cardinality",), legal_basis=""))
    assert ok.allowed


def test_mode_rule_refuse_and_narrow(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    d = holder.decide(_req(partner="ITA", modes=("exact",)))
    assert not d.allowed and d.status == "PERMISSION_DENIED" and d.reasons == ["mode_not_allowed"]
    n = holder.decide(_req(partner="ITA", modes=("exact", "cardinality")))
    assert n.allowed and n.narrowed and n.reasons == ["narrowed_modes"] and n.mode == "cardinality"
    # single string tolerated
    single = RoundRequest(partner="ITA", modes="cardinality", purpose="x")  # type: ignore[arg-type]
    assert single.modes == ("cardinality",)


def test_key_type_rule_refuse_and_narrow(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    ita = {"partner": "ITA", "modes": ("cardinality",)}
    d = holder.decide(_req(**ita, key_types=("name_dob",)))
    assert not d.allowed and d.reasons == ["key_types_not_allowed"]
    n = holder.decide(_req(**ita, key_types=("document", "name_dob")))
    assert n.allowed and n.effective_key_types == ("document",) and "narrowed_key_types" in n.reasons
    assert holder.decide(_req(**ita)).effective_key_types == ("document",)


def test_label_fields_narrowed(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    n = holder.decide(_req(partner="ITA", modes=("cardinality",), label_fields=("category", "reference")))
    assert n.allowed and n.effective_label_fields == ("category",) and n.reasons == ["narrowed_label_fields"]
    assert holder.label_view("ITA", {"category": "c", "reference": "r"}) == {"category": "c"}
    assert holder.label_view("ESP", {"category": "c"}) == {}


def test_batch_rule(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    assert holder.decide(_req(batch_size=1000)).allowed
    d = holder.decide(_req(batch_size=1001))
    assert (d.allowed, d.status, d.reasons) == (False, "RESOURCE_EXHAUSTED", ["batch_too_large"])
    assert d.max_batch == 1000
    with pytest.raises(LimitExceeded):
        d.raise_for_status()
    # ITA inherits the holder-wide max_batch
    assert holder.decide(_req(partner="ITA", modes=("cardinality",), batch_size=5000)).allowed
    assert not holder.decide(_req(partner="ITA", modes=("cardinality",), batch_size=5001)).allowed


def test_all_refusal_reasons_reported(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    d = holder.decide(_req(partner="ITA", modes=("fuzzy",), purpose="x", key_types=("name_dob",)))
    assert set(d.reasons) == {"purpose_not_accepted", "mode_not_allowed", "key_types_not_allowed"}
    assert isinstance(d, Decision) and not d.narrowed


@dataclass(frozen=True)
class Entry:
    key: bytes
    key_type: str
    label: dict[str, str] = field(default_factory=dict)


def test_withheld_entries_are_absent_and_views_narrowed(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    holder, _ = policy
    entries = [
        Entry(b"a", "document", {"category": "sanctions", "reference": "NOTICE-2024-17"}),
        Entry(b"b", "document", {"category": "sanctions", "reference": "UN-1"}),
        Entry(b"c", "name_dob", {"category": "sanctions", "reference": "UN-1"}),
    ]
    ita = holder.filter_entries("ITA", entries)
    assert [e.key for e in ita] == [b"b"]  # withheld + key type not allowed: simply absent
    assert ita[0].label == {"category": "sanctions"}
    assert [e.key for e in holder.filter_entries("DEU", entries)] == [b"a", b"b", b"c"]
    assert holder.filter_entries("ESP", entries) == []
    assert holder.is_withheld("ITA", "NOTICE-2024-17") and not holder.is_withheld("DEU", "NOTICE-2024-17")
    assert len(holder.audiences()) == 2
    assert holder.budget_limits()["DEU"] == BudgetLimit(per_epoch=100000, per_day=20000)
    assert holder.budget_limits()["ITA"] == BudgetLimit()


@dataclass(frozen=True)
class Rec:
    record_id: str
    nationalities: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()


def test_querier_protected_flags(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    _, querier = policy
    recs = [
        Rec("r1", ("SYR",), frozenset({"refugee"})),
        Rec("r2", ("SYR",)),
        Rec("r3", ("IRN",), frozenset({"asylum_seeker"})),
        Rec("r4", (), frozenset({"refugee"})),
        Rec("r5", ("SYR",), frozenset({"minor"})),
    ]
    kept, excluded = querier.filter_manifest(recs, ["DEU", "SYR"])
    assert [r.record_id for r in kept] == ["r2", "r3", "r5"]
    assert {(e.record_id, e.reason) for e in excluded} == {
        ("r1", "protected_flag:refugee:state_of_nationality"),
        ("r4", "protected_flag:refugee:nationality_unknown"),
    }
    kept2, excluded2 = querier.filter_manifest(recs, ["DEU", "ITA"])
    assert [e.record_id for e in excluded2] == ["r4"] and len(kept2) == 4
    lenient = QuerierPolicy(exclude_if_nationality_unknown=False)
    assert len(lenient.filter_manifest(recs, ["SYR"])[0]) == 4


def test_human_review(policy: tuple[HolderPolicy, QuerierPolicy]) -> None:
    _, querier = policy
    assert querier.requires_human_review("ITA", {})
    assert querier.requires_human_review("DEU", {"category": "interpol-red-notice"})
    assert querier.requires_human_review("DEU", {}, record_flags={"refugee"})
    assert not querier.requires_human_review("DEU", {"category": "sanctions"})


@pytest.mark.parametrize(
    "doc",
    [
        {"policy": {"holder": {"partners": {"DEU": {"mode": ["exact"]}}}}},  # typo'd key
        {"policy": {"holder": {"partners": {"DEU": {"modes": ["telepathy"]}}}}},
        {"policy": {"holder": {"partners": {"DEU": {"key_types": ["face"]}}}}},
        {"policy": {"holder": {"partners": {"deu": {}}}}},
        {"policy": {"holder": {"partners": {"DEU": {"max_batch": 0}}}}},
        {"policy": {"holder": {"partners": {"DEU": {"budget_per_day": -1}}}}},
        {"policy": {"holder": {"partners": {"DEU": {"require_legal_basis": "yes"}}}}},
        {"policy": {"holder": {"extra": 1}}},
        {"policy": {"querier": {"human_review_sources": ["ita"]}}},
    ],
)
def test_bad_policy_rejected(doc: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        HolderPolicy.from_toml(doc)
        QuerierPolicy.from_toml(doc)


def test_empty_policy_is_default_deny(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("[node]\nstate='FRA'\n")
    node = load_policy(path)
    assert not node.holder.decide(_req()).allowed
    assert node.querier.protected_flags == frozenset({"refugee", "asylum_seeker"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy\n")
    with pytest.raises(ConfigError):
        load_policy(bad)
