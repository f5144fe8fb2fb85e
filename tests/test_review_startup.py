"""Operator walkthrough review: a node or coordinator must refuse to start -- with one clear line, exit 2 --
rather than start wrongly: on a port another process holds, with a certificate that is not its own (revoked,
expired, another State's, the coordinator's, another CA's, not its key's), on a busy metrics port, with a
typo in its configuration; and ``pki --days`` refuses values that make no sense.

Everything runs in-process (one subprocess checks the real exit code and stderr of ``node serve``).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedcheck.cli.main import main as cli
from fedcheck.coordinator.app import CoordinatorApp
from fedcheck.coordinator.config import load_coordinator_config
from fedcheck.errors import ConfigError
from fedcheck.node.app import NodeApp, load_tls
from fedcheck.node.config import load_node_config
from fedcheck.rpc.server import start_server
from fedcheck.trust import pki
from fedcheck.trust.atrest import generate_kek_text, load_kek
from fedcheck.trust.pki import CertFiles, create_ca, issue_certificate, revoke, write_crl

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Pki:
    root: Path
    ca: Path
    crl: Path
    kek: Path
    certs: dict[str, CertFiles]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One federation CA (FED) and the certificates the cases below start with (keys unsealed: test only)."""
    root = tmp_path_factory.mktemp("startup-pki")
    create_ca(root / "ca", federation="FED")

    def issue(name: str, role: str, state: str, days: int = 365) -> CertFiles:
        return issue_certificate(root / "ca", root / name, role=role, state=state, days=days)

    certs = {
        "FRA": issue("fra", "node", "FRA"),
        "NLD": issue("nld", "node", "NLD"),
        "coordinator": issue("coord", "coordinator", "FED"),
        "coordinator-FRA": issue("coord-fra", "coordinator", "FRA"),
        "revoked": issue("revoked", "node", "FRA"),
    }
    revoke(root / "ca", pki.identity_from_cert(certs["revoked"].cert.read_bytes()).serial)
    real_now = pki._now
    try:  # issued "400 days ago" for 1 day, and "in 10 days"
        pki._now = lambda: real_now() - dt.timedelta(days=400)  # type: ignore[assignment]
        certs["expired"] = issue("expired", "node", "FRA", days=1)
        pki._now = lambda: real_now() + dt.timedelta(days=10)  # type: ignore[assignment]
        certs["future"] = issue("future", "node", "FRA")
    finally:
        pki._now = real_now  # type: ignore[assignment]
    create_ca(root / "rogue", federation="FED")
    certs["foreign"] = issue_certificate(root / "rogue", root / "foreign", role="node", state="FRA")
    crl = write_crl(root / "ca")
    kek = root / "kek"
    kek.write_text(generate_kek_text())
    kek.chmod(0o600)
    return Pki(root, root / "ca" / "ca.crt.pem", crl, kek, certs)


def _node_toml(
    dir_: Path,
    ca: Pki,
    *,
    state: str = "FRA",
    cert: str = "FRA",
    key: str | None = None,
    listen: str | None = "127.0.0.1:0",
    node_extra: str = "",
    extra: str = "",
) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    files = ca.certs[cert]
    key_path = ca.certs[key].key if key else files.key
    listen_line = f'listen = "{listen}"\n' if listen is not None else ""
    path = dir_ / "node.toml"
    path.write_text(
        f'[node]\nstate = "{state}"\n{listen_line}data_dir = "data"\nkek = "file:{ca.kek}"\n'
        f"list_poll_seconds = 0.2\ngrace_seconds = 0.2\n{node_extra}\n"
        f'[tls]\ncert = "{files.cert}"\nkey = "{key_path}"\nca = "{ca.ca}"\ncrl = "{ca.crl}"\n\n'
        f'[policy.holder.partners.KEN]\npurposes = ["border-screening"]\n{extra}',
        encoding="utf-8",
    )
    return path


