"""``fedcheck pki`` and ``fedcheck audit`` end to end through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcheck.cli.main import main
from fedcheck.trust.audit import AuditLog, load_signing_key


def test_pki_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kek = tmp_path / "kek"
    assert main(["pki", "gen-kek", "--out", str(kek)]) == 0
    spec = f"file:{kek}"
    ca = tmp_path / "ca"
    assert main(["pki", "init-ca", "--dir", str(ca), "--federation", "FED", "--kek", spec]) == 0
    out = tmp_path / "fra"
    args = [
        "pki",
        "issue",
        "--ca-dir",
        str(ca),
        "--out",
        str(out),
        "--role",
        "node",
        "--state",
        "FRA",
        "--kek",
        spec,
    ]
    assert main(args) == 0
    assert main(["pki", "crl", "--ca-dir", str(ca), "--kek", spec]) == 0
    cert = out / "node.FRA.crt.pem"
    crl = ca / "crl.pem"
    capsys.readouterr()
    assert main(["pki", "show", str(cert), "--ca", str(ca / "ca.crt.pem"), "--crl", str(crl)]) == 0
    shown = capsys.readouterr().out
    assert "node.FRA" in shown and "verified:   OK" in shown
    serial = next(line.split()[-1] for line in shown.splitlines() if line.startswith("serial:"))
    assert main([*args, "--rotate"]) == 0
    assert main(["pki", "revoke", "--ca-dir", str(ca), "--serial", serial, "--kek", spec]) == 0
    old = out / f"node.FRA.crt.pem.{serial}"
    assert main(["pki", "show", str(old), "--ca", str(ca / "ca.crt.pem"), "--crl", str(crl)]) == 2
    assert "revoked" in capsys.readouterr().err
    assert main(["pki", "revoke", "--ca-dir", str(ca), "--serial", "zz", "--kek", spec]) == 2
    # wrong KEK for the CA key: opaque failure, non-zero exit
    other = tmp_path / "other"
    assert main(["pki", "gen-kek", "--out", str(other)]) == 0
    assert main(["pki", "crl", "--ca-dir", str(ca), "--kek", f"file:{other}"]) == 2


def test_audit_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_path = tmp_path / "audit.key"
    assert main(["audit", "keygen", "--out", str(key_path)]) == 0
    pub = f"{key_path}.pub.pem"
    log = tmp_path / "audit.jsonl"
    with AuditLog(log, load_signing_key(key_path, None)) as alog:
        alog.append({"type": "request", "partner": "DEU", "purpose": "border_control", "outcome": "ok"})
        alog.append(
            {
                "type": "request",
                "partner": "XXA",
                "purpose": "border_control",
                "outcome": "refused",
                "status": "RESOURCE_EXHAUSTED",
                "reason": "epoch_budget_exhausted",
            }
        )
        anchor = alog.head
    capsys.readouterr()
    assert main(["audit", "verify", "--log", str(log), "--public-key", pub]) == 0
    assert "OK: 2 entries" in capsys.readouterr().out
    assert (
        main(
            [
                "audit",
                "verify",
                "--log",
                str(log),
                "--public-key",
                pub,
                "--expected-head",
                f"{anchor[0]}:{anchor[1]}",
            ]
        )
        == 0
    )
    assert (
        main(["audit", "export", "--log", str(log), "--public-key", pub, "--out", str(tmp_path / "r.json")])
        == 0
    )
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["outcome"] == {"ok": 1, "refused": 1}
    capsys.readouterr()
    assert main(["audit", "refusals", "--log", str(log)]) == 0
    assert "XXA" in capsys.readouterr().out
    assert main(["audit", "tail", "--log", str(log), "-n", "1"]) == 0
    assert '"seq": 2' in capsys.readouterr().out
    log.write_bytes(log.read_bytes().replace(b"XXA", b"XXB"))
    assert main(["audit", "verify", "--log", str(log), "--public-key", pub]) == 1
    assert "FAILED" in capsys.readouterr().err
    assert main(["audit", "verify", "--log", str(log), "--public-key", pub, "--expected-head", "bad"]) == 2
