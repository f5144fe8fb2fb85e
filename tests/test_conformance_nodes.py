"""The conformance suite against the real node and against deliberately broken nodes, all in-process over
mTLS.

A suite that passes a broken node is a defect, so each broken variant below must make specific cases fail. The
variants are built here by wrapping the node's handler (fedcheck.rpc.handlers.NodeHandler) or by swapping the
holder/key classes the epoch manager uses; no node module is edited.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fedcheck.conformance.model import Status
from fedcheck.conformance.profile import build_profile
from fedcheck.conformance.runner import Report, run_suite
from fedcheck.conformance.session import TargetConfig
from fedcheck.crypto import oprf
from fedcheck.protocol.exact import EpochKey, Evaluation, ExactHolder, Mode
from fedcheck.rpc import messages as m

PARTNER = "EVA"
STRANGER = "STR"
STATE = "TST"
MAX_BATCH = 512
BUDGET = 6000


@dataclass
class Pki:
    root: Path
    ca: Path
    node: tuple[Path, Path]
    #: the suite's identity: an *evaluator* certificate for the test partner code, key sealed under ``kek``
    partner: tuple[Path, Path]
    stranger: tuple[Path, Path]
    #: ``file:PATH`` spec of the KEK sealing the evaluator keys
    kek: str
    #: an evaluator certificate for a State the node's policy does not list (sealed under ``kek``)
    stranger_evaluator: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from fedcheck.trust.atrest import KeyEncryptionKey
    from fedcheck.trust.pki import create_ca, issue_certificate, write_crl

    root = tmp_path_factory.mktemp("conformance-pki")
    create_ca(root / "ca", federation="FED")
    write_crl(root / "ca")
    files = {s: issue_certificate(root / "ca", root / s, role="node", state=s) for s in (STATE, STRANGER)}
    kek_text = KeyEncryptionKey.generate().to_text()
    (root / "evaluator.kek").write_text(kek_text)
    (root / "evaluator.kek").chmod(0o600)
    kek = KeyEncryptionKey.from_text(kek_text)
    ev = issue_certificate(root / "ca", root / "eva", role="evaluator", state=PARTNER, kek=kek)
    ev_str = issue_certificate(root / "ca", root / "eva-str", role="evaluator", state=STRANGER, kek=kek)
    assert ev.key.read_bytes()[:4] != b"----"  # sealed, not PEM: the suite must open it with the KEK
    return Pki(root, files[STATE].ca, (files[STATE].cert, files[STATE].key), (ev.cert, ev.key),
               (files[STRANGER].cert, files[STRANGER].key), f"file:{root / 'evaluator.kek'}",
               (ev_str.cert, ev_str.key))


def _write_config(pki: Pki, data_dir: Path, *, insecure_dev: bool = False) -> Path:
    env = f"FEDCHECK_CONFORMANCE_KEK_{secrets.token_hex(4).upper()}"
    from fedcheck.trust.atrest import KeyEncryptionKey

    os.environ[env] = KeyEncryptionKey.generate().to_text()
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = data_dir / "node.toml"
    cfg.write_text(f"""
[node]
state = "{STATE}"
listen = "127.0.0.1:0"
data_dir = "{data_dir / 'var'}"
kek = "env:{env}"
epoch_seconds = 3600
max_batch = {MAX_BATCH}
index_chunk_bytes = 4096
workers = 1
grace_seconds = 0.5
insecure_dev = {'true' if insecure_dev else 'false'}

[tls]
cert = "{pki.node[0]}"
key = "{pki.node[1]}"
ca = "{pki.ca}"
crl = "{pki.root / 'ca' / 'crl.pem'}"

