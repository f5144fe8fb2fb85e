"""Regression tests for three suspicions of an independent security review:

1. a database error (locked, disk I/O) in the holder's replay guard or budget ledger escaped the services'
   ``except FedcheckError`` blocks: unaudited, a bare INTERNAL, and on the fuzzy path a spent round id;
2. the coordinator kept one round-id namespace for every member, so a member could squat an id (a case
   number) another member was going to use, or be replayed another member's answer;
3. the holder's replay keys of fuzzy rounds (``fuzzy:<id>``) were valid exact round ids of the same querier.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import test_fuzzy_service_review as fr
import test_security_review as sr
from test_coordinator_rounds import FakeNode
from test_coordinator_rounds import _request as exact_request
from test_review_coordinator_robust import FuzzyNode, _fuzzy_request
from test_security_review import COORD, Pki

from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import FedcheckError, InvalidInput, PreconditionFailed
from fedcheck.fuzzy import LabelRequest, QuerierKey, ScoreResponse
from fedcheck.node.replay import ReplayGuard
from fedcheck.rpc import serde
from fedcheck.rpc.messages import RoundPayload, RoundTarget, SignedEnvelope, SubmitRoundRequest
from fedcheck.trust.pki import PeerIdentity, sign_payload


@pytest.fixture(scope="module")
def pki() -> Pki:
    return sr.pki.__wrapped__()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def qkey() -> QuerierKey:
    return QuerierKey.generate(1024)


class FailingDb:
    """A sqlite connection whose statements starting with one of ``fail`` raise ``error``."""

    def __init__(self, db: Any, fail: tuple[str, ...], error: str = "database is locked") -> None:
        self.db, self.fail, self.error = db, fail, error

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().startswith(self.fail):
            raise sqlite3.OperationalError(self.error)
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _assert_storage_refusal(exc: BaseException, events: list[dict[str, Any]], kind: str = "refusal") -> None:
    """UNAVAILABLE ``storage_unavailable``, audited as a refusal of the verified partner."""
    assert isinstance(exc, FedcheckError), f"escaped untyped: {exc!r}"
    assert exc.status == "UNAVAILABLE" and exc.reason == "storage_unavailable"
    assert "locked" not in exc.message and "disk" not in exc.message  # the operator log has the detail
    assert events, "refusal not audited"
    event = events[-1]
    assert event["type"] == kind and event["outcome"] == "refused" and event["partner"] == "FRA"
    assert event["status"] == "UNAVAILABLE" and event["reason"] == "storage_unavailable"


# -- 1. storage errors: typed, audited, nothing charged, no replay entry left ------------------------------


@pytest.mark.parametrize(
    "fail",
    [
        ("BEGIN IMMEDIATE",),  # "database is locked" after the busy timeout
        ("INSERT INTO usage",),  # an I/O error inside the charge's transaction: rolled back
        ("COMMIT",),
    ],
)
def test_exact_budget_storage_error_is_audited_and_charges_nothing(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch, fail: tuple[str, ...]
) -> None:
    svc, budget, epochs, events = sr._holder(tmp_path, pki, budget_per_epoch=10)
    real = budget._db
    monkeypatch.setattr(budget, "_db", FailingDb(real, fail))
    req = sr._request(pki, [b"a", b"b"], "r-locked")
    with pytest.raises(Exception) as info:
        svc.blind_evaluate(COORD, req)
    _assert_storage_refusal(info.value, events)
    assert events[-1]["round_id"] == "r-locked" and epochs.evaluations == 0
    monkeypatch.setattr(budget, "_db", real)
    assert not real.in_transaction
    assert budget.remaining("FRA", "DEU-e1").per_epoch == 10  # nothing charged
    ev = svc.blind_evaluate(COORD, req)  # the claim was released: the retry is a new, charged request
    assert not ev.replayed and epochs.evaluations == 1
    assert budget.remaining("FRA", "DEU-e1").per_epoch == 8


def test_exact_replay_storage_error_is_audited_and_charges_nothing(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, budget, epochs, events = sr._holder(tmp_path, pki, budget_per_epoch=10)
    guard = svc._replay
    assert guard is not None
    real = guard._db
    monkeypatch.setattr(guard, "_db", FailingDb(real, ("INSERT",), "disk I/O error"))
    req = sr._request(pki, [b"a"], "r-io")
    with pytest.raises(Exception) as info:
        svc.blind_evaluate(COORD, req)
    _assert_storage_refusal(info.value, events)
    assert budget.remaining("FRA", "DEU-e1").per_epoch == 10 and epochs.evaluations == 0
    monkeypatch.setattr(guard, "_db", real)
    assert real.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # nothing half-written
    assert not svc.blind_evaluate(COORD, req).replayed


def test_exact_duplicate_with_failing_ledger_is_audited(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, budget, _, events = sr._holder(tmp_path, pki, budget_per_epoch=10)
    req = sr._request(pki, [b"a"], "r-dup")
    svc.blind_evaluate(COORD, req)
    real = budget._db
    monkeypatch.setattr(budget, "_db", FailingDb(real, ("SELECT",)))
    with pytest.raises(Exception) as info:  # the duplicate's remaining() fails
        svc.blind_evaluate(COORD, req)
    _assert_storage_refusal(info.value, events)
    monkeypatch.setattr(budget, "_db", real)
    assert svc.blind_evaluate(COORD, req).replayed
    assert budget.remaining("FRA", "DEU-e1").per_epoch == 9


def test_storage_unavailable_maps_to_grpc_unavailable_with_its_reason() -> None:
    from fedcheck.errors import StorageUnavailable
    from fedcheck.rpc.errors import REASON_KEY, abort, from_rpc_error, status_for

    class Aborted(Exception):
        pass

    class Context:
        def set_trailing_metadata(self, md: Any) -> None:
            self.md = dict(md)

        def abort(self, code: grpc.StatusCode, details: str) -> None:
            self.code, self.details = code, details
            raise Aborted

    assert status_for(sqlite3.OperationalError("database is locked")) is grpc.StatusCode.INTERNAL  # before
    ctx = Context()
    with pytest.raises(Aborted):
        abort(ctx, StorageUnavailable())  # type: ignore[arg-type]
    assert ctx.code is grpc.StatusCode.UNAVAILABLE and ctx.md[REASON_KEY] == "storage_unavailable"
    assert "storage" in ctx.details and "retry" in ctx.details

    class Err(grpc.RpcError, grpc.Call):  # type: ignore[misc]
        def code(self) -> grpc.StatusCode:
            return ctx.code

        def details(self) -> str:
            return ctx.details

        def trailing_metadata(self) -> Any:
            return tuple(ctx.md.items())

    back = from_rpc_error(Err())  # type: ignore[abstract]
    assert back.status == "UNAVAILABLE" and back.reason == "storage_unavailable"


def test_fuzzy_score_budget_storage_error_frees_the_round_id(
    tmp_path: Path, pki: Pki, qkey: QuerierKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, events = fr._svc(tmp_path, pki)
    budget = svc._budget
    real = budget._db
    monkeypatch.setattr(budget, "_db", FailingDb(real, ("BEGIN IMMEDIATE",)))
    _, _, sreq = fr._score_request(pki, qkey, "fz-locked")
    with pytest.raises(Exception) as info:
        svc.score(COORD, sreq)
    _assert_storage_refusal(info.value, events, kind="fuzzy_score")
    monkeypatch.setattr(budget, "_db", real)
    assert budget.remaining("FRA", "DEU-e1").per_epoch == 50
    svc.score(COORD, sreq)  # the replay claim was released: not round_id_reused
    assert budget.remaining("FRA", "DEU-e1").per_epoch == 49


def test_fuzzy_score_replay_storage_error_is_audited(
    tmp_path: Path, pki: Pki, qkey: QuerierKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, events = fr._svc(tmp_path, pki)
    guard = svc._replay
    assert guard is not None
    real = guard._db
    monkeypatch.setattr(guard, "_db", FailingDb(real, ("INSERT",), "disk I/O error"))
    _, _, sreq = fr._score_request(pki, qkey, "fz-io")
    with pytest.raises(Exception) as info:
        svc.score(COORD, sreq)
    _assert_storage_refusal(info.value, events, kind="fuzzy_score")
    assert svc._budget.remaining("FRA", "DEU-e1").per_epoch == 50


def test_fuzzy_release_storage_error_is_audited_and_charges_nothing(
    tmp_path: Path, pki: Pki, qkey: QuerierKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, events = fr._svc(tmp_path, pki)
    q, req, sreq = fr._score_request(pki, qkey, "fz-rel")
    ans = svc.score(COORD, sreq)
    hits = q.decide(req, ScoreResponse.from_bytes(ans.score_response)).hits
    rreq = fr._release(pki, "fz-rel", LabelRequest(req.round_id, tuple(hits)))
    left = svc._budget.remaining("FRA", "DEU-e1").per_epoch
    for target in (svc._replay, svc._budget):
        real = target._db  # type: ignore[union-attr]
        monkeypatch.setattr(target, "_db", FailingDb(real, ("INSERT", "BEGIN IMMEDIATE")))
        with pytest.raises(Exception) as info:
            svc.release(COORD, rreq)
        _assert_storage_refusal(info.value, events, kind="fuzzy_release")
        monkeypatch.setattr(target, "_db", real)
        assert svc._budget.remaining("FRA", "DEU-e1").per_epoch == left
    assert svc.release(COORD, rreq).sealed_label_response  # neither failure spent the signed follow-up


# -- 2. round ids are per querier at the coordinator ------------------------------------------------------


def _signed_round(pki: Pki, state: str, round_id: str, n: int = 1) -> SubmitRoundRequest:
    """A round signed by ``state``'s node certificate, asking DEU for ``n`` elements."""
    now = int(time.time() * 1000)
    batch = (b"\x02" * 32,) * n
    payload = RoundPayload(round_id, "border", "LB", "exact",
                           (RoundTarget("DEU", "e1", n, hashlib.sha256(b"".join(batch)).digest()),),
                           now + 5000, now)
    cert, key = pki.certs[state]
    data = serde.round_payload_to_bytes(payload)
    return SubmitRoundRequest(SignedEnvelope(data, sign_payload(key, data), cert), {"DEU": batch}, round_id)


