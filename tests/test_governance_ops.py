"""Operator-side governance: KEK rotation CLI, import progress, replay guard, coordinator audit (no processes
except where noted)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fedcheck.cli.main import main as cli
from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import (
    FedcheckError,
    IntegrityError,
    PreconditionFailed,
    Unavailable,
    VerificationError,
)
from fedcheck.node.app import NodeApp, open_store
from fedcheck.node.config import load_node_config
from fedcheck.node.devfed import write_federation
from fedcheck.node.replay import ReplayGuard
from fedcheck.records.io import write_jsonl
from fedcheck.records.model import PersonName, PersonRecord, TravelDocument
from fedcheck.rpc.messages import Evaluation, HolderStatus
from fedcheck.trust.atrest import generate_kek_text
from fedcheck.trust.audit import AuditLog, generate_signing_key, verify_log
from fedcheck.trust.pki import PeerIdentity
from tests.test_coordinator_rounds import PEER, FakeNode, _request


def _records(n: int) -> list[PersonRecord]:
    return [
        PersonRecord(
            record_id=f"R{i}",
            names=(PersonName(f"Listed Person Number {i}"),),
            documents=(TravelDocument("P", f"AB{100000 + i}", "FRA"),),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return write_federation(tmp_path_factory.mktemp("ops"), ("FRA", "KEN"), metrics=False)


# -- KEK rotation -------------------------------------------------------------------------------------------


def _set_kek(config: Path, spec: str) -> None:
    text = config.read_text()
    lines = [f'kek = "{spec}"' if ln.startswith("kek = ") else ln for ln in text.splitlines()]
    config.write_text("\n".join(lines) + "\n")


def test_rotate_kek_node_starts_with_new_kek_only(fed: Any, tmp_path: Path) -> None:
    config: Path = fed.node_configs["KEN"]
    cfg = load_node_config(config)
    store = open_store(cfg)
    store.replace_list(_records(5))
    store.close()
    app = NodeApp(cfg)  # creates epoch keys (sealed in the store), audit log and key, opens the TLS key
    app.epochs.start()
    assert app.epochs.wait_ready(30)
    epoch = app.epochs.current().epoch_id
    app.audit({"type": "startup"})
    app.stop()
    new_kek = tmp_path / "new.kek"
    new_kek.write_text(generate_kek_text())
    new_kek.chmod(0o600)
    assert cli(["node", "rotate-kek", "--config", str(config), "--new-kek", f"file:{new_kek}"]) == 0
    # idempotent: a second run finds everything under the new KEK already
    assert cli(["node", "rotate-kek", "--config", str(config), "--new-kek", f"file:{new_kek}"]) == 0
    old_spec = cfg.kek
    with pytest.raises(VerificationError):  # the old KEK opens nothing any more
        NodeApp(load_node_config(config))
    _set_kek(config, f"file:{new_kek}")
    app = NodeApp(load_node_config(config))
    try:
        app.epochs.start()
        assert app.epochs.wait_ready(30)
        assert app.epochs.current().epoch_id == epoch  # sealed epoch key restored under the new KEK
        assert sorted(r.record_id for r in app.store.iter_records()) == [f"R{i}" for i in range(5)]
        app.audit({"type": "startup"})  # the audit signing key opened under the new KEK
    finally:
        app.stop()
    _set_kek(config, old_spec)
    with pytest.raises(FedcheckError):
        NodeApp(load_node_config(config))
    _set_kek(config, f"file:{new_kek}")


def test_rotate_kek_refuses_while_node_runs(fed: Any, tmp_path: Path) -> None:
    config: Path = fed.node_configs["FRA"]
    app = NodeApp(load_node_config(config))
    try:
        new_kek = tmp_path / "k"
        new_kek.write_text(generate_kek_text())
        assert cli(["node", "rotate-kek", "--config", str(config), "--new-kek", f"file:{new_kek}"]) == 2
    finally:
        app.stop()


# -- import progress ----------------------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watchlist_import_progress_on_tty_quiet_otherwise(
    fed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("CI", "NO_PROGRESS", "TERM"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "list.jsonl"
    write_jsonl(_records(300), path)
    args = ["watchlist", "import", "--config", str(fed.node_configs["FRA"]), str(path)]
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    assert cli(args) == 0
    drawn = tty.getvalue()
    assert "import FRA" in drawn and "300/300" in drawn and "%|" in drawn
    monkeypatch.undo()
    for var in ("CI", "NO_PROGRESS", "TERM"):
        monkeypatch.delenv(var, raising=False)
    write_jsonl(_records(301), path)
    assert cli(args) == 0  # stderr is not a TTY here: no bar
    assert "%|" not in capsys.readouterr().err
    monkeypatch.setenv("CI", "true")
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    write_jsonl(_records(302), path)
    assert cli(args) == 0
    assert "%|" not in tty.getvalue()


# -- replay guard -------------------------------------------------------------------------------------------


def test_replay_guard_duplicates_reuse_release_and_window(tmp_path: Path) -> None:
    now = [1000.0]
    g = ReplayGuard(tmp_path / "r.sqlite", window_seconds=60, clock=lambda: now[0])
    assert g.claim("FRA", "r1", "a" * 64) is True
    assert g.claim("FRA", "r1", "a" * 64) is False  # exact duplicate
    assert g.claim("KEN", "r1", "b" * 64) is True  # ids are per querier
    with pytest.raises(PreconditionFailed) as exc:
        g.claim("FRA", "r1", "c" * 64)
    assert exc.value.reason == "round_id_reused"
    g.release("FRA", "r1", "a" * 64)
    assert g.claim("FRA", "r1", "c" * 64) is True
    g.close()
    g = ReplayGuard(tmp_path / "r.sqlite", window_seconds=60, clock=lambda: now[0])  # survives a restart
    with pytest.raises(PreconditionFailed):
        g.claim("FRA", "r1", "d" * 64)
    now[0] += 121  # beyond 2 x window: such a request is stale anyway, the row is pruned
    assert g.claim("FRA", "r1", "d" * 64) is True
    g.close()


def _node_toml(tmp_path: Path, extra: str) -> Path:
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        f'[node]\nstate = "DEU"\nkek = "env:X"\n{extra}'
        '[tls]\ncert = "c"\nkey = "k"\nca = "a"\ncrl = "l"\n'
    )
    return cfg


def test_replay_caps_config_defaults_ranges_and_types(tmp_path: Path) -> None:
    from fedcheck.errors import ConfigError

    cfg = load_node_config(_node_toml(tmp_path, ""))
    assert (cfg.max_free_replays, cfg.max_replay_waiters) == (3, 4)  # the guard's historical defaults
    for extra, want in (("max_free_replays = 0\nmax_replay_waiters = 0\n", (0, 0)),
                        ("max_free_replays = 100\nmax_replay_waiters = 15\n", (100, 15))):
        cfg = load_node_config(_node_toml(tmp_path, extra))
        assert (cfg.max_free_replays, cfg.max_replay_waiters) == want
    for key, bad in (("max_free_replays", "-1"), ("max_free_replays", "101"), ("max_replay_waiters", "-1"),
                     ("max_replay_waiters", "16"), ("max_free_replays", "true"),
                     ("max_replay_waiters", '"4"'), ("max_free_replays", "2.5")):
        with pytest.raises(ConfigError, match=f"node.{key} must be") as exc:
            load_node_config(_node_toml(tmp_path, f"{key} = {bad}\n"))
        assert exc.value.reason in ("config_limits", "config_type"), (key, bad)


def test_replay_caps_reach_the_nodes_replay_guard(fed: Any) -> None:
    """[node] max_free_replays / max_replay_waiters configure the NodeApp's guard (a sibling of a devfed
    node's config, so its relative paths resolve the same)."""
    import time

    from fedcheck.errors import Aborted
    from fedcheck.node.replay import ReplayLimitExceeded

    base: Path = fed.node_configs["FRA"]
    config = base.with_name("node-replay-caps.toml")
    text = base.read_text()
    head, sep, rest = text.partition("[node]\n")
    assert sep
    config.write_text(head + sep + "max_free_replays = 1\nmax_replay_waiters = 0\n" + rest)
    app = NodeApp(load_node_config(config))
    try:
        guard = app.replay
        first = guard.begin("KEN", "caps-1", "a" * 64)
        guard.complete("KEN", "caps-1", first.token, b"answer")
        assert guard.begin("KEN", "caps-1", "a" * 64).answer == b"answer"  # the one free replay
        with pytest.raises(ReplayLimitExceeded):  # default 3 would answer it again
            guard.begin("KEN", "caps-1", "a" * 64)
        pending = guard.begin("KEN", "caps-2", "b" * 64)
        t0 = time.monotonic()
        with pytest.raises(Aborted):  # no waiter allowed: refused at once instead of waiting 5 s
            guard.begin("KEN", "caps-2", "b" * 64)
        assert time.monotonic() - t0 < 2.0
        guard.release("KEN", "caps-2", pending.token)
    finally:
        app.stop()
        config.unlink()


