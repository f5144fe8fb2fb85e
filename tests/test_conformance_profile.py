"""The conformance profile, registry and reports, without a node."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import fedcheck.conformance.cases  # noqa: F401 - fills the registry
from fedcheck.conformance.model import GROUPS, REGISTRY, Case, CaseResult, Registry, Status
from fedcheck.conformance.profile import build_profile, write_watchlist
from fedcheck.conformance.report import render
from fedcheck.conformance.runner import Report
from fedcheck.records import match_keys, read_records


def test_profile_is_deterministic_and_consistent() -> None:
    a, b = build_profile(), build_profile()
    assert a == b
    kinds = {p.kind for p in a.probes}
    assert kinds == {"full", "document", "name_dob", "near_miss", "miss"}
    listed = {k.value for r in a.watchlist for k in match_keys(r)}
    for p in a.probes:
        hits = {k.value for k in match_keys(p.record)} & listed
        assert bool(hits) == p.must_hit, p.probe_id
        if p.kind == "document":
            assert {e.key_type for e in p.expected} == {"document"}


def test_profile_watchlist_round_trips(tmp_path: Path) -> None:
    prof = build_profile("small")
    out = tmp_path / "profile.jsonl"
    assert write_watchlist(prof, out) == len(prof.watchlist)
    res = read_records(out)
    assert not res.rejected and tuple(res.records) == prof.watchlist


def test_registry_ids_are_stable_and_documented() -> None:
    ids = [c.id for c in REGISTRY]
    assert len(ids) == len(set(ids)) and len(ids) > 90
    assert [c.group for c in REGISTRY] == sorted((c.group for c in REGISTRY), key=GROUPS.index)
    for c in REGISTRY:
        assert c.spec and c.title and c.description, c.id
    doc = (Path(__file__).resolve().parents[1] / "docs" / "conformance.md").read_text(encoding="utf-8")
    missing = [c.id for c in REGISTRY if not c.id.startswith("bad_input.") and f"`{c.id}`" not in doc]
    assert not missing, f"docs/conformance.md lacks {missing}"


def test_registry_rejects_bad_ids() -> None:
    reg = Registry()
    ok = Case("oprf.x", "oprf", "t", "s", True, lambda s: None)
    reg.add(ok)
    with pytest.raises(ValueError):
        reg.add(ok)
    with pytest.raises(ValueError):
        reg.add(Case("nogroup", "oprf", "t", "s", True, lambda s: None))
    with pytest.raises(ValueError):
        reg.add(Case("oprf.y", "exact", "t", "s", True, lambda s: None))
    assert [c.id for c in reg.select(["oprf"])] == ["oprf.x"]


def _report(strict: bool = False) -> Report:
    rs = (
        CaseResult("version.node_info", "version", "t", "spec", True, Status.PASS, "ok", 0.1),
        CaseResult("oprf.proof_verifies", "oprf", "t", "spec", True, Status.FAIL, "proof <bad> & \"x\"", 0.2),
        CaseResult("fuzzy.advertised_consistently", "fuzzy", "t", "spec", False, Status.SKIP, "n/a", 0.0),
        CaseResult("exact.must_hit", "exact", "t", "spec", True, Status.SKIP, "no partner", 0.0),
    )
    return Report("h:1", "standard", rs, 0.0, 0.3, {"state": "TST"}, strict)


def test_reports_and_exit_codes() -> None:
    rep = _report()
    assert rep.exit_code == 1 and [r.case_id for r in rep.required_failures] == ["oprf.proof_verifies"]
    assert [r.case_id for r in _report(strict=True).required_failures] == ["oprf.proof_verifies",
                                                                            "exact.must_hit"]
    table = render(rep, "table")
    assert "NOT CONFORMANT" in table and "1 passed, 1 failed, 2 skipped" in table
    doc = json.loads(render(rep, "json"))
    assert doc["conformant"] is False and doc["summary"] == {"pass": 1, "fail": 1, "skip": 2}
    suite = ET.fromstring(render(rep, "junit"))
    assert suite.get("tests") == "4" and suite.get("failures") == "1" and suite.get("skipped") == "2"
    fail = suite.find("testcase[@name='oprf.proof_verifies']/failure")
    assert fail is not None and "<bad>" in (fail.get("message") or "")