def _coordinator_toml(
    dir_: Path, ca: Pki, *, cert: str = "coordinator", listen: str | None = "127.0.0.1:0", extra: str = "",
    coordinator_extra: str = "", nodes: str = '[nodes.FRA]\naddress = "127.0.0.1:1"\n',
) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    files = ca.certs[cert]
    listen_line = f'listen = "{listen}"\n' if listen is not None else ""
    path = dir_ / "coordinator.toml"
    path.write_text(
        f'[coordinator]\n{listen_line}data_dir = "data"\nkek = "file:{ca.kek}"\n{coordinator_extra}\n'
        f'[tls]\ncert = "{files.cert}"\nkey = "{files.key}"\nca = "{ca.ca}"\ncrl = "{ca.crl}"\n\n'
        f"{nodes}{extra}",
        encoding="utf-8",
    )
    return path


@pytest.fixture()
def held_port() -> Iterator[int]:
    """A loopback port another process' socket is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _refused(exc: pytest.ExceptionInfo[ConfigError], *needles: str) -> str:
    text = exc.value.message
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


# -- 1. a port already in use --------------------------------------------------------------------------------


def test_second_server_on_a_bound_port_is_refused_not_sharing_it() -> None:
    """gRPC's default SO_REUSEPORT let a second server bind the same port and split the traffic."""
    first = start_server("127.0.0.1:0", [], [], tls=None, insecure_dev=True)
    try:
        address = f"127.0.0.1:{first.port}"
        with pytest.raises(ConfigError) as exc:
            start_server(address, [], [], tls=None, insecure_dev=True, what="node.listen")
        assert exc.value.reason == "address_in_use"
        _refused(exc, f"port {address} is already in use", "node.listen")
    finally:
        first.stop(0)


def test_node_on_a_port_held_by_another_socket_is_a_config_error(
    ca: Pki, tmp_path: Path, held_port: int
) -> None:
    app = NodeApp(load_node_config(_node_toml(tmp_path, ca, listen=f"127.0.0.1:{held_port}")))
    try:
        with pytest.raises(ConfigError) as exc:
            app.start()
        assert exc.value.reason == "address_in_use"
        _refused(exc, f"port 127.0.0.1:{held_port} is already in use")
        assert app.server is None
    finally:
        app.stop()


def test_node_serve_on_a_busy_port_exits_2_with_one_line(ca: Pki, tmp_path: Path, held_port: int) -> None:
    config = _node_toml(tmp_path, ca, listen=f"127.0.0.1:{held_port}")
    proc = subprocess.run(
        [sys.executable, "-m", "fedcheck", "node", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("fedcheck: error:")]
    assert len(errors) == 1 and f"port 127.0.0.1:{held_port} is already in use" in errors[0], proc.stderr
    assert "Failed to bind" not in proc.stderr  # gRPC was never asked to bind (no multi-line C-core log)


def test_coordinator_on_a_busy_port_is_a_config_error(ca: Pki, tmp_path: Path, held_port: int) -> None:
    config = _coordinator_toml(tmp_path, ca, listen=f"127.0.0.1:{held_port}")
    app = CoordinatorApp(load_coordinator_config(config))
    try:
        with pytest.raises(ConfigError) as exc:
            app.start()
        _refused(exc, f"port 127.0.0.1:{held_port} is already in use", "coordinator.listen")
    finally:
        app.stop()


# -- 2. the node's (and coordinator's) own certificate -------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "reason", "needles"),
    [
        ({"cert": "revoked"}, "tls_cert_revoked", ["is revoked", "tls.crl"]),
        ({"cert": "expired"}, "tls_cert_expired", ["expired on"]),
        ({"cert": "future"}, "tls_cert_not_yet_valid", ["not valid before"]),
        ({"state": "BEL", "cert": "NLD"}, "tls_identity", ["is node.NLD, expected node.BEL"]),
        ({"cert": "coordinator"}, "tls_identity", ["is coordinator.FED, expected node.FRA"]),
        ({"cert": "foreign"}, "tls_cert_untrusted", ["is not issued by the CA", "tls.ca"]),
        ({"key": "NLD"}, "tls_key_mismatch", ["does not match its private key", "tls.key"]),
    ],
    ids=["revoked", "expired", "not-yet-valid", "other-state", "coordinator-cert", "other-ca", "wrong-key"],
)
def test_node_refuses_to_start_with_a_certificate_that_is_not_its_own(
    ca: Pki, tmp_path: Path, variant: dict[str, str], reason: str, needles: list[str]
) -> None:
    cfg = load_node_config(_node_toml(tmp_path, ca, **variant))
    with pytest.raises(ConfigError) as exc:
        NodeApp(cfg)
    assert exc.value.reason == reason, exc.value.message
    text = _refused(exc, *needles)
    assert str(cfg.tls.cert if cfg.tls else "") in text or "tls.key" in text
    assert not (cfg.data_dir / "audit.jsonl").exists()  # refused before anything under data_dir was opened


