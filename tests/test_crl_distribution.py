"""CRL distribution through the coordinator (fedcheck.trust.crlsync, Coordinator.GetCrl,
[tls] crl_sync_seconds, ``fedcheck pki fetch-crl``).

The coordinator is untrusted for this: the CA signature is the only trust anchor, so the unit tests check that
a node refuses forged, rolled-back, re-numbered, stale and garbage CRLs; the end-to-end tests run a real
coordinator and nodes over gRPC with mutual TLS on loopback, revoke a certificate at the CA, update only the
coordinator's CRL file, and check that after a sync the node refuses the revoked certificate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2 as cpb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2_grpc as cgrpc
from fedcheck._proto.fedcheck.v1 import node_pb2_grpc as ngrpc
from fedcheck.cli.main import main
from fedcheck.errors import ConfigError, Unauthenticated, Unavailable
from fedcheck.node.config import load_node_config
from fedcheck.rpc import serde
from fedcheck.trust.atrest import KeyEncryptionKey, load_kek
from fedcheck.trust.crlsync import (
    MAX_CRL_BYTES,
    CrlFile,
    CrlRefused,
    CrlSyncer,
    accept_crl,
    sync_crl_file,
)
from fedcheck.trust.pki import (
    create_ca,
    identity_from_cert,
    issue_certificate,
    load_crl,
    load_private_key_pem,
    revoke,
    write_crl,
)

NOW = dt.datetime.now(dt.UTC)

# -- unit: accept_crl ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ca:
    dir: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _ca(root: Path, federation: str = "FED") -> Ca:
    create_ca(root, federation=federation)  # development CA: plaintext key (ca.key.pem)
    key = serialization.load_pem_private_key((root / "ca.key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Ca(root, x509.load_pem_x509_certificate((root / "ca.crt.pem").read_bytes()), key)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Ca:
    return _ca(tmp_path_factory.mktemp("crl-ca"))


def _crl(
    ca: Ca,
    number: int | None,
    *,
    revoked: tuple[int, ...] = (),
    this_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    issuer: x509.Name | None = None,
    der: bool = False,
) -> bytes:
    """A CRL signed by ``ca``'s key, with the given number / dates (defaults: valid now for 30 days)."""
    this = this_update or NOW - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer or ca.cert.subject)
        .last_update(this)
        .next_update(next_update or NOW + dt.timedelta(days=30))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this).build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def _refused(
    reason: str, current: bytes | None, candidate: bytes, ca: Ca, *, now: dt.datetime = NOW
) -> CrlRefused:
    with pytest.raises(CrlRefused) as exc:
        accept_crl(current, candidate, ca.pem, now)
    assert exc.value.reason == reason, exc.value.message
    return exc.value


def test_newer_crl_is_accepted_and_the_same_one_is_unchanged(ca: Ca) -> None:
    one, two = _crl(ca, 1), _crl(ca, 2, revoked=(1234, 5678))
    decision = accept_crl(one, two, ca.pem, NOW)
    assert decision.updated and decision.action == "update"
    assert (decision.number, decision.previous_number, decision.revoked) == (2, 1, 2)
    assert decision.pem.startswith(b"-----BEGIN X509 CRL-----")
    # no installed CRL at all: any valid one is installed
    first = accept_crl(None, one, ca.pem, NOW)
    assert first.updated and first.previous_number is None
    # DER works as well as PEM, and the same CRL again (in either encoding) is a no-op
    assert accept_crl(one, _der(two), ca.cert, NOW).number == 2
    same = accept_crl(two, two, ca.pem, NOW)
    assert same.action == "unchanged" and not same.updated and same.number == 2
    assert accept_crl(_der(two), two, ca.pem, NOW).action == "unchanged"
    # a CRL number jump is fine (the CA may have written CRLs this node never saw)
    assert accept_crl(one, _crl(ca, 40), ca.pem, NOW).updated


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_crl(pem).public_bytes(serialization.Encoding.DER)


def test_older_crl_is_refused_as_rollback(ca: Ca) -> None:
    err = _refused("crl_rollback", _crl(ca, 5, revoked=(99,)), _crl(ca, 4), ca)
    assert "older" in err.message and "5" in err.message


