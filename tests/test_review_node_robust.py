"""Review of the holder node's robustness: CRL cache races and staleness in the TLS peer verifier, follow-up
reply keys checked before anything is charged, a holder's unusable listed faces, and open fuzzy rounds shared
fairly between partners (/tmp/review/probe_crl_race.py, probe_replykey.py, probe_face.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_security_review as sr
from test_security_review import COORD, Pki, StubEpochs, _policy, _records

from fedcheck.errors import FedcheckError, InvalidInput, Unauthenticated
from fedcheck.fuzzy import (
    FuzzyQuerier,
    HitClaim,
    LabelRequest,
    LabelResponse,
    QuerierKey,
    ScoreResponse,
    Traveller,
    entries_from_records,
)
from fedcheck.node import fuzzy as node_fuzzy
from fedcheck.node.fuzzy import FuzzyService, FuzzySettings
from fedcheck.node.fuzzyseal import ReplyKey
from fedcheck.node.replay import ReplayGuard
from fedcheck.records.model import PersonName, PersonRecord
from fedcheck.rpc import serde
from fedcheck.rpc import tls as tlsmod
from fedcheck.rpc.messages import (
    FuzzyReleasePayload,
    FuzzyReleaseRequest,
    FuzzyScoreRequest,
    RoundPayload,
    RoundTarget,
    SignedEnvelope,
)
from fedcheck.rpc.tls import PeerVerifier, TlsIdentity
from fedcheck.trust import pki as pkimod
from fedcheck.trust.budget import BudgetLedger
from fedcheck.trust.pki import sign_payload

FUZZY = {"modes": ["exact", "fuzzy"], "key_types": ["document", "name_dob"], "purposes": ["border"],
         "budget_per_epoch": 50}


# -- A: the TLS peer verifier's cache ------------------------------------------------------------------------


@dataclass
class _Ca:
    root: Path
    tls: TlsIdentity
    certs: dict[str, bytes]

    def revoke(self, state: str) -> None:
        """Revoke ``state``'s certificate and publish a new CRL (a distinct mtime, as a real rewrite has)."""
        pkimod.revoke(self.root / "ca", pkimod.identity_from_cert(self.certs[state]).serial)
        self.publish()

    def publish(self) -> None:
        path = pkimod.write_crl(self.root / "ca")
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


class _Ctx:
    def __init__(self, pem: bytes) -> None:
        self.pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.pem]}


@pytest.fixture()
def ca(tmp_path: Path) -> _Ca:
    ca_pem = pkimod.create_ca(tmp_path / "ca", federation="FED").read_bytes()
    srv = pkimod.issue_certificate(tmp_path / "ca", tmp_path / "srv", role="node", state="DEU")
    certs = {
        s: pkimod.issue_certificate(tmp_path / "ca", tmp_path / s, role="node", state=s).cert.read_bytes()
        for s in ("KEN", "FRA")
    }
    crl = pkimod.write_crl(tmp_path / "ca")
    return _Ca(tmp_path, TlsIdentity(srv.cert.read_bytes(), srv.key.read_bytes(), ca_pem, crl), certs)