@pytest.fixture
def signed_engine(tmp_path: Path, pki: Pki) -> Iterator[tuple[RoundEngine, FakeNode]]:
    holder = FakeNode("ok")
    eng = RoundEngine({"DEU": holder}, RoundStore(tmp_path / "r.sqlite"), ca_pem=pki.ca_pem,
                      crl=lambda: None, verify_signatures=True)
    yield eng, holder
    eng.close()


def test_a_members_round_id_is_not_squatted_by_another(
    signed_engine: tuple[RoundEngine, FakeNode], pki: Pki
) -> None:
    eng, holder = signed_engine
    fra, ita = PeerIdentity("node", "FRA", 1), PeerIdentity("node", "ITA", 2)
    squat = eng.submit_round(ita, _signed_round(pki, "ITA", "CASE-2024-001", n=2))  # ITA takes FRA's id first
    assert not squat.replayed and holder.calls == 1
    req = _signed_round(pki, "FRA", "CASE-2024-001")
    mine = eng.submit_round(fra, req)  # neither refused (round_id_reused) nor ITA's answer replayed
    assert not mine.replayed and holder.calls == 2
    again = eng.submit_round(fra, req)  # FRA's own resubmission is still idempotent
    assert again.replayed and again.results == mine.results and holder.calls == 2
    with pytest.raises(PreconditionFailed) as info:  # another payload under FRA's id: refused as before
        eng.submit_round(fra, _signed_round(pki, "FRA", "CASE-2024-001", n=3))
    assert info.value.reason == "round_id_reused"


