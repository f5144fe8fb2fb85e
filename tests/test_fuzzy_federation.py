"""Fuzzy (Paillier) rounds over real gRPC with mutual TLS: node processes and a coordinator on loopback.

KEN lets FRA and UNX run fuzzy rounds; FRA refuses them to UNX (its default policy allows exact and
cardinality only). The nodes accept 1024-bit Paillier keys through the test-only ``[fuzzy] key_bits`` limit,
for speed.
KEN's first 20 records carry synthetic 128-d face embeddings (seeded random unit vectors; no real faces).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedcheck.errors import FedcheckError, InvalidInput, LimitExceeded, PolicyDenied
from fedcheck.fuzzy import FuzzyQuerier, HitClaim, QuerierKey, ScoreRequest
from fedcheck.node.app import load_tls, open_querier
from fedcheck.node.config import load_node_config
from fedcheck.node.fuzzyquery import FuzzyOptions, FuzzyQueryRunner
from fedcheck.node.querier import QueryOptions
from fedcheck.rpc import serde
from fedcheck.rpc.clients import GrpcNodeClient, make_channel
from fedcheck.rpc.messages import FuzzyScoreRequest, RoundPayload, RoundTarget, SignedEnvelope
from fedcheck.trust.atrest import load_kek
from fedcheck.trust.audit import read_entries
from fedcheck.trust.pki import sign_payload
from tests.conftest import Federation

KEY_BITS = 1024  # test-only; the nodes below allow it explicitly
FACES = np.random.default_rng(7).normal(size=(40, 128))  # rows 0..19 listed at KEN, 20..39 never listed
MAX_TRAVELLERS = 6
FUZZY_POLICY = 'modes = ["exact", "cardinality", "fuzzy"]\n'
FUZZY_TABLE = f"\n[fuzzy]\nkey_bits = [{KEY_BITS}, 2048]\nmax_travellers = {MAX_TRAVELLERS}\nworkers = 2\n"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    from fedcheck.demo.data import make_demo_data
    from fedcheck.node.app import open_store
    from fedcheck.node.devfed import write_federation

    root = tmp_path_factory.mktemp("fuzzy-federation")
    fed = write_federation(root, ("FRA", "KEN", "UNX"), budget_per_epoch=1000,
                           extra_policy={"KEN->FRA": FUZZY_POLICY, "KEN->UNX": FUZZY_POLICY})
    for cfg in fed.node_configs.values():
        with open(cfg, "a", encoding="utf-8") as fh:
            fh.write(FUZZY_TABLE)
    data = make_demo_data(travellers=12)
    ken = [replace(r, face_embedding=tuple(FACES[i])) if i < 20 else r
           for i, r in enumerate(data.watchlists["KEN"][:400])]
    lists = {"FRA": data.watchlists["FRA"][:200], "KEN": ken, "UNX": data.watchlists["UNX"][:100]}
    for state, records in lists.items():
        store = open_store(load_node_config(fed.node_configs[state]))
        store.replace_list(records)
        store.close()
    f = Federation(fed, root, watchlists=dict(lists), manifest=list(data.manifest))
    try:
        for name in ("FRA", "KEN", "UNX", "coordinator"):
            f.start(name)
        for name in ("FRA", "KEN", "UNX", "coordinator"):
            f.wait_serving(name)
        yield f
    finally:
        for name in list(f.procs):
            f.stop(name)


def _cfg(f: Federation, state: str) -> Any:
    return load_node_config(f.fed.node_configs[state])  # type: ignore[attr-defined]


def _audit(f: Federation, state: str) -> list[dict[str, Any]]:
    return [dict(e.event) for e in read_entries(_cfg(f, state).data_dir / "audit.jsonl")]


def _manifest(f: Federation) -> list[Any]:
    """T007 (KEN-listed, exact), T008 (typo of a KEN-listed name: exact keys miss it) and two others."""
    from fedcheck.demo.data import make_demo_data

    fuzzy_only = [p.traveller for p in make_demo_data(travellers=12).planted if p.fuzzy_only]
    assert fuzzy_only == ["T008"], "demo data changed: update the traveller ids of this test"
    by_id = {r.record_id: r for r in f.manifest}  # type: ignore[attr-defined]
    return [by_id["T007"], by_id["T008"], by_id["T009"], by_id["T010"]]


def _options(**kw: Any) -> QueryOptions:
    return QueryOptions(states=("KEN",), legal_basis="FED-agreement-2026/art.5", unit="FRA-BORDER-01",
                        official="officer-0001", deadline_seconds=30, **kw)


def test_fuzzy_round_finds_the_typo_and_follow_up_releases_the_label(fed: Federation) -> None:
    manifest = _manifest(fed)
    ken = {r.record_id: r for r in fed.watchlists["KEN"]}  # type: ignore[attr-defined]
    runner, close = open_querier(_cfg(fed, "FRA"))
    try:
        exact = runner.run(manifest, _options())
        assert not exact.travellers[1].hits  # T008: missed by exact keys
        fuzzy = FuzzyQueryRunner.for_runner(runner)
        t0 = time.perf_counter()
        report = fuzzy.run(manifest, _options(), FuzzyOptions(key_bits=KEY_BITS))
        took = time.perf_counter() - t0
        assert report.statuses == {"KEN": "ok"}
        t008 = report.travellers[1].hits
        assert t008 and all(h.mode == "fuzzy" and h.key_type == "name_similarity" for h in t008)
        # before the follow-up: State + opaque reference only, and KEN has not heard of any hit
        assert all(h.label["reference"].startswith("fz-") for h in t008)
        events = _audit(fed, "KEN")
        assert any(e["type"] == "fuzzy_score" and e["outcome"] == "ok" and e["items"] == 4 for e in events)
        assert not any(e["type"] == "fuzzy_release" for e in events)

        rnd = fuzzy.last_fuzzy
        assert rnd is not None
        released = fuzzy.follow_up(rnd, "KEN", _options())
        refs = {lab["reference"] for lab in released.values()}
        want = ken["KEN-00007"].label.reference
        assert want in refs
        assert fuzzy.last_round is not None and not fuzzy.last_round.replayed
    finally:
        close()
    events = _audit(fed, "KEN")
    rel = [e for e in events if e["type"] == "fuzzy_release"]
    assert rel and rel[-1]["outcome"] == "ok" and rel[-1]["counts"]["released"] == len(released)
    score = [e for e in events if e["type"] == "fuzzy_score"][-1]
    assert score["counts"]["entries"] >= 400 and score["evaluated"] == 4 * score["counts"]["entries"]
    log = (_cfg(fed, "KEN").data_dir / "audit.jsonl").read_text()
    for r in manifest:  # sizes and counts only: no traveller name reaches the holder's audit log
        assert r.names[0].full_name not in log
    print(f"fuzzy round 4 travellers x {score['counts']['entries']} entries: {took:.2f}s")


def test_forged_or_foreign_follow_up_is_refused(fed: Federation) -> None:
    runner, close = open_querier(_cfg(fed, "FRA"))
    try:
        fuzzy = FuzzyQueryRunner.for_runner(runner)
        fuzzy.run(_manifest(fed), _options(), FuzzyOptions(key_bits=KEY_BITS))
        rnd = fuzzy.last_fuzzy
        assert rnd is not None and rnd.hits
        forged = [replace(h, claim=HitClaim(h.claim.traveller, h.claim.reference, h.claim.proof + 1))
                  for h in rnd.hits]
        assert fuzzy.follow_up(rnd, "KEN", _options(), forged) == {}  # rejected, nothing released
    finally:
        close()
    rel = [e for e in _audit(fed, "KEN") if e["type"] == "fuzzy_release"][-1]
    assert rel["counts"]["rejected"] == len(forged) and rel["counts"]["released"] == 0

    # UNX tries to follow up FRA's round with FRA's valid claims: not its round -> refused
    unx_runner, close = open_querier(_cfg(fed, "UNX"))
    try:
        unx = FuzzyQueryRunner.for_runner(unx_runner)
        with pytest.raises(FedcheckError) as err:
            unx.follow_up(rnd, "KEN", _options())
        # UNX *is* allowed fuzzy rounds at KEN: the refusal is about the round, not the mode
        assert err.value.reason == "unknown_round" and err.value.status == "NOT_FOUND"
        assert "restart" in err.value.message  # says why a known round may be gone
    finally:
        close()
    refused = [e for e in _audit(fed, "KEN") if e["type"] == "fuzzy_release" and e.get("partner") == "UNX"]
    assert refused and refused[-1]["outcome"] == "refused" and refused[-1]["reason"] == "unknown_round"


def test_partner_without_fuzzy_policy_is_refused(fed: Federation) -> None:
    runner, close = open_querier(_cfg(fed, "UNX"))
    try:
        report = FuzzyQueryRunner.for_runner(runner).run(
            _manifest(fed), replace(_options(), states=("FRA",)), FuzzyOptions(key_bits=KEY_BITS))
    finally:
        close()
    assert report.statuses["FRA"].startswith("refused (mode_not_allowed")
    assert not any(t.hits for t in report.travellers)
    with pytest.raises(PolicyDenied):  # directly, the status code is PERMISSION_DENIED
        _direct(fed, "UNX", _request(QuerierKey.generate(KEY_BITS), 1), holder="FRA")


# -- direct FuzzyScore calls with crafted requests -------------------------------------------------------


def _request(key: QuerierKey, travellers: int) -> ScoreRequest:
    """A well-formed request without encrypting anything: every ciphertext is 2 (a unit, in range)."""
    q = FuzzyQuerier(key, workers=1)
    p = q.params
    width = key.public.ciphertext_bytes
    packs = travellers
    blob = (2).to_bytes(width, "big") * (packs * p.ciphertexts_per_pack)
    return ScoreRequest(uuid.uuid4().bytes, key.public.n_bytes(), p, travellers, blob)


def _direct(f: Federation, querier: str, req: ScoreRequest, data: bytes | None = None,
            holder: str = "KEN") -> object:
    """FuzzyScore straight to ``holder``, signed and bound correctly by ``querier`` (its own TLS identity)."""
    cfg = _cfg(f, querier)
    tls = load_tls(cfg, load_kek(cfg.kek))
    assert tls is not None
    raw = data if data is not None else req.to_bytes()
    ken = _cfg(f, holder)
    client = GrpcNodeClient(make_channel(ken.listen, tls))
    try:
        epoch = client.node_info(timeout=5).epoch_id
        now = int(time.time() * 1000)
        target = RoundTarget(holder, epoch, req.traveller_count, hashlib.sha256(raw).digest())
        payload = RoundPayload(str(uuid.uuid4()), "border-screening", "basis", "fuzzy", (target,),
                               now + 20_000, now)
        body = serde.round_payload_to_bytes(payload)
        env = SignedEnvelope(body, sign_payload(tls.key_pem, body), tls.cert_pem)
        return client.fuzzy_score(FuzzyScoreRequest(env, raw, payload.round_id), timeout=20)
    finally:
        client.close()


@pytest.fixture(scope="module")
def small_key() -> QuerierKey:
    return QuerierKey.generate(KEY_BITS)


def _with_ciphertext(req: ScoreRequest, value: int) -> ScoreRequest:
    width = len(req.public_key) * 2
    return replace(req, ciphertexts=value.to_bytes(width, "big") + req.ciphertexts[width:])


@pytest.mark.parametrize("case", ["zero", "n_squared", "multiple_of_n", "short_count", "wrong_key_size"])
def test_bad_ciphertexts_are_invalid_argument(fed: Federation, small_key: QuerierKey, case: str) -> None:
    req = _request(small_key, 1)
    n = small_key.public.n
    if case == "zero":
        req = _with_ciphertext(req, 0)
    elif case == "n_squared":
        req = _with_ciphertext(req, n * n)
    elif case == "multiple_of_n":
        req = _with_ciphertext(req, n)
    elif case == "short_count":
        req = replace(req, ciphertexts=req.ciphertexts[: -len(req.public_key) * 2])
    else:  # a 1536-bit modulus: neither 1024 (allowed here for tests) nor 2048/3072
        fake_n = (1 << 1535) | 1
        req = replace(req, public_key=fake_n.to_bytes(192, "big"), ciphertexts=b"\x02" * 384)
    with pytest.raises(InvalidInput) as err:
        _direct(fed, "FRA", req)
    assert err.value.status == "INVALID_ARGUMENT"
    assert err.value.message  # a clear message travels back


def test_oversized_request_is_resource_exhausted(fed: Federation, small_key: QuerierKey) -> None:
    with pytest.raises(LimitExceeded) as err:
        _direct(fed, "FRA", _request(small_key, MAX_TRAVELLERS + 1))
    assert err.value.status == "RESOURCE_EXHAUSTED"
    # nothing was charged or scored for the refused requests, and each refusal is audited
    refused = [e for e in _audit(fed, "KEN") if e["type"] == "fuzzy_score" and e["outcome"] == "refused"]
    assert any(e["status"] == "RESOURCE_EXHAUSTED" for e in refused)


def test_node_info_advertises_fuzzy(fed: Federation) -> None:
    cfg = _cfg(fed, "FRA")
    tls = load_tls(cfg, load_kek(cfg.kek))
    client = GrpcNodeClient(make_channel(_cfg(fed, "KEN").listen, tls))
    try:
        assert "fuzzy" in client.node_info(timeout=5).modes
    finally:
        client.close()


def test_node_info_publishes_fuzzy_layout(fed: Federation) -> None:
    from fedcheck.fuzzy import entries_from_records

    cfg = _cfg(fed, "FRA")
    tls = load_tls(cfg, load_kek(cfg.kek))
    client = GrpcNodeClient(make_channel(_cfg(fed, "KEN").listen, tls))
    try:
        info = client.node_info(timeout=5).fuzzy
    finally:
        client.close()
    assert info is not None and info.max_travellers == MAX_TRAVELLERS and info.face_dims == 128
    entries = entries_from_records(fed.watchlists["KEN"], kind="name")  # type: ignore[attr-defined]
    max_y = max(len(e.dims) for e in entries)
    years = [e.year for e in entries if e.year is not None]
    assert max_y < info.name_size_table < 128 and info.name_size_table % 16 == 0
    assert info.year_min <= min(years) and max(years) <= info.year_max and info.year_max - info.year_min < 130
    assert info.name_entries >= len(entries) and info.release_ttl_seconds == 600


def _write_manifest(path: Any, records: list[Any]) -> str:
    from fedcheck.records import write_jsonl

    write_jsonl(records, path)
    return str(path)


def _cli(fed: Federation, *args: str) -> list[str]:
    return ["query", *args[:1], "--config", str(fed.fed.node_configs["FRA"]),  # type: ignore[attr-defined]
            "--states", "KEN", "--legal-basis", "FED-agreement-2026/art.5", "--format", "json", *args[1:]]


def test_cli_fuzzy_sub_rounds_then_follow_up_later(fed: Federation, tmp_path: Any,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from fedcheck.cli.main import main

    ken = {r.record_id: r for r in fed.watchlists["KEN"]}  # type: ignore[attr-defined]
    mf = _write_manifest(tmp_path / "m.jsonl", _manifest(fed))
    before = len([e for e in _audit(fed, "KEN") if e["type"] == "fuzzy_score"])
    code = main(_cli(fed, "run", "--manifest", mf, "--mode", "fuzzy", "--key-bits", str(KEY_BITS),
                     "--sub-round-travellers", "2"))
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert doc["mode"] == "fuzzy" and doc["statuses"] == {"KEN": "ok"}
    fz = doc["details"]["fuzzy"]
    assert fz["sub_rounds"] == 2 and fz["travellers"] == 4 and fz["request_bytes"] > 0
    assert fz["size_table"] < 128  # trimmed to KEN's published layout
    assert out.err.count("fuzzy sub-round") == 2  # progress, one line per sub-round
    by_id = {t["traveller"]: t["hits"] for t in doc["travellers"]}
    t008 = by_id["T008"]
    assert t008 and all(h["mode"] == "fuzzy" and h["label"]["category"] == "follow-up needed" for h in t008)
    rid = doc["round_id"]
    assert {h["label"]["round"] for h in t008} == {f"{rid}.s1"}
    # each sub-round is its own signed round at the holder: scored, charged and audited separately
    scores = [e for e in _audit(fed, "KEN") if e["type"] == "fuzzy_score"][before:]
    assert [(e["round_id"], e["items"]) for e in scores] == [(f"{rid}.s1", 2), (f"{rid}.s2", 2)]
    assert not any(e["type"] == "fuzzy_release" and e["round_id"].startswith(rid) for e in _audit(fed, "KEN"))
    # the round state is sealed at the querier: no traveller name in the file
    db = (_cfg(fed, "FRA").data_dir / "querier-fuzzy.sqlite").read_bytes()
    assert all(r.names[0].full_name.encode() not in db for r in _manifest(fed))

    # later, in another process invocation: follow up one chosen reference of the round
    ref = t008[0]["label"]["reference"]
    code = main(_cli(fed, "follow-up", "--round", rid, "--reference", ref))
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    hits = {t["traveller"]: t["hits"] for t in doc["travellers"]}
    want = ken["KEN-00007"].label.reference
    assert [h["label"]["reference"] for h in hits["T008"]] == [want]
    assert not hits["T007"]  # only the named reference was followed up
    rel = [e for e in _audit(fed, "KEN") if e["type"] == "fuzzy_release"][-1]
    assert rel["outcome"] == "ok" and rel["round_id"] == f"{rid}.s1" and rel["references"] == [want]
    log = (_cfg(fed, "KEN").data_dir / "audit.jsonl").read_text()
    assert all(r.names[0].full_name not in log for r in _manifest(fed))
    # an unknown reference is refused at the querier, nothing is sent
    assert main(_cli(fed, "follow-up", "--round", rid, "--reference", "fz-99.1")) == 2
    capsys.readouterr()


def test_cli_both(fed: Federation, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from fedcheck.cli.main import main

    mf = _write_manifest(tmp_path / "m.jsonl", _manifest(fed))
    code = main(_cli(fed, "run", "--manifest", mf, "--mode", "both", "--key-bits", str(KEY_BITS),
                     "--follow-up"))
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert doc["mode"] == "both" and doc["statuses"]["KEN (fuzzy)"] == "ok"
    assert doc["statuses"]["KEN"].startswith("ok") and set(doc["statuses"]) == {"KEN", "KEN (fuzzy)"}
    by_id = {t["traveller"]: {h["mode"] for h in t["hits"]} for t in doc["travellers"]}
    assert by_id["T007"] == {"exact", "fuzzy"} and by_id["T008"] == {"fuzzy"}
    # a refused State makes the exit code 1 (UNX does not serve FRA... it does not list FRA's fuzzy mode)
    code = main(["query", "--config", str(fed.fed.node_configs["UNX"]),  # type: ignore[attr-defined]
                 "--states", "FRA", "--legal-basis", "FED-agreement-2026/art.5", "--format", "json",
                 "--manifest", mf, "--mode", "fuzzy", "--key-bits", str(KEY_BITS)])
    out = capsys.readouterr()
    assert code == 1 and json.loads(out.out)["statuses"]["FRA"].startswith("refused (mode_not_allowed")


def test_faces_over_grpc(fed: Federation) -> None:
    ken = fed.watchlists["KEN"]  # type: ignore[attr-defined]
    base = _manifest(fed)
    noise = np.random.default_rng(1).normal(scale=0.15, size=128)
    manifest = [replace(base[0], face_embedding=tuple(FACES[3] + noise)),  # the face of KEN's record 3
                replace(base[1], face_embedding=tuple(FACES[25])),  # never listed
                base[2]]  # no embedding: not sent
    runner, close = open_querier(_cfg(fed, "FRA"))
    try:
        fuzzy = FuzzyQueryRunner.for_runner(runner)
        report = fuzzy.run(manifest, _options(),
                           FuzzyOptions(key_bits=KEY_BITS, kind="face", threshold="0.8"), follow_up=True)
        fuzzy.close()
    finally:
        close()
    assert report.statuses == {"KEN": "ok"}
    assert report.details["fuzzy"]["travellers"] == 2
    hits = report.travellers[0].hits
    assert [(h.key_type, h.label["reference"]) for h in hits] == [("face_similarity", ken[3].label.reference)]
    assert not report.travellers[1].hits and not report.travellers[2].hits
    score = [e for e in _audit(fed, "KEN") if e["type"] == "fuzzy_score"][-1]
    assert score["modes"] == ["fuzzy", "face"] and score["counts"]["entries"] == 20


def test_restarted_holder_answers_not_found(fed: Federation, tmp_path: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Holder open rounds live in memory: after a restart a later follow-up gets NOT_FOUND, clearly said.
    (Runs last: it restarts KEN.)"""
    from fedcheck.cli.main import main

    mf = _write_manifest(tmp_path / "m.jsonl", _manifest(fed))
    assert main(_cli(fed, "run", "--manifest", mf, "--mode", "fuzzy", "--key-bits", str(KEY_BITS))) == 0
    rid = json.loads(capsys.readouterr().out)["round_id"]
    fed.stop("KEN")
    fed.start("KEN")
    fed.wait_serving("KEN")
    code = main(_cli(fed, "follow-up", "--round", rid))
    out = capsys.readouterr()
    assert code == 1
    doc = json.loads(out.out)
    assert doc["statuses"] == {"KEN": "follow-up refused (unknown_round)"}
    assert doc["details"]["KEN"]["code"] == "NOT_FOUND" and "restart" in doc["details"]["KEN"]["message"]
    assert "restart" in out.err


