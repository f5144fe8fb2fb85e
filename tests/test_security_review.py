"""Regression tests for the independent security review (budget race, unsigned epoch keys, audit evasion,
head write failure, withheld-count leak, budget refill on list import, hardening). In-process only."""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

import fedcheck.trust.audit as audit_mod
from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.errors import (
    Aborted,
    BudgetExhausted,
    ConfigError,
    FedcheckError,
    IntegrityError,
    InvalidInput,
    LimitExceeded,
)
from fedcheck.node.announce import AnnouncementSigner
from fedcheck.node.epochs import Epoch, IndexBlob, index_entries
from fedcheck.node.querier import QuerierCache, QueryOptions, QueryRunner
from fedcheck.node.replay import ReplayGuard
from fedcheck.node.service import NodeService, audience_key
from fedcheck.protocol.exact import EpochKey, ExactHolder, ExactQuerier, Mode
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument
from fedcheck.rpc import serde
from fedcheck.rpc.clients import InMemoryCoordinatorClient, InMemoryNodeClient
from fedcheck.rpc.messages import (
    BlindEvaluateRequest,
    GetIndexRequest,
    IndexChunk,
    NodeEntry,
    RoundPayload,
    RoundResult,
    RoundTarget,
    SignedEnvelope,
    SubmitRoundRequest,
)
from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey
from fedcheck.trust.audit import AuditLog, audit_text_problem, generate_signing_key, read_entries, verify_log
from fedcheck.trust.budget import BudgetLedger, BudgetLimit
from fedcheck.trust.pki import PeerIdentity, create_ca, issue_certificate, sign_payload
from fedcheck.trust.policy import HolderPolicy

COORD = PeerIdentity("coordinator", "FED", 1)


# -- a small in-process federation --------------------------------------------------------------------------


@dataclass
class Pki:
    ca_pem: bytes
    certs: dict[str, tuple[bytes, bytes]]  # State -> (cert, key) of its node certificate
    evaluators: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # code -> evaluator cert, key


@pytest.fixture(scope="module")
def pki() -> Pki:
    d = Path(tempfile.mkdtemp())
    create_ca(d / "ca", federation="FED")
    certs = {}
    for state in ("FRA", "DEU", "ITA"):
        files = issue_certificate(d / "ca", d / state, role="node", state=state)
        certs[state] = (files.cert.read_bytes(), files.key.read_bytes())
    evaluators = {}
    for code in ("FRA", "EVA"):
        files = issue_certificate(d / "ca", d / f"eva-{code}", role="evaluator", state=code)
        evaluators[code] = (files.cert.read_bytes(), files.key.read_bytes())
    return Pki((d / "ca" / "ca.crt.pem").read_bytes(), certs, evaluators)


def _records() -> list[PersonRecord]:
    return [
        PersonRecord(
            f"w{i}",
            (PersonName(f"LISTED PERSON {i}"),),
            birth_dates=(BirthDate(1970 + i, 1, 2),),
            documents=(TravelDocument("passport", f"P{i:06d}", "DEU"),),
            label=Label("sanctions", f"REF-{i}"),
        )
        for i in range(6)
    ]


class StubEpochs:
    """One served epoch with one index per audience (what EpochManager does, without a store)."""

    def __init__(self, policy: HolderPolicy, records: list[PersonRecord], epoch_id: str = "DEU-e1") -> None:
        key = EpochKey.generate(epoch_id)
        holder = ExactHolder(key)
        entries = index_entries(records)
        indexes = {}
        for code, partner in policy.partners.items():
            data = holder.build_index(
                policy.filter_entries(code, entries), with_labels="exact" in partner.modes
            ).to_bytes()
            indexes[audience_key(partner.audience_id, partner.modes)] = IndexBlob(
                data, hashlib.sha256(data).digest(), 0
            )
        self.epoch = Epoch(
            epoch_id, key, holder, int(time.time() * 1000), "v1", len({e.key for e in entries}), indexes
        )
        self.building = False
        self.evaluations = 0
        real = holder.blind_evaluate

        def counting(*a: Any, **k: Any) -> Any:
            self.evaluations += 1
            return real(*a, **k)

        holder.blind_evaluate = counting  # type: ignore[method-assign]

    def current(self) -> Epoch:
        return self.epoch

    def previous(self) -> Epoch | None:
        return None

    def get(self, epoch_id: str) -> Epoch:
        return self.epoch

    def epoch_ends_unix(self, epoch: Epoch) -> float:
        return epoch.started_unix_ms / 1000 + 3600


def _policy(budget_per_epoch: int | None = None, extra: dict[str, Any] | None = None) -> HolderPolicy:
    fra: dict[str, Any] = {
        "modes": ["exact", "cardinality"], "key_types": ["document", "name_dob"], "purposes": ["border"],
    }
    if budget_per_epoch is not None:
        fra["budget_per_epoch"] = budget_per_epoch
    ita = {
        "modes": ["exact"], "key_types": ["document"], "purposes": ["border"], "withheld": ["REF-0", "REF-1"],
    }
    partners = {"FRA": fra, "ITA": ita, **(extra or {})}
    return HolderPolicy.from_toml({"policy": {"holder": {"partners": partners}}})