def test_verdict_reached_on_a_replaced_crl_is_not_cached(ca: _Ca, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call still verifying on the old CRL while a reload happens must not leave its verdict in the cache:
    the revoked certificate is refused on the next call (before the fix it stayed accepted until the next CRL
    change). Deterministic: the reload is done from inside verify_certificate."""
    v = PeerVerifier(ca.tls)
    real = tlsmod.verify_certificate
    calls: list[int] = []

    def verify_during_reload(*a: Any, **k: Any) -> Any:
        calls.append(1)
        ident = real(*a, **k)  # verified on the CRL read before the call
        if len(calls) == 1:
            ca.revoke("KEN")  # the operator publishes a CRL revoking KEN meanwhile ...
            v.crl()  # ... and a concurrent call reloads it (clearing the cache)
        return ident

    monkeypatch.setattr(tlsmod, "verify_certificate", verify_during_reload)
    assert v.identify(_Ctx(ca.certs["KEN"])).state == "KEN"  # in flight: decided on the old CRL
    with pytest.raises(Unauthenticated) as exc:
        v.identify(_Ctx(ca.certs["KEN"]))
    assert exc.value.reason == "revoked"
    assert len(calls) == 2  # verified again on the current CRL, not answered from the cache


def test_verdict_of_a_superseded_crl_is_verified_again(ca: _Ca, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generation tag on its own: a reload during verification (revoking nobody) leaves no cache entry of
    the old generation; the next call verifies afresh, the one after is a cache hit."""
    v = PeerVerifier(ca.tls)
    real = tlsmod.verify_certificate
    calls: list[int] = []

    def verify_during_reload(*a: Any, **k: Any) -> Any:
        calls.append(1)
        ident = real(*a, **k)
        if len(calls) == 1:
            ca.publish()
            v.crl()
        return ident

    monkeypatch.setattr(tlsmod, "verify_certificate", verify_during_reload)
    for _ in range(3):
        assert v.identify(_Ctx(ca.certs["FRA"])).state == "FRA"
    assert len(calls) == 2


@pytest.mark.parametrize("clock", ["injected", "trust_layer"])
def test_cache_hit_rechecks_crl_staleness(ca: _Ca, monkeypatch: pytest.MonkeyPatch, clock: str) -> None:
    """A cached certificate is refused (fail closed, ``crl_stale``) once the CRL is past its next_update,
    exactly like a fresh verification; before the fix cache hits skipped the CRL entirely. The clock is
    either given to the verifier or the trust layer's own (``fedcheck.trust.pki._now``, what the probe
    moves)."""
    now = [dt.datetime.now(dt.UTC)]
    if clock == "injected":
        v = PeerVerifier(ca.tls, clock=lambda: now[0])
    else:
        monkeypatch.setattr(pkimod, "_now", lambda: now[0])
        v = PeerVerifier(ca.tls)
    pem = ca.certs["FRA"]
    assert v.identify(_Ctx(pem)).state == "FRA"  # cached
    crl = v.crl()
    assert crl is not None and crl.next_update is not None
    now[0] = crl.next_update + dt.timedelta(minutes=1)  # the certificate itself is valid for a year
    with pytest.raises(Unauthenticated) as exc:
        pkimod.verify_certificate(pem, ca.tls.ca_pem, crl, now=now[0])
    assert exc.value.reason == "crl_stale"  # what a fresh verification says ...
    with pytest.raises(Unauthenticated) as exc:
        v.identify(_Ctx(pem))
    assert exc.value.reason == "crl_stale"  # ... and the cache hit says the same
    now[0] = dt.datetime.now(dt.UTC)
    assert v.identify(_Ctx(pem)).state == "FRA"  # a fresh CRL again: accepted


def test_cache_hit_of_a_revoked_serial_is_refused(ca: _Ca) -> None:
    """Even if a cache entry of the current CRL generation names a revoked serial, the hit is refused."""
    v = PeerVerifier(ca.tls)
    pem = ca.certs["KEN"]
    assert v.identify(_Ctx(pem)).state == "KEN"
    ca.revoke("KEN")
    v.crl()  # reload: generation advanced
    # plant the old verdict under the current generation (what the unfixed race produced)
    ident = pkimod.identity_from_cert(pem)
    with v._lock:
        v._cache[pem] = tlsmod._Verified(ident, dt.datetime.now(dt.UTC) + dt.timedelta(days=1), v._generation)
    with pytest.raises(Unauthenticated) as exc:
        v.identify(_Ctx(pem))
    assert exc.value.reason == "revoked"


# -- the fuzzy service (B, C, D) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Pki:
    return sr.pki.__wrapped__()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def qkey() -> QuerierKey:
    return QuerierKey.generate(1024)


class _Store:
    def __init__(self, records: list[PersonRecord]) -> None:
        self.records = records

    def list_version(self) -> str:
        return "v1"

    def iter_records(self) -> Any:
        return iter(self.records)


def _svc(
    tmp: Path, pki: Pki, *, records: list[PersonRecord] | None = None, extra: dict[str, Any] | None = None,
    max_open_rounds: int = 64,
) -> tuple[FuzzyService, list[dict[str, Any]]]:
    pol = _policy(extra={"FRA": FUZZY, **(extra or {})})
    recs = records if records is not None else _records()
    events: list[dict[str, Any]] = []
    svc = FuzzyService(
        state="DEU", store=_Store(recs), epochs=StubEpochs(pol, recs), policy=pol,  # type: ignore[arg-type]
        budget=BudgetLedger(tmp / "b.sqlite", pol.budget_limits()), audit=lambda e: events.append(dict(e)),
        ca_pem=pki.ca_pem, crl=lambda: None,
        settings=FuzzySettings(key_bits=frozenset({1024}), workers=1, max_open_rounds=max_open_rounds),
        replay=ReplayGuard(tmp / "r.sqlite", window_seconds=600),
    )
    return svc, events


def _score(
    svc: FuzzyService, pki: Pki, qkey: QuerierKey, rid: str, *, state: str = "FRA",
    traveller: Traveller | None = None, kind: str = "name",
) -> tuple[FuzzyQuerier, Any, Any]:
    q = FuzzyQuerier(qkey, kind=kind, workers=1)
    req = q.build_request([traveller or Traveller("LISTED PERSON 1", 1971)])
    data = req.to_bytes()
    now = int(time.time() * 1000)
    p = RoundPayload(round_id=rid, purpose="border", legal_basis="LB", mode="fuzzy",
                     targets=(RoundTarget("DEU", "DEU-e1", 1, hashlib.sha256(data).digest()),),
                     deadline_unix_ms=now + 60000, issued_at_unix_ms=now)
    cert, key = pki.certs[state]
    pd = serde.round_payload_to_bytes(p)
    ans = svc.score(COORD, FuzzyScoreRequest(SignedEnvelope(pd, sign_payload(key, pd), cert), data, rid))
    return q, req, ans


def _hits(q: FuzzyQuerier, req: Any, ans: Any) -> list[HitClaim]:
    return list(q.decide(req, ScoreResponse.from_bytes(ans.score_response)).hits)


def _release(
    pki: Pki, rid: str, lr: LabelRequest, reply_public: bytes, state: str = "FRA"
) -> FuzzyReleaseRequest:
    data = lr.to_bytes()
    p = FuzzyReleasePayload(round_id=rid, holder_state="DEU",
                            label_request_sha256=hashlib.sha256(data).digest(),
                            issued_at_unix_ms=int(time.time() * 1000), purpose="border", legal_basis="LB",
                            reply_public_key=reply_public)
    cert, key = pki.certs[state]
    pd = serde.fuzzy_release_payload_to_bytes(p)
    return FuzzyReleaseRequest(SignedEnvelope(pd, sign_payload(key, pd), cert), data)


def _released(svc: FuzzyService, pki: Pki, rid: str, lr: LabelRequest, state: str = "FRA") -> set[str]:
    reply = ReplyKey()
    out = svc.release(COORD, _release(pki, rid, lr, reply.public, state))
    labels = LabelResponse.from_bytes(reply.open(out.sealed_label_response, querier_state=state,
                                                 holder_state="DEU", round_id=rid))
    return {str(r.label.get("reference")) for r in labels.released}


# -- B: the follow-up's reply key ----------------------------------------------------------------------------

#: X25519 points of small order (RFC 7748 / libsodium blocklist): the exchange yields the all-zero secret
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
]