# -- coordinator audit (in-memory transport) ----------------------------------------------------------------


class AnchoredNode(FakeNode):
    def blind_evaluate(self, request: Any, *, timeout: float) -> Evaluation:
        ev = super().blind_evaluate(request, timeout=timeout)
        return Evaluation(
            ev.epoch_id,
            ev.evaluated,
            ev.proof,
            7,
            audit_seq=42,
            audit_hash="ab" * 32,
            audit_signature=b"s" * 64,
        )


def _engine(tmp_path: Path, audit: Any) -> tuple[RoundEngine, RoundStore]:
    store = RoundStore(tmp_path / "r.sqlite")
    nodes = {"AAA": AnchoredNode("ok"), "DDD": FakeNode("deny"), "EEE": FakeNode("budget")}
    return RoundEngine(
        nodes, store, ca_pem=b"", crl=lambda: None, verify_signatures=False, audit=audit
    ), store


def test_coordinator_audits_rounds_with_anchors_before_answering(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", generate_signing_key())
    eng, store = _engine(tmp_path, log.append)
    try:
        result = eng.submit_round(PEER, _request("round-a", ["AAA", "DDD", "EEE"]))
        by = result.by_state()
        assert by["DDD"].code == "PERMISSION_DENIED" and by["EEE"].code == "RESOURCE_EXHAUSTED"
        assert by["EEE"].retry_after_s == 60 and by["AAA"].status is HolderStatus.OK
        with pytest.raises(PreconditionFailed):  # refused submissions are audited too
            eng.submit_round(PEER, _request("round-a", ["AAA"], n=3))
    finally:
        eng.close()
    events = [json.loads(x)["event"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    rnd = events[0]
    assert rnd["type"] == "round" and rnd["querier"] == "QQQ" and rnd["round_id"] == "round-a"
    assert rnd["anchors"] == {"AAA": "42:" + "ab" * 32}
    assert rnd["holders"]["AAA"] == "ok" and rnd["holders"]["DDD"] == "refused/partner_not_allowed"
    assert rnd["items_by_state"] == {"AAA": 2, "DDD": 2, "EEE": 2} and rnd["outcome"] == "partial"
    assert events[1]["type"] == "refusal" and events[1]["reason"] == "round_id_reused"
    assert store.anchors("AAA") == [("QQQ", "round-a", "AAA", 42, "ab" * 32, b"s" * 64)]
    assert verify_log(tmp_path / "audit.jsonl", log.public_key).ok
    log.close()
    store.close()


def test_coordinator_answers_nothing_when_audit_fails(tmp_path: Path) -> None:
    def broken(event: Mapping[str, Any]) -> None:
        raise IntegrityError("disk full", reason="audit_write")

    eng, store = _engine(tmp_path, broken)
    try:
        # no answer leaves unaudited; it is held for a resubmission of the same round (audit_pending)
        with pytest.raises(Unavailable) as info:
            eng.submit_round(PeerIdentity("node", "QQQ", 1), _request("round-b", ["AAA"]))
        assert info.value.reason == "audit_pending" and isinstance(info.value.__cause__, IntegrityError)
    finally:
        eng.close()
        store.close()


def test_devfed_creates_sealed_audit_keys(fed: Any) -> None:
    root: Path = fed.root
    for d in (root / "KEN" / "data", root / "coordinator" / "data"):
        key = d / "audit-signing.key"
        assert key.read_bytes()[:4] != b"----"  # sealed, not PEM
        assert (d / "audit-signing.key.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY")