def _holder(
    tmp: Path, pki: Pki, *, budget_per_epoch: int | None = None, audit: Any = None, announce: bool = True,
    extra_partners: dict[str, Any] | None = None,
) -> tuple[NodeService, BudgetLedger, StubEpochs, list[dict[str, Any]]]:
    pol = _policy(budget_per_epoch, extra_partners)
    epochs = StubEpochs(pol, _records())
    budget = BudgetLedger(tmp / "b.sqlite", pol.budget_limits())
    events: list[dict[str, Any]] = []
    svc = NodeService(
        state="DEU", epochs=epochs, policy=pol, budget=budget,  # type: ignore[arg-type]
        audit=audit or (lambda e: events.append(dict(e))), ca_pem=pki.ca_pem, crl=lambda: None,
        max_batch=4096, index_chunk_bytes=1024, replay=ReplayGuard(tmp / "r.sqlite", window_seconds=600),
        announcer=AnnouncementSigner("DEU", *pki.certs["DEU"]) if announce else None,
    )
    return svc, budget, epochs, events


def _digest(blinded: list[bytes]) -> bytes:
    return hashlib.sha256(b"".join(blinded)).digest()


def _request(
    pki: Pki, keys: list[bytes], round_id: str, signer: tuple[bytes, bytes] | None = None, **fields: Any
) -> BlindEvaluateRequest:
    batch = ExactQuerier().blind(keys, mode=Mode.EXACT)
    now = int(time.time() * 1000)
    p = RoundPayload(
        round_id=round_id, purpose="border", legal_basis=fields.pop("legal_basis", "LB-1"), mode="exact",
        targets=(RoundTarget("DEU", "DEU-e1", len(batch.blinded), _digest(batch.blinded)),),
        deadline_unix_ms=now + 60000, issued_at_unix_ms=now, **fields,
    )
    cert, key = signer or pki.certs["FRA"]
    data = serde.round_payload_to_bytes(p)
    env = SignedEnvelope(data, sign_payload(key, data), cert)
    return BlindEvaluateRequest(env, tuple(batch.blinded), round_id)


# -- 1. budget bypass by concurrent duplicates --------------------------------------------------------------