@pytest.mark.parametrize("bad_key", LOW_ORDER, ids=["zero", "one", "order8a", "order8b"])
def test_low_order_reply_key_refused_before_charge_and_claims(
    tmp_path: Path, pki: Pki, qkey: QuerierKey, bad_key: bytes
) -> None:
    svc, events = _svc(tmp_path, pki)
    q, req, ans = _score(svc, pki, qkey, "fz-lo")
    hits = _hits(q, req, ans)
    assert hits
    budget = svc._budget.remaining("FRA", "DEU-e1").items
    lr = LabelRequest(req.round_id, (hits[0],))
    with pytest.raises(InvalidInput) as exc:
        svc.release(COORD, _release(pki, "fz-lo", lr, bad_key))
    assert exc.value.status == "INVALID_ARGUMENT" and exc.value.reason == "bad_reply_key"
    # nothing charged, no claim consumed, and the refusal is audited like every other refusal
    assert svc._budget.remaining("FRA", "DEU-e1").items == budget
    assert svc._open[("FRA", "fz-lo")].holder._rounds[req.round_id].claims == 0
    ev = events[-1]
    assert (ev["type"], ev["outcome"], ev["reason"], ev["partner"]) == (
        "fuzzy_release", "refused", "bad_reply_key", "FRA")
    assert "charged" not in (ev.get("counts") or {}) and ev.get("budget_remaining") is None
    # the round is intact: a follow-up with a usable key still gets its labels
    assert _released(svc, pki, "fz-lo", lr) == {"REF-1"}