def test_tls_key_sealed_under_another_kek_names_the_key_file(ca: Pki, tmp_path: Path) -> None:
    """Another node's sealed key (or the old KEK after a rotation): not just "verification failed"."""
    import shutil

    from fedcheck.errors import VerificationError
    from fedcheck.trust.atrest import KeyEncryptionKey

    ca_dir = Path(shutil.copytree(ca.root / "ca", tmp_path / "ca"))
    other_kek = KeyEncryptionKey.generate()
    sealed = issue_certificate(ca_dir, tmp_path / "s", role="node", state="FRA", kek=other_kek)
    local = Pki(ca.root, ca_dir / "ca.crt.pem", ca.crl, ca.kek, {"FRA": sealed})
    with pytest.raises(VerificationError) as exc:  # the node's own KEK (ca.kek) cannot open it
        NodeApp(load_node_config(_node_toml(tmp_path / "cfg", local)))
    assert f"tls.key {sealed.key}" in exc.value.message and "node.kek" in exc.value.message


def test_node_with_its_own_certificate_starts(ca: Pki, tmp_path: Path) -> None:
    app = NodeApp(load_node_config(_node_toml(tmp_path, ca)))
    try:
        assert app.start() > 0
    finally:
        app.stop()


@pytest.mark.parametrize(
    ("cert", "needle"),
    [("FRA", "is node.FRA, expected coordinator.FED"),
     ("coordinator-FRA", "is coordinator.FRA, expected coordinator.FED")],
)
def test_coordinator_refuses_a_certificate_that_is_not_coordinator_of_the_federation(
    ca: Pki, tmp_path: Path, cert: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        CoordinatorApp(load_coordinator_config(_coordinator_toml(tmp_path, ca, cert=cert)))
    assert exc.value.reason == "tls_identity"
    _refused(exc, needle)


def test_coordinator_refuses_a_revoked_certificate(ca: Pki, tmp_path: Path) -> None:
    # a revoked coordinator certificate: issue, revoke, publish a CRL (in a copy of the CA)
    import shutil

    ca_dir = Path(shutil.copytree(ca.root / "ca", tmp_path / "ca"))
    files = issue_certificate(ca_dir, tmp_path / "c", role="coordinator", state="FED")
    revoke(ca_dir, pki.identity_from_cert(files.cert.read_bytes()).serial)
    crl = write_crl(ca_dir)
    local = Pki(ca.root, ca_dir / "ca.crt.pem", crl, ca.kek, {"coordinator": files})
    with pytest.raises(ConfigError) as exc:
        CoordinatorApp(load_coordinator_config(_coordinator_toml(tmp_path / "cfg", local)))
    assert exc.value.reason == "tls_cert_revoked"


# -- 3. metrics port in use ----------------------------------------------------------------------------------


def test_busy_metrics_port_is_a_config_error_and_nothing_keeps_running(
    ca: Pki, tmp_path: Path, held_port: int
) -> None:
    app = NodeApp(load_node_config(_node_toml(tmp_path, ca, extra=f"\n[metrics]\nport = {held_port}\n")))
    try:
        with pytest.raises(ConfigError) as exc:
            app.start()
        assert exc.value.reason == "metrics_address_in_use"
        _refused(exc, f"metrics port 127.0.0.1:{held_port} is already in use")
        assert app.server is None  # the gRPC server bound first was stopped again
    finally:
        app.stop()
    coord = CoordinatorApp(load_coordinator_config(
        _coordinator_toml(tmp_path / "c", ca, extra=f"\n[metrics]\nport = {held_port}\n")
    ))
    try:
        with pytest.raises(ConfigError, match="already in use"):
            coord.start()
    finally:
        coord.stop()


# -- 4. pki --days -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("days", ["-1", "0", "3651", "ten"])
def test_pki_issue_days_must_be_sane(ca: Pki, tmp_path: Path, days: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli(["pki", "issue", "--ca-dir", str(ca.root / "ca"), "--out", str(tmp_path), "--role", "node",
             "--state", "ITA", "--days", days])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --days" in err and "Traceback" not in err
    assert not (tmp_path / "node.ITA.crt.pem").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["init-ca", "--dir", "{tmp}/ca2", "--federation", "FED", "--days", "0"],
        ["init-ca", "--dir", "{tmp}/ca2", "--federation", "FED", "--days", "99999"],
        ["sign-csr", "--ca", "{ca}", "--csr", "{tmp}/x.csr.pem", "--out", "{tmp}", "--days", "0"],
        ["crl", "--ca-dir", "{ca}", "--days", "0"],
        ["crl", "--ca-dir", "{ca}", "--days", "5000"],
        ["revoke", "--ca-dir", "{ca}", "--serial", "1", "--crl-days", "-3"],
    ],
    ids=["init-ca-0", "init-ca-huge", "sign-csr-0", "crl-0", "crl-huge", "revoke-crl-days-negative"],
)
def test_every_pki_days_option_is_validated(ca: Pki, tmp_path: Path, argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(tmp=tmp_path, ca=ca.root / "ca") for a in argv]
    with pytest.raises(SystemExit) as exc:
        cli(["pki", *args])
    assert exc.value.code == 2
    assert "days" in capsys.readouterr().err
    assert not (tmp_path / "ca2").exists()


