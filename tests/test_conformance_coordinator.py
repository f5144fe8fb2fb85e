"""The conformance suite's coordinator cases against the real coordinator of the development federation
(tests/conftest.py: FRA, KEN, UNX and a coordinator as processes, mutual TLS, sealed keys).

The suite connects as an evaluator (``evaluator.EVA``, issued here by the federation CA, key sealed) and
submits rounds as the member FRA (its sealed node key, opened with FRA's KEK through ``--kek``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Federation

from fedcheck.conformance.model import Status
from fedcheck.conformance.runner import Report, run_suite
from fedcheck.conformance.session import TargetConfig

CASES = ("coordinator.health", "coordinator.mtls_required", "coordinator.per_state_statuses",
         "coordinator.idempotent_resubmission", "coordinator.unknown_state_refused")


def _explain(report: Report) -> str:
    return "\n".join(f"{r.status.value:4} {r.case_id}: {r.evidence}" for r in report.results)


@pytest.fixture(scope="module")
def evaluator(federation: Federation) -> tuple[Path, Path, str]:
    """(cert, sealed key, KEK spec): evaluator.EVA sealed under FRA's KEK (one --kek opens both keys)."""
    from fedcheck.node.devfed import DevFederation
    from fedcheck.trust.atrest import load_kek
    from fedcheck.trust.pki import issue_certificate

    fed = federation.fed
    assert isinstance(fed, DevFederation)
    spec = f"file:{federation.root / 'FRA' / 'kek'}"
    ca_kek = load_kek(f"file:{federation.root / 'pki' / 'ca.kek'}")
    files = issue_certificate(fed.ca_dir, federation.root / "pki" / "EVA", role="evaluator", state="EVA",
                              kek=load_kek(spec), ca_kek=ca_kek)
    return files.cert, files.key, spec


def _config(federation: Federation, evaluator: tuple[Path, Path, str], coordinator: str) -> TargetConfig:
    from fedcheck.node.devfed import DevFederation

    fed = federation.fed
    assert isinstance(fed, DevFederation)
    pki = federation.root / "pki"
    cert, key, kek = evaluator
    return TargetConfig(
        target=f"localhost:{fed.node_ports['KEN']}", ca=pki / "ca" / "ca.crt.pem", cert=cert, key=key,
        kek=kek,
        coordinator=coordinator, coordinator_cert=pki / "FRA" / "node.FRA.crt.pem",
        coordinator_key=pki / "FRA" / "node.FRA.key.sealed", timeout_s=15.0,
        purpose="border-screening",  # what the demo holders accept, so the rounds are evaluated (status OK)
    )


def test_real_coordinator_passes_the_coordinator_cases(federation: Federation,
                                                       evaluator: tuple[Path, Path, str]) -> None:
    from fedcheck.node.devfed import DevFederation

    fed = federation.fed
    assert isinstance(fed, DevFederation)
    report = run_suite(_config(federation, evaluator, f"localhost:{fed.coordinator_port}"),
                       select=["coordinator"])
    res = report.by_id()
    assert set(res) == set(CASES)
    for cid in CASES:
        assert res[cid].status is Status.PASS, _explain(report)
    assert "KEN=HOLDER_STATUS_OK" in res["coordinator.per_state_statuses"].evidence, _explain(report)
    assert "UNX=HOLDER_STATUS_OK" in res["coordinator.per_state_statuses"].evidence, _explain(report)
    assert "unknown_state" in res["coordinator.unknown_state_refused"].evidence


def test_coordinator_cases_fail_against_something_that_is_not_a_coordinator(
        federation: Federation, evaluator: tuple[Path, Path, str]) -> None:
    """Pointed at a node (mutual TLS, healthy, but no Coordinator service), the cases must not pass."""
    from fedcheck.node.devfed import DevFederation

    fed = federation.fed
    assert isinstance(fed, DevFederation)
    report = run_suite(_config(federation, evaluator, f"localhost:{fed.node_ports['UNX']}"),
                       select=["coordinator"])
    failed = {r.case_id for r in report.results if r.status is Status.FAIL}
    assert {"coordinator.health", "coordinator.per_state_statuses"} <= failed, _explain(report)
    assert not report.conformant


def test_coordinator_cases_skip_without_coordinator(federation: Federation,
                                                    evaluator: tuple[Path, Path, str]) -> None:
    cfg = _config(federation, evaluator, "")
    report = run_suite(cfg, select=["coordinator"])
    assert {r.status for r in report.results} == {Status.SKIP}