def test_another_members_copy_of_a_payload_is_not_answered_from_its_result(tmp_path: Path) -> None:
    holder = FakeNode("ok")
    eng = RoundEngine({"AAA": holder}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"", crl=lambda: None,
                      verify_signatures=False)
    try:
        req = exact_request("CASE-7", ["AAA"])
        eng.submit_round(PeerIdentity("node", "FRA", 1), req)
        other = eng.submit_round(PeerIdentity("node", "ITA", 2), req)  # same payload bytes, other querier
    finally:
        eng.close()
    assert not other.replayed and holder.calls == 2


def test_round_store_namespaces_ids_once_results_expired(tmp_path: Path) -> None:
    """After ``result_ttl`` only the store remembers a round: the id stays taken for its querier only."""
    holder = FakeNode("ok")
    eng = RoundEngine({"AAA": holder}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"", crl=lambda: None,
                      verify_signatures=False, result_ttl_seconds=0)
    fra, ita = PeerIdentity("node", "FRA", 1), PeerIdentity("node", "ITA", 2)
    try:
        req = exact_request("CASE-8", ["AAA"])
        eng.submit_round(fra, req)
        assert not eng.submit_round(ita, exact_request("CASE-8", ["AAA"], n=3)).replayed
        with pytest.raises(PreconditionFailed) as info:
            eng.submit_round(fra, req)
        assert info.value.reason == "round_expired"  # FRA's own id stays taken, as before
        with pytest.raises(PreconditionFailed) as info:
            eng.submit_round(fra, exact_request("CASE-8", ["AAA"], n=4))
        assert info.value.reason == "round_id_reused"
    finally:
        eng.close()
    assert holder.calls == 2