def test_same_number_with_different_contents_is_refused(ca: Ca) -> None:
    # a coordinator replaying the CA's numbering with another (even CA-signed) list: never silently swapped
    _refused("crl_number_reused", _crl(ca, 7, revoked=(1,)), _crl(ca, 7, revoked=(1, 2)), ca)
    _refused("crl_number_reused", _crl(ca, 7), _crl(ca, 7), ca)  # same contents, other signature bytes


def test_crl_of_another_ca_is_refused(ca: Ca, tmp_path: Path) -> None:
    # a rogue CA with the very same name: issuer matches, the signature does not
    twin = _ca(tmp_path / "twin", "FED")
    assert twin.cert.subject == ca.cert.subject
    _refused("crl_bad_signature", _crl(ca, 1), _crl(twin, 2), ca)
    # a foreign CA: wrong issuer
    other = _ca(tmp_path / "other", "XYZ")
    _refused("crl_wrong_issuer", _crl(ca, 1), _crl(other, 2), ca)
    # the CA's name, signed by someone else's key
    _refused("crl_bad_signature", None, _crl(other, 3, issuer=ca.cert.subject), ca)


def test_stale_or_future_crl_is_refused(ca: Ca) -> None:
    stale = _crl(
        ca, 9, this_update=NOW - dt.timedelta(days=40), next_update=NOW - dt.timedelta(days=10)
    )
    err = _refused("crl_stale", _crl(ca, 1), stale, ca)
    assert "stale" in err.message
    # a valid CRL becomes stale once its nextUpdate has passed
    _refused("crl_stale", _crl(ca, 1), _crl(ca, 2), ca, now=NOW + dt.timedelta(days=31))
    future = _crl(ca, 9, this_update=NOW + dt.timedelta(hours=1), next_update=NOW + dt.timedelta(days=30))
    _refused("crl_not_yet_valid", _crl(ca, 1), future, ca)
    # within the clock-skew margin (5 minutes) it is accepted
    near = _crl(ca, 9, this_update=NOW + dt.timedelta(minutes=2))
    assert accept_crl(_crl(ca, 1), near, ca.pem, NOW).updated


def test_garbage_is_refused_with_a_clear_error(ca: Ca) -> None:
    pem_junk = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    for junk in (b"hello", b"\x30\x03\x02\x01\x00", pem_junk):
        err = _refused("crl_malformed", _crl(ca, 1), junk, ca)
        assert err.message == "not an X.509 CRL (neither PEM nor DER)"
    assert _refused("crl_empty", _crl(ca, 1), b"", ca).message == "the CRL is empty"
    _refused("crl_too_large", None, b"0" * (MAX_CRL_BYTES + 1), ca)
    # a certificate is not a CRL
    _refused("crl_malformed", None, ca.pem, ca)
    # a CA-signed CRL without a number cannot be ordered against the installed one
    _refused("crl_no_number", _crl(ca, 1), _crl(ca, None), ca)


def test_broken_installed_crl_does_not_block_a_valid_one(ca: Ca, tmp_path: Path) -> None:
    assert accept_crl(b"garbage", _crl(ca, 3), ca.pem, NOW).previous_number is None
    foreign = _ca(tmp_path / "foreign", "FED")
    # an installed CRL that is not the CA's (its high number is not trusted) is replaced by a valid one
    decision = accept_crl(_crl(foreign, 1000), _crl(ca, 3), ca.pem, NOW)
    assert decision.updated and decision.previous_number is None


def test_sync_crl_file_replaces_atomically_and_refusals_leave_the_file(ca: Ca, tmp_path: Path) -> None:
    path = tmp_path / "tls" / "crl.pem"
    path.parent.mkdir()
    path.write_bytes(_crl(ca, 1))
    os.chmod(path, 0o640)
    before = os.stat(path)
    decision = sync_crl_file(path, _crl(ca, 2, revoked=(4242,)), ca.pem)
    assert decision.updated
    after = os.stat(path)
    assert after.st_ino != before.st_ino  # replaced (os.replace), not rewritten in place
    assert stat.S_IMODE(after.st_mode) == 0o640  # the operator's mode is kept
    assert load_crl(path, ca_pem=ca.pem).is_revoked(4242)
    assert [p.name for p in path.parent.iterdir()] == ["crl.pem"]  # no temp file left behind
    content = path.read_bytes()
    with pytest.raises(CrlRefused):
        sync_crl_file(path, _crl(ca, 1), ca.pem)
    assert path.read_bytes() == content and os.stat(path).st_ino == after.st_ino
    assert sync_crl_file(path, content, ca.pem).action == "unchanged"
    assert os.stat(path).st_ino == after.st_ino  # unchanged: not rewritten
    # a missing file counts as no installed CRL
    fresh = tmp_path / "fresh.pem"
    assert sync_crl_file(fresh, _crl(ca, 5), ca.pem).updated and fresh.exists()