[policy.holder.partners.{PARTNER}]
evaluator = true
modes = ["exact", "cardinality", "fuzzy"]
key_types = ["document", "name_dob", "name_yob_nat", "phonetic_yob"]
label_fields = ["category", "reference", "listing_date"]
purposes = ["conformance"]
require_legal_basis = true
budget_per_epoch = {BUDGET}
""", encoding="utf-8")
    return cfg


class RunningNode:
    """A NodeApp started in-process with the profile imported; ``wrap`` replaces its handler first."""

    def __init__(self, pki: Pki, data_dir: Path, wrap: Callable[[Any], Any] | None = None, *,
                 insecure_dev: bool = False) -> None:
        from fedcheck.node.app import NodeApp
        from fedcheck.node.config import load_node_config

        self.app = NodeApp(load_node_config(_write_config(pki, data_dir, insecure_dev=insecure_dev)))
        self.app.store.replace_list(build_profile("standard").watchlist, source="conformance")
        if wrap is not None:
            self.app.service = wrap(self.app.service)
        self.port = self.app.start()
        assert self.app.epochs.wait_ready(60)
        deadline = time.time() + 10
        while time.time() < deadline and not self._serving():
            time.sleep(0.05)

    def _serving(self) -> bool:
        srv = self.app.server
        if srv is None:
            return False
        from grpc_health.v1 import health_pb2

        # the node flips health to SERVING from a thread once its epoch is ready
        return bool(srv.health._server_status.get("") == health_pb2.HealthCheckResponse.SERVING)

    def config(self, pki: Pki, **kw: Any) -> TargetConfig:
        base: dict[str, Any] = dict(
            target=f"localhost:{self.port}", ca=pki.ca, crl=pki.root / "ca" / "crl.pem",
            cert=pki.partner[0], key=pki.partner[1],
            kek=pki.kek, stranger_cert=pki.stranger[0], stranger_key=pki.stranger[1], timeout_s=15.0,
            rotate_hook=self.app.epochs.rebuild_now,
        )
        base.update(kw)
        return TargetConfig(**base)

    def stop(self) -> None:
        self.app.stop()


def _failed(report: Report) -> set[str]:
    return {r.case_id for r in report.results if r.status is Status.FAIL}


def _explain(report: Report) -> str:
    return "\n".join(f"{r.status.value:4} {r.case_id}: {r.evidence}" for r in report.results
                     if r.status is not Status.PASS)


# ------------------------------------------------------------------------------------------------ real node


@pytest.fixture(scope="module")
def real_node(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    node = RunningNode(pki, tmp_path_factory.mktemp("real"))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def real_report(pki: Pki, real_node: RunningNode) -> Report:
    return run_suite(real_node.config(pki))


def test_real_node_passes_every_required_case(real_report: Report) -> None:
    assert real_report.conformant, _explain(real_report)
    assert real_report.exit_code == 0


def test_real_node_runs_the_core_cases(real_report: Report) -> None:
    """Nothing essential may be silently skipped against a fully configured node."""
    res = real_report.by_id()
    for cid in ("services.health_node", "services.reflection_contract", "transport.plaintext_refused",
                "transport.client_cert_required", "transport.foreign_client_cert_refused", "index.download",
                "index.resume", "index.announcement", "version.epoch_announcement",
                "oprf.proof_under_announced_key", "oprf.proof_verifies", "oprf.deterministic",
                "exact.must_hit", "exact.must_not_hit", "exact.labels", "cardinality.shuffled",
                "cardinality.count",
                "bad_input.identity", "bad_input.batch_over_limit", "bad_input.round_signature_flipped",
                "policy.purpose_refused", "policy.stranger_refused", "budget.exhaustion",
                "budget.retry_after",
                "epoch.key_rotation"):
        assert res[cid].status is Status.PASS, f"{cid}: {res[cid].status} {res[cid].evidence}"
    # the node advertises MODE_FUZZY: the fuzzy case and the Paillier rows of bad_inputs.json run against it
    for cid in ("fuzzy.advertised_consistently", "bad_input.paillier_zero", "bad_input.paillier_n_squared",
                "bad_input.paillier_above_n_squared", "bad_input.paillier_multiple_of_n"):
        assert res[cid].status is Status.PASS, f"{cid}: {res[cid].status} {res[cid].evidence}"


def _cli(pki: Pki, node: RunningNode, *extra: str) -> list[str]:
    return ["conformance", "run", "--target", f"localhost:{node.port}", "--ca", str(pki.ca),
            "--cert", str(pki.partner[0]), "--key", str(pki.partner[1]), "--kek", pki.kek, "--quiet", *extra]


def test_cli_writes_junit_and_json(pki: Pki, real_node: RunningNode, tmp_path: Path) -> None:
    import json
    import xml.etree.ElementTree as ET

    from fedcheck.cli.main import main

    junit = tmp_path / "report.xml"
    assert main(_cli(pki, real_node, "--case", "version", "--case", "services", "--format", "junit",
                     "--output", str(junit))) == 0
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and int(suite.get("failures", "-1")) == 0
    assert {tc.get("name") for tc in suite.iter("testcase")} >= {"version.node_info", "services.health_node"}
    out = tmp_path / "report.json"
    assert main(_cli(pki, real_node, "--case", "version.epoch", "--format", "json",
                     "--output", str(out))) == 0
    doc = json.loads(out.read_text())
    assert doc["conformant"] is True and [r["id"] for r in doc["results"]] == ["version.epoch"]


def test_cli_exit_code_is_non_zero_when_a_required_case_fails(pki: Pki, real_node: RunningNode,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from fedcheck.cli.main import main

    # a purpose the node's policy does not accept: every evaluating case is refused
    assert main(_cli(pki, real_node, "--case", "oprf.proof_verifies", "--purpose", "not-accepted")) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "NOT CONFORMANT" in out and "PERMISSION_DENIED" in out


def test_cli_crl_checks_announcements_and_must_be_a_crl(pki: Pki, real_node: RunningNode,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from fedcheck.cli.main import main

    crl = str(pki.root / "ca" / "crl.pem")
    assert main(_cli(pki, real_node, "--case", "version.epoch_announcement", "--crl", crl)) == 0
    capsys.readouterr()
    assert main(_cli(pki, real_node, "--case", "version.epoch_announcement", "--crl", str(pki.ca))) == 2
    assert "revocation list" in capsys.readouterr().err


def test_cli_without_tls_material_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from fedcheck.cli.main import main

    assert main(["conformance", "run", "--target", "localhost:1"]) == 2
    assert "--insecure-dev" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- broken nodes


class _Delegate:
    """A NodeHandler that forwards everything to the real one (subclasses break one thing)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def max_batch(self) -> int:
        return int(self.inner.max_batch)

    def node_info(self, peer: Any = None) -> m.NodeInfo:
        return self.inner.node_info(peer)  # type: ignore[no-any-return]

    def get_index(self, peer: Any, request: m.GetIndexRequest) -> Iterator[m.IndexChunk]:
        return self.inner.get_index(peer, request)  # type: ignore[no-any-return]

    def blind_evaluate(self, peer: Any, request: m.BlindEvaluateRequest) -> m.Evaluation:
        return self.inner.blind_evaluate(peer, request)  # type: ignore[no-any-return]

    def fuzzy_score(self, peer: Any, request: Any) -> Any:
        return self.inner.fuzzy_score(peer, request)

    def fuzzy_release(self, peer: Any, request: Any) -> Any:
        return self.inner.fuzzy_release(peer, request)

    def refuse_malformed(self, peer: Any, kind: str, exc: Any) -> None:
        self.inner.refuse_malformed(peer, kind, exc)


