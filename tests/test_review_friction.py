"""Operator walkthrough frictions: refused TLS peers leave a (rate-limited) log line, gRPC's C core stays
quiet on stderr, rotate-kek prints the KEK spec to configure, ``audit verify`` tells a wrong public key from a
corrupt head, a nationality-unknown exclusion says so, ``conformance run`` opens a member's key under its own
KEK and names the key a KEK cannot open, ``pki issue`` names the CA key and ``--ca-kek``."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from fedcheck.cli.main import main
from fedcheck.errors import Unauthenticated
from fedcheck.node.logs import JsonFormatter
from fedcheck.rpc import tls as tlsmod
from fedcheck.rpc.tls import PeerVerifier, TlsIdentity
from fedcheck.trust import pki as pkimod
from fedcheck.trust.atrest import generate_kek_text, load_kek
from fedcheck.trust.audit import AuditLog, generate_signing_key, save_signing_key

REPO = Path(__file__).resolve().parents[1]


def _kek_file(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generate_kek_text())
    path.chmod(0o600)
    return f"file:{path}"


def _err_line(text: str) -> str:
    """The CLI's one-line error (no traceback)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("fedcheck: error:")]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- 1. a refused TLS peer is logged (CN, serial, reason), rate-limited --------------------------------------


class _Ctx:
    def __init__(self, pem: bytes) -> None:
        self.pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.pem]}


@pytest.fixture()
def verifier(tmp_path: Path) -> tuple[PeerVerifier, dict[str, bytes], Path]:
    ca_pem = pkimod.create_ca(tmp_path / "ca", federation="FED").read_bytes()
    srv = pkimod.issue_certificate(tmp_path / "ca", tmp_path / "srv", role="node", state="DEU")
    certs = {
        s: pkimod.issue_certificate(tmp_path / "ca", tmp_path / s, role=r, state=s).cert.read_bytes()
        for s, r in (("KEN", "node"), ("EVA", "evaluator"))
    }
    pkimod.revoke(tmp_path / "ca", pkimod.identity_from_cert(certs["KEN"]).serial)
    crl = pkimod.write_crl(tmp_path / "ca")
    tls = TlsIdentity(srv.cert.read_bytes(), srv.key.read_bytes(), ca_pem, crl)
    return PeerVerifier(tls), certs, tmp_path


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fedcheck.rpc.tls" and r.levelno == logging.WARNING]


