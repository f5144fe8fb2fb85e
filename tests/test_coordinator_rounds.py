"""The round engine over the in-memory transport: parallel fan-out, statuses, idempotence (no sockets)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import BudgetExhausted, PolicyDenied, PreconditionFailed, Unavailable
from fedcheck.rpc import serde
from fedcheck.rpc.messages import (
    BlindEvaluateRequest,
    Evaluation,
    GetIndexRequest,
    HolderStatus,
    IndexChunk,
    NodeInfo,
    RoundPayload,
    RoundTarget,
    SignedEnvelope,
    SubmitRoundRequest,
)
from fedcheck.trust.pki import PeerIdentity

EL = b"\x02" * 32


class FakeNode:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.calls = 0

    def node_info(self, *, timeout: float) -> NodeInfo:
        raise Unavailable("down")

    def get_index(self, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        raise Unavailable("down")

    def blind_evaluate(self, request: BlindEvaluateRequest, *, timeout: float) -> Evaluation:
        self.calls += 1
        if self.behaviour == "down":
            raise Unavailable("connection refused", reason="unavailable")
        if self.behaviour == "slow":
            time.sleep(timeout + 0.5)
            raise Unavailable("deadline", reason="deadline")
        if self.behaviour == "deny":
            raise PolicyDenied("no", reason="partner_not_allowed")
        if self.behaviour == "budget":
            raise BudgetExhausted("spent", retry_after_s=60)
        return Evaluation("e1", request.blinded, b"proof")


def _request(round_id: str, states: list[str], n: int = 2, deadline_s: float = 1.0) -> SubmitRoundRequest:
    now = int(time.time() * 1000)
    batch = (EL,) * n
    digest = hashlib.sha256(b"".join(batch)).digest()
    payload = RoundPayload(
        round_id,
        "p",
        "b",
        "exact",
        tuple(RoundTarget(s, "e1", n, digest) for s in states),
        now + int(deadline_s * 1000),
        now,
    )
    env = SignedEnvelope(serde.round_payload_to_bytes(payload), b"sig", b"cert")
    return SubmitRoundRequest(env, {s: batch for s in states}, round_id)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[RoundEngine, dict[str, FakeNode]]]:
    nodes = {
        "AAA": FakeNode("ok"),
        "BBB": FakeNode("down"),
        "CCC": FakeNode("slow"),
        "DDD": FakeNode("deny"),
        "EEE": FakeNode("budget"),
    }
    eng = RoundEngine(
        nodes, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"", crl=lambda: None, verify_signatures=False
    )
    yield eng, nodes
    eng.close()


PEER = PeerIdentity("node", "QQQ", 1)


def test_statuses_per_holder_and_one_down_never_blocks(engine) -> None:  # type: ignore[no-untyped-def]
    eng, _ = engine
    t0 = time.time()
    result = eng.submit_round(PEER, _request("r1", ["AAA", "BBB", "CCC", "DDD", "EEE", "ZZZ"]))
    by = result.by_state()
    assert by["AAA"].status is HolderStatus.OK and by["AAA"].evaluation is not None
    assert by["BBB"].status is HolderStatus.UNAVAILABLE
    assert by["CCC"].status is HolderStatus.TIMEOUT
    assert by["DDD"].status is HolderStatus.REFUSED and by["DDD"].reason == "partner_not_allowed"
    assert by["EEE"].status is HolderStatus.REFUSED and by["EEE"].retry_after_s == 60
    assert by["ZZZ"].status is HolderStatus.UNAVAILABLE and by["ZZZ"].reason == "unknown_state"
    assert time.time() - t0 < 3.0


def test_resubmission_is_idempotent(engine) -> None:  # type: ignore[no-untyped-def]
    eng, nodes = engine
    req = _request("r2", ["AAA"])
    first = eng.submit_round(PEER, req)
    again = eng.submit_round(PEER, req)
    assert again.replayed and again.results == first.results and nodes["AAA"].calls == 1
    with pytest.raises(PreconditionFailed):
        eng.submit_round(PEER, _request("r2", ["AAA"], n=3))


def test_concurrent_duplicates_run_once(engine) -> None:  # type: ignore[no-untyped-def]
    eng, nodes = engine
    req = _request("r3", ["AAA"])
    threads = [threading.Thread(target=eng.submit_round, args=(PEER, req)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert nodes["AAA"].calls == 1


def test_unreachable_members_are_logged_for_the_coordinator_operator(
    engine: tuple[RoundEngine, dict[str, FakeNode]], caplog: pytest.LogCaptureFixture
) -> None:
    """ListNodes reports a member that does not answer as unavailable to the querier; the coordinator's own
    log names the State and the reason (an outage must leave a trace for the operator)."""
    import logging

    eng, nodes = engine
    with caplog.at_level(logging.WARNING, logger="fedcheck.coordinator"):
        entries = eng.list_nodes(PEER)
    assert all(not e.reachable for e in entries)
    logged = {getattr(r, "state", None) for r in caplog.records
              if "did not answer NodeInfo" in r.getMessage()}
    assert logged == set(nodes)