def test_pki_issue_one_day_is_fine(ca: Pki, tmp_path: Path) -> None:
    import shutil

    ca_dir = shutil.copytree(ca.root / "ca", tmp_path / "ca")
    assert cli(["pki", "issue", "--ca-dir", str(ca_dir), "--out", str(tmp_path / "o"), "--role", "node",
                "--state", "ITA", "--days", "1"]) == 0


# -- 5. strict configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_extra", "extra", "needles"),
    [
        ("epoch_second = 3600\n", "", ["unknown key node.epoch_second", "did you mean node.epoch_seconds?"]),
        ("", '\n[querrier]\nunit = "X"\n', ["unknown table [querrier]", "did you mean [querier]?"]),
        ("", '\n[querier]\nlegal_bases = "x"\n', ["unknown key querier.legal_bases",
                                                  "did you mean querier.legal_basis?"]),
        ("", "\n[metrics]\nprot = 9100\n", ["unknown key metrics.prot", "did you mean metrics.port?"]),
        ("", "\n[policy.holdr.partners.DEU]\n", ["unknown key policy.holdr", "did you mean policy.holder?"]),
    ],
    ids=["node-key", "table", "querier-key", "metrics-key", "policy-subtable"],
)
def test_node_config_typos_are_refused_naming_key_and_file(
    ca: Pki, tmp_path: Path, node_extra: str, extra: str, needles: list[str]
) -> None:
    path = _node_toml(tmp_path, ca, node_extra=node_extra, extra=extra)
    with pytest.raises(ConfigError) as exc:
        load_node_config(path)
    assert exc.value.reason == "config_unknown_key"
    _refused(exc, str(path), *needles)


