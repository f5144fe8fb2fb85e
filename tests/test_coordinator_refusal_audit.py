"""The coordinator audits every refused submission, exact and fuzzy alike, before the refusal leaves."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import FedcheckError
from fedcheck.rpc import serde
from fedcheck.rpc.messages import (
    RoundPayload,
    RoundTarget,
    SignedEnvelope,
    SubmitFuzzyRoundRequest,
    SubmitRoundRequest,
)
from fedcheck.trust.pki import PeerIdentity, create_ca, issue_certificate, sign_payload


@pytest.mark.parametrize("mode", ["exact", "fuzzy"])
def test_refused_submission_is_audited(tmp_path: Path, mode: str) -> None:
    create_ca(tmp_path / "ca", federation="FED")
    fra = issue_certificate(tmp_path / "ca", tmp_path / "FRA", role="node", state="FRA")
    ca = (tmp_path / "ca" / "ca.crt.pem").read_bytes()
    events: list[dict[str, Any]] = []
    engine = RoundEngine({}, RoundStore(tmp_path / "rounds.sqlite"), ca_pem=ca, crl=lambda: None,
                         audit=lambda e: events.append(dict(e)))
    now = int(time.time() * 1000)
    payload = serde.round_payload_to_bytes(RoundPayload(
        round_id=f"r-{mode}", purpose="border-screening", legal_basis="LB", mode=mode,
        targets=(RoundTarget("DEU", "DEU-e1", 1, hashlib.sha256(b"x").digest()),),
        deadline_unix_ms=now + 60_000, issued_at_unix_ms=now))
    env = SignedEnvelope(payload, sign_payload(fra.key.read_bytes(), payload), fra.cert.read_bytes())
    peer = PeerIdentity("node", "DEU", 1)  # the TLS hop is DEU's node, the signer FRA: identity_mismatch
    with pytest.raises(FedcheckError) as info:
        if mode == "exact":
            engine.submit_round(peer, SubmitRoundRequest(env, {"DEU": (b"x",)}, f"r-{mode}"))
        else:
            engine.submit_fuzzy_round(peer, SubmitFuzzyRoundRequest(env, {"DEU": b"x"}, f"r-{mode}"))
    engine.close()
    assert info.value.reason == "identity_mismatch"
    assert [e["type"] for e in events] == ["refusal"]
    assert events[0]["reason"] == "identity_mismatch" and events[0]["round_id"] == f"r-{mode}"