def test_concurrent_duplicates_are_never_evaluated_without_a_charge(tmp_path: Path, pki: Pki) -> None:
    svc, budget, epochs, events = _holder(tmp_path, pki, budget_per_epoch=10)
    svc.blind_evaluate(COORD, _request(pki, [b"k%d" % i for i in range(10)], "r0"))  # spend the budget
    assert epochs.evaluations == 1
    real = budget.charge

    def slow(*a: Any, **k: Any) -> Any:  # as under SQLite contention: the duplicate arrives mid-charge
        time.sleep(0.2)
        return real(*a, **k)

    budget.charge = slow  # type: ignore[method-assign]
    for trial in range(4):
        req = _request(pki, [b"cand%d-%d" % (trial, i) for i in range(50)], f"enum-{trial}")
        outcomes: list[str] = []
        gate = threading.Barrier(6)

        def go(
            req: BlindEvaluateRequest = req, outcomes: list[str] = outcomes, gate: threading.Barrier = gate
        ) -> None:
            gate.wait()
            try:
                svc.blind_evaluate(COORD, req)
                outcomes.append("ok")
            except FedcheckError as exc:
                outcomes.append(exc.reason)

        threads = [threading.Thread(target=go) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert "ok" not in outcomes, outcomes  # over budget: nobody is answered, not even a "duplicate"
        assert set(outcomes) <= {"epoch_budget_exhausted", "round_in_progress"}
    assert epochs.evaluations == 1  # nothing evaluated beyond the one charged batch
    assert budget.remaining("FRA", "DEU-e1").per_epoch == 0
    assert all(e["type"] == "refusal" for e in events[1:])  # every refusal audited


def test_duplicate_of_answered_request_gets_the_stored_answer_uncharged(tmp_path: Path, pki: Pki) -> None:
    svc, budget, epochs, _ = _holder(tmp_path, pki, budget_per_epoch=100)
    req = _request(pki, [b"a", b"b", b"c"], "r-dup")
    first = svc.blind_evaluate(COORD, req)
    again = svc.blind_evaluate(COORD, req)
    assert again.replayed and not first.replayed
    assert again.evaluated == first.evaluated and again.proof == first.proof  # the stored answer
    assert epochs.evaluations == 1 and budget.remaining("FRA", "DEU-e1").per_epoch == 97


def test_pending_duplicate_waits_then_aborts_and_released_claims_are_taken_over(tmp_path: Path) -> None:
    g = ReplayGuard(tmp_path / "r.sqlite", window_seconds=60, wait_seconds=0.05)
    first = g.begin("FRA", "r1", "a" * 64)
    assert first.fresh
    with pytest.raises(Aborted) as exc:  # still pending: refused with retry-after, never answered
        g.begin("FRA", "r1", "a" * 64)
    assert exc.value.reason == "round_in_progress" and exc.value.status == "ABORTED"
    threading.Timer(0.05, lambda: g.release("FRA", "r1", first.token)).start()
    second = g.begin("FRA", "r1", "a" * 64, wait_seconds=2.0)  # the first failed: the waiter takes over
    assert second.fresh and second.token != first.token
    g.complete("FRA", "r1", second.token, b"answer")
    third = g.begin("FRA", "r1", "a" * 64)
    assert not third.fresh and third.answer == b"answer"
    g.close()
    g = ReplayGuard(tmp_path / "r.sqlite", window_seconds=60)
    assert g.begin("FRA", "r1", "a" * 64).answer == b"answer"  # answered claims survive a restart
    assert g.begin("FRA", "r2", "b" * 64).fresh
    g.close()
    g = ReplayGuard(tmp_path / "r.sqlite", window_seconds=60)
    assert g.begin("FRA", "r2", "b" * 64).fresh  # a dead process' pending claim is dropped on open
    g.close()


# -- 2. holder epoch key and index authenticated ------------------------------------------------------------


class Relay:
    """A coordinator transport (querier side) that can tamper with what it relays."""

    def __init__(self, inner: InMemoryCoordinatorClient, mode: str, holder: StubEpochs) -> None:
        self.inner = inner
        self.mode = mode
        self.fake_key = EpochKey.generate("DEU-e1")
        self.fake_holder = ExactHolder(self.fake_key)
        self.real = holder

    def list_nodes(self, *, timeout: float) -> list[NodeEntry]:
        out = []
        for e in self.inner.list_nodes(timeout=timeout):
            if e.info is not None and self.mode in ("key", "strip"):
                info = replace(e.info, epoch_announcement=None) if self.mode == "strip" else replace(
                    e.info, epoch_public_key=self.fake_key.public_key
                )
                e = NodeEntry(e.state, e.reachable, info)
            out.append(e)
        return out

    def get_index(self, state: str, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        chunks = list(self.inner.get_index(state, request, timeout=timeout))
        if self.mode not in ("key", "index"):
            yield from chunks
            return
        # the relay's own index: under k' ("key"), or under the real key with an entry suppressed ("index")
        holder = self.fake_holder if self.mode == "key" else self.real.epoch.holder
        pk = self.fake_key.public_key if self.mode == "key" else self.real.epoch.public_key
        entries = index_entries(_records()[1:] if self.mode == "index" else _records())
        data = holder.build_index(entries).to_bytes()
        digest = hashlib.sha256(data).digest()
        yield IndexChunk(
            "DEU-e1", 0, data, digest, len(data), digest, True, pk, chunks[-1].announcement
        )

    def submit_round(self, request: SubmitRoundRequest, *, timeout: float) -> RoundResult:
        result = self.inner.submit_round(request, timeout=timeout)
        if self.mode != "key":
            return result
        res = []  # evaluate under k' with a valid proof under k'
        for r in result.results:
            if r.evaluation is not None:
                ev = self.fake_holder.blind_evaluate(list(request.batches[r.state]), mode=Mode.EXACT)
                forged = replace(r.evaluation, evaluated=tuple(ev.evaluated), proof=ev.proof)
                r = replace(r, evaluation=forged)
            res.append(r)
        return replace(result, results=tuple(res))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("mode", ["honest", "key", "index", "strip"])
def test_relay_substituting_epoch_key_or_index_is_detected(tmp_path: Path, pki: Pki, mode: str) -> None:
    svc, _, epochs, _ = _holder(tmp_path, pki)
    engine = RoundEngine(
        {"DEU": InMemoryNodeClient(svc, COORD)}, RoundStore(tmp_path / "rounds.sqlite"),
        ca_pem=pki.ca_pem, crl=lambda: None,
    )
    kek = KeyEncryptionKey.generate()
    cache = QuerierCache(tmp_path / "qc.sqlite", EnvelopeSealer.open_or_create(tmp_path / "kr.json", kek))
    relay = Relay(InMemoryCoordinatorClient(engine, PeerIdentity("node", "FRA", 2)), mode, epochs)
    runner = QueryRunner(
        state="FRA", coordinator=relay, cache=cache, cert_pem=pki.certs["FRA"][0],  # type: ignore[arg-type]
        key_pem=pki.certs["FRA"][1], ca_pem=pki.ca_pem, crl=lambda: None,
    )
    manifest = _records()[:2]  # both listed: an honest round has hits on both
    report = runner.run(manifest, QueryOptions(states=("DEU",), purpose="border", legal_basis="LB-1"))
    engine.close()
    if mode == "honest":
        assert report.statuses["DEU"] == "ok"
        assert all(t.hits for t in report.travellers)
    else:
        assert report.statuses["DEU"] == "refused (announcement_invalid)", report.statuses
        assert not any(t.hits for t in report.travellers)


def test_querier_caps_index_download_size(tmp_path: Path, pki: Pki) -> None:
    svc, _, _, _ = _holder(tmp_path, pki)
    engine = RoundEngine({"DEU": InMemoryNodeClient(svc, COORD)}, RoundStore(tmp_path / "r2.sqlite"),
                         ca_pem=pki.ca_pem, crl=lambda: None)
    cache = QuerierCache(tmp_path / "qc.sqlite",
                         EnvelopeSealer.open_or_create(tmp_path / "kr.json", KeyEncryptionKey.generate()))
    runner = QueryRunner(
        state="FRA", coordinator=InMemoryCoordinatorClient(engine, PeerIdentity("node", "FRA", 2)),
        cache=cache,
        cert_pem=pki.certs["FRA"][0], key_pem=pki.certs["FRA"][1], ca_pem=pki.ca_pem, max_index_bytes=512,
    )
    with pytest.raises(LimitExceeded) as exc:
        runner.fetch_index("DEU", "DEU-e1")
    assert exc.value.reason == "index_too_large"
    engine.close()


# -- 3. audit evasion through blob-like text fields ---------------------------------------------------------


@pytest.mark.parametrize("field", ["unit", "official", "legal_basis"])
def test_text_the_audit_log_refuses_is_refused_at_the_wire_and_the_refusal_audited(
    tmp_path: Path, pki: Pki, field: str
) -> None:
    log = AuditLog(tmp_path / "a.jsonl", generate_signing_key())
    svc, _, _, _ = _holder(tmp_path, pki, budget_per_epoch=100, audit=lambda e: log.append_anchored(e)[1])
    blob = "X" * 80  # passes "printable, <= 256" but the audit log refuses it as an encoded blob
    assert audit_text_problem(blob) is not None
    with pytest.raises(InvalidInput) as exc:
        svc.blind_evaluate(COORD, _request(pki, [b"a"], "r-evade", **{field: blob}))
    assert exc.value.reason == f"invalid_{field}"
    events = [e.event for e in read_entries(tmp_path / "a.jsonl")]
    assert events and events[-1]["type"] == "refusal" and events[-1]["partner"] == "FRA"
    assert blob not in str(events)
    log.close()


def test_refusal_falls_back_to_a_reduced_audit_event(tmp_path: Path, pki: Pki) -> None:
    appended: list[dict[str, Any]] = []

    def picky(event: Any) -> None:  # rejects the full event (as check_event would for a bad value)
        if "unit" in event:
            raise InvalidInput("audit event field 'unit': bad", reason="audit_value")
        appended.append(dict(event))

    svc, _, _, _ = _holder(tmp_path, pki, budget_per_epoch=1, audit=picky)
    with pytest.raises(BudgetExhausted):
        svc.blind_evaluate(COORD, _request(pki, [b"a", b"b"], "r-over", unit="U1"))
    assert appended[-1]["type"] == "refusal" and appended[-1]["reason"] == "epoch_budget_exhausted"
    assert appended[-1]["partner"] == "FRA" and "audit_reduced" in appended[-1]["reasons"]


def test_errors_after_the_charge_are_audited_and_mapped(tmp_path: Path, pki: Pki) -> None:
    svc, _, epochs, events = _holder(tmp_path, pki, budget_per_epoch=100)

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("libsodium exploded")

    epochs.epoch.holder.blind_evaluate = boom  # type: ignore[method-assign]
    with pytest.raises(FedcheckError) as exc:
        svc.blind_evaluate(COORD, _request(pki, [b"a"], "r-boom"))
    assert exc.value.reason == "evaluation_failed" and exc.value.status == "INTERNAL"
    assert events[-1]["type"] == "refusal" and events[-1]["reason"] == "evaluation_failed"


# -- 4. failed head write ----------------------------------------------------------------------------------


def test_failed_head_write_does_not_break_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_signing_key()
    log = AuditLog(tmp_path / "a.jsonl", key)
    log.append({"type": "request", "items": 1})

    def no_space(*a: Any, **k: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit_mod, "atomic_write", no_space)
    with pytest.raises(IntegrityError) as exc:
        log.append({"type": "request", "items": 2})
    assert exc.value.reason == "audit_head_write"
    monkeypatch.undo()
    log.append({"type": "request", "items": 3})
    log.close()
    report = verify_log(tmp_path / "a.jsonl", key.public_key())
    assert report.ok, report.errors
    assert [e.seq for e in read_entries(tmp_path / "a.jsonl")] == [1, 2, 3]
    AuditLog(tmp_path / "a.jsonl", key).close()  # reopens cleanly


# -- 5. withheld-count leak ---------------------------------------------------------------------------------


def test_node_info_reveals_only_the_callers_audience_size(tmp_path: Path, pki: Pki) -> None:
    svc, _, epochs, _ = _holder(tmp_path, pki)
    assert svc.node_info(COORD).index_size == 0  # relayed to every partner: says nothing about audiences
    assert svc.node_info().index_size == 0
    ita = svc.node_info(PeerIdentity("node", "ITA", 3)).index_size
    fra = svc.node_info(PeerIdentity("node", "FRA", 2)).index_size
    assert ita == 4  # document keys of the 6 entries minus the 2 withheld from ITA
    assert ita < fra <= epochs.epoch.size
    assert svc.node_info(PeerIdentity("node", "KEN", 4)).index_size == 0  # not a partner
    # ListNodes through the coordinator carries the coordinator's view
    assert InMemoryNodeClient(svc, COORD).node_info(timeout=1).index_size == 0
    # an evaluator certificate naming a member State without `evaluator = true` is no stand-in for it
    assert svc._policy.evaluator_refused("evaluator", "ITA")
    assert svc.node_info(PeerIdentity("evaluator", "ITA", 5)).index_size == 0


# -- 6. per-epoch budgets do not reset on list imports ------------------------------------------------------


def test_list_import_does_not_refill_the_epoch_budget(tmp_path: Path) -> None:
    now = [7200.0 * 100]
    ledger = BudgetLedger(
        tmp_path / "b.sqlite", {"FRA": BudgetLimit(per_epoch=10)}, clock=lambda: now[0],
        epoch_window_seconds=3600,
    )
    ledger.charge("FRA", 10, "DEU-epoch-1")
    with pytest.raises(BudgetExhausted) as exc:  # a list import started a new epoch: still the same window
        ledger.charge("FRA", 1, "DEU-epoch-2")
    assert 1 <= exc.value.retry_after_s <= 3600
    assert ledger.remaining("FRA", "DEU-epoch-2").per_epoch == 0
    now[0] += 3600  # the next window
    assert ledger.charge("FRA", 10, "DEU-epoch-3").per_epoch == 0
    ledger.close()


# -- 7. hardening -------------------------------------------------------------------------------------------


def test_max_batch_is_capped_at_the_proof_transcript_limit(tmp_path: Path) -> None:
    from fedcheck.node.config import load_node_config

    for value, ok in ((65_535, True), (65_536, False)):
        cfg = tmp_path / f"n{value}.toml"
        cfg.write_text(
            f'[node]\nstate = "DEU"\nkek = "env:X"\nmax_batch = {value}\n'
            '[tls]\ncert = "c"\nkey = "k"\nca = "a"\ncrl = "l"\n'
        )
        if ok:
            assert load_node_config(cfg).max_batch == value
        else:
            with pytest.raises(ConfigError):
                load_node_config(cfg)


def test_every_index_download_start_is_audited(tmp_path: Path, pki: Pki) -> None:
    svc, _, _, events = _holder(tmp_path, pki)
    now = int(time.time() * 1000)
    from fedcheck.rpc.messages import IndexRequest

    data = serde.index_request_to_bytes(IndexRequest("DEU", "DEU-e1", now))
    cert, key = pki.certs["FRA"]
    env = SignedEnvelope(data, sign_payload(key, data), cert)
    list(svc.get_index(COORD, GetIndexRequest(env, 0)))
    list(svc.get_index(COORD, GetIndexRequest(env, 1000)))  # a resumed download is audited too
    index_events = [e for e in events if e["type"] == "index"]
    assert [e["offset"] for e in index_events] == [0, 1000]


def test_missing_crl_is_a_config_error_unless_insecure_dev(tmp_path: Path) -> None:
    from fedcheck.node.config import load_node_config

    base = '[node]\nstate = "DEU"\nkek = "env:X"\n{extra}[tls]\ncert = "c"\nkey = "k"\nca = "a"\n'
    cfg = tmp_path / "n.toml"
    cfg.write_text(base.format(extra=""))
    with pytest.raises(ConfigError, match="crl"):
        load_node_config(cfg)
    cfg.write_text(base.format(extra="insecure_dev = true\n"))
    assert load_node_config(cfg).tls is not None


# -- second review: audience-bound index announcements, evaluator stand-ins, cache, replay limits -----------


def _runner(tmp: Path, pki: Pki, state: str, relay: Any, tag: str) -> QueryRunner:
    cache = QuerierCache(tmp / f"qc-{tag}.sqlite",
                         EnvelopeSealer.open_or_create(tmp / f"kr-{tag}.json", KeyEncryptionKey.generate()))
    return QueryRunner(state=state, coordinator=relay, cache=cache, cert_pem=pki.certs[state][0],
                       key_pem=pki.certs[state][1], ca_pem=pki.ca_pem, crl=lambda: None)


class AudienceSwapRelay:
    """Relays the holder-signed index of *another* partner's audience (a GetIndex that partner signed earlier,
    replayed in place of the victim's): narrower -> hits suppressed; broader -> withheld entries exposed."""

    def __init__(
        self, inner: InMemoryCoordinatorClient, svc: NodeService, signer: tuple[bytes, bytes]
    ) -> None:
        self.inner, self.svc, self.signer = inner, svc, signer

    def get_index(self, state: str, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        from fedcheck.rpc.messages import IndexRequest

        req = serde.index_request_from_bytes(request.request.payload)
        data = serde.index_request_to_bytes(IndexRequest(state, req.epoch_id, int(time.time() * 1000)))
        env = SignedEnvelope(data, sign_payload(self.signer[1], data), self.signer[0])
        yield from self.svc.get_index(COORD, GetIndexRequest(env, request.offset))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(("victim", "other"), [("FRA", "ITA"), ("ITA", "FRA")])
def test_relay_handing_another_audiences_signed_index_is_refused(
    tmp_path: Path, pki: Pki, victim: str, other: str
) -> None:
    svc, _, _, _ = _holder(tmp_path, pki)
    engine = RoundEngine({"DEU": InMemoryNodeClient(svc, COORD)}, RoundStore(tmp_path / "r.sqlite"),
                         ca_pem=pki.ca_pem, crl=lambda: None)
    inner = InMemoryCoordinatorClient(engine, PeerIdentity("node", victim, 2))
    opts = QueryOptions(states=("DEU",), purpose="border", legal_basis="LB-1")
    manifest = _records()[:2]  # REF-0 and REF-1: listed, withheld from ITA
    honest = _runner(tmp_path, pki, victim, inner, "honest").run(manifest, opts)
    assert honest.statuses["DEU"] == "ok"
    assert bool(any(t.hits for t in honest.travellers)) is (victim == "FRA")  # ITA never sees REF-0/1
    swapped = _runner(tmp_path, pki, victim, AudienceSwapRelay(inner, svc, pki.certs[other]), "swap").run(
        manifest, opts
    )
    engine.close()
    assert swapped.statuses["DEU"] == "refused (announcement_invalid)", swapped.statuses
    assert not any(t.hits for t in swapped.travellers)


def test_index_announcement_names_the_requesting_partner_and_audience(tmp_path: Path, pki: Pki) -> None:
    from fedcheck.node.announce import verify_announcement
    from fedcheck.rpc.messages import IndexRequest

    svc, _, epochs, _ = _holder(tmp_path, pki)
    data = serde.index_request_to_bytes(IndexRequest("DEU", "DEU-e1", int(time.time() * 1000)))
    cert, key = pki.certs["ITA"]
    env = SignedEnvelope(data, sign_payload(key, data), cert)
    last = list(svc.get_index(COORD, GetIndexRequest(env)))[-1]
    ann = verify_announcement(last.announcement, ca_pem=pki.ca_pem, crl=lambda: None, state="DEU",
                              epoch_id="DEU-e1", partner_state="ITA")
    ita = _policy().partner("ITA")
    assert ita is not None and ann.audience == audience_key(ita.audience_id, ita.modes)
    with pytest.raises(FedcheckError) as exc:
        verify_announcement(last.announcement, ca_pem=pki.ca_pem, crl=lambda: None, state="DEU",
                            epoch_id="DEU-e1", partner_state="FRA")
    assert exc.value.reason == "announcement_invalid"
    info = svc.node_info(COORD).epoch_announcement  # the NodeInfo announcement stays audience-free
    nodeinfo_ann = serde.epoch_announcement_from_bytes(info.payload) if info is not None else None
    assert nodeinfo_ann is not None and nodeinfo_ann.partner_state == "" and nodeinfo_ann.audience == ""
    assert epochs.epoch.epoch_id == "DEU-e1"


def test_evaluator_certificate_is_no_stand_in_for_a_partner_state(tmp_path: Path, pki: Pki) -> None:
    eva = {"modes": ["exact"], "key_types": ["document"], "purposes": ["border"], "evaluator": True}
    svc, _, epochs, events = _holder(tmp_path, pki, extra_partners={"EVA": eva})
    with pytest.raises(FedcheckError) as exc:  # evaluator.FRA: FRA's entry does not say evaluator = true
        svc.blind_evaluate(COORD, _request(pki, [b"a"], "r-evfra", signer=pki.evaluators["FRA"]))
    assert exc.value.status == "PERMISSION_DENIED" and exc.value.reason == "evaluator_not_allowed"
    assert events[-1]["type"] == "refusal" and events[-1]["reason"] == "evaluator_not_allowed"
    # relayed: the verified signer is the partner (with its role), the coordinator only the hop
    assert (events[-1]["partner"], events[-1]["role"], events[-1]["peer"]) == ("FRA", "evaluator", COORD.name)
    assert epochs.evaluations == 0
    # the index download too
    from fedcheck.rpc.messages import IndexRequest

    data = serde.index_request_to_bytes(IndexRequest("DEU", "DEU-e1", int(time.time() * 1000)))
    cert, key = pki.evaluators["FRA"]
    with pytest.raises(FedcheckError) as exc:
        list(svc.get_index(COORD, GetIndexRequest(SignedEnvelope(data, sign_payload(key, data), cert))))
    assert exc.value.reason == "evaluator_not_allowed"
    assert events[-1]["type"] == "refusal" and events[-1]["reason"] == "evaluator_not_allowed"
    assert (events[-1]["partner"], events[-1]["role"], events[-1]["peer"]) == ("FRA", "evaluator", COORD.name)
    # evaluator.EVA, whose entry says evaluator = true: judged as EVA, audited as an evaluator
    ev = svc.blind_evaluate(COORD, _request(pki, [b"a"], "r-eva", signer=pki.evaluators["EVA"]))
    assert len(ev.evaluated) == 1 and events[-1]["partner"] == "EVA" and events[-1]["role"] == "evaluator"
    # and the node certificate of FRA is unaffected
    assert len(svc.blind_evaluate(COORD, _request(pki, [b"b"], "r-node")).evaluated) == 1


def test_fuzzy_querier_applies_the_evaluator_rule(pki: Pki) -> None:
    # the signer checks FuzzyService used to carry itself now live in the gate it is built with
    from fedcheck.node.gate import FUZZY_REFUSALS, RequestGate

    eva = {"modes": ["fuzzy"], "purposes": ["border"], "evaluator": True}
    refused: list[dict[str, Any]] = []
    gate = RequestGate(ca_pem=pki.ca_pem, crl=lambda: None, policy=_policy(extra={"EVA": eva}),
                       audit=lambda event: refused.append(dict(event)), style=FUZZY_REFUSALS)
    data = b"any signed payload"

    def env(signer: tuple[bytes, bytes]) -> SignedEnvelope:
        return SignedEnvelope(data, sign_payload(signer[1], data), signer[0])

    with pytest.raises(FedcheckError) as exc:
        gate.querier(COORD, env(pki.evaluators["FRA"]), "fuzzy")
    assert exc.value.reason == "evaluator_not_allowed" and refused[-1]["reason"] == "evaluator_not_allowed"
    assert (refused[-1]["partner"], refused[-1]["role"], refused[-1]["peer"]) == ("FRA", "evaluator",
                                                                                  COORD.name)
    assert gate.querier(COORD, env(pki.evaluators["EVA"]), "fuzzy").state == "EVA"
    assert gate.querier(COORD, env(pki.certs["FRA"]), "fuzzy").state == "FRA"


def test_evaluator_refusal_reduced_audit_event_keeps_the_signer(pki: Pki) -> None:
    """When the full refusal event cannot be appended, the fallback of both styles still names the verified
    signer's State and role, not only the hop."""
    from fedcheck.node.gate import EXACT_REFUSALS, FUZZY_REFUSALS, RequestGate

    data = b"any signed payload"
    cert, key = pki.evaluators["FRA"]
    for style in (EXACT_REFUSALS, FUZZY_REFUSALS):
        appended: list[dict[str, Any]] = []

        def audit(event: Any, appended: list[dict[str, Any]] = appended) -> None:
            if "reasons" not in event:  # the full event is rejected
                raise InvalidInput("audit event rejected", reason="audit_value")
            appended.append(dict(event))

        gate = RequestGate(ca_pem=pki.ca_pem, crl=lambda: None, policy=_policy(), audit=audit, style=style)
        with pytest.raises(FedcheckError):
            gate.querier(COORD, SignedEnvelope(data, sign_payload(key, data), cert), "request")
        assert len(appended) == 1 and "audit_reduced" in appended[0]["reasons"]
        assert (appended[0]["partner"], appended[0]["role"], appended[0]["peer"]) == ("FRA", "evaluator",
                                                                                      COORD.name)


def test_policy_evaluator_flag_is_per_partner_and_boolean() -> None:
    base = {"modes": ["exact"], "purposes": ["border"]}
    pol = HolderPolicy.from_toml({"holder": {"partners": {"FRA": base, "EVA": {**base, "evaluator": True}}}})
    assert pol.evaluator_refused("evaluator", "FRA") and not pol.evaluator_refused("node", "FRA")
    assert not pol.evaluator_refused("evaluator", "EVA")
    assert not pol.evaluator_refused("evaluator", "KEN")  # no partner: refused later (partner_not_allowed)
    for bad in ({"partners": {"EVA": {**base, "evaluator": "yes"}}},
                {"defaults": {"evaluator": True}, "partners": {"EVA": base}}):
        with pytest.raises(ConfigError):
            HolderPolicy.from_toml({"holder": bad})


@pytest.mark.parametrize("bad", ["suppressed", "foreign_key"])
def test_cached_index_not_matching_the_announcement_is_downloaded_again(
    tmp_path: Path, pki: Pki, bad: str
) -> None:
    svc, _, epochs, _ = _holder(tmp_path, pki)
    engine = RoundEngine({"DEU": InMemoryNodeClient(svc, COORD)}, RoundStore(tmp_path / "r.sqlite"),
                         ca_pem=pki.ca_pem, crl=lambda: None)
    relay = InMemoryCoordinatorClient(engine, PeerIdentity("node", "FRA", 2))
    runner = _runner(tmp_path, pki, "FRA", relay, "c")
    # a cached index the announcement does not vouch for: one entry suppressed under the real key, or k'
    holder = epochs.epoch.holder if bad == "suppressed" else ExactHolder(EpochKey.generate("DEU-e1"))
    data = holder.build_index(index_entries(_records()[1:])).to_bytes()
    runner._cache.put_index("DEU", "DEU-e1", data)
    report = runner.run(_records()[:2], QueryOptions(states=("DEU",), purpose="border", legal_basis="LB-1"))
    assert report.statuses["DEU"] == "ok", report.statuses
    assert all(t.hits for t in report.travellers)  # w0 is found: the real index was downloaded again
    entry = runner._cache.index_entry("DEU", "DEU-e1")
    assert entry is not None and entry[0] != data and entry[1] is not None
    again = runner.run(_records()[:2], QueryOptions(states=("DEU",), purpose="border", legal_basis="LB-1"))
    assert again.statuses["DEU"] == "ok (cached)" and all(t.hits for t in again.travellers)
    engine.close()


def test_free_duplicates_are_capped_and_audited_once(tmp_path: Path, pki: Pki) -> None:
    svc, budget, epochs, events = _holder(tmp_path, pki, budget_per_epoch=100)
    req = _request(pki, [b"a", b"b"], "r-flood")
    svc.blind_evaluate(COORD, req)
    for _ in range(3):  # coordinator retries: the stored answer, uncharged
        assert svc.blind_evaluate(COORD, req).replayed
    n_events = len(events)
    for i in range(5):
        with pytest.raises(LimitExceeded) as exc:
            svc.blind_evaluate(COORD, req)
        assert exc.value.status == "RESOURCE_EXHAUSTED" and exc.value.reason == "replay_limit"
        if i == 0:
            assert len(events) == n_events + 1 and events[-1]["reason"] == "replay_limit"
    assert len(events) == n_events + 1  # audited once, not per duplicate beyond the cap
    assert epochs.evaluations == 1 and budget.remaining("FRA", "DEU-e1").per_epoch == 98


def test_waiters_on_one_pending_claim_are_capped(tmp_path: Path) -> None:
    g = ReplayGuard(tmp_path / "r.sqlite", window_seconds=60, wait_seconds=2.0, max_waiters=2)
    first = g.begin("FRA", "r1", "a" * 64)
    outcomes: list[str] = []
    lock = threading.Lock()

    def go() -> None:
        t0 = time.monotonic()
        try:
            c = g.begin("FRA", "r1", "a" * 64)
            out = f"answer:{c.answer!r}"
        except Aborted:
            out = f"aborted:{time.monotonic() - t0 < 1.0}"
        with lock:
            outcomes.append(out)

    threads = [threading.Thread(target=go) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    g.complete("FRA", "r1", first.token, b"ans")
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["aborted:True"] * 3 + ["answer:b'ans'"] * 2, outcomes
    g.close()


class _FailingDb:
    """Delegates to a sqlite connection; statements starting with one of ``fail`` raise (disk full)."""

    def __init__(self, db: Any, fail: tuple[str, ...]) -> None:
        self.db, self.fail = db, fail

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith(self.fail):
            import sqlite3

            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_failed_complete_does_not_block_an_honest_retry(tmp_path: Path) -> None:
    import sqlite3

    g = ReplayGuard(tmp_path / "r.sqlite", window_seconds=60, wait_seconds=0.1)
    first = g.begin("FRA", "r1", "a" * 64)
    real = g._db
    g._db = _FailingDb(real, ("UPDATE", "DELETE"))  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        g.complete("FRA", "r1", first.token, b"ans")
    g.release("FRA", "r1", first.token)  # the caller's clean-up fails too, silently (its error stands)
    g._db = real
    retry = g.begin("FRA", "r1", "a" * 64)  # taken over, not ABORTED until pruned
    assert retry.fresh and retry.token != first.token
    g.complete("FRA", "r1", retry.token, b"ans")
    assert g.begin("FRA", "r1", "a" * 64).answer == b"ans"
    g.close()


def test_node_retry_after_a_failed_complete_is_evaluated(tmp_path: Path, pki: Pki) -> None:
    svc, _, epochs, events = _holder(tmp_path, pki, budget_per_epoch=100)
    guard = svc._replay
    assert guard is not None
    real = guard._db
    guard._db = _FailingDb(real, ("UPDATE claims SET state", "DELETE FROM claims WHERE querier"))  # type: ignore[assignment]
    req = _request(pki, [b"a"], "r-complete")
    with pytest.raises(FedcheckError) as exc:
        svc.blind_evaluate(COORD, req)
    assert exc.value.reason == "evaluation_failed" and events[-1]["type"] == "refusal"
    guard._db = real
    ev = svc.blind_evaluate(COORD, req)  # the honest retry proceeds (charged again: nothing was answered)
    assert not ev.replayed and epochs.evaluations == 2


def test_a_batch_refused_while_parsing_reaches_the_real_audit_log(tmp_path: Path, pki: Pki) -> None:
    """The servicer's framing refusals (batch_too_large, ...) go through NodeService.refuse_malformed into the
    holder's signed audit log as a refusal naming the TLS peer's State (the allow-list accepts the event)."""
    from fedcheck.errors import LimitExceeded

    log = AuditLog(tmp_path / "a.jsonl", generate_signing_key())
    svc, _, _, _ = _holder(tmp_path, pki, budget_per_epoch=100, audit=lambda e: log.append_anchored(e)[1])
    too_large = LimitExceeded("batch of 5000 elements exceeds the limit of 4096", reason="batch_too_large")
    svc.refuse_malformed(PeerIdentity("node", "FRA", 7), "request", too_large)
    events = [e.event for e in read_entries(tmp_path / "a.jsonl")]
    assert events[-1]["type"] == "refusal" and events[-1]["partner"] == "FRA"
    assert events[-1]["reason"] == "batch_too_large" and events[-1]["status"] == "RESOURCE_EXHAUSTED"
    log.close()