def test_syncer_logs_updates_and_refusals_and_never_raises(
    ca: Ca, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "crl.pem"
    path.write_bytes(_crl(ca, 1))
    offered: list[bytes] = [_crl(ca, 2), _crl(ca, 1), b"junk"]

    def fetch() -> bytes:
        if not offered:
            raise Unavailable("coordinator unreachable", reason="unavailable")
        return offered.pop(0)

    syncer = CrlSyncer(fetch, path, ca.pem, interval=3600)
    with caplog.at_level(logging.INFO, logger="fedcheck.trust.crlsync"):
        assert syncer.run_once() is not None  # update to 2
        assert syncer.run_once() is None  # rollback refused
        assert syncer.run_once() is None  # garbage refused
        assert syncer.run_once() is None  # transport error
    assert syncer.outcomes == ["update", "refused", "refused", "error"]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "number 2 (was 1)" in infos[0].getMessage()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [getattr(r, "reason", None) for r in warnings] == ["crl_rollback", "crl_malformed", "unavailable"]
    assert "reason=crl_rollback" in warnings[0].getMessage()
    assert load_crl(path).serials == frozenset()  # number 2 installed, nothing else

    def boom() -> bytes:
        raise RuntimeError("unexpected")

    assert CrlSyncer(boom, path, ca.pem, interval=1).run_once() is None  # an unexpected error is contained


def test_syncer_thread_syncs_periodically_and_stops(ca: Ca, tmp_path: Path) -> None:
    path = tmp_path / "crl.pem"
    path.write_bytes(_crl(ca, 1))
    numbers = iter(range(2, 1000))
    closed: list[bool] = []
    syncer = CrlSyncer(
        lambda: _crl(ca, next(numbers)), path, ca.pem, interval=0.05, initial_delay=0,
        on_stop=lambda: closed.append(True),
    )
    syncer.start()
    deadline = time.monotonic() + 10
    while syncer.outcomes.count("update") < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    syncer.stop()
    assert syncer.outcomes.count("update") >= 3 and closed == [True]
    done = len(syncer.outcomes)
    time.sleep(0.2)
    assert len(syncer.outcomes) == done  # stopped


def test_coordinator_crl_file_is_reread_when_it_changes(ca: Ca, tmp_path: Path) -> None:
    path = tmp_path / "crl.pem"
    path.write_bytes(_crl(ca, 1))
    source = CrlFile(path)
    assert source.current_crl() == path.read_bytes()
    tmp = tmp_path / "new.pem"
    tmp.write_bytes(_crl(ca, 2))
    os.replace(tmp, path)
    assert x509.load_pem_x509_crl(source.current_crl()).extensions.get_extension_for_class(
        x509.CRLNumber
    ).value.crl_number == 2
    path.unlink()
    with pytest.raises(Unavailable) as exc:
        source.current_crl()
    assert exc.value.reason == "crl_unreadable"


# -- config --------------------------------------------------------------------------------------------------


def _node_toml(tmp_path: Path, tls_extra: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nstate = "FRA"\nkek = "env:X"\n\n[tls]\ncert = "c.pem"\nkey = "k.pem"\nca = "ca.pem"\n'
        f'crl = "crl.pem"\n{tls_extra}\n'
    )
    return path


def test_crl_sync_seconds_config(tmp_path: Path) -> None:
    assert load_node_config(_node_toml(tmp_path, "")).crl_sync_seconds == 300
    assert load_node_config(_node_toml(tmp_path, "crl_sync_seconds = 0")).crl_sync_seconds == 0
    assert load_node_config(_node_toml(tmp_path, "crl_sync_seconds = 60")).crl_sync_seconds == 60
    assert load_node_config(_node_toml(tmp_path, "crl_sync_seconds = 2.5")).crl_sync_seconds == 2.5
    for bad in ("-1", "0.5", "1e9", '"300"', "true"):
        with pytest.raises(ConfigError) as exc:
            load_node_config(_node_toml(tmp_path, f"crl_sync_seconds = {bad}"))
        assert "tls.crl_sync_seconds" in exc.value.message
    with pytest.raises(ConfigError) as exc:
        load_node_config(_node_toml(tmp_path, "crl_sync_second = 60"))
    assert exc.value.reason == "config_unknown_key"
    assert "did you mean tls.crl_sync_seconds?" in exc.value.message


# -- end to end: coordinator + nodes over gRPC with mutual TLS -----------------------------------------------


@dataclass
class Fed:
    root: Path
    ca_dir: Path
    ca_kek: KeyEncryptionKey
    coordinator_crl: Path
    node_crl: dict[str, Path]
    node_config: dict[str, Path]
    coordinator_port: int
    node_port: dict[str, int]
    apps: dict[str, object]

    def publish(self) -> bytes:
        """Write a new CRL at the CA and copy it to the coordinator only (what the CA operator does)."""
        path = write_crl(self.ca_dir, kek=self.ca_kek)
        data = path.read_bytes()
        tmp = self.coordinator_crl.with_name(".new")
        tmp.write_bytes(data)
        os.replace(tmp, self.coordinator_crl)
        return data


def _set_crl(config: Path, crl: Path, extra: str = "") -> None:
    lines = []
    for line in config.read_text().splitlines():
        if line.startswith("crl = "):
            line = f'crl = "{crl}"' + (f"\n{extra}" if extra else "")
        lines.append(line)
    config.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    """A coordinator (FED) and two nodes in-process: FRA with sync off (tests call it), KEN syncing every
    second. Each has its own copy of the CRL, so only a sync can bring it a new one."""
    from fedcheck.coordinator.app import CoordinatorApp
    from fedcheck.coordinator.config import load_coordinator_config
    from fedcheck.node.app import NodeApp
    from fedcheck.node.devfed import write_federation

    root = tmp_path_factory.mktemp("crlfed")
    dev = write_federation(root, ("FRA", "KEN"), metrics=False)
    ca_crl = dev.ca_dir / "crl.pem"
    coordinator_crl = root / "coordinator" / "crl.pem"
    shutil.copy(ca_crl, coordinator_crl)
    _set_crl(dev.coordinator_config, coordinator_crl)
    node_crl = {}
    for state, interval in (("FRA", 0), ("KEN", 1)):
        node_crl[state] = root / state / "crl.pem"
        shutil.copy(ca_crl, node_crl[state])
        _set_crl(dev.node_configs[state], node_crl[state], f"crl_sync_seconds = {interval}")
    apps: dict[str, object] = {}
    try:
        coordinator = CoordinatorApp(load_coordinator_config(dev.coordinator_config))
        apps["coordinator"] = coordinator
        coordinator.start()
        for state in ("FRA", "KEN"):
            node = NodeApp(load_node_config(dev.node_configs[state]))
            apps[state] = node
            node.start()
        yield Fed(
            root, dev.ca_dir, load_kek(f"file:{root / 'pki' / 'ca.kek'}"), coordinator_crl, node_crl,
            dict(dev.node_configs), dev.coordinator_port, dict(dev.node_ports), apps,
        )
    finally:
        for app in reversed(list(apps.values())):
            app.stop()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Client:
    cert: bytes
    key: bytes
    ca: bytes
    serial: int


def _client(fed: Fed, name: str, role: str = "node", state: str = "DEU") -> Client:
    files = issue_certificate(fed.ca_dir, fed.root / name, role=role, state=state, ca_kek=fed.ca_kek)
    cert = files.cert.read_bytes()
    key = load_private_key_pem(files.key, None)
    return Client(cert, key, files.ca.read_bytes(), identity_from_cert(cert).serial)


def _channel(port: int, client: Client) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=client.ca, private_key=client.key, certificate_chain=client.cert
    )
    return grpc.secure_channel(f"localhost:{port}", creds)


