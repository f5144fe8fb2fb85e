"""Governance end to end over mutual TLS (real node and coordinator processes on loopback).

Its own small federation (tiny lists, so epochs build in well under a second) with restrictive policies:

* KEN answers FRA in exact mode only, on documents only, discloses only ``category``, max batch 10;
* UNX withholds entry ``UNX-W`` from FRA (but not from KEN);
* FRA answers KEN with a budget of 12 items per epoch, and UNX with 1,000 (wire-level tests);
* FRA's querier policy excludes refugees from rounds that include their State of nationality and routes
  hits from UNX to human review.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import node_pb2_grpc
from fedcheck.cli.main import main as cli
from fedcheck.node.app import open_querier, open_store
from fedcheck.node.config import load_node_config
from fedcheck.node.devfed import DevFederation, write_federation
from fedcheck.node.querier import QueryOptions, QueryRunner
from fedcheck.protocol.exact import ExactQuerier, Mode
from fedcheck.records.io import write_jsonl
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument
from fedcheck.rpc import serde
from fedcheck.rpc.clients import make_channel
from fedcheck.rpc.messages import HolderStatus, RoundPayload, RoundTarget
from fedcheck.rpc.tls import TlsIdentity
from fedcheck.screening.report import ScreenReport
from fedcheck.trust import pki
from fedcheck.trust.atrest import load_kek
from fedcheck.trust.audit import SignedHead, load_public_key, verify_head_signature, verify_log
from tests.conftest import Federation


def person(
    rid: str,
    name: str,
    dob: str,
    doc: str,
    nat: str,
    *,
    ref: str = "",
    flags: frozenset[str] = frozenset(),
) -> PersonRecord:
    return PersonRecord(
        record_id=rid,
        names=(PersonName(name),),
        birth_dates=(BirthDate.parse(dob),),
        nationalities=(nat,),
        documents=(TravelDocument("P", doc, nat),),
        label=Label(category="sanctions", reference=ref or f"REF-{rid}", listing_date="2020-01-01"),
        flags=flags,
    )


# holders' lists
KEN_LIST = [
    person("K1", "Amina Wanjiru Odhiambo", "1980-03-04", "KP1000001", "KEN"),
    person("K2", "Peter Kamau Mwangi", "1975-11-30", "KP1000002", "KEN"),
    person("K3", "Refugee Listed Person", "1990-06-15", "KP1000003", "KEN", ref="KEN-POLITICAL-1"),
]
UNX_LIST = [
    person("U1", "Ivan Petrovich Sidorov", "1969-01-01", "UX2000001", "RUS"),
    person("W1", "Withheld Notice Subject", "1985-02-02", "UX2000009", "TUR", ref="UNX-W"),
    person("R1", "Refugee Listed Person", "1990-06-15", "KP1000003", "KEN", ref="UNX-REF-R"),
]
FRA_LIST = [
    person("F1", "Jean Pierre Martin", "1970-07-07", "FR3000001", "FRA"),
    person("F2", "Marie Claire Dubois", "1982-08-08", "FR3000002", "FRA"),
]


def traveller(rid: str, src: PersonRecord, **kw: object) -> PersonRecord:
    return PersonRecord(
        record_id=rid,
        names=src.names,
        birth_dates=src.birth_dates,
        nationalities=src.nationalities,
        documents=src.documents,
        **kw,  # type: ignore[arg-type]
    )


def stranger(i: int) -> PersonRecord:
    return person(f"S{i}", f"Nobody Person Number{i}", f"{1900 + i % 100}-01-01", f"ZZ{900000 + i}", "NZL")


POLICIES = {
    "KEN->FRA": (
        'modes = ["exact"]\nkey_types = ["document"]\nlabel_fields = ["category"]\nmax_batch = 10\n'
    ),
    "UNX->FRA": 'withheld = ["UNX-W"]\n',
    "FRA->KEN": "budget_per_epoch = 12\n",
    "FRA->UNX": "budget_per_epoch = 1000\n",
}


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("governance")
    fed = write_federation(root, ("FRA", "KEN", "UNX"), metrics=False, extra_policy=POLICIES)
    with open(fed.node_configs["FRA"], "a", encoding="utf-8") as fh:
        fh.write('\n[policy.querier]\nhuman_review_sources = ["UNX"]\n')
    for state, records in (("FRA", FRA_LIST), ("KEN", KEN_LIST), ("UNX", UNX_LIST)):
        store = open_store(load_node_config(fed.node_configs[state]))
        store.replace_list(records)
        store.close()
    f = Federation(fed, root)
    try:
        for name in ("FRA", "KEN", "UNX", "coordinator"):
            f.start(name)
        for name in ("FRA", "KEN", "UNX", "coordinator"):
            f.wait_serving(name)
        yield f
    finally:
        for name in list(f.procs):
            f.stop(name)


def dev(f: Federation) -> DevFederation:
    assert isinstance(f.fed, DevFederation)
    return f.fed


@contextmanager
def querier(f: Federation, state: str) -> Iterator[QueryRunner]:
    runner, close = open_querier(load_node_config(dev(f).node_configs[state]))
    try:
        yield runner
    finally:
        close()


def run(
    f: Federation, state: str, manifest: list[PersonRecord], **kw: object
) -> tuple[ScreenReport, QueryRunner]:
    kw.setdefault("unit", f"{state}-BORDER-01")
    kw.setdefault("official", "officer-0001")
    opts = QueryOptions(legal_basis=str(kw.pop("legal_basis", "FED-agreement/art.5")), **kw)  # type: ignore[arg-type]
    with querier(f, state) as q:
        return q.run(manifest, opts), q


def hits(report: ScreenReport) -> set[tuple[str, str]]:
    return {(t.traveller, h.state) for t in report.travellers for h in t.hits}


# ---------------------------------------------------------------------------------------------------------
# holder policy through real rounds (coordinator -> holder), reasons back to the querier
# ---------------------------------------------------------------------------------------------------------


def test_allowed_round_is_narrowed_and_reported(gov: Federation) -> None:
    manifest = [traveller("T1", KEN_LIST[0]), stranger(1)]
    report, _ = run(gov, "FRA", manifest, states=("KEN",), label_fields=("category", "reference"))
    assert report.statuses == {"KEN": "ok"}
    assert hits(report) == {("T1", "KEN")}
    hit = report.travellers[0].hits[0]
    assert hit.key_type == "document" and hit.label == {"category": "sanctions"}  # label fields narrowed
    d = report.details["KEN"]
    assert set(d["narrowed"]) == {"narrowed_key_types", "narrowed_label_fields"}
    assert d["key_types"] == ["document"] and d["label_fields"] == ["category"]
    assert "narrowed by holder policy" in report.to_table()


@pytest.mark.parametrize(
    ("kw", "code", "reasons"),
    [
        ({"mode": "cardinality"}, "PERMISSION_DENIED", ["mode_not_allowed"]),
        ({"key_types": ("name_dob",)}, "PERMISSION_DENIED", ["key_types_not_allowed"]),
        ({"purpose": "marketing"}, "PERMISSION_DENIED", ["purpose_not_accepted"]),
        ({"legal_basis": ""}, "PERMISSION_DENIED", ["legal_basis_required"]),
        (
            {"purpose": "marketing", "legal_basis": ""},
            "PERMISSION_DENIED",
            ["purpose_not_accepted", "legal_basis_required"],
        ),
        ({"manifest": 4}, "RESOURCE_EXHAUSTED", ["batch_too_large"]),
    ],
    ids=["mode", "key_types", "purpose", "legal_basis", "all_reasons", "batch"],
)
def test_policy_refusals_reach_the_querier(
    gov: Federation, kw: dict[str, object], code: str, reasons: list[str]
) -> None:
    n = int(kw.pop("manifest", 1))  # type: ignore[call-overload]
    manifest = [stranger(100 + i + 10 * len(reasons) + 7 * len(kw)) for i in range(n)]
    report, q = run(gov, "FRA", manifest, states=("KEN",), **kw)
    assert report.statuses["KEN"].startswith("refused"), report.statuses
    d = report.details["KEN"]
    assert d["code"] == code and d["reasons"] == reasons
    assert q.last_round is not None
    hr = q.last_round.by_state()["KEN"]
    assert hr.status is HolderStatus.REFUSED and list(hr.reasons) == reasons and hr.code == code
    assert f"KEN: refused {code}: {', '.join(reasons)}" in report.to_table()


def test_query_cli_prints_reasons_in_table_and_json(
    gov: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.jsonl"
    write_jsonl([stranger(300)], manifest)
    cfg = str(dev(gov).node_configs["FRA"])
    base = ["query", "--config", cfg, "--manifest", str(manifest), "--states", "KEN"]
    assert cli([*base, "--purpose", "marketing", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["details"]["KEN"] == {"code": "PERMISSION_DENIED", "reasons": ["purpose_not_accepted"]}
    assert cli([*base, "--purpose", "marketing"]) == 1
    out = capsys.readouterr().out
    assert "KEN: refused PERMISSION_DENIED: purpose_not_accepted" in out


# ---------------------------------------------------------------------------------------------------------
# withheld entries, querier safeguards
# ---------------------------------------------------------------------------------------------------------


def test_withheld_entry_is_absence_for_that_partner_only(gov: Federation) -> None:
    withheld = [traveller("TW", UNX_LIST[1])]
    control = [stranger(400)]
    rep_w, q_w = run(gov, "FRA", withheld, states=("UNX",))
    rep_c, q_c = run(gov, "FRA", control, states=("UNX",))
    assert rep_w.statuses == {"UNX": "ok"} and not hits(rep_w) and not hits(rep_c)
    assert q_w.last_round is not None and q_c.last_round is not None
    ev_w = q_w.last_round.by_state()["UNX"].evaluation
    ev_c = q_c.last_round.by_state()["UNX"].evaluation
    assert ev_w is not None and ev_c is not None
    sizes = [(len(e.evaluated), sum(map(len, e.evaluated)), len(e.proof)) for e in (ev_w, ev_c)]
    assert sizes[0] == sizes[1]  # same response size: nothing says "withheld"
    rep_k, _ = run(gov, "KEN", withheld, states=("UNX",))  # KEN is not in UNX's withheld list
    assert hits(rep_k) == {("TW", "UNX")}
    assert rep_k.travellers[0].hits[0].label["reference"] == "UNX-W"


def test_refugee_excluded_from_their_state_and_review_marked(
    gov: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refugee = traveller("TR", KEN_LIST[2], flags=frozenset({"refugee"}))
    manifest = tmp_path / "m.jsonl"
    write_jsonl([refugee, traveller("TK", KEN_LIST[1])], manifest)
    cfg = str(dev(gov).node_configs["FRA"])
    assert cli(["query", "--config", cfg, "--manifest", str(manifest), "--format", "json"]) in (0, 1)
    doc = json.loads(capsys.readouterr().out)
    got = {(t["traveller"], h["state"]): h for t in doc["travellers"] for h in t["hits"]}
    assert ("TR", "KEN") not in got  # never sent to the State of nationality, although KEN lists the document
    assert ("TK", "KEN") in got and not got[("TK", "KEN")].get("review_required")
    assert got[("TR", "UNX")]["review_required"] is True  # still checked elsewhere, marked for review
    assert doc["details"]["KEN"]["excluded"] == 1
    assert cli(["query", "--config", cfg, "--manifest", str(manifest)]) in (0, 1)
    table = capsys.readouterr().out
    assert "[REVIEW]" in table and "HUMAN REVIEW REQUIRED" in table
    assert "KEN: 1 traveller(s) not sent" in table


# ---------------------------------------------------------------------------------------------------------
# wire-level: identities, replay, budget ordering (direct BlindEvaluate calls to a holder)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Signer:
    cert_pem: bytes
    key_pem: bytes


def signer_of(tls: TlsIdentity) -> Signer:
    return Signer(tls.cert_pem, tls.key_pem)


def elements(n: int, salt: str = "") -> list[bytes]:
    return (
        ExactQuerier()
        .blind([f"k{salt}{i}-{uuid.uuid4()}".encode() for i in range(n)], mode=Mode.EXACT)
        .blinded
    )


def epoch_of(stub: node_pb2_grpc.NodeStub) -> str:
    return str(stub.GetNodeInfo(pb.NodeInfoRequest(header=serde.header()), timeout=5).epoch_id)


def request(
    signer: Signer,
    holder: str,
    epoch: str,
    blinded: list[bytes],
    *,
    round_id: str | None = None,
    issued_at_ms: int | None = None,
    purpose: str = "border-screening",
) -> pb.BlindEvaluateRequest:
    now = int(time.time() * 1000)
    payload = serde.round_payload_to_bytes(
        RoundPayload(
            round_id or str(uuid.uuid4()),
            purpose,
            "FED-agreement/art.5",
            "exact",
            (RoundTarget(holder, epoch, len(blinded), hashlib.sha256(b"".join(blinded)).digest()),),
            now + 20_000,
            issued_at_ms if issued_at_ms is not None else now,
        )
    )
    return pb.BlindEvaluateRequest(
        header=pb.RequestHeader(protocol_version=1),
        round=pb.SignedEnvelope(
            payload=payload,
            signature=pki.sign_payload(signer.key_pem, payload),
            certificate_pem=signer.cert_pem,
        ),
        blinded=blinded,
    )


@contextmanager
def holder_stub(f: Federation, holder: str, tls: TlsIdentity) -> Iterator[node_pb2_grpc.NodeStub]:
    channel = make_channel(f"127.0.0.1:{dev(f).node_ports[holder]}", tls)
    try:
        yield node_pb2_grpc.NodeStub(channel)
    finally:
        channel.close()


def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as exc:
        call()  # type: ignore[operator]
    meta = dict(exc.value.trailing_metadata() or ())  # type: ignore[attr-defined]
    return exc.value.code(), str(meta.get("fedcheck-reason", ""))  # type: ignore[attr-defined]


def tls_of(f: Federation, state: str) -> TlsIdentity:
    tls = f.tls(state)
    assert isinstance(tls, TlsIdentity)
    return tls


def issue(f: Federation, state: str, out: Path, *, days: int = 365) -> Signer:
    root = dev(f).root
    ca_kek = load_kek(f"file:{root / 'pki' / 'ca.kek'}")
    files = pki.issue_certificate(
        dev(f).ca_dir, out, role="node", state=state, kek=None, ca_kek=ca_kek, days=days
    )
    return Signer(files.cert.read_bytes(), files.key.read_bytes())


def test_expired_revoked_foreign_and_unknown_signers_refused_at_holder(
    gov: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unx = tls_of(gov, "UNX")
    with holder_stub(gov, "FRA", unx) as stub:
        epoch = epoch_of(stub)
        # a valid request first (control)
        assert stub.BlindEvaluate(request(signer_of(unx), "FRA", epoch, elements(1)), timeout=10).evaluated
        # expired querier signing certificate (issued "400 days ago", valid 1 day)
        with monkeypatch.context() as m:
            past = pki._now() - dt.timedelta(days=400)
            m.setattr(pki, "_now", lambda: past)
            expired = issue(gov, "UNX", tmp_path / "expired", days=1)
        code, reason = refused(
            lambda: stub.BlindEvaluate(request(expired, "FRA", epoch, elements(1)), timeout=10)
        )
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "expired")
        # revoked querier signing certificate (the holder re-reads the CRL file when it changes)
        revoked = issue(gov, "UNX", tmp_path / "revoked")
        serial = pki.identity_from_cert(revoked.cert_pem).serial
        ca_kek = load_kek(f"file:{dev(gov).root / 'pki' / 'ca.kek'}")
        pki.revoke(dev(gov).ca_dir, serial)
        pki.write_crl(dev(gov).ca_dir, kek=ca_kek)
        time.sleep(1.1)
        code, reason = refused(
            lambda: stub.BlindEvaluate(request(revoked, "FRA", epoch, elements(1)), timeout=10)
        )
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
        # UNX's TLS hop relaying a request signed with KEN's certificate: identity mismatch
        ken = signer_of(tls_of(gov, "KEN"))
        code, reason = refused(
            lambda: stub.BlindEvaluate(request(ken, "FRA", epoch, elements(1)), timeout=10)
        )
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "identity_mismatch")
    # a federation member no policy lists (ITA): default deny
    ita_files = pki.issue_certificate(
        dev(gov).ca_dir, tmp_path / "ita", role="node", state="ITA", kek=None, ca_kek=ca_kek
    )
    ita_tls = TlsIdentity.load(ita_files.cert, ita_files.key, ita_files.ca, dev(gov).ca_dir / "crl.pem")
    with holder_stub(gov, "FRA", ita_tls) as stub:
        code, reason = refused(
            lambda: stub.BlindEvaluate(request(signer_of(ita_tls), "FRA", epoch, elements(1)), timeout=10)
        )
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "partner_not_allowed")
    # every refusal is in the holder's audit log and listed by `fedcheck audit refusals`
    log = dev(gov).root / "FRA" / "data" / "audit.jsonl"
    assert cli(["audit", "refusals", "--log", str(log)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    reasons = {ev.get("reason") for ev in lines}
    assert {"expired", "revoked", "identity_mismatch", "partner_not_allowed"} <= reasons, reasons


def test_replay_skew_and_idempotent_duplicate(gov: Federation) -> None:
    unx = tls_of(gov, "UNX")
    me = signer_of(unx)
    with holder_stub(gov, "FRA", unx) as stub:
        epoch = epoch_of(stub)
        # issued_at outside node.max_skew_seconds (default 600 s), either side
        for skew_ms in (-700_000, 700_000):
            req = request(me, "FRA", epoch, elements(1), issued_at_ms=int(time.time() * 1000) + skew_ms)
            code, reason = refused(lambda req=req: stub.BlindEvaluate(req, timeout=10))  # type: ignore[misc]
            assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "stale_request")
        req = request(me, "FRA", epoch, elements(3))
        first = stub.BlindEvaluate(req, timeout=10)
        again = stub.BlindEvaluate(req, timeout=10)  # exact duplicate: answered, not charged again
        assert not first.replayed and again.replayed
        assert again.budget_remaining == first.budget_remaining and len(again.evaluated) == 3
        rid = serde.round_payload_from_bytes(req.round.payload).round_id
        other = request(me, "FRA", epoch, elements(3), round_id=rid)  # same id, different payload
        code, reason = refused(lambda: stub.BlindEvaluate(other, timeout=10))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "round_id_reused")
        after = stub.BlindEvaluate(request(me, "FRA", epoch, elements(1)), timeout=10)
        assert after.budget_remaining == first.budget_remaining - 1


def test_invalid_elements_cost_no_budget(gov: Federation) -> None:
    unx = tls_of(gov, "UNX")
    me = signer_of(unx)
    with holder_stub(gov, "FRA", unx) as stub:
        epoch = epoch_of(stub)
        before = stub.BlindEvaluate(request(me, "FRA", epoch, elements(2)), timeout=10).budget_remaining
        bad = elements(3)
        bad[1] = b"\xff" * 32  # non-canonical encoding
        code, _ = refused(lambda: stub.BlindEvaluate(request(me, "FRA", epoch, bad), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        after = stub.BlindEvaluate(request(me, "FRA", epoch, elements(1)), timeout=10).budget_remaining
        assert after == before - 1  # the refused batch of 3 was never charged


# ---------------------------------------------------------------------------------------------------------
# budgets through real rounds: exhaustion with retry-after, not reset by a new epoch
# ---------------------------------------------------------------------------------------------------------


def test_budget_exhaustion_retry_after_and_no_refill_on_new_epoch(gov: Federation) -> None:
    first = [traveller("B1", FRA_LIST[0]), stranger(500)]  # 8 keys of the 12-item budget
    second = [stranger(501), stranger(502)]  # 8 more: over budget
    rep, _ = run(gov, "KEN", first, states=("FRA",))
    assert rep.statuses == {"FRA": "ok"} and hits(rep) == {("B1", "FRA")}
    rep, _ = run(gov, "KEN", second, states=("FRA",))
    d = rep.details["FRA"]
    assert d["code"] == "RESOURCE_EXHAUSTED" and d["reasons"] == ["epoch_budget_exhausted"]
    assert 0 < int(d["retry_after_s"]) <= 86400  # type: ignore[call-overload]
    assert "retry after" in rep.to_table()
    # a list change starts a new epoch at FRA, but the per-epoch budget counts per epoch_seconds window:
    # an import must not refill it (security review: budgets reset too easily)
    with querier(gov, "KEN") as q:
        old_epoch = {e.state: e for e in q._coord.list_nodes(timeout=5)}["FRA"].info.epoch_id  # type: ignore[union-attr]
    store = open_store(load_node_config(dev(gov).node_configs["FRA"]))
    store.replace_list([*FRA_LIST, person("F3", "New Listed Person", "1999-09-09", "FR3000003", "FRA")])
    store.close()
    deadline = time.time() + 30
    while True:
        with querier(gov, "KEN") as q:
            info = {e.state: e for e in q._coord.list_nodes(timeout=5)}["FRA"].info
        if info is not None and info.epoch_id != old_epoch:
            break
        assert time.time() < deadline, "no new epoch"
        time.sleep(0.3)
    rep, _ = run(gov, "KEN", second, states=("FRA",))
    assert rep.details["FRA"]["reasons"] == ["epoch_budget_exhausted"], rep.details


# ---------------------------------------------------------------------------------------------------------
# audit: coordinator log, holders' heads anchored at the coordinator
# ---------------------------------------------------------------------------------------------------------


def test_coordinator_audit_log_and_holder_head_anchoring(
    gov: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(gov, "FRA", [stranger(600)], states=("KEN",), purpose="marketing")  # a refused round
    rep, q = run(gov, "FRA", [traveller("A1", UNX_LIST[0])], states=("UNX",), purpose="border-screening")
    assert rep.statuses == {"UNX": "ok"}
    assert q.last_round is not None
    rid = q.last_round.round_id
    root = dev(gov).root
    clog = root / "coordinator" / "data" / "audit.jsonl"
    cpub = root / "coordinator" / "data" / "audit-signing.key.pub.pem"
    # the coordinator's own log verifies and holds the round (metadata only), with UNX's head
    assert cli(["audit", "verify", "--log", str(clog), "--public-key", str(cpub)]) == 0
    capsys.readouterr()
    entries = [json.loads(x) for x in clog.read_text().splitlines()]
    ev = next(e["event"] for e in entries if e["event"].get("round_id") == rid)
    assert ev["type"] == "round" and ev["querier"] == "FRA" and ev["unit"] == "FRA-BORDER-01"
    assert ev["purpose"] == "border-screening" and ev["legal_basis"] and ev["mode"] == "exact"
    assert ev["holders"] == {"UNX": "ok"} and ev["items_by_state"]["UNX"] > 0
    assert "Refugee" not in clog.read_text() and "Sidorov" not in clog.read_text()
    refused_ev = [
        e["event"] for e in entries if e["event"].get("holders", {}).get("KEN", "").startswith("refused")
    ]
    assert refused_ev, "refused rounds are audited at the coordinator too"
    # the head UNX returned is signed by UNX's audit key and recorded by the coordinator, which checked it
    # against the audit public key write_federation configured for UNX
    anchor = ev["anchors"]["UNX"]
    assert ev["anchors_verified"] == ["UNX"] and ev["anchors_unverified"] == []
    seq, h = anchor.split(":")
    import sqlite3

    db = sqlite3.connect(str(root / "coordinator" / "data" / "rounds.sqlite"))
    row = db.execute(
        "SELECT seq, hash, signature FROM audit_anchors WHERE round_id=? AND state='UNX'", (rid,)
    ).fetchone()
    db.close()
    assert row is not None and (str(row[0]), row[1]) == (seq, h)
    upub_path = root / "UNX" / "data" / "audit-signing.key.pub.pem"
    upub = load_public_key(upub_path)
    assert verify_head_signature(upub, SignedHead(int(seq), h, bytes(row[2])))
    ulog = root / "UNX" / "data" / "audit.jsonl"
    assert (
        cli(
            ["audit", "verify", "--log", str(ulog), "--public-key", str(upub_path), "--expected-head", anchor]
        )
        == 0
    )
    assert cli(["audit", "export", "--log", str(clog), "--public-key", str(cpub), "--format", "csv"]) == 0
    capsys.readouterr()
    # an insider with UNX's signing key rolls log and head back consistently: only the anchor catches it
    from fedcheck.trust import audit as audit_mod

    copy = tmp_path / "audit.jsonl"
    kept = [ln for ln in ulog.read_text().splitlines(keepends=True) if json.loads(ln)["seq"] < int(seq)]
    copy.write_text("".join(kept))
    last = json.loads(kept[-1])
    key = audit_mod.load_signing_key(
        root / "UNX" / "data" / "audit-signing.key", load_kek(f"file:{root / 'UNX' / 'kek'}")
    )
    (tmp_path / "audit.jsonl.head").write_bytes(
        audit_mod._sign_anchor(key, audit_mod._HEAD_CTX, last["seq"], last["hash"], {})
    )
    assert verify_log(copy, upub).ok  # consistent on its own
    assert not verify_log(copy, upub, expected_head=(int(seq), h)).ok  # but not with the coordinator's record
    assert (
        cli(
            ["audit", "verify", "--log", str(copy), "--public-key", str(upub_path), "--expected-head", anchor]
        )
        == 1
    )
