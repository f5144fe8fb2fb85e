"""Query budgets (issue #5 "Abuse resistance"): counted in items evaluated, all-or-nothing, with a retry hint.

Why: budgets are what stop a partner enumerating a list (10^5 candidate document numbers). This group spends
the
test partner's budget for the current period, so it runs after every other evaluating case, and only when the
remaining budget is at most ``--budget-cap`` items.
"""

from __future__ import annotations

from fedcheck.conformance.cases._common import expect_ok, valid_blinded
from fedcheck.conformance.model import CaseFailed, CaseSkipped, case, check
from fedcheck.conformance.session import Call, Session

__all__: list[str] = []

RETRY_AFTER_KEY = "fedcheck-retry-after"


def _send(session: Session, n: int) -> Call:
    return session.blind_evaluate(valid_blinded(1) * n)


@case("budget.exhaustion",
      title="the budget is charged per item, refuses whole batches, then stops the partner",
      spec="issue #5 (budgets counted in items evaluated per epoch; BudgetExhausted RESOURCE_EXHAUSTED); "
      "common.proto BlindEvaluateResponse.budget_remaining/budget_limited", needs=("partner",))
def exhaustion(session: Session) -> str:
    """budget_limited is true and budget_remaining falls by exactly the batch size; a batch one larger than
    what remains is refused with RESOURCE_EXHAUSTED and charges nothing; the exact remainder is then accepted
    (budget_remaining 0, budget_limited still true); one more item is refused. Skipped when the node reports
    no budget for the partner (budget_limited false, budget_remaining 0)."""
    session.require_partner()
    max_batch = max(1, session.info().limits.max_batch)
    first = _send(session, 1)
    if first.status == "RESOURCE_EXHAUSTED":
        raise CaseSkipped("the test partner's budget is already spent for this period")
    resp1 = expect_ok(first, "a one-item batch")
    left = int(resp1.budget_remaining)
    if not resp1.budget_limited:
        # budget_limited = false means "no budget configured": budget_remaining must then be 0, and a node
        # that does count a budget must say so (else 0 would be ambiguous between unlimited and spent)
        check(left == 0, f"budget_limited is false but budget_remaining={left}: a node that counts a budget "
              "must set budget_limited")
        raise CaseSkipped("no budget configured for the test partner (budget_limited = false)")
    if left == 0:
        again = _send(session, 1)
        check(not again.ok, "budget_limited with budget_remaining=0, yet one more item was evaluated")
        check(again.status == "RESOURCE_EXHAUSTED", f"after budget_remaining=0, got {again.describe()}")
        session.memo["budget.refusal"] = again
        return "budget was exactly spent; the next item is refused"
    if left > session.config.budget_cap:
        raise CaseSkipped(f"remaining budget {left} is above --budget-cap {session.config.budget_cap}")
    steps = 0
    while left >= max_batch:  # spend down to less than one batch
        resp = expect_ok(_send(session, max_batch), "spending the budget")
        check(resp.budget_limited, "budget_limited turned false while the budget was being spent")
        check(int(resp.budget_remaining) == left - max_batch,
              f"budget_remaining went {left} -> {resp.budget_remaining} for {max_batch} items")
        left -= max_batch
        steps += 1
    over = _send(session, left + 1)
    check(over.status == "RESOURCE_EXHAUSTED",
          f"a batch of {left + 1} with {left} remaining got {over.describe()}")
    if left:
        rest = expect_ok(_send(session, left), f"the remaining {left} items (the refused batch must charge "
                         "nothing)")
        check(int(rest.budget_remaining) == 0 and rest.budget_limited,
              f"budget_remaining={rest.budget_remaining} budget_limited={rest.budget_limited} after spending "
              "all (expected 0 and true: spent, not unlimited)")
    last = _send(session, 1)
    check(last.status == "RESOURCE_EXHAUSTED", f"one item after exhaustion got {last.describe()}")
    session.memo["budget.refusal"] = last
    return f"refused at exactly the budget (after {steps} full batches and {left} items)"


@case("budget.retry_after", title="an exhausted budget comes with a retry-after hint",
      spec="issue #5 (a retry-after hint when a budget is exhausted); rpc/errors.py RETRY_AFTER_KEY",
      needs=("partner",))
def retry_after(session: Session) -> str:
    """The RESOURCE_EXHAUSTED refusal must carry ``fedcheck-retry-after`` trailing metadata, a positive
    number of
    seconds."""
    call = session.memo.get("budget.refusal")
    if not isinstance(call, Call):
        raise CaseSkipped("budget.exhaustion did not reach an exhausted budget")
    raw = call.trailing.get(RETRY_AFTER_KEY, "")
    if not raw.isdigit() or int(raw) <= 0:
        raise CaseFailed(f"fedcheck-retry-after is {raw!r}")
    return f"retry after {raw} s"