def _node_info_code(fed: Fed, state: str, client: Client) -> grpc.StatusCode:
    """Status of GetNodeInfo from ``client`` to the node (OK, or why it refused)."""
    with _channel(fed.node_port[state], client) as channel:
        try:
            ngrpc.NodeStub(channel).GetNodeInfo(pb.NodeInfoRequest(header=serde.header()), timeout=10)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _get_crl(fed: Fed, client: Client) -> bytes:
    with _channel(fed.coordinator_port, client) as channel:
        reply = cgrpc.CoordinatorStub(channel).GetCrl(cpb.GetCrlRequest(header=serde.header()), timeout=10)
    return bytes(reply.crl)


def _wait_serving(fed: Fed, state: str, client: Client) -> None:
    deadline = time.monotonic() + 60
    while _node_info_code(fed, state, client) == grpc.StatusCode.FAILED_PRECONDITION:  # no epoch yet
        assert time.monotonic() < deadline, "node never served"
        time.sleep(0.2)


def test_revocation_reaches_the_node_through_the_coordinator(fed: Fed) -> None:
    from fedcheck.node.app import crl_syncer

    victim = _client(fed, "victim")
    _wait_serving(fed, "FRA", victim)
    assert _node_info_code(fed, "FRA", victim) == grpc.StatusCode.OK
    # any authenticated member may fetch the coordinator's CRL: exactly its file's bytes
    assert _get_crl(fed, victim) == fed.coordinator_crl.read_bytes()

    # the CA revokes the certificate; only the coordinator's CRL file is updated
    revoke(fed.ca_dir, victim.serial, reason="keyCompromise")
    published = fed.publish()
    node_before = fed.node_crl["FRA"].read_bytes()
    assert node_before != published
    # the node does not know yet: the revoked certificate still gets in (what CRL distribution closes)
    assert _node_info_code(fed, "FRA", victim) == grpc.StatusCode.OK
    # ... while the coordinator (which reads its own file) refuses it already, GetCrl included
    with pytest.raises(grpc.RpcError) as err:
        _get_crl(fed, victim)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # one sync, as the node's background thread does it (here called directly)
    cfg = dataclasses.replace(load_node_config(fed.node_config["FRA"]), crl_sync_seconds=3600)
    app = fed.apps["FRA"]
    syncer = crl_syncer(cfg, app.tls)  # type: ignore[attr-defined]
    assert syncer is not None
    try:
        decision = syncer.run_once()
    finally:
        syncer.stop()
    assert decision is not None and decision.updated
    assert fed.node_crl["FRA"].read_bytes() == published  # PEM, exactly what the CA wrote
    assert load_crl(fed.node_crl["FRA"]).is_revoked(victim.serial)
    # the node re-reads its CRL file: the revoked certificate is now refused by the node
    assert _node_info_code(fed, "FRA", victim) == grpc.StatusCode.UNAUTHENTICATED
    # an unrevoked member still gets in
    assert _node_info_code(fed, "FRA", _client(fed, "bystander", state="NLD")) == grpc.StatusCode.OK