class AcceptsIdentity(_Delegate):
    """Evaluates the identity like any element (k * 0 = 0) instead of refusing the batch."""

    def blind_evaluate(self, peer: Any, request: m.BlindEvaluateRequest) -> m.Evaluation:
        if any(b == oprf.IDENTITY for b in request.blinded):
            info = self.inner.node_info()
            return m.Evaluation(info.epoch_id, tuple(oprf.IDENTITY for _ in request.blinded), bytes(64), 0)
        return super().blind_evaluate(peer, request)


class IgnoresBatchLimit(_Delegate):
    """Advertises max_batch but lets the transport accept anything."""

    @property
    def max_batch(self) -> int:
        return 1_000_000


class ForeignProof(_Delegate):
    """Evaluates with its key but proves with another key pair (the proof does not match the published
    key)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.other = oprf.generate_key_pair()

    def blind_evaluate(self, peer: Any, request: m.BlindEvaluateRequest) -> m.Evaluation:
        ev = self.inner.blind_evaluate(peer, request)
        cs, ds = list(request.blinded), list(ev.evaluated)
        if len(set(cs)) == 1 or not ev.proof:  # cardinality-style batches: prove the sums
            cs, ds = [oprf.sum_elements(cs)], [oprf.sum_elements(ds)]
        proof = oprf.generate_proof(self.other.sk, oprf.GENERATOR, self.other.pk, cs, ds)
        return replace(ev, proof=proof)


class InOrderHolder(ExactHolder):
    """Cardinality mode without the shuffle (proof over the sums as usual, so only the order is wrong)."""

    def blind_evaluate(self, blinded: Any, *, mode: Mode, verifiable: bool = True,
                       workers: int | None = None) -> Evaluation:
        if Mode(mode) is Mode.CARDINALITY:
            sk = self._key._sk
            evaluated = oprf.blind_evaluate(sk, list(blinded))
            proof = oprf.generate_proof(sk, oprf.GENERATOR, self.public_key,
                                        [oprf.sum_elements(list(blinded))],
                                        [oprf.sum_elements(evaluated)])
            return Evaluation(evaluated=evaluated, proof=proof)
        return super().blind_evaluate(blinded, mode=mode, verifiable=verifiable, workers=workers)


_FIXED_SK = oprf.generate_key_pair().sk


class ReusedKey(EpochKey):
    """Every new epoch gets a new id but the same secret key."""

    @classmethod
    def generate(cls, epoch_id: str) -> EpochKey:
        return cls(epoch_id, _FIXED_SK)


def _run_broken(pki: Pki, data_dir: Path, *, wrap: Callable[[Any], Any] | None = None,
                select: list[str] | None = None) -> Report:
    node = RunningNode(pki, data_dir, wrap)
    try:
        return run_suite(node.config(pki), select=select)
    finally:
        node.stop()


def test_node_accepting_the_identity_fails(pki: Pki, tmp_path: Path) -> None:
    report = _run_broken(pki, tmp_path, wrap=AcceptsIdentity, select=["bad_input", "oprf", "version"])
    failed = _failed(report)
    assert {"bad_input.identity", "bad_input.identity_last_in_batch"} <= failed, _explain(report)
    assert not report.conformant and report.exit_code == 1
    assert "bad_input.s_equals_p" not in failed  # the rest of its validation is intact


def test_node_ignoring_batch_limits_fails(pki: Pki, tmp_path: Path) -> None:
    report = _run_broken(pki, tmp_path, wrap=IgnoresBatchLimit, select=["bad_input", "version"])
    failed = _failed(report)
    assert {"bad_input.batch_over_limit", "bad_input.batch_far_over_limit"} <= failed, _explain(report)
    assert "bad_input.batch_at_limit" not in failed
    assert not report.conformant


def test_node_with_foreign_proof_fails(pki: Pki, tmp_path: Path) -> None:
    report = _run_broken(pki, tmp_path, wrap=ForeignProof, select=["oprf", "exact", "cardinality"])
    failed = _failed(report)
    assert {"oprf.proof_verifies", "oprf.deterministic", "exact.must_hit", "cardinality.proof",
            "cardinality.shuffled"} <= failed, _explain(report)
    assert "oprf.response_shape" not in failed
    assert not report.conformant


def test_node_returning_cardinality_in_order_fails(pki: Pki, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import fedcheck.node.epochs as epochs

    monkeypatch.setattr(epochs, "ExactHolder", InOrderHolder)
    report = _run_broken(pki, tmp_path, select=["cardinality", "oprf"])
    failed = _failed(report)
    assert failed == {"cardinality.shuffled"}, _explain(report)
    assert "order" in report.by_id()["cardinality.shuffled"].evidence
    assert report.by_id()["cardinality.count"].status is Status.PASS


def test_node_reusing_its_key_across_epochs_fails(pki: Pki, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import fedcheck.node.epochs as epochs

    monkeypatch.setattr(epochs, "EpochKey", ReusedKey)
    report = _run_broken(pki, tmp_path, select=["version", "oprf", "epoch"])
    failed = _failed(report)
    assert failed == {"epoch.key_rotation"}, _explain(report)
    assert "same public key" in report.by_id()["epoch.key_rotation"].evidence


# ------------------------------------------------------------------------------ signed epoch announcements

ANNOUNCEMENT_CASES = {"version.epoch_announcement", "index.announcement", "oprf.proof_under_announced_key"}


class OmitsAnnouncements(_Delegate):
    """Serves NodeInfo and the index without its signed epoch announcements (queriers must refuse it)."""

    def node_info(self, peer: Any = None) -> m.NodeInfo:
        return replace(self.inner.node_info(peer), epoch_announcement=None, previous_epoch_announcement=None)

    def get_index(self, peer: Any, request: m.GetIndexRequest) -> Iterator[m.IndexChunk]:
        for chunk in self.inner.get_index(peer, request):
            yield replace(chunk, announcement=None)


class AnnouncesIndexForAnotherPartner(_Delegate):
    """Signs the index announcement validly, with its own node key, but for another partner State than the
    one that asked (what lets a relay hand one audience's index to another partner)."""

    def get_index(self, peer: Any, request: m.GetIndexRequest) -> Iterator[m.IndexChunk]:
        from fedcheck.rpc import serde

        for chunk in self.inner.get_index(peer, request):
            if chunk.announcement is not None:
                ann = serde.epoch_announcement_from_bytes(chunk.announcement.payload)
                env = self.inner._announcer.sign(
                    ann.epoch_id, ann.epoch_public_key, ann.index_sha256, ann.valid_from_unix_ms,
                    ann.valid_until_unix_ms, partner_state=STRANGER, audience=ann.audience,
                )
                chunk = replace(chunk, announcement=env)
            yield chunk


def _foreign_signer(pki: Pki) -> Callable[[Any], Any]:
    """NodeInfo's announcement names this node's State, epoch and key but is signed by another member's node
    certificate (node.STR): valid under the CA, wrong State."""
    from fedcheck.node.announce import AnnouncementSigner
    from fedcheck.trust.pki import load_private_key_pem

    key_pem = load_private_key_pem(pki.stranger[1], None)
    signer = AnnouncementSigner(STATE, pki.stranger[0].read_bytes(), key_pem)

    class ForeignSigner(_Delegate):
        def node_info(self, peer: Any = None) -> m.NodeInfo:
            info = self.inner.node_info(peer)
            ann = info.epoch_announcement
            if ann is None:
                return info
            from fedcheck.rpc import serde

            a = serde.epoch_announcement_from_bytes(ann.payload)
            env = signer.sign(a.epoch_id, a.epoch_public_key, a.index_sha256, a.valid_from_unix_ms,
                              a.valid_until_unix_ms)
            return replace(info, epoch_announcement=env)

    return ForeignSigner


def test_node_omitting_its_announcements_fails(pki: Pki, tmp_path: Path) -> None:
    report = _run_broken(pki, tmp_path, wrap=OmitsAnnouncements, select=["version", "index", "oprf"])
    assert _failed(report) == ANNOUNCEMENT_CASES, _explain(report)
    assert "carries no signed epoch announcement" in report.by_id()["index.announcement"].evidence
    assert report.by_id()["oprf.proof_verifies"].status is Status.PASS


def test_node_announcing_its_index_for_another_partner_fails(pki: Pki, tmp_path: Path) -> None:
    report = _run_broken(pki, tmp_path, wrap=AnnouncesIndexForAnotherPartner, select=["version", "index",
                                                                                       "oprf"])
    assert _failed(report) == {"index.announcement"}, _explain(report)
    evidence = report.by_id()["index.announcement"].evidence
    assert f"partner_state={PARTNER!r}" in evidence and f"partner_state={STRANGER!r}" in evidence


def test_node_info_announcement_signed_by_another_state_fails(pki: Pki, tmp_path: Path) -> None:
    report = _run_broken(pki, tmp_path, wrap=_foreign_signer(pki), select=["version", "index", "oprf"])
    assert _failed(report) == {"version.epoch_announcement", "oprf.proof_under_announced_key"}, \
        _explain(report)
    assert f"signed by node.{STRANGER}" in report.by_id()["version.epoch_announcement"].evidence


def test_announcement_of_a_revoked_node_certificate_fails(pki: Pki, real_node: RunningNode,
                                                          tmp_path: Path) -> None:
    """The suite checks announcements against --crl: a CRL (same CA) revoking the node's certificate makes
    them fail, while the node itself (still on the old CRL) serves on."""
    import shutil

    from fedcheck.trust.pki import identity_from_cert, revoke, write_crl

    ca_dir = shutil.copytree(pki.root / "ca", tmp_path / "ca")
    revoke(ca_dir, identity_from_cert(pki.node[0].read_bytes()).serial)
    report = run_suite(real_node.config(pki, crl=write_crl(ca_dir)),
                       select=["version.epoch_announcement", "index.announcement"])
    assert _failed(report) == {"version.epoch_announcement", "index.announcement"}, _explain(report)
    assert "CA and CRL" in report.by_id()["version.epoch_announcement"].evidence


def test_expect_state_catches_a_node_claiming_another_state(pki: Pki, real_node: RunningNode) -> None:
    """NodeInfo is unsigned: with --expect-state the suite holds the node to the State the evaluator means."""
    state = real_node.app.cfg.state
    ok = run_suite(real_node.config(pki, expect_state=state), select=["version.epoch_announcement"])
    assert not _failed(ok), _explain(ok)
    wrong = run_suite(real_node.config(pki, expect_state=STRANGER),
                      select=["version.epoch_announcement", "index.announcement"])
    assert _failed(wrong) == {"version.epoch_announcement", "index.announcement"}, _explain(wrong)
    assert f"evaluator expects {STRANGER!r}" in wrong.by_id()["version.epoch_announcement"].evidence


# ------------------------------------------------------------------- evaluator identity, sealed keys, budget


def _audit_events(node: RunningNode) -> list[dict[str, Any]]:
    import json

    from fedcheck.node.app import audit_paths

    _, log = audit_paths(node.app.cfg)
    return [json.loads(line)["event"] for line in log.read_text().splitlines() if line.strip()]


def test_evaluator_certificate_is_audited_as_evaluator(real_report: Report, real_node: RunningNode) -> None:
    """The suite ran with an evaluator certificate (TLS hop and signer): the node judged it as partner EVA
    and its audit log says so."""
    events = [e for e in _audit_events(real_node) if e.get("partner") == PARTNER]
    assert events, "no audit entry for the evaluator's requests"
    assert {e.get("role") for e in events if e.get("type") in ("request", "index")} == {"evaluator"}
    assert any(e.get("outcome") == "ok" and e.get("type") == "request" for e in events)
    assert all(str(e.get("peer", "")).startswith("evaluator.") for e in events if "peer" in e)


def test_evaluator_of_a_non_partner_state_is_refused(pki: Pki, real_node: RunningNode) -> None:
    """An evaluator certificate is still subject to the holder policy: its code must be a partner."""
    report = run_suite(real_node.config(pki, stranger_cert=pki.stranger_evaluator[0],
                                        stranger_key=pki.stranger_evaluator[1]),
                       select=["policy.stranger_refused"])
    assert report.by_id()["policy.stranger_refused"].status is Status.PASS, _explain(report)
    refused = [e for e in _audit_events(real_node) if e.get("peer") == f"evaluator.{STRANGER}"]
    assert refused and {e.get("role") for e in refused} == {"evaluator"}
    assert {e.get("reason") for e in refused} == {"partner_not_allowed"}


def test_evaluator_signing_for_another_state_is_refused(pki: Pki, real_node: RunningNode) -> None:
    """A direct caller may only send its own requests: TLS as evaluator.EVA, signed by node.STR."""
    from fedcheck.conformance.session import Session

    session = Session(real_node.config(pki), build_profile("standard"))
    try:
        from fedcheck.conformance.cases._common import valid_blinded

        blinded = valid_blinded(1)
        payload = session.round_payload(blinded, 1)
        env = session.sign(payload.SerializeToString(), cert_pem=session.stranger_cert_pem,
                           key_pem=session.stranger_key_pem)
        call = session.blind_evaluate(blinded, envelope=env)
    finally:
        session.close()
    assert call.status == "UNAUTHENTICATED", call.describe()
    assert call.trailing.get("fedcheck-reason") == "identity_mismatch"


def test_cli_sealed_key_needs_kek(pki: Pki, real_node: RunningNode,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from fedcheck.cli.main import main

    args = _cli(pki, real_node, "--case", "version.node_info")
    i = args.index("--kek")
    del args[i:i + 2]
    assert main(args) == 2
    assert "KEK" in capsys.readouterr().err
    assert main(_cli(pki, real_node, "--case", "version.node_info")) == 0


class DropsBudgetLimited(_Delegate):
    """Counts a budget but reports it like an unlimited partner (budget_limited false)."""

    def blind_evaluate(self, peer: Any, request: m.BlindEvaluateRequest) -> m.Evaluation:
        return replace(self.inner.blind_evaluate(peer, request), budget_limited=False)


def test_node_hiding_its_budget_fails(pki: Pki, tmp_path: Path) -> None:
    report = _run_broken(pki, tmp_path, wrap=DropsBudgetLimited, select=["budget"])
    assert _failed(report) == {"budget.exhaustion"}, _explain(report)
    assert "budget_limited" in report.by_id()["budget.exhaustion"].evidence


# ----------------------------------------------------------------------- epoch rotation without waiting


@pytest.mark.parametrize("reused", [False, True])
def test_key_rotation_judged_from_previous_epoch(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 reused: bool) -> None:
    """A node that already rotated names its previous epoch in NodeInfo; the case decides from that pair at
    once (no hook, no --epoch-wait), and catches a key reused across the two epochs."""
    import fedcheck.node.epochs as epochs

    if reused:
        monkeypatch.setattr(epochs, "EpochKey", ReusedKey)
    node = RunningNode(pki, tmp_path)
    try:
        node.app.epochs.rebuild_now()
        report = run_suite(node.config(pki, rotate_hook=None, epoch_wait_s=0.0),
                           select=["version", "epoch"])
    finally:
        node.stop()
    r = report.by_id()["epoch.key_rotation"]
    if reused:
        assert r.status is Status.FAIL and "same public key" in r.evidence, _explain(report)
    else:
        assert r.status is Status.PASS and "previous epoch" in r.evidence, _explain(report)


# ------------------------------------------------------------------------------------------- insecure dev


def test_insecure_dev_node_without_tls_table_is_a_config_error(pki: Pki, tmp_path: Path) -> None:
    from fedcheck.errors import ConfigError
    from fedcheck.node.config import load_node_config

    cfg = _write_config(pki, tmp_path, insecure_dev=True)
    text = cfg.read_text()
    cfg.write_text(text[:text.index("[tls]")] + text[text.index("[policy."):])
    with pytest.raises(ConfigError, match="still verifies signed requests"):
        load_node_config(cfg)


def test_insecure_dev_node_runs_the_evaluation_cases(pki: Pki, tmp_path: Path) -> None:
    """Plain-text transport, but request signatures still verified against the CA: the suite's evaluation
    cases (and the signature rows of bad_inputs.json) run and pass; transport cases are skipped."""
    node = RunningNode(pki, tmp_path, insecure_dev=True)
    try:
        cfg = node.config(pki, ca=None, insecure_dev=True)
        report = run_suite(cfg, select=["version", "transport", "index", "oprf", "exact", "cardinality",
                                        "bad_input", "policy", "budget"])
    finally:
        node.stop()
    assert report.conformant, _explain(report)
    res = report.by_id()
    for cid in ("index.download", "oprf.proof_verifies", "exact.must_hit", "exact.labels",
                "cardinality.count", "policy.purpose_refused", "policy.stranger_refused", "budget.exhaustion",
                "bad_input.round_signature_flipped", "bad_input.round_envelope_missing",
                "bad_input.round_foreign_signer", "bad_input.index_foreign_signer"):
        assert res[cid].status is Status.PASS, f"{cid}: {res[cid].status} {res[cid].evidence}"
    assert res["transport.plaintext_refused"].status is Status.SKIP
    # no --ca: the node's signed announcements cannot be verified (skipped, never passed unchecked)
    assert res["index.announcement"].status is Status.SKIP and "--ca" in res["index.announcement"].evidence
