"""Holder audit heads verified at the coordinator against configured audit public keys (no sockets)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fedcheck.coordinator.config import load_coordinator_config
from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import ConfigError, Unavailable
from fedcheck.node.devfed import write_federation
from fedcheck.rpc.messages import (
    BlindEvaluateRequest,
    Evaluation,
    GetIndexRequest,
    HolderStatus,
    IndexChunk,
    NodeInfo,
)
from fedcheck.trust import audit as audit_mod
from fedcheck.trust.audit import AuditLog, check_event, generate_signing_key, save_signing_key
from fedcheck.trust.pki import PeerIdentity
from tests.test_coordinator_rounds import _request

PEER = PeerIdentity("node", "QQQ", 1)


class SigningNode:
    """Answers every evaluation with the signed head of its own audit log (``head`` = "none": no head)."""

    def __init__(self, log: AuditLog, head: str = "own") -> None:
        self.log = log
        self.head = head

    def node_info(self, *, timeout: float) -> NodeInfo:
        raise Unavailable("down")

    def get_index(self, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        raise Unavailable("down")

    def blind_evaluate(self, request: BlindEvaluateRequest, *, timeout: float) -> Evaluation:
        _, head = self.log.append_anchored({"type": "evaluate", "round_id": request.round_id})
        if self.head == "none":
            return Evaluation("e1", request.blinded, b"proof")
        return Evaluation("e1", request.blinded, b"proof", audit_seq=head.seq, audit_hash=head.hash,
                          audit_signature=head.signature)


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[tuple[RoundEngine, list[dict[str, Any]], dict[str, AuditLog]]]:
    keys = {s: generate_signing_key() for s in ("AAA", "BBB", "CCC", "DDD", "EEE")}
    logs = {s: AuditLog(tmp_path / s / "audit.jsonl", k) for s, k in keys.items()}
    nodes = {
        "AAA": SigningNode(logs["AAA"]),  # key configured, signs with it: verified
        "BBB": SigningNode(logs["BBB"]),  # configured key is another one: unverified
        "CCC": SigningNode(logs["CCC"]),  # no key configured: neither list
        "DDD": SigningNode(logs["DDD"], head="none"),  # key configured, returns no head: unverified
    }
    configured = {
        "AAA": keys["AAA"].public_key(),
        "BBB": keys["EEE"].public_key(),
        "DDD": keys["DDD"].public_key(),
    }
    events: list[dict[str, Any]] = []

    def sink(event: Mapping[str, Any]) -> None:
        events.append(check_event(event))  # the new fields pass the audit allow-list

    eng = RoundEngine(
        nodes, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"", crl=lambda: None, verify_signatures=False,
        audit=sink, audit_public_keys=configured,
    )
    yield eng, events, logs
    eng.close()
    for log in logs.values():
        log.close()


def test_head_signatures_checked_against_configured_keys(
    fed: tuple[RoundEngine, list[dict[str, Any]], dict[str, AuditLog]], caplog: pytest.LogCaptureFixture
) -> None:
    eng, events, logs = fed
    with caplog.at_level(logging.WARNING, logger="fedcheck.coordinator"):
        result = eng.submit_round(PEER, _request("r1", ["AAA", "BBB", "CCC", "DDD", "ZZZ"]))
    # the answer is still delivered to the querier: this is oversight evidence, not a round failure
    by = result.by_state()
    assert all(by[s].status is HolderStatus.OK for s in ("AAA", "BBB", "CCC", "DDD"))
    (ev,) = [e for e in events if e.get("round_id") == "r1"]
    assert ev["anchors_verified"] == ["AAA"]
    assert ev["anchors_unverified"] == ["BBB", "DDD"]
    assert set(ev["anchors"]) == {"AAA", "BBB", "CCC"}  # heads are still recorded as received
    assert ev["anchors"]["AAA"] == logs["AAA"].signed_head.anchor
    warned = [r for r in caplog.records if getattr(r, "reason", "") == "audit_anchor_unverified"]
    assert sorted(getattr(r, "state", "") for r in warned) == ["BBB", "DDD"]


def test_no_keys_configured_adds_no_verification_fields(tmp_path: Path) -> None:
    key = generate_signing_key()
    log = AuditLog(tmp_path / "audit.jsonl", key)
    events: list[dict[str, Any]] = []
    eng = RoundEngine({"AAA": SigningNode(log)}, RoundStore(tmp_path / "r.sqlite"), ca_pem=b"",
                      crl=lambda: None, verify_signatures=False, audit=events.append)
    try:
        eng.submit_round(PEER, _request("r1", ["AAA"]))
    finally:
        eng.close()
        log.close()
    (ev,) = events
    assert "AAA" in ev["anchors"]
    assert "anchors_verified" not in ev and "anchors_unverified" not in ev


def test_devfed_config_names_each_holder_audit_key(tmp_path: Path) -> None:
    fed = write_federation(tmp_path / "fed", ("FRA", "KEN"), metrics=False)
    cfg = load_coordinator_config(fed.coordinator_config)
    assert set(cfg.audit_public_keys) == {"FRA", "KEN"}
    for state in ("FRA", "KEN"):
        pub = audit_mod.load_public_key(tmp_path / "fed" / state / "data" / "audit-signing.key.pub.pem")
        assert cfg.audit_public_keys[state].public_bytes_raw() == pub.public_bytes_raw()


def _coordinator_toml(tmp_path: Path, key_line: str) -> Path:
    p = tmp_path / "c" / "coordinator.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        '[coordinator]\ninsecure_dev = true\n\n[nodes.KEN]\naddress = "127.0.0.1:1"\n' + key_line + "\n",
        encoding="utf-8",
    )
    return p


def test_audit_public_key_path_is_relative_to_the_config(tmp_path: Path) -> None:
    key = generate_signing_key()
    (tmp_path / "keys").mkdir()
    pub = save_signing_key(tmp_path / "keys" / "ken.key", key, None)
    cfg = load_coordinator_config(_coordinator_toml(tmp_path, f'audit_public_key = "../keys/{pub.name}"'))
    assert cfg.audit_public_keys["KEN"].public_bytes_raw() == key.public_key().public_bytes_raw()


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (None, 'audit_public_key = "missing.pem"'),
        (b"not a key", 'audit_public_key = "bad.pem"'),
        ("rsa", 'audit_public_key = "bad.pem"'),
        (None, "audit_public_key = 5"),
    ],
)
def test_audit_public_key_errors_name_the_key(tmp_path: Path, content: object, line: str) -> None:
    if content == "rsa":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        content = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    path = _coordinator_toml(tmp_path, line)
    if isinstance(content, bytes):
        (path.parent / "bad.pem").write_bytes(content)
    with pytest.raises(ConfigError, match=r"nodes\.KEN\.audit_public_key"):
        load_coordinator_config(path)
