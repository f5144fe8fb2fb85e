"""Coordinator operations: KEK rotation of its sealed TLS and audit keys, configuration limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedcheck.cli.main import main as cli
from fedcheck.coordinator.app import CoordinatorApp
from fedcheck.coordinator.config import load_coordinator_config
from fedcheck.errors import VerificationError
from fedcheck.node.devfed import write_federation
from fedcheck.trust.atrest import generate_kek_text


def _new_kek(path: Path) -> str:
    path.write_text(generate_kek_text())
    path.chmod(0o600)
    return f"file:{path}"


def test_coordinator_starts_with_new_kek_only(tmp_path: Path) -> None:
    fed = write_federation(tmp_path / "fed", ("FRA", "KEN"), metrics=False)
    config = fed.coordinator_config
    app = CoordinatorApp(load_coordinator_config(config))  # creates and seals its audit signing key
    app.audit_log.append({"type": "startup"})
    app.stop()
    spec = _new_kek(tmp_path / "new.kek")
    assert cli(["coordinator", "rotate-kek", "--config", str(config), "--new-kek", spec]) == 0
    # idempotent: an interrupted or repeated run finds everything under the new KEK already
    assert cli(["coordinator", "rotate-kek", "--config", str(config), "--new-kek", spec]) == 0
    with pytest.raises(VerificationError):  # the old KEK opens nothing any more
        CoordinatorApp(load_coordinator_config(config))
    text = config.read_text()
    config.write_text(re.sub(r'^kek = ".*"$', f'kek = "{spec}"', text, count=1, flags=re.M))
    app = CoordinatorApp(load_coordinator_config(config))
    try:
        app.audit_log.append({"type": "startup"})  # the audit key opened under the new KEK
    finally:
        app.stop()


def test_rotate_kek_refuses_while_coordinator_runs(tmp_path: Path) -> None:
    fed = write_federation(tmp_path / "fed", ("FRA", "KEN"), metrics=False)
    app = CoordinatorApp(load_coordinator_config(fed.coordinator_config))  # holds the audit-log lock
    try:
        spec = _new_kek(tmp_path / "k")
        assert cli(["coordinator", "rotate-kek", "--config", str(fed.coordinator_config),
                    "--new-kek", spec]) == 2
    finally:
        app.stop()


def test_coordinator_max_batch_is_capped(tmp_path: Path) -> None:
    from fedcheck.errors import ConfigError

    fed = write_federation(tmp_path / "fed", ("FRA", "KEN"), metrics=False)
    text = fed.coordinator_config.read_text()
    capped = text.replace("[coordinator]\n", "[coordinator]\nmax_batch = 70000\n", 1)
    fed.coordinator_config.write_text(capped)
    with pytest.raises(ConfigError, match="max_batch"):
        load_coordinator_config(fed.coordinator_config)
