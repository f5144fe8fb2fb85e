"""Regression tests for the operator walkthrough: the querier's result cache bypassed the holder's policy, the
querying State kept no audit trail, an empty audit log failed verification, and watchlist import hid its
warnings and replaced lists however many rows were rejected.

The federation tests stand up FRA (querier) and KEN (holder, accepts purpose ``border-screening`` only, lets
FRA run fuzzy rounds with test-size Paillier keys) as real processes with mutual TLS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedcheck.cli.main import main as cli
from fedcheck.node.app import open_store
from fedcheck.node.config import load_node_config
from fedcheck.node.devfed import DevFederation, write_federation
from fedcheck.node.querier import QUERIER_AUDIT_LOG, QueryOptions, cache_context
from fedcheck.records.io import write_jsonl
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument
from fedcheck.trust.audit import (
    _HEAD_CTX,
    AuditLog,
    _sign_anchor,
    append_event,
    generate_signing_key,
    read_entries,
    save_signing_key,
    verify_log,
)
from tests.conftest import Federation


def person(rid: str, name: str, dob: str, doc: str, nat: str, **kw: Any) -> PersonRecord:
    return PersonRecord(
        record_id=rid,
        names=(PersonName(name),),
        birth_dates=(BirthDate.parse(dob),),
        nationalities=(nat,),
        documents=(TravelDocument("P", doc, nat),),
        label=Label(category="sanctions", reference=f"REF-{rid}", listing_date="2020-01-01"),
        **kw,
    )


KEN_LIST = [
    person("K1", "Amina Wanjiru Odhiambo", "1980-03-04", "KP1000001", "KEN"),
    person("K2", "Peter Kamau Mwangi", "1975-11-30", "KP1000002", "KEN"),
    person("K3", "Refugee Listed Person", "1990-06-15", "KP1000003", "KEN"),
]
FRA_LIST = [person("F1", "Jean Pierre Martin", "1970-07-07", "FR3000001", "FRA")]
FUZZY_POLICY = 'modes = ["exact", "cardinality", "fuzzy"]\n'
FUZZY_TABLE = "\n[fuzzy]\nkey_bits = [1024, 2048]\nmax_travellers = 6\nworkers = 1\n"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("querier-audit")
    dev = write_federation(root, ("FRA", "KEN"), metrics=False, budget_per_epoch=10_000,
                           extra_policy={"KEN->FRA": FUZZY_POLICY})
    for cfg in dev.node_configs.values():
        with open(cfg, "a", encoding="utf-8") as fh:
            fh.write(FUZZY_TABLE)
    for state, records in (("FRA", FRA_LIST), ("KEN", KEN_LIST)):
        store = open_store(load_node_config(dev.node_configs[state]))
        store.replace_list(records)
        store.close()
    f = Federation(dev, root)
    try:
        for name in ("FRA", "KEN", "coordinator"):
            f.start(name)
        for name in ("FRA", "KEN", "coordinator"):
            f.wait_serving(name)
        yield f
    finally:
        for name in list(f.procs):
            f.stop(name)


def _dev(f: Federation) -> DevFederation:
    assert isinstance(f.fed, DevFederation)
    return f.fed


def _cfg(f: Federation, state: str = "FRA") -> str:
    return str(_dev(f).node_configs[state])


def _data(f: Federation, state: str = "FRA") -> Path:
    return load_node_config(_cfg(f, state)).data_dir


def _qlog(f: Federation) -> Path:
    return _data(f) / QUERIER_AUDIT_LOG


def _events(f: Federation) -> list[dict[str, Any]]:
    path = _qlog(f)
    return [dict(e.event) for e in read_entries(path)] if path.exists() else []


def _query(f: Federation, manifest: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = cli(["query", "--config", _cfg(f), "--manifest", str(manifest), "--states", "KEN", "--format",
                "json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


# ---------------------------------------------------------------------------------------------------------
# 1. the result cache never serves a result obtained under other terms
# ---------------------------------------------------------------------------------------------------------


def test_cache_context_covers_every_term_the_holder_decides_on() -> None:
    base = QueryOptions(purpose="border-screening", legal_basis="LB-1")
    ctx = cache_context(base, "exact")
    for other in (
        QueryOptions(purpose="visa", legal_basis="LB-1"),
        QueryOptions(purpose="border-screening", legal_basis="LB-2"),
        QueryOptions(purpose="border-screening", legal_basis=""),
        QueryOptions(purpose="border-screening", legal_basis="LB-1", key_types=("document",)),
        QueryOptions(purpose="border-screening", legal_basis="LB-1", label_fields=("category",)),
    ):
        assert cache_context(other, "exact") != ctx
    assert cache_context(base, "cardinality") != ctx
    # who asks is audited, not a policy term: another officer's re-check may use the cache
    assert cache_context(QueryOptions(purpose="border-screening", legal_basis="LB-1", official="o-2",
                                      unit="U-2"), "exact") == ctx


def test_cached_recheck_under_another_purpose_goes_to_the_holder(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.jsonl"
    write_jsonl([person("T1", "Peter Kamau Mwangi", "1975-11-30", "KP1000002", "KEN")], manifest)
    code, doc = _query(fed, manifest, capsys)
    assert code == 0 and doc["statuses"] == {"KEN": "ok"}
    assert doc["travellers"][0]["hits"], "the listed traveller must hit"
    code, doc = _query(fed, manifest, capsys)
    assert code == 0 and doc["statuses"] == {"KEN": "ok (cached)"}  # same terms: from the cache
    cached_round = doc["round_id"]
    assert cached_round  # a cached re-check has an id too: the one in the querier's audit log

    code, doc = _query(fed, manifest, capsys, "--purpose", "visa")
    assert code == 1, doc
    assert doc["statuses"]["KEN"].startswith("refused"), doc["statuses"]
    assert doc["details"]["KEN"]["reasons"] == ["purpose_not_accepted"]
    assert not doc["travellers"][0]["hits"]  # the earlier hit is not shown under the refused purpose

    code, doc = _query(fed, manifest, capsys, "--legal-basis", "another-basis/art.1")
    assert code == 0 and doc["statuses"] == {"KEN": "ok"}  # asked again, not served from the cache

    events = [e for e in _events(fed) if e["type"] == "query"]
    cached = [e for e in events if e["round_id"] == cached_round]
    assert len(cached) == 1
    ev = cached[0]
    assert ev["cached"] is True and ev["statuses"] == {"KEN": "ok (cached)"}
    assert ev["items_by_state"] == {} and ev["cached_by_state"]["KEN"] > 0
    assert ev["hits_by_state"] == {"KEN": 1} and ev["purpose"] == "border-screening"
    refused = [e for e in events if e["purpose"] == "visa"]
    assert refused and refused[-1]["outcome"] == "refused" and refused[-1]["cached"] is False
    # the holder recorded the refused request
    ken_log = _data(fed, "KEN") / "audit.jsonl"
    assert cli(["audit", "refusals", "--log", str(ken_log), "--partner", "FRA"]) == 0
    assert "purpose_not_accepted" in capsys.readouterr().out
    # and so did the querier, in its own log: refusals and the oversight export name the holder
    assert cli(["audit", "refusals", "--log", str(_qlog(fed)), "--partner", "KEN"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["purpose"] for e in listed] == ["visa"]
    pub = _data(fed) / "audit-signing.key.pub.pem"
    assert cli(["audit", "export", "--log", str(_qlog(fed)), "--public-key", str(pub)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verification"]["ok"] and report["counts"]["partner"]["KEN"] == len(events)
    assert report["items_by_partner"]["KEN"] == sum(e["items"] for e in events)
    assert report["refusals"][0]["partner"] == "KEN"
    assert "purpose_not_accepted" in report["refusals"][0]["reason"]


# ---------------------------------------------------------------------------------------------------------
# 2. the querying State's own audit log
# ---------------------------------------------------------------------------------------------------------


def test_querier_audit_log_records_exact_fuzzy_and_follow_up_rounds(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    travellers = [
        person("Q1", "Amina Wanjiru Odhiambo", "1980-03-04", "KP1000001", "KEN"),  # exact hit
        person("Q2", "Amina Wanjiru Odhiambu", "1980-03-04", "XX7777777", "TZA"),  # a typo
        person("Q3", "Refugee Listed Person", "1990-06-15", "KP1000003", "KEN",
               flags=frozenset({"refugee"})),  # never sent to KEN
        person("Q4", "Nobody Special Atall", "1960-01-01", "ZZ9000001", "NZL"),
    ]
    manifest = tmp_path / "m.jsonl"
    write_jsonl(travellers, manifest)
    before = len(_events(fed))

    code, doc = _query(fed, manifest, capsys)
    assert code == 1, doc  # Q3 was not checked against KEN (its only target): incomplete
    not_checked = {t["traveller"]: t.get("not_checked") for t in doc["travellers"]}
    assert not_checked == {"Q1": None, "Q2": None, "Q4": None,
                           "Q3": {"KEN": "excluded: protected person, State of nationality"}}
    exact_round = doc["round_id"]
    exact_hits = sum(1 for t in doc["travellers"] if t["hits"])
    assert exact_hits >= 1
    code, doc = _query(fed, manifest, capsys, "--mode", "fuzzy", "--key-bits", "1024", "--threshold", "0.8")
    assert code == 1, doc
    assert doc["details"]["KEN"]["excluded"] == 1 and doc["summary"]["not_fully_screened"] == 1
    fuzzy_round = doc["round_id"]
    hits = [h for t in doc["travellers"] for h in t["hits"]]
    assert any(h["mode"] == "fuzzy" for h in hits), doc
    capsys.readouterr()
    follow_up = ["query", "follow-up", "--config", _cfg(fed), "--round", fuzzy_round, "--format", "json"]
    assert cli(follow_up) == 0
    capsys.readouterr()

    events = _events(fed)[before:]
    assert [(e["type"], e["mode"]) for e in events] == [
        ("query", "exact"), ("query", "fuzzy"), ("query_follow_up", "follow-up")]
    exact, fuzzy, follow = events
    for ev in events:
        assert ev["purpose"] == "border-screening" and ev["legal_basis"] == "FED-agreement-2026/art.5"
        assert ev["unit"] == "FRA-BORDER-01" and ev["official"] == "officer-0001"
        assert ev["targets"] == ["KEN"] and ev["outcome"] == "ok" and ev["travellers"] == 4
        assert isinstance(ev["duration_ms"], int)
    assert exact["round_id"] == exact_round and exact["statuses"] == {"KEN": "ok"}
    assert exact["items_by_state"]["KEN"] > 0 and exact["hits_by_state"] == {"KEN": exact_hits}
    assert exact["excluded_by_state"] == {"KEN": 1} and exact["excluded"] == 1
    assert exact["cached"] is False and exact["epochs"]["KEN"]
    assert fuzzy["round_id"] == fuzzy_round and fuzzy["sub_rounds"] >= 1
    # items: what KEN received, Q3 padded by a dummy (as exact rounds log the padded batch size)
    assert fuzzy["items_by_state"] == {"KEN": 4} and fuzzy["excluded_by_state"] == {"KEN": 1}
    assert fuzzy["hits_by_state"]["KEN"] >= 2  # Q1 and Q2
    assert follow["round_id"] == fuzzy_round and follow["holder"] == "KEN"
    assert follow["items"] >= 2 and follow["hits"] >= 1

    text = _qlog(fed).read_text(encoding="utf-8")
    for t in travellers:  # counts only: no name, document number or date of birth
        assert t.names[0].full_name not in text
        assert t.documents[0].number not in text
        assert str(t.birth_dates[0]) not in text
    for r in KEN_LIST:
        assert r.label.reference not in text  # nor the labels released to the officer

    # the node keeps serving with its own log locked; the querier log verifies with the same public key
    pub = _data(fed) / "audit-signing.key.pub.pem"
    assert cli(["audit", "verify", "--log", str(_qlog(fed)), "--public-key", str(pub)]) == 0
    assert cli(["audit", "verify", "--log", str(_data(fed) / "audit.jsonl"), "--public-key", str(pub)]) == 0
    assert fed.procs["FRA"].poll() is None


class _Coordinator:
    """Just enough of a coordinator: no members, or down."""

    def __init__(self, down: bool) -> None:
        self.down = down

    def list_nodes(self, *, timeout: float) -> list[Any]:
        from fedcheck.errors import Unavailable

        if self.down:
            raise Unavailable("coordinator unreachable", reason="coordinator_down")
        return []


def _runner(tmp_path: Path, down: bool, sink: Any) -> Any:
    from fedcheck.node.querier import QuerierCache, QueryRunner
    from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey

    tmp_path.mkdir(parents=True, exist_ok=True)
    cache = QuerierCache(tmp_path / "qc.sqlite",
                         EnvelopeSealer.open_or_create(tmp_path / "kr.json", KeyEncryptionKey.generate()))
    return QueryRunner(state="FRA", coordinator=_Coordinator(down), cache=cache, cert_pem=b"", key_pem=b"",
                       audit=sink)


def test_failed_rounds_are_audited_and_unauditable_rounds_withheld(tmp_path: Path) -> None:
    from fedcheck.errors import IntegrityError, Unavailable

    manifest = [person("Q1", "Some Traveller", "1980-01-01", "AB1234567", "KEN")]
    opts = QueryOptions(states=("KEN",), legal_basis="LB-1", unit="U-1", official="o-1")
    events: list[dict[str, Any]] = []
    with pytest.raises(Unavailable):
        _runner(tmp_path / "a", True, events.append).run(manifest, opts)
    assert len(events) == 1 and events[0]["outcome"] == "error" and events[0]["reason"] == "coordinator_down"
    assert events[0]["status"] == "UNAVAILABLE" and events[0]["targets"] == ["KEN"]

    report = _runner(tmp_path / "b", False, events.append).run(manifest, opts)
    assert report.statuses == {"KEN": "unavailable (not a member)"}
    assert events[-1]["outcome"] == "error" and events[-1]["statuses"] == report.statuses

    def broken(event: Any) -> None:
        raise OSError("disk full")

    with pytest.raises(IntegrityError) as exc:  # a round the querier cannot record is not reported
        _runner(tmp_path / "c", False, broken).run(manifest, opts)
    assert exc.value.reason == "querier_audit"


def test_round_event_keeps_wire_text_out_of_the_log() -> None:
    from fedcheck.node.querier import round_event
    from fedcheck.trust.audit import check_event

    event = round_event(
        QueryOptions(purpose="border-screening", legal_basis="LB-1"), round_id="r1", mode="exact",
        targets=["KEN", "UNX"], statuses={"KEN": "refused (" + "QUJD" * 30 + ")", "UNX": "ok (cached)"},
        travellers=3, items_by_state={"KEN": 4}, hits_by_state={}, excluded_by_state={}, epochs={},
        started=0.0, cached_by_state={"KEN": 0, "UNX": 4},
    )
    assert check_event(event) == event  # always auditable: an encoded blob from the wire is dropped
    assert event["statuses"] == {"KEN": "refused", "UNX": "ok (cached)"}
    assert event["outcome"] == "refused" and event["cached"] is True


# ---------------------------------------------------------------------------------------------------------
# 3. audit log verification of a log with no events yet
# ---------------------------------------------------------------------------------------------------------


def test_empty_audit_log_with_genesis_head_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = generate_signing_key()
    pub = save_signing_key(tmp_path / "k.key", key, None)
    log = tmp_path / "audit.jsonl"
    AuditLog(log, key).close()  # what a freshly started node leaves
    assert log.stat().st_size == 0
    report = verify_log(log, key.public_key())
    assert report.ok, report.errors
    assert (report.entries, report.head_seq, report.last_seq) == (0, 0, 0)
    assert cli(["audit", "verify", "--log", str(log), "--public-key", str(pub)]) == 0
    assert "OK: 0 entries" in capsys.readouterr().out
    assert verify_log(log, key.public_key(), expected_head=(0, "0" * 64)).ok

    # a seq-0 head that is not the genesis hash is still refused
    head = log.with_name(log.name + ".head")
    genesis = head.read_bytes()
    head.write_bytes(_sign_anchor(key, _HEAD_CTX, 0, "ab" * 32, {}))
    assert not verify_log(log, key.public_key()).ok
    head.write_bytes(genesis)

    # an entry durable before its head was written (crash): unacknowledged, still verifies
    with AuditLog(log, key) as writer:
        writer.append({"type": "startup"})
    head.write_bytes(genesis)
    report = verify_log(log, key.public_key())
    assert report.ok and report.unacknowledged == 1, report.errors


def test_short_lived_writers_wait_for_the_lock(tmp_path: Path) -> None:
    key = generate_signing_key()
    log = tmp_path / "audit-querier.jsonl"
    holder = AuditLog(log, key)
    from fedcheck.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        append_event(log, key, {"type": "query"}, lock_timeout=0.2)
    assert exc.value.reason == "audit_locked"
    holder.close()
    head = append_event(log, key, {"type": "query", "statuses": {"KEN": "ok (cached)"}, "cached": True})
    assert head.seq == 1 and verify_log(log, key.public_key()).ok


# ---------------------------------------------------------------------------------------------------------
# 4. watchlist import: warnings, rejection threshold, file and delimiter errors
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_cfg(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("import")
    return str(write_federation(root, ("FRA",), metrics=False).node_configs["FRA"])


HEADER = "id,full_name,date_of_birth,nationalty,document_number,category,reference\n"


def _rows(n: int, bad: int = 0) -> str:
    good = "".join(f"W{i},Listed Person {i},1970-01-0{1 + i % 9},KEN,DOC{i:05d},sanctions,R-{i}\n"
                   for i in range(n - bad))
    return good + "".join(f"B{i},,,,,,\n" for i in range(bad))  # nothing to match on: rejected


def _count(cfg: str) -> int:
    store = open_store(load_node_config(cfg))
    try:
        return store.count()
    finally:
        store.close()


def test_import_prints_warnings_with_did_you_mean(
    node_cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "list.csv"
    path.write_text(HEADER + _rows(5), encoding="utf-8")
    assert cli(["watchlist", "import", "--config", node_cfg, str(path)]) == 0
    cap = capsys.readouterr()
    assert "unknown column 'nationalty' ignored (did you mean 'nationality'?)" in cap.err
    assert "warning" in cap.err and "warnings 1" in cap.out
    assert cli(["watchlist", "import", "--config", node_cfg, str(path), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["warnings"] == [{"where": "line 1", "reason":
                                "unknown column 'nationalty' ignored (did you mean 'nationality'?)"}]


def test_import_refuses_to_replace_when_too_many_rows_are_rejected(
    node_cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "list.csv"
    path.write_text(HEADER.replace("nationalty", "nationality") + _rows(8), encoding="utf-8")
    base = ["watchlist", "import", "--config", node_cfg, str(path)]
    assert cli(base) == 0 and _count(node_cfg) == 8
    capsys.readouterr()

    path.write_text(HEADER + _rows(10, bad=3), encoding="utf-8")  # 30 % rejected
    assert cli(base) == 2
    err = capsys.readouterr().err
    assert "3 of 10 rows rejected" in err and "NOT replaced" in err and "too_many_rejected" in err
    assert "rejected line" in err  # which rows, and why
    assert _count(node_cfg) == 8  # the previous list is intact
    assert cli([*base, "--max-rejected", "2"]) == 2
    assert cli([*base, "--output", "json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["replaced"] is False and doc["rejected"] == 3 and len(doc["rejections"]) == 3
    assert _count(node_cfg) == 8

    assert cli([*base, "--max-rejected", "30%"]) == 0 and _count(node_cfg) == 7
    assert cli([*base, "--max-rejected", "3"]) == 0
    assert cli([*base, "--allow-rejected"]) == 0
    path.write_text(HEADER + _rows(20, bad=2), encoding="utf-8")  # 10 %: within the default
    assert cli(base) == 0 and _count(node_cfg) == 18
    assert cli([*base, "--max-rejected", "lots"]) == 2
    assert "--max-rejected" in capsys.readouterr().err


def test_import_file_errors_and_delimiter_hint(
    node_cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["watchlist", "import", "--config", node_cfg]
    capsys.readouterr()
    assert cli([*base, str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    if os.path.exists("/dev/null"):
        assert cli([*base, "/dev/null"]) == 2
        assert "not a regular file" in capsys.readouterr().err
    assert cli([*base, str(tmp_path / "missing.csv")]) == 2
    assert "file not found" in capsys.readouterr().err
    semi = tmp_path / "semi.csv"
    semi.write_text("id;full_name;document_number\nW1;Listed Person;DOC1\n", encoding="utf-8")
    assert cli([*base, str(semi)]) == 2
    err = capsys.readouterr().err
    assert "no 'id' column" in err and "semicolon-separated" in err
    tab = tmp_path / "list.tsv"
    tab.write_text("id\tfull_name\nW1\tListed Person\n", encoding="utf-8")
    assert cli([*base, str(tab)]) == 2
    assert "tab-separated" in capsys.readouterr().err