@pytest.mark.parametrize("state", ["bel", "Fra", "1FR", "F"])
def test_node_state_must_be_an_upper_case_state_code(ca: Pki, tmp_path: Path, state: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_node_config(_node_toml(tmp_path, ca, state=state))
    assert exc.value.reason == "config_state"
    _refused(exc, "node.state", repr(state))


def test_node_without_listen_refuses_to_serve_instead_of_a_random_port(ca: Pki, tmp_path: Path) -> None:
    path = _node_toml(tmp_path, ca, listen=None)
    cfg = load_node_config(path)  # watchlist import / query / rotate-kek do not listen: loading is fine
    assert cfg.listen == ""
    app = NodeApp(cfg)
    try:
        with pytest.raises(ConfigError) as exc:
            app.start()
        assert exc.value.reason == "config_listen"
        _refused(exc, "node.listen is required", str(path))
        assert app.server is None
    finally:
        app.stop()
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_node_config(_node_toml(tmp_path, ca, listen="50061"))


@pytest.mark.parametrize(
    ("coordinator_extra", "nodes", "reason", "needles"),
    [
        ("max_deadline_second = 30\n", '[nodes.FRA]\naddress = "127.0.0.1:1"\n', "config_unknown_key",
         ["unknown key coordinator.max_deadline_second", "did you mean coordinator.max_deadline_seconds?"]),
        ("", '[nodes.FRA]\naddress = "127.0.0.1:1"\n[node.NLD]\naddress = "127.0.0.1:2"\n',
         "config_unknown_key", ["unknown table [node]", "did you mean [nodes]?"]),
        ("", '[nodes.bel]\naddress = "127.0.0.1:1"\n', "config_state", ["nodes.bel", "'bel'"]),
        ("", '[nodes.FRA]\naddress = "127.0.0.1:1"\nadress = "x"\n', "config_unknown_key",
         ["unknown key nodes.FRA.adress", "did you mean nodes.FRA.address?"]),
    ],
    ids=["coordinator-key", "node-instead-of-nodes", "lower-case-state", "member-key"],
)
def test_coordinator_config_typos_are_refused(
    ca: Pki, tmp_path: Path, coordinator_extra: str, nodes: str, reason: str, needles: list[str]
) -> None:
    path = _coordinator_toml(tmp_path, ca, coordinator_extra=coordinator_extra, nodes=nodes)
    with pytest.raises(ConfigError) as exc:
        load_coordinator_config(path)
    assert exc.value.reason == reason
    _refused(exc, *needles)


def test_coordinator_without_listen_refuses_to_serve(ca: Pki, tmp_path: Path) -> None:
    app = CoordinatorApp(load_coordinator_config(_coordinator_toml(tmp_path, ca, listen=None)))
    try:
        with pytest.raises(ConfigError, match=r"coordinator\.listen is required"):
            app.start()
    finally:
        app.stop()


def test_shipped_and_generated_configs_still_load(tmp_path: Path) -> None:
    from fedcheck.node.devfed import write_federation

    for path in sorted((REPO / "nodes").glob("*/node.toml")):
        assert load_node_config(path).listen, path
    # the shipped coordinator config names holder audit keys under var/ (dev-secrets); load it without them
    text = (REPO / "nodes" / "coordinator" / "coordinator.toml").read_text()
    copy = tmp_path / "coordinator.toml"
    copy.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("audit_public_key")))
    assert sorted(load_coordinator_config(copy).nodes) == ["DEU", "FRA", "KEN", "UNX"]
    fed = write_federation(
        tmp_path / "fed", ("FRA", "KEN"), extra_policy={"FRA->KEN": "budget_per_day = 5\n"}
    )
    for path in fed.node_configs.values():
        load_node_config(path)
    load_coordinator_config(fed.coordinator_config)


# -- 6. error messages that name what is wrong ---------------------------------------------------------------


def test_missing_tls_file_names_the_key_and_path(ca: Pki, tmp_path: Path) -> None:
    path = _node_toml(tmp_path, ca)
    path.write_text(path.read_text().replace(str(ca.certs["FRA"].cert), str(tmp_path / "nope.crt.pem")))
    cfg = load_node_config(path)
    with pytest.raises(ConfigError) as exc:
        load_tls(cfg, load_kek(cfg.kek))
    _refused(exc, "tls.cert", str(tmp_path / "nope.crt.pem"), str(path))


def test_tls_table_message_says_the_crl_is_required(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('[node]\nstate = "FRA"\nkek = "env:X"\n')
    with pytest.raises(ConfigError) as exc:
        load_node_config(path)
    text = _refused(exc, "crl")
    assert "optional crl" not in text


def test_unset_kek_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDCHECK_REVIEW_NO_SUCH_KEK", raising=False)
    with pytest.raises(ConfigError, match="FEDCHECK_REVIEW_NO_SUCH_KEK"):
        load_kek("env:FEDCHECK_REVIEW_NO_SUCH_KEK")


def test_second_node_on_the_same_data_dir_names_it(ca: Pki, tmp_path: Path) -> None:
    cfg = load_node_config(_node_toml(tmp_path, ca))
    first = NodeApp(cfg)
    try:
        with pytest.raises(ConfigError) as exc:
            NodeApp(cfg)
        assert exc.value.reason == "audit_locked"
        _refused(exc, str(cfg.data_dir))
    finally:
        first.stop()
    NodeApp(cfg).stop()  # the refused second node left nothing open or locked