# -- C: a holder's unusable listed faces ---------------------------------------------------------------------


def _faces(n: int = 6) -> list[list[float]]:
    g = np.random.default_rng(7)
    return [list(map(float, g.normal(size=128))) for _ in range(n)]


def _with_face(rec: PersonRecord, face: list[float]) -> PersonRecord:
    """``rec`` carrying ``face`` without the import-time validation. Defence in depth: the store already
    drops such faces on read (tests/test_node_storage.py), and faces of another dimension range still reach
    the holder; the holder must cope with whatever records it is given."""
    object.__setattr__(rec, "face_embedding", tuple(face))
    return rec


BAD_FACES = {"zero": [0.0] * 128, "underflow": [1e-200] * 128, "overflow": [1e200] * 128,
             "subnormal": [1e-160] * 128}


def test_entries_from_records_skips_and_counts_unusable_faces(caplog: pytest.LogCaptureFixture) -> None:
    good = [_with_face(r, f) for r, f in zip(_records()[:2], _faces(2), strict=True)]
    bad = [
        _with_face(PersonRecord(f"secret-id-{k}", (PersonName(f"SECRET NAME {k.upper()}"),)), v)
        for k, v in BAD_FACES.items()
    ]
    with caplog.at_level(logging.WARNING, logger="fedcheck.fuzzy.holder"):
        entries = entries_from_records([good[0], *bad, good[1]], kind="face")
    assert [e.record_id for e in entries] == ["w0", "w1"]
    assert entries.skipped_faces == len(BAD_FACES)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per list, not per face
    text = warnings[0].getMessage()
    assert str(len(BAD_FACES)) in text
    assert "secret" not in text.lower() and "SECRET" not in text  # no record ids, no names
    assert entries_from_records(good, kind="face").skipped_faces == 0


def test_one_unusable_listed_face_does_not_stop_face_screening(
    tmp_path: Path, pki: Pki, qkey: QuerierKey
) -> None:
    faces = _faces()
    records = [_with_face(r, f) for r, f in zip(_records(), faces, strict=True)]
    records[3] = _with_face(records[3], BAD_FACES["zero"])  # one degenerate face in the holder's list
    svc, events = _svc(tmp_path, pki, records=records)
    q, req, ans = _score(svc, pki, qkey, "fz-face", traveller=Traveller(face=faces[2]), kind="face")
    assert events[-1]["outcome"] == "ok" and events[-1]["counts"]["entries"] == 5  # the good faces
    hits = _hits(q, req, ans)
    assert len(hits) == 1
    assert _released(svc, pki, "fz-face", LabelRequest(req.round_id, tuple(hits))) == {"REF-2"}


def test_a_list_with_no_usable_face_is_refused_not_silently_empty(
    tmp_path: Path, pki: Pki, qkey: QuerierKey
) -> None:
    """Every listed face unusable (e.g. 2048 dimensions, which the model allows but face checks do not score):
    FAILED_PRECONDITION ``holder_list_unusable``, not an empty "no hits" answer."""
    records = [_with_face(r, [0.5] * 2048) for r in _records()]
    svc, events = _svc(tmp_path, pki, records=records)
    with pytest.raises(FedcheckError) as exc:
        _score(svc, pki, qkey, "fz-none", traveller=Traveller(face=_faces(1)[0]), kind="face")
    assert exc.value.status == "FAILED_PRECONDITION" and exc.value.reason == "holder_list_unusable"
    assert events[-1]["outcome"] == "refused" and events[-1]["reason"] == "holder_list_unusable"