def test_background_sync_installs_the_new_crl(fed: Fed) -> None:
    """KEN syncs every second from NodeApp.start(): a revocation published to the coordinator reaches it."""
    victim = _client(fed, "victim2", state="BEL")
    _wait_serving(fed, "KEN", victim)
    assert _node_info_code(fed, "KEN", victim) == grpc.StatusCode.OK
    revoke(fed.ca_dir, victim.serial)
    published = fed.publish()
    deadline = time.monotonic() + 20
    while fed.node_crl["KEN"].read_bytes() != published:
        assert time.monotonic() < deadline, "the node never installed the coordinator's CRL"
        time.sleep(0.1)
    assert _node_info_code(fed, "KEN", victim) == grpc.StatusCode.UNAUTHENTICATED
    app = fed.apps["KEN"]
    assert app.crl_sync is not None and "update" in app.crl_sync.outcomes  # type: ignore[attr-defined]


def test_coordinator_cannot_roll_a_node_back(fed: Fed, caplog: pytest.LogCaptureFixture) -> None:
    from fedcheck.node.app import crl_syncer

    fed.publish()
    cfg = dataclasses.replace(load_node_config(fed.node_config["FRA"]), crl_sync_seconds=3600)
    syncer = crl_syncer(cfg, fed.apps["FRA"].tls)  # type: ignore[attr-defined]
    assert syncer is not None
    try:
        assert syncer.run_once() is not None
        installed = fed.node_crl["FRA"].read_bytes()
        # a (malicious or confused) coordinator serves an older CA-signed CRL: refused, nothing written
        older = fed.root / "older.pem"
        shutil.copy(fed.coordinator_crl, older)
        fed.publish()
        newest = fed.coordinator_crl.read_bytes()
        assert syncer.run_once() is not None and fed.node_crl["FRA"].read_bytes() == newest
        os.replace(older, fed.coordinator_crl)
        with caplog.at_level(logging.WARNING, logger="fedcheck.trust.crlsync"):
            assert syncer.run_once() is None
        # (KEN's background sync logs too, from its own thread: keep FRA's lines)
        mine = [r for r in caplog.records if str(fed.node_crl["FRA"]) in r.getMessage()]
        assert [getattr(r, "reason", None) for r in mine] == ["crl_rollback"]
        assert fed.node_crl["FRA"].read_bytes() == newest != installed
        # ... or garbage: refused as well
        fed.coordinator_crl.write_bytes(b"not a crl")
        assert syncer.run_once() is None and fed.node_crl["FRA"].read_bytes() == newest
    finally:
        syncer.stop()
        fed.publish()  # leave the coordinator with a valid, newest CRL


