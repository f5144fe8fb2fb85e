"""Shared fixtures: a real development federation (PKI, node and coordinator processes on loopback ports).

Processes are started once per test module (module-scoped fixtures) to keep the suite fast on 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# CI machines are slower and shared: property tests must not fail on wall-clock deadlines.
settings.register_profile("fedcheck", deadline=None)
settings.load_profile("fedcheck")


@dataclass
class Federation:
    """A started federation; ``procs`` maps "FRA"/"KEN"/"UNX"/"coordinator" to running processes."""

    fed: object  # fedcheck.node.devfed.DevFederation
    root: Path
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    watchlists: dict[str, list[object]] = field(default_factory=dict)
    manifest: list[object] = field(default_factory=list)

    def start(self, name: str) -> None:
        from fedcheck.node.devfed import DevFederation

        fed = self.fed
        assert isinstance(fed, DevFederation)
        if name == "coordinator":
            args = ["coordinator", "serve", "--config", str(fed.coordinator_config)]
        else:
            args = ["node", "serve", "--config", str(fed.node_configs[name])]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        err = open(self.root / f"{name}.stderr", "a")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "fedcheck", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=str(self.root),
        )

    def wait_serving(self, name: str, timeout: float = 60.0) -> None:
        from fedcheck.node.devfed import DevFederation

        fed = self.fed
        assert isinstance(fed, DevFederation)
        port = fed.coordinator_port if name == "coordinator" else fed.node_ports[name]
        wait_health(port, self.tls(), timeout)

    def tls(self, state: str = "FRA") -> object:
        from fedcheck.node.app import load_tls
        from fedcheck.node.config import load_node_config
        from fedcheck.node.devfed import DevFederation
        from fedcheck.trust.atrest import load_kek

        fed = self.fed
        assert isinstance(fed, DevFederation)
        cfg = load_node_config(fed.node_configs[state])
        return load_tls(cfg, load_kek(cfg.kek))

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)


def wait_health(port: int, tls: object, timeout: float = 60.0) -> None:
    from fedcheck.rpc.health import wait_serving
    from fedcheck.rpc.tls import TlsIdentity

    assert isinstance(tls, TlsIdentity)
    wait_serving(f"127.0.0.1:{port}", tls, timeout=timeout)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """FRA, KEN, UNX nodes with demo watchlists and a coordinator, all real processes with mutual TLS."""
    from fedcheck.demo.data import make_demo_data
    from fedcheck.node.app import open_store
    from fedcheck.node.config import load_node_config
    from fedcheck.node.devfed import write_federation

    root = tmp_path_factory.mktemp("federation")
    fed = write_federation(root, ("FRA", "KEN", "UNX"), budget_per_epoch=50_000)
    data = make_demo_data(travellers=120)
    for state, records in data.watchlists.items():
        store = open_store(load_node_config(fed.node_configs[state]))
        store.replace_list(records)
        store.close()
    f = Federation(fed, root, watchlists=dict(data.watchlists), manifest=list(data.manifest))
    try:
        for name in ("FRA", "KEN", "UNX", "coordinator"):
            f.start(name)
        for name in ("FRA", "KEN", "UNX", "coordinator"):
            f.wait_serving(name)
        yield f
    finally:
        for name in list(f.procs):
            f.stop(name)