def test_holder_list_faults_are_never_invalid_argument(
    tmp_path: Path, pki: Pki, qkey: QuerierKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever in the holder's own list stops it being prepared is FAILED_PRECONDITION naming the holder's
    data, audited, and charges nothing -- never INVALID_ARGUMENT, which blames the querier."""
    svc, events = _svc(tmp_path, pki)
    budget = svc._budget.remaining("FRA", "DEU-e1").items

    def broken(*a: Any, **k: Any) -> Any:
        raise InvalidInput("face_embedding: zero vector", reason="bad_embedding")

    monkeypatch.setattr(node_fuzzy, "entries_from_records", broken)
    with pytest.raises(FedcheckError) as exc:
        _score(svc, pki, qkey, "fz-broken")
    assert exc.value.status == "FAILED_PRECONDITION" and exc.value.reason == "holder_list_unusable"
    assert "holder" in exc.value.message
    assert events[-1]["outcome"] == "refused" and events[-1]["reason"] == "holder_list_unusable"
    assert svc._budget.remaining("FRA", "DEU-e1").items == budget


# -- D: open rounds are shared fairly between partners ------------------------------------------------------


def test_a_partner_cannot_evict_another_partners_open_rounds(
    tmp_path: Path, pki: Pki, qkey: QuerierKey
) -> None:
    """Two partners allowed fuzzy mode, ``max_open_rounds = 4``: each holds at most 2. Before the fix FRA's
    many one-traveller rounds pushed ITA's open round out (its follow-up got ``unknown_round``)."""
    svc, _ = _svc(tmp_path, pki, extra={"ITA": FUZZY}, max_open_rounds=4)
    qi, ri, ai = _score(svc, pki, qkey, "it-1", state="ITA")
    fra = [_score(svc, pki, qkey, f"fr-{i}") for i in range(6)]
    # ITA's round is still open and follows up normally
    ita = LabelRequest(ri.round_id, tuple(_hits(qi, ri, ai)))
    assert _released(svc, pki, "it-1", ita, "ITA") == {"REF-1"}
    # FRA paid for its flood with its own oldest rounds only: its two newest are open, the older ones gone
    for i in (4, 5):
        q, r, a = fra[i]
        assert _released(svc, pki, f"fr-{i}", LabelRequest(r.round_id, tuple(_hits(q, r, a)))) == {"REF-1"}
    q, r, a = fra[3]
    with pytest.raises(FedcheckError) as exc:
        svc.release(COORD, _release(pki, "fr-3", LabelRequest(r.round_id, tuple(_hits(q, r, a))),
                                    ReplyKey().public))
    assert exc.value.reason == "unknown_round"
    assert sum(1 for k in svc._open if k[0] == "FRA") <= 2


def test_an_unusable_own_crl_is_logged_as_the_nodes_fault(ca: _Ca, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage in this node's own CRL file refuses every peer: the node's log must say that its ``[tls] crl``
    is at fault (once per interval), not stay silent or blame the peer."""
    v = PeerVerifier(ca.tls)
    assert ca.tls.crl_path is not None
    Path(ca.tls.crl_path).write_bytes(b"not a crl")
    with caplog.at_level(logging.WARNING, logger="fedcheck.rpc.tls"):
        for _ in range(3):
            with pytest.raises(FedcheckError):
                v.identify(_Ctx(ca.certs["KEN"]))
    own = [r for r in caplog.records if "[tls] crl" in r.getMessage()]
    assert len(own) == 1 and str(ca.tls.crl_path) in own[0].getMessage()
    assert not [r for r in caplog.records if "TLS peer refused" in r.getMessage()]


def test_a_stale_own_crl_is_logged_once_as_the_nodes_fault(ca: _Ca, caplog: pytest.LogCaptureFixture) -> None:
    """A stale CRL refuses every peer (fail closed); the log names this node's ``[tls] crl`` and has no
    "TLS peer refused" line blaming the peer."""
    late = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)  # CRLs are valid 30 days, certificates a year
    v = PeerVerifier(ca.tls, clock=lambda: late)
    with caplog.at_level(logging.WARNING, logger="fedcheck.rpc.tls"):
        for state in ("KEN", "FRA", "KEN"):
            with pytest.raises(Unauthenticated) as exc:
                v.identify(_Ctx(ca.certs[state]))
            assert exc.value.reason == "crl_stale"
    own = [r for r in caplog.records if "[tls] crl" in r.getMessage()]
    assert len(own) == 1 and "crl_stale" in own[0].getMessage()
    assert not [r for r in caplog.records if "TLS peer refused" in r.getMessage()]
