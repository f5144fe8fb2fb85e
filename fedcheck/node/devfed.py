"""Generate a complete development federation: CA, certificates, KEKs and TOML configs on loopback ports.

Why: tests, the demo and a new operator's first try all need the same fiddly setup (a CA, one certificate per
node and for the coordinator, a sealed key per node under its own KEK, a CRL, matching configs). Everything is
written under one directory; nothing here is for production (the CA key sits next to the certificates).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedcheck.errors import ConfigError
from fedcheck.trust.atrest import KeyEncryptionKey, atomic_write, generate_kek_text
from fedcheck.trust.audit import generate_signing_key, save_signing_key
from fedcheck.trust.pki import CertFiles, create_ca, issue_certificate, write_crl

__all__ = ["DEMO_STATES", "DevFederation", "free_port", "prepare_secrets", "write_federation"]

#: the States of the shipped ``nodes/`` configs: holders FRA, KEN, UNX and the querying State DEU
#: (``nodes/coordinator/coordinator.toml`` names every one's audit key, so all four need secrets)
DEMO_STATES: tuple[str, ...] = ("FRA", "KEN", "UNX", "DEU")

_ALL_KEY_TYPES = '["document", "name_dob", "name_yob_nat", "phonetic_yob"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class DevFederation:
    root: Path
    coordinator_config: Path
    coordinator_port: int
    node_configs: dict[str, Path]
    node_ports: dict[str, int]
    metrics_ports: dict[str, int]
    ca_dir: Path


def _kek(path: Path) -> KeyEncryptionKey:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = generate_kek_text()
    atomic_write(path, text.encode(), mode=0o600)
    return KeyEncryptionKey.from_text(text)


def _q(p: Path) -> str:
    return '"' + str(p).replace("\\", "\\\\") + '"'


def prepare_secrets(root: Path, states: Sequence[str], *, coordinator: str = "FED") -> dict[str, CertFiles]:
    """CA, CRL, a KEK and sealed certificate per node and for the coordinator, in the layout of ``nodes/``:
    ``root/pki/ca``, ``root/pki/<STATE>/node.<STATE>.{crt.pem,key.sealed}``, ``root/<STATE>/kek``,
    ``root/coordinator/kek``, and an Ed25519 audit signing key sealed under each KEK at
    ``root/<STATE>/data/audit-signing.key`` and ``root/coordinator/data/audit-signing.key`` (public halves
    beside them as ``*.pub.pem`` for the oversight body). Returns the certificate files by State (coordinator
    under ``coordinator``).

    Refuses (``ca_exists``, naming the directory) when ``root`` already holds a development CA, before writing
    anything: a second run would otherwise replace the KEKs that seal the existing CA, TLS and audit keys and
    every node's store."""
    root = Path(root).resolve()
    ca_dir = root / "pki" / "ca"
    if (ca_dir / "ca.crt.pem").exists() or (root / "pki" / "ca.kek").exists():
        raise ConfigError(
            f"a development CA already exists in {ca_dir}: dev-secrets would replace the KEKs of its keys "
            f"and of every node's store under {root}. Use another --out directory, or delete {root} to start "
            "over",
            reason="ca_exists",
        )
    ca_kek = _kek(root / "pki" / "ca.kek")
    create_ca(ca_dir, federation=coordinator, kek=ca_kek)
    out: dict[str, CertFiles] = {}
    for state in states:
        kek = _kek(root / state / "kek")
        out[state] = issue_certificate(ca_dir, root / "pki" / state, role="node", state=state, kek=kek,
                                       ca_kek=ca_kek)
        (root / state / "data").mkdir(parents=True, exist_ok=True)
        save_signing_key(root / state / "data" / "audit-signing.key", generate_signing_key(), kek)
    ckek = _kek(root / "coordinator" / "kek")
    out["coordinator"] = issue_certificate(ca_dir, root / "pki" / coordinator, role="coordinator",
                                           state=coordinator, kek=ckek, ca_kek=ca_kek)
    (root / "coordinator" / "data").mkdir(parents=True, exist_ok=True)
    save_signing_key(root / "coordinator" / "data" / "audit-signing.key", generate_signing_key(), ckek)
    write_crl(ca_dir, kek=ca_kek)
    return out


