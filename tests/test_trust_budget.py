"""Budget ledger: atomic charges, exhaustion and retry-after, reset by epoch and day, persistence."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from fedcheck.errors import BudgetExhausted, ConfigError, InvalidInput
from fedcheck.trust.budget import BudgetLedger, BudgetLimit


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2025, 3, 1, 23, 0, tzinfo=dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def test_epoch_budget_exhaustion_and_reset(tmp_path: Path) -> None:
    clock = Clock()
    ledger = BudgetLedger(tmp_path / "b.db", {"DEU": BudgetLimit(per_epoch=100)}, clock=clock)
    assert ledger.charge("DEU", 60, "e1").per_epoch == 40
    with pytest.raises(BudgetExhausted) as err:
        ledger.charge("DEU", 41, "e1", epoch_ends_unix=clock.now + 120)
    assert err.value.retry_after_s == 120 and err.value.reason == "epoch_budget_exhausted"
    assert err.value.status == "RESOURCE_EXHAUSTED"
    assert ledger.remaining("DEU").per_epoch == 40  # refused batch charged nothing
    assert ledger.charge("DEU", 40, "e1").per_epoch == 0
    with pytest.raises(BudgetExhausted) as err2:
        ledger.charge("DEU", 1, "e1")
    assert err2.value.retry_after_s == 3600
    # a new epoch resets the epoch budget
    assert ledger.charge("DEU", 100, "e2").per_epoch == 0
    refusals = ledger.refusals()
    assert [(r.partner, r.items, r.reason) for r in refusals] == [
        ("DEU", 41, "epoch_budget_exhausted"),
        ("DEU", 1, "epoch_budget_exhausted"),
    ]


def test_daily_budget_resets_at_utc_midnight(tmp_path: Path) -> None:
    clock = Clock()
    ledger = BudgetLedger(tmp_path / "b.db", {"ITA": BudgetLimit(per_day=10)}, clock=clock)
    ledger.charge("ITA", 10, "e1")
    with pytest.raises(BudgetExhausted) as err:
        ledger.charge("ITA", 1, "e2")  # a new epoch does not reset the daily budget
    assert err.value.reason == "daily_budget_exhausted" and err.value.retry_after_s == 3600
    clock.now += 3600
    assert ledger.charge("ITA", 10, "e2").per_day == 0
    assert ledger.remaining("ITA").items == 0


def test_enumeration_attempt_stopped(tmp_path: Path) -> None:
    """A partner sending 10^5 candidate document numbers in batches is stopped at its budget."""
    ledger = BudgetLedger(tmp_path / "b.db", {"XXA": BudgetLimit(per_epoch=20_000, per_day=50_000)})
    evaluated = 0
    refused = 0
    for _ in range(100):
        try:
            ledger.charge("XXA", 1000, "e1")
            evaluated += 1000
        except BudgetExhausted:
            refused += 1
    assert evaluated == 20_000 and refused == 80
    assert len(ledger.refusals(partner="XXA")) == 80


def test_persistence_and_unlimited(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with BudgetLedger(path, {"DEU": BudgetLimit(per_epoch=10)}) as ledger:
        ledger.charge("DEU", 7, "e1")
        rem = ledger.charge("FRA", 10**6, "e1")  # no limit configured: counted, not limited
        assert rem.per_epoch is None and rem.items is None
    with BudgetLedger(path, {"DEU": BudgetLimit(per_epoch=10)}) as again:
        assert again.remaining("DEU", "e1").per_epoch == 3
        with pytest.raises(BudgetExhausted):
            again.charge("DEU", 4, "e1")
        again.reset("DEU")
        assert again.charge("DEU", 10, "e1").per_epoch == 0
        assert again.prune(keep_days=0) >= 0


def test_concurrent_charges_never_overspend(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "b.db", {"DEU": BudgetLimit(per_epoch=500)})
    ok: list[int] = []

    def worker() -> None:
        for _ in range(20):
            try:
                ledger.charge("DEU", 7, "e1")
                ok.append(7)
            except BudgetExhausted:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(ok) == 497 and ledger.remaining("DEU", "e1").per_epoch == 3


def test_bad_arguments(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "b.db")
    with pytest.raises(InvalidInput):
        ledger.charge("DEU", -1, "e1")
    with pytest.raises(InvalidInput):
        ledger.charge("", 1, "e1")
    with pytest.raises(ConfigError):
        BudgetLimit(per_day=-5)