class _TamperingRelay:
    """A coordinator transport that alters what the real coordinator relays (a malicious coordinator)."""

    def __init__(self, inner: Any, mode: str) -> None:
        self.inner, self.mode, self.sealed = inner, mode, b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def submit_fuzzy_round(self, request: Any, *, timeout: float) -> Any:
        result = self.inner.submit_fuzzy_round(request, timeout=timeout)
        if self.mode != "score":
            return result
        out = []
        for h in result.results:
            if h.fuzzy is not None:  # substitute: the same bytes with one ciphertext byte changed
                data = bytearray(h.fuzzy.score_response)
                data[-1] ^= 1
                h = replace(h, fuzzy=replace(h.fuzzy, score_response=bytes(data)))
            out.append(h)
        return replace(result, results=tuple(out))

    def fuzzy_release(self, state: str, request: Any, *, timeout: float) -> Any:
        reply = self.inner.fuzzy_release(state, request, timeout=timeout)
        self.sealed = reply.sealed_label_response
        if self.mode == "release":
            data = bytearray(reply.sealed_label_response)
            data[40] ^= 1
            reply = replace(reply, sealed_label_response=bytes(data))
        return reply


def test_relay_cannot_alter_fuzzy_answers_or_read_labels(fed: Federation) -> None:
    from fedcheck.node.fuzzyquery import FuzzyRound

    runner, close = open_querier(_cfg(fed, "FRA"))
    try:
        fuzzy = FuzzyQueryRunner.for_runner(runner)
        relay = _TamperingRelay(fuzzy._coord, "score")
        fuzzy._coord = relay
        report = fuzzy.run(_manifest(fed), _options(), FuzzyOptions(key_bits=KEY_BITS))
        assert report.statuses == {"KEN": "refused (answer_unverified)"}
        assert not any(t.hits for t in report.travellers)

        relay.mode = "none"
        report = fuzzy.run(_manifest(fed), _options(), FuzzyOptions(key_bits=KEY_BITS))
        rnd = fuzzy.last_fuzzy
        assert isinstance(rnd, FuzzyRound) and rnd.hits and report.statuses == {"KEN": "ok"}
        released = fuzzy.follow_up(rnd, "KEN", _options(), rnd.hits[:1])
        assert released
        label = next(iter(released.values()))
        for value in label.values():  # what the coordinator relayed carries no label plaintext
            assert value.encode() not in relay.sealed

        relay.mode = "release"
        fuzzy.run(_manifest(fed), _options(), FuzzyOptions(key_bits=KEY_BITS))
        rnd = fuzzy.last_fuzzy
        assert rnd is not None and rnd.hits
        with pytest.raises(FedcheckError) as err:
            fuzzy.follow_up(rnd, "KEN", _options(), rnd.hits[:1])
        assert err.value.reason == "answer_unverified"
    finally:
        close()