def write_federation(
    root: Path,
    states: Sequence[str] = ("FRA", "KEN", "UNX"),
    *,
    ports: Mapping[str, int] | None = None,
    coordinator_port: int | None = None,
    metrics: bool = True,
    epoch_seconds: int = 86400,
    budget_per_epoch: int | None = None,
    extra_policy: Mapping[str, str] | None = None,
) -> DevFederation:
    """Write ``root/pki``, ``root/<STATE>/node.toml`` and ``root/coordinator/coordinator.toml`` (which names
    each holder's audit public key, so the coordinator verifies the audit heads the holders return)."""
    root = Path(root).resolve()
    ca_dir = root / "pki" / "ca"
    certs = prepare_secrets(root, states)
    node_ports = {s: (ports or {}).get(s) or free_port() for s in states}
    metrics_ports = {s: free_port() for s in states}
    cport = coordinator_port or free_port()
    node_configs: dict[str, Path] = {}
    for state in states:
        d = root / state
        d.mkdir(parents=True, exist_ok=True)
        files = certs[state]
        partners = [p for p in states if p != state]
        policy = "\n".join(
            f"[policy.holder.partners.{p}]\n"
            + (f"budget_per_epoch = {budget_per_epoch}\n" if budget_per_epoch else "")
            + (extra_policy or {}).get(f"{state}->{p}", "")
            for p in partners
        )
        metrics_t = f"[metrics]\nport = {metrics_ports[state]}\n" if metrics else ""
        text = f"""# Development node for {state} (generated by fedcheck.node.devfed)
[node]
state = "{state}"
listen = "127.0.0.1:{node_ports[state]}"
data_dir = "data"
kek = "file:kek"
epoch_seconds = {epoch_seconds}
max_batch = 4096
list_poll_seconds = 0.5
grace_seconds = 3.0

[tls]
cert = {_q(files.cert)}
key = {_q(files.key)}
ca = {_q(files.ca)}
crl = {_q(ca_dir / "crl.pem")}

{metrics_t}
[logging]
file = "node.log"

[coordinator]
address = "127.0.0.1:{cport}"

[querier]
unit = "{state}-BORDER-01"
official = "officer-0001"
purpose = "border-screening"
legal_basis = "FED-agreement-2026/art.5"
deadline_seconds = 20

[policy.holder.defaults]
modes = ["exact", "cardinality"]
key_types = {_ALL_KEY_TYPES}
label_fields = ["category", "reference", "listing_date"]
purposes = ["border-screening"]
require_legal_basis = true

{policy}
"""
        (d / "node.toml").write_text(text, encoding="utf-8")
        node_configs[state] = d / "node.toml"
    cd = root / "coordinator"
    cd.mkdir(parents=True, exist_ok=True)
    cfiles = certs["coordinator"]
    nodes_t = "\n".join(
        f'[nodes.{s}]\naddress = "127.0.0.1:{node_ports[s]}"\n'
        f"audit_public_key = {_q(root / s / 'data' / 'audit-signing.key.pub.pem')}\n"
        for s in states
    )
    (cd / "coordinator.toml").write_text(
        f"""# Development coordinator (generated by fedcheck.node.devfed)
[coordinator]
listen = "127.0.0.1:{cport}"
data_dir = "data"
kek = "file:kek"
max_deadline_seconds = 60

[tls]
cert = {_q(cfiles.cert)}
key = {_q(cfiles.key)}
ca = {_q(cfiles.ca)}
crl = {_q(ca_dir / "crl.pem")}

[logging]
file = "coordinator.log"

{nodes_t}
""",
        encoding="utf-8",
    )
    return DevFederation(
        root, cd / "coordinator.toml", cport, node_configs, node_ports, metrics_ports, ca_dir
    )