def test_fuzzy_relay_round_ids_are_per_querier(tmp_path: Path) -> None:
    holder = FuzzyNode("ok")
    fra, ita = PeerIdentity("node", "FRA", 1), PeerIdentity("node", "ITA", 2)
    for ttl in (900.0, 0.0):  # held in memory, and remembered by the store only
        eng = RoundEngine({"AAA": holder}, RoundStore(tmp_path / f"r{ttl}.sqlite"), ca_pem=b"",
                          crl=lambda: None, verify_signatures=False, result_ttl_seconds=ttl)
        try:
            req = _fuzzy_request("fz-case", ["AAA"])
            calls = holder.calls
            assert not eng.submit_fuzzy_round(ita, req).replayed
            assert not eng.submit_fuzzy_round(fra, req).replayed  # same id (and bytes): FRA's own round
            assert holder.calls == calls + 2
            if ttl:
                assert eng.submit_fuzzy_round(fra, req).replayed and holder.calls == calls + 2
        finally:
            eng.close()


_OLD_ROUNDS_SCHEMA = """
CREATE TABLE rounds (
    round_id TEXT PRIMARY KEY, payload_sha256 TEXT NOT NULL, querier TEXT NOT NULL, mode TEXT NOT NULL,
    targets INTEGER NOT NULL, items INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER);
CREATE TABLE round_holders (
    round_id TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
    items INTEGER NOT NULL, latency_ms INTEGER NOT NULL, PRIMARY KEY (round_id, state));
CREATE TABLE audit_anchors (
    round_id TEXT NOT NULL, state TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
    signature BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (round_id, state));
INSERT INTO rounds VALUES ('CASE-1', 'aa', 'FRA', 'exact', 1, 2, 1000, 2000);
INSERT INTO round_holders VALUES ('CASE-1', 'DEU', 'ok', '', 2, 15);
INSERT INTO audit_anchors VALUES ('CASE-1', 'DEU', 5, 'ab', x'0102', 2000);
"""