def test_refused_tls_peer_is_logged_once_per_minute(
    verifier: tuple[PeerVerifier, dict[str, bytes], Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v, certs, _root = verifier
    clock = [1000.0]
    monkeypatch.setattr(tlsmod, "_monotonic", lambda: clock[0], raising=False)
    serial = pkimod.identity_from_cert(certs["KEN"]).serial
    caplog.set_level(logging.WARNING, logger="fedcheck.rpc.tls")
    for _ in range(5):  # a peer retrying in a loop
        with pytest.raises(Unauthenticated) as exc:
            v.identify(_Ctx(certs["KEN"]))
        assert exc.value.reason == "revoked"
    (rec,) = _refusals(caplog)
    line = json.loads(JsonFormatter().format(rec))
    assert line["level"] == "warning" and line["reason"] == "revoked" and line["status"] == "UNAUTHENTICATED"
    assert "CN=node.KEN" in line["msg"] and f"serial={serial}" in line["msg"]
    assert line["partner"] == "KEN"
    # no key material: neither the peer's certificate nor any private key reaches the log
    text = json.dumps(line)
    assert "BEGIN" not in text and "PRIVATE" not in text
    # a minute later: one more line, saying how many were not logged
    clock[0] += tlsmod.REFUSAL_LOG_INTERVAL_S + 1
    with pytest.raises(Unauthenticated):
        v.identify(_Ctx(certs["KEN"]))
    _first, second = _refusals(caplog)
    assert "4 similar refusal(s) not logged" in second.getMessage()
    assert second.__dict__["count"] == 5
    # another reason (a role this service does not take) is its own line
    with pytest.raises(Unauthenticated):
        v.identify(_Ctx(certs["EVA"]), roles=("node",))
    third = _refusals(caplog)[-1]
    assert third.__dict__["reason"] == "wrong_role" and "CN=evaluator.EVA" in third.getMessage()
    # an accepted peer logs nothing
    n = len(_refusals(caplog))
    assert v.identify(_Ctx(certs["EVA"]), roles=("evaluator",)).state == "EVA"
    assert len(_refusals(caplog)) == n


# -- 2. gRPC's C core: GRPC_VERBOSITY=ERROR unless the operator set it ---------------------------------------


@pytest.fixture()
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A mutual-TLS gRPC server of one CA, and a client identity of *another* CA (its handshake fails)."""
    from grpc_health.v1 import health, health_pb2_grpc

    pkimod.create_ca(tmp_path / "ca", federation="FED")
    srv = pkimod.issue_certificate(tmp_path / "ca", tmp_path / "srv", role="node", state="DEU")
    pkimod.create_ca(tmp_path / "other", federation="FED")
    pkimod.issue_certificate(tmp_path / "other", tmp_path / "eva", role="evaluator", state="EVA")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    creds = grpc.ssl_server_credentials([(srv.key.read_bytes(), srv.cert.read_bytes())],
                                        root_certificates=srv.ca.read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield port, tmp_path
    finally:
        server.stop(0)


def _cli_stderr(port: int, root: Path, verbosity: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    env["PYTHONPATH"] = str(REPO)
    if verbosity is not None:
        env["GRPC_VERBOSITY"] = verbosity
    args = ["conformance", "run", "--target", f"127.0.0.1:{port}", "--server-name", "localhost",
            "--ca", str(root / "other" / "ca.crt.pem"), "--cert", str(root / "eva" / "evaluator.EVA.crt.pem"),
            "--key", str(root / "eva" / "evaluator.EVA.key.pem"), "--case", "version.node_info",
            "--timeout", "3", "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "fedcheck", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=str(root))
    assert proc.returncode == 1, proc.stderr  # the case fails: the node cannot be reached over TLS
    return proc.stderr


def test_grpc_core_lines_stay_off_stderr(tls_server: tuple[int, Path]) -> None:
    port, root = tls_server
    # the operator's own setting wins (and shows the scenario does make the C core talk)
    assert "Handshake failed" in _cli_stderr(port, root, "INFO")
    err = _cli_stderr(port, root, None)
    assert "Handshake failed" not in err, err
    assert not re.search(r"^[IW]\d{4} ", err, flags=re.M), err


# -- 3. rotate-kek prints the spec to put into the config ----------------------------------------------------


def _hint_spec(err: str, table: str) -> str:
    m = re.search(r'now set kek = ("[^"]*") in the \[' + table + r"\] table of ", err)
    assert m, err
    spec = json.loads(m.group(1))
    assert "..." not in spec
    return str(spec)


def test_rotate_kek_prints_the_new_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from fedcheck.coordinator.config import load_coordinator_config
    from fedcheck.node.config import load_node_config
    from fedcheck.node.devfed import write_federation
    from fedcheck.trust.pki import load_private_key_pem

    fed = write_federation(tmp_path / "fed", ("FRA", "KEN"), metrics=False)
    monkeypatch.chdir(tmp_path)
    _kek_file(tmp_path / "keys" / "node.kek")
    _kek_file(tmp_path / "keys" / "coord.kek")
    config = fed.node_configs["KEN"]
    capsys.readouterr()
    # a path relative to the working directory, while config paths are relative to the config file
    assert main(["node", "rotate-kek", "--config", str(config), "--new-kek", "file:keys/node.kek"]) == 0
    spec = _hint_spec(capsys.readouterr().err, "node")
    assert spec == f"file:{(tmp_path / 'keys' / 'node.kek').resolve()}"
    text = config.read_text()
    config.write_text(re.sub(r'^kek = ".*"$', f"kek = {json.dumps(spec)}", text, count=1, flags=re.M))
    cfg = load_node_config(config)
    assert cfg.tls is not None
    load_private_key_pem(cfg.tls.key, load_kek(cfg.kek))  # the configured spec opens the rotated key

    cconfig = fed.coordinator_config
    args = ["coordinator", "rotate-kek", "--config", str(cconfig), "--new-kek", "file:keys/coord.kek"]
    assert main(args) == 0
    spec = _hint_spec(capsys.readouterr().err, "coordinator")
    assert spec == f"file:{(tmp_path / 'keys' / 'coord.kek').resolve()}"
    text = cconfig.read_text()
    cconfig.write_text(re.sub(r'^kek = ".*"$', f"kek = {json.dumps(spec)}", text, count=1, flags=re.M))
    ccfg = load_coordinator_config(cconfig)
    assert ccfg.tls is not None
    load_private_key_pem(ccfg.tls.key, load_kek(ccfg.kek))
    # env: specs are printed as they are
    monkeypatch.setenv("FEDCHECK_TEST_KEK", (tmp_path / "keys" / "coord.kek").read_text())
    assert main(["node", "rotate-kek", "--config", str(config), "--new-kek", "env:FEDCHECK_TEST_KEK"]) == 0
    assert _hint_spec(capsys.readouterr().err, "node") == "env:FEDCHECK_TEST_KEK"


# -- 4. audit verify: wrong public key vs corrupt head -------------------------------------------------------


def test_audit_verify_tells_wrong_key_from_corrupt_head(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_signing_key()
    save_signing_key(tmp_path / "audit.key", key, None)
    other = save_signing_key(tmp_path / "other.key", generate_signing_key(), None)
    log = tmp_path / "audit.jsonl"
    with AuditLog(log, key) as alog:
        alog.append({"type": "request", "partner": "DEU", "purpose": "border_control", "outcome": "ok"})
    capsys.readouterr()
    assert main(["audit", "verify", "--log", str(log), "--public-key", str(other)]) == 1
    err = capsys.readouterr().err
    assert "signature does not verify under the given public key" in err
    assert "wrong key, or a forged head" in err and str(other) in err
    assert "corrupt" not in err
    head = log.with_name(log.name + ".head")
    head.write_text("{not json")
    own = f"{tmp_path / 'audit.key'}.pub.pem"
    assert main(["audit", "verify", "--log", str(log), "--public-key", own]) == 1
    err = capsys.readouterr().err
    assert "head file is corrupt" in err and "public key" not in err


# -- 5. a nationality-unknown exclusion says so --------------------------------------------------------------


@dataclass(frozen=True)
class _Rec:
    record_id: str
    nationalities: tuple[str, ...] = ()
    flags: frozenset[str] = field(default_factory=frozenset)


def test_exclusion_cause_nationality_unknown() -> None:
    from fedcheck.trust.policy import EXCLUSION_CAUSES, QuerierPolicy, exclusion_causes

    recs = [_Rec("a", (), frozenset({"refugee"})), _Rec("b", ("KEN",), frozenset({"refugee"})),
            _Rec("c", (), frozenset({"refugee"})), _Rec("d", ("FRA",), frozenset({"refugee"}))]
    kept, excluded = QuerierPolicy().filter_manifest(recs, ["KEN"])
    assert [r.record_id for r in kept] == ["d"]
    by_id = {e.record_id: e for e in excluded}
    assert by_id["a"].cause == "nationality_unknown" and by_id["a"].cause_text == "nationality unknown"
    assert by_id["b"].cause == "state_of_nationality" and by_id["b"].cause_text == "State of nationality"
    assert exclusion_causes(excluded) == {"nationality_unknown": 2, "state_of_nationality": 1}
    assert set(EXCLUSION_CAUSES) == {"nationality_unknown", "state_of_nationality"}


# -- 6. conformance run: --coordinator-kek, and a KEK that cannot open a key names it ------------------------


@pytest.fixture()
def two_keks(tmp_path: Path) -> dict[str, Path | str]:
    """An evaluator key sealed under the evaluator's KEK, a member's node key sealed under the member's."""
    ca = tmp_path / "ca"
    pkimod.create_ca(ca, federation="FED")
    ev_kek = _kek_file(tmp_path / "ev.kek")
    fra_kek = _kek_file(tmp_path / "fra.kek")
    ev = pkimod.issue_certificate(ca, tmp_path / "eva", role="evaluator", state="EVA", kek=load_kek(ev_kek))
    fra = pkimod.issue_certificate(ca, tmp_path / "fra", role="node", state="FRA", kek=load_kek(fra_kek))
    return {"ca": ca / "ca.crt.pem", "ev_cert": ev.cert, "ev_key": ev.key, "ev_kek": ev_kek,
            "fra_cert": fra.cert, "fra_key": fra.key, "fra_kek": fra_kek}


def test_conformance_coordinator_key_under_its_own_kek(two_keks: dict[str, Path | str]) -> None:
    from fedcheck.conformance.profile import load_profile
    from fedcheck.conformance.session import Session, TargetConfig
    from fedcheck.trust.pki import load_private_key_pem

    k = two_keks
    config = TargetConfig(
        target="127.0.0.1:1", ca=Path(k["ca"]), cert=Path(k["ev_cert"]), key=Path(k["ev_key"]),
        kek=str(k["ev_kek"]), coordinator="127.0.0.1:2", coordinator_cert=Path(k["fra_cert"]),
        coordinator_key=Path(k["fra_key"]), coordinator_kek=str(k["fra_kek"]),
    )
    session = Session(config, load_profile("standard"))
    try:
        expected = load_private_key_pem(Path(k["fra_key"]), load_kek(str(k["fra_kek"])))
        assert session.coordinator_key_pem == expected
    finally:
        session.close()


def test_conformance_kek_mismatch_names_key_and_option(two_keks: dict[str, Path | str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    k = two_keks
    base = ["conformance", "run", "--target", "127.0.0.1:1", "--ca", str(k["ca"]),
            "--cert", str(k["ev_cert"]), "--key", str(k["ev_key"]), "--coordinator", "127.0.0.1:2",
            "--coordinator-cert", str(k["fra_cert"]), "--coordinator-key", str(k["fra_key"]),
            "--quiet", "--timeout", "1"]
    capsys.readouterr()
    # one --kek for both: the member's key is sealed under another KEK
    assert main([*base, "--kek", str(k["ev_kek"])]) == 2
    line = _err_line(capsys.readouterr().err)
    assert f"--coordinator-key {k['fra_key']}" in line and "--coordinator-kek" in line
    assert "verification failed" not in line
    # the evaluator's key under the member's KEK: names --key and --kek
    assert main([*base, "--kek", str(k["fra_kek"])]) == 2
    line = _err_line(capsys.readouterr().err)
    assert f"--key {k['ev_key']}" in line and "--kek" in line
    # a wrong --coordinator-kek names that option
    assert main([*base, "--kek", str(k["ev_kek"]), "--coordinator-kek", str(k["ev_kek"])]) == 2
    line = _err_line(capsys.readouterr().err)
    assert f"--coordinator-key {k['fra_key']}" in line and "KEK of --coordinator-kek" in line


def test_conformance_stranger_cert_help_allows_evaluators(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["conformance", "run", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    m = re.search(r"--stranger-cert STRANGER_CERT (.*?) --stranger-key", out)
    assert m and "evaluator" in m.group(1), out
    assert "--coordinator-kek" in out


# -- 7. pki issue with a CA key sealed under another KEK -----------------------------------------------------


def test_pki_issue_names_the_ca_key_and_ca_kek(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_kek = _kek_file(tmp_path / "ca.kek")
    node_kek = _kek_file(tmp_path / "node.kek")
    ca = tmp_path / "ca"
    assert main(["pki", "init-ca", "--dir", str(ca), "--federation", "FED", "--kek", ca_kek]) == 0
    issue = ["pki", "issue", "--ca-dir", str(ca), "--out", str(tmp_path / "fra"), "--role", "node",
             "--state", "FRA", "--kek", node_kek]
    capsys.readouterr()
    assert main(issue) == 2
    line = _err_line(capsys.readouterr().err)
    assert f"CA key at {ca / 'ca.key.sealed'}" in line and "--ca-kek" in line
    assert "verification failed" not in line
    assert main([*issue, "--ca-kek", node_kek]) == 2  # a wrong --ca-kek names that option
    line = _err_line(capsys.readouterr().err)
    assert "KEK of --ca-kek" in line
    assert main([*issue, "--ca-kek", ca_kek]) == 0
    assert main(["pki", "crl", "--ca-dir", str(ca), "--kek", node_kek]) == 2
    line = _err_line(capsys.readouterr().err)
    assert f"CA key at {ca / 'ca.key.sealed'}" in line and "--kek" in line


def test_report_says_why_travellers_were_not_sent() -> None:
    """An unknown nationality is reported as such, not as 'State of nationality' (walkthrough friction)."""
    from fedcheck.screening.report import _detail_lines

    unknown = _detail_lines("KEN", {"excluded": 2, "excluded_causes": {"nationality_unknown": 2}})
    assert unknown == ["KEN: 2 traveller(s) not sent (querier policy: protected person, nationality unknown)"]
    both = _detail_lines("KEN", {"excluded": 3, "excluded_causes": {"state_of_nationality": 1,
                                                                    "nationality_unknown": 2}})
    assert "State of nationality, nationality unknown" in both[0]