def test_fetch_crl_cli_exit_codes(fed: Fed, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = str(fed.node_config["FRA"])
    fed.publish()
    assert main(["pki", "fetch-crl", "--config", config]) == 0
    assert "CRL updated: number" in capsys.readouterr().out
    assert main(["pki", "fetch-crl", "--config", config]) == 0
    assert "CRL unchanged: number" in capsys.readouterr().out
    # the coordinator serves an older CRL: refused, exit 1 with the reason code
    current = fed.coordinator_crl.read_bytes()
    fed.publish()
    assert main(["pki", "fetch-crl", "--config", config]) == 0
    capsys.readouterr()
    fed.coordinator_crl.write_bytes(current)
    assert main(["pki", "fetch-crl", "--config", config]) == 1
    assert "[crl_rollback]" in capsys.readouterr().err
    fed.publish()
    # the coordinator unreachable: error, exit 2
    text = Path(config).read_text()
    other = tmp_path / "node.toml"
    base = Path(config).parent
    other.write_text(
        text.replace(f"127.0.0.1:{fed.coordinator_port}", "127.0.0.1:1")
        .replace('data_dir = "data"', f'data_dir = "{base / "data"}"')
        .replace('kek = "file:kek"', f'kek = "file:{base / "kek"}"')
    )
    assert main(["pki", "fetch-crl", "--config", str(other), "--timeout", "2"]) == 2
    assert "fedcheck: error:" in capsys.readouterr().err
    # no [coordinator] address: configuration error, exit 2
    other.write_text("\n".join(ln for ln in other.read_text().splitlines() if not ln.startswith("address")))
    assert main(["pki", "fetch-crl", "--config", str(other)]) == 2
    assert "[config_coordinator]" in capsys.readouterr().err


def test_get_crl_requires_a_federation_client_certificate(fed: Fed, tmp_path: Path) -> None:
    member = _client(fed, "member", role="evaluator", state="EVA")  # any role may fetch
    assert x509.load_pem_x509_crl(_get_crl(fed, member))
    # a certificate of another CA does not get through the TLS handshake
    create_ca(tmp_path / "rogue", federation="FED")
    rogue = issue_certificate(tmp_path / "rogue", tmp_path / "r", role="node", state="FRA")
    stranger = Client(rogue.cert.read_bytes(), load_private_key_pem(rogue.key, None), member.ca, 0)
    with pytest.raises(grpc.RpcError) as err:
        _get_crl(fed, stranger)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # a missing header is refused like on every other RPC
    with _channel(fed.coordinator_port, member) as channel, pytest.raises(grpc.RpcError) as err:
        cgrpc.CoordinatorStub(channel).GetCrl(cpb.GetCrlRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_unauthenticated_is_typed_on_the_client(fed: Fed) -> None:
    """GrpcCoordinatorClient.get_crl turns a refusal into a typed error (what the syncer logs)."""
    from fedcheck.rpc.clients import GrpcCoordinatorClient, make_channel
    from fedcheck.rpc.tls import TlsIdentity

    victim = _client(fed, "victim3", state="AUT")
    revoke(fed.ca_dir, victim.serial)
    fed.publish()
    tls = TlsIdentity(victim.cert, victim.key, victim.ca)
    client = GrpcCoordinatorClient(make_channel(f"localhost:{fed.coordinator_port}", tls))
    try:
        with pytest.raises(Unauthenticated) as exc:
            client.get_crl(timeout=10)
        assert exc.value.reason == "revoked"
    finally:
        client.close()