def test_round_store_of_an_earlier_version_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "rounds.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_OLD_ROUNDS_SCHEMA)
    db.close()
    payload = serde.round_payload_from_bytes(exact_request("CASE-1", ["DEU"]).round.payload)
    for _ in range(2):  # the migration runs once; reopening is a no-op
        store = RoundStore(path)
        assert store.anchors() == [("FRA", "CASE-1", "DEU", 5, "ab", b"\x01\x02")]
        assert store.holders("FRA", "CASE-1") == [("DEU", "ok", "")]
        assert store.claim("CASE-1", "bb", "FRA", payload, 1) == "aa"  # still FRA's round
        store.close()
    store = RoundStore(path)
    assert store.claim("CASE-1", "cc", "ITA", payload, 1) is None  # free for another member
    store.close()
    db = sqlite3.connect(path)
    pk = {t: [r[1] for r in sorted(db.execute(f"PRAGMA table_info({t})"), key=lambda r: r[5]) if r[5]]
          for t in ("rounds", "round_holders", "audit_anchors")}
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert pk == {"rounds": ["querier", "round_id"], "round_holders": ["querier", "round_id", "state"],
                  "audit_anchors": ["querier", "round_id", "state"]}
    assert not any(t.endswith("_v1") for t in tables)


# -- 3. the holder's replay keys of exact and fuzzy rounds never collide -----------------------------------


def test_exact_round_named_like_a_fuzzy_key_does_not_collide(
    tmp_path: Path, pki: Pki, qkey: QuerierKey
) -> None:
    fuzzy, _ = fr._svc(tmp_path, pki)
    exact, _, _, _ = sr._holder(tmp_path, pki)  # the same replay database (tmp_path / "r.sqlite")
    # an exact round "fuzzy:r1" first, then FRA's own fuzzy round "r1" (and the other way round for r2)
    assert not exact.blind_evaluate(COORD, sr._request(pki, [b"a"], "fuzzy:r1")).replayed
    _, _, s1 = fr._score_request(pki, qkey, "r1")
    assert fuzzy.score(COORD, s1).score_response
    _, _, s2 = fr._score_request(pki, qkey, "r2")
    assert fuzzy.score(COORD, s2).score_response
    assert not exact.blind_evaluate(COORD, sr._request(pki, [b"b"], "fuzzy:r2")).replayed
    # duplicates within each kind are handled as before (a restarted node: only the replay guard remembers)
    restarted, _ = fr._svc(tmp_path, pki)
    with pytest.raises(PreconditionFailed) as info:
        restarted.score(COORD, s1)
    assert info.value.reason == "round_id_reused"
    req = sr._request(pki, [b"c"], "fuzzy:r3")
    exact.blind_evaluate(COORD, req)
    assert exact.blind_evaluate(COORD, req).replayed


def test_fuzzy_replay_keys_cannot_be_round_ids() -> None:
    from fedcheck.node.replay import fuzzy_key, release_key

    for key in (fuzzy_key("r1"), release_key("ab" * 32)):
        with pytest.raises(InvalidInput):
            serde.validate_round_id(key)
    assert serde.validate_round_id("fuzzy:r1") == "fuzzy:r1"  # an exact round id, its own key


def test_replay_keys_of_an_earlier_version_are_renamed(tmp_path: Path) -> None:
    from fedcheck.node.replay import fuzzy_key, release_key

    path = tmp_path / "replay.sqlite"
    ReplayGuard(path, window_seconds=600).close()
    db = sqlite3.connect(path)
    now = time.time()
    db.executemany(
        "INSERT INTO claims (querier, round_id, digest, at, state, owner, answer) VALUES (?,?,?,?,?,?,?)",
        [
            ("FRA", "fuzzy:r1", "a" * 64, now, "answered", "", None),  # fuzzy round r1 (old key)
            ("FRA", "release:" + "b" * 64, "b" * 64, now, "answered", "", None),  # a follow-up (old key)
            ("FRA", "fuzzy:x", "c" * 64, now, "answered", "", b"\x00\x00answer"),  # exact round "fuzzy:x"
        ],
    )
    db.commit()
    db.close()
    g = ReplayGuard(path, window_seconds=600)
    assert g.claim("FRA", fuzzy_key("r1"), "a" * 64) is False  # still refused as a duplicate
    assert g.claim("FRA", release_key("b" * 64), "b" * 64) is False
    assert g.begin("FRA", "fuzzy:x", "c" * 64).answer == b"\x00\x00answer"  # the exact round is untouched
    assert g.claim("FRA", fuzzy_key("x"), "d" * 64) is True  # fuzzy round x is another round
    g.close()
