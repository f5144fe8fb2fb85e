"""A fuzzy round where one State fails in only some sub-rounds: only those sub-rounds' travellers are
NOT CHECKED against it (a traveller with a hit there is never marked); the querier audit logs what holders
received."""

from __future__ import annotations

from typing import Any

import pytest

from fedcheck.fuzzy import QuerierKey, ScoreRequest
from fedcheck.node import fuzzyquery
from fedcheck.node.fuzzyquery import FuzzyOptions, FuzzyQueryRunner
from fedcheck.node.querier import QueryOptions
from fedcheck.rpc.messages import FuzzyScore, HolderResult, HolderStatus, RoundResult
from tests.test_refugee_padding_fuzzy import KEY_BITS, THETA, _FakeCoordinator, key, world  # noqa: F401

OPTIONS = QueryOptions(states=("DEU", "ITA"), legal_basis="FED-agreement-2026/art.5", unit="FRA-BORDER-01",
                       official="officer-0001", deadline_seconds=30)


class _FailsSecondSubRoundAtITA(_FakeCoordinator):  # type: ignore[misc]
    calls = 0

    def submit_fuzzy_round(self, request: Any, *, timeout: float) -> RoundResult:
        self.calls += 1
        self.submitted.append(request)
        results = []
        for state, data in request.requests.items():
            if state == "ITA" and self.calls == 2:
                results.append(HolderResult(state, HolderStatus.UNAVAILABLE, reason="down"))
                continue
            resp = self.holders[state].score(ScoreRequest.from_bytes(data))
            answer = FuzzyScore(f"ep-{state}", resp.to_bytes())
            results.append(HolderResult(state, HolderStatus.OK, fuzzy=answer))
        return RoundResult(request.round_id, tuple(results), 0, 0)


def _runner(coord: Any, qkey: QuerierKey, monkeypatch: pytest.MonkeyPatch) -> FuzzyQueryRunner:
    monkeypatch.setattr(QuerierKey, "generate", classmethod(lambda cls, bits=2048: qkey))
    monkeypatch.setattr(fuzzyquery, "sign_payload", lambda key_pem, payload: b"sig")
    monkeypatch.setattr(fuzzyquery, "verify_answer", lambda *a, **kw: None)
    return FuzzyQueryRunner(state="FRA", coordinator=coord, cert_pem=b"cert", key_pem=b"key")


def test_a_sub_round_failure_marks_only_its_own_travellers(
    world: Any, key: QuerierKey, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    coord = _FailsSecondSubRoundAtITA(world["lists"])
    runner = _runner(coord, key, monkeypatch)
    report = runner.run(list(world["manifest"]), OPTIONS, FuzzyOptions(key_bits=KEY_BITS, threshold=THETA,
                                                                       workers=1, sub_round_travellers=3))
    assert len(coord.submitted) >= 3
    assert "sub-rounds" in report.statuses["ITA"]
    marked = [t for t in report.travellers if "ITA" in t.not_checked]
    assert marked and len(marked) < len(report.travellers)  # only the failed sub-round's travellers
    for t in report.travellers:
        assert not ("ITA" in t.not_checked and any(h.state == "ITA" for h in t.hits))


def test_querier_audit_counts_what_each_holder_received(
    world: Any, key: QuerierKey, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    coord = _FakeCoordinator(world["lists"])
    runner = _runner(coord, key, monkeypatch)
    events: list[dict[str, Any]] = []
    runner.audit = events.append
    runner.run(list(world["manifest"]), OPTIONS, FuzzyOptions(key_bits=KEY_BITS, threshold=THETA, workers=1))
    sent: dict[str, int] = {}
    for req in coord.submitted:
        for s, data in req.requests.items():
            sent[s] = sent.get(s, 0) + ScoreRequest.from_bytes(data).traveller_count
    assert events[-1]["items_by_state"] == sent
