"""``fedcheck pki init-ca|issue|csr|sign-csr|revoke|crl|show|gen-kek|fetch-crl``: the federation PKI for
operators.

Private keys are sealed under the operator's KEK (``--kek file:PATH`` or ``--kek env:VAR``); without
``--kek`` they are written as plaintext PEM (development only, a warning is printed). In production a State
runs ``csr`` (its key stays with it) and the CA operator runs ``sign-csr`` on the CSR alone. Thin layer over
:mod:`fedcheck.trust.pki`; no key material is ever printed except by ``gen-kek`` (to a 0600 file with
``--out``).

``fetch-crl --config NODE.toml`` is the node side of CRL distribution, once: fetch the coordinator's CRL,
verify it against the federation CA (:mod:`fedcheck.trust.crlsync`) and install it when newer. Exit 0 updated
or unchanged, 1 refused (the reason code says why), 2 error (configuration, coordinator unreachable, file).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from fedcheck.errors import ConfigError, InvalidInput
from fedcheck.trust.atrest import (
    KeyEncryptionKey,
    atomic_write,
    explain_unsealing,
    generate_kek_text,
    load_kek,
)
from fedcheck.trust.pki import (  # _ca_key_path: the CA key file in use, for messages (no public name yet)
    ROLES,
    CertFiles,
    _ca_key_path,
    create_ca,
    create_csr,
    csr_fingerprint,
    identity_from_cert,
    issue_certificate,
    load_crl,
    revoke,
    rotate_certificate,
    sign_csr,
    verify_certificate,
    write_crl,
)

__all__ = ["MAX_CERT_DAYS", "MAX_CRL_DAYS", "register"]

#: longest validity ``init-ca`` / ``issue`` / ``sign-csr`` accept (leaves are also capped at the CA's expiry)
MAX_CERT_DAYS = 3650
#: longest CRL validity (``crl --days``, ``revoke --crl-days``): nodes fail closed once it is stale, so a CRL
#: must be re-issued well within a year for revocations to reach them
MAX_CRL_DAYS = 366


def _days(maximum: int) -> Callable[[str], int]:
    """argparse type: whole days in ``1..maximum`` (0 would mean "valid for the 5-minute clock-skew margin",
    a negative value a certificate that ends before it starts)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number of days, not {text!r}") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between 1 and {maximum} days, not {value}")
        return value

    parse.__name__ = "days"
    return parse


def _kek(spec: str | None) -> KeyEncryptionKey | None:
    if spec is None:
        print(
            "fedcheck: warning: no --kek given, private keys are handled unencrypted (development only)",
            file=sys.stderr,
        )
        return None
    return load_kek(spec)


def _opening_ca_key(
    ca_dir: Path, kek_option: str, other: str | None = None
) -> contextlib.AbstractContextManager[None]:
    """Errors opening the CA key name it and the option whose KEK was tried (``kek_option``); ``other`` is the
    option that gives the CA key a KEK of its own, when it was not used (``issue --ca-kek``). Without this a
    CA key sealed under another KEK is only "verification failed"."""
    return explain_unsealing(
        f"the CA key at {_ca_key_path(ca_dir)}",
        f"the KEK of {kek_option}",
        mismatch=f"it is sealed under another KEK, or the file was altered; give the CA's KEK with "
        f"{other or kek_option}",
        sealed=f"give its KEK with {f'{other} (or {kek_option})' if other else kek_option}",
        reason="ca_key_unsealable",
    )


def _serial(text: str) -> int:
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise InvalidInput(
            "serial must be a decimal or 0x-prefixed hex integer", reason="bad_serial"
        ) from None


def _init_ca(args: argparse.Namespace) -> int:
    path = create_ca(Path(args.dir), federation=args.federation, days=args.days, kek=_kek(args.kek))
    print(f"CA certificate: {path}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    kek = _kek(args.kek)
    ca_kek = load_kek(args.ca_kek) if args.ca_kek else kek
    hosts = tuple(args.host) if args.host else ("localhost", "127.0.0.1")
    opening = (
        _opening_ca_key(Path(args.ca_dir), "--ca-kek")
        if args.ca_kek
        else _opening_ca_key(Path(args.ca_dir), "--kek", other="--ca-kek")
    )
    with opening:
        files, previous = _issue_files(args, hosts, kek, ca_kek)
    if previous is not None:
        print(f"previous serial: {previous}{' (revoked, CRL rewritten)' if args.revoke_previous else ''}")
    ident = identity_from_cert(files.cert.read_bytes())
    print(f"issued {ident.name} serial {ident.serial}")
    print(f"  certificate: {files.cert}\n  private key: {files.key}\n  CA:          {files.ca}")
    return 0


def _issue_files(
    args: argparse.Namespace,
    hosts: tuple[str, ...],
    kek: KeyEncryptionKey | None,
    ca_kek: KeyEncryptionKey | None,
) -> tuple[CertFiles, int | None]:
    if args.rotate:
        return rotate_certificate(
            Path(args.ca_dir),
            Path(args.out),
            role=args.role,
            state=args.state,
            hosts=hosts,
            days=args.days,
            kek=kek,
            ca_kek=ca_kek,
            revoke_previous=args.revoke_previous,
        )
    files = issue_certificate(
        Path(args.ca_dir),
        Path(args.out),
        role=args.role,
        state=args.state,
        hosts=hosts,
        days=args.days,
        kek=kek,
        ca_kek=ca_kek,
    )
    return files, None


def _csr(args: argparse.Namespace) -> int:
    hosts = tuple(args.host) if args.host else ("localhost", "127.0.0.1")
    files = create_csr(Path(args.out), role=args.role, state=args.state, hosts=hosts, kek=_kek(args.kek))
    print(f"CSR for {args.role}.{args.state}: {files.csr} (send this file to the CA operator)")
    print(f"  private key: {files.key} (stays here)")
    print(f"  key fingerprint (SHA-256): {csr_fingerprint(files.csr.read_bytes())}")
    return 0


def _sign_csr(args: argparse.Namespace) -> int:
    try:
        csr_pem = Path(args.csr).read_bytes()
    except OSError:
        raise ConfigError("CSR file missing or unreadable", reason="csr_unreadable") from None
    ca_kek = _kek(args.ca_kek)
    with _opening_ca_key(Path(args.ca_dir), "--ca-kek"):
        path = sign_csr(Path(args.ca_dir), csr_pem, Path(args.out), days=args.days, ca_kek=ca_kek)
    ident = identity_from_cert(path.read_bytes())
    print(f"issued {ident.name} serial {ident.serial} from CSR")
    print(f"  key fingerprint (SHA-256): {csr_fingerprint(csr_pem)} (confirm with the State out of band)")
    print(f"  certificate: {path}\n  CA:          {path.parent / 'ca.crt.pem'}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    serial = _serial(args.serial)
    revoke(Path(args.ca_dir), serial, reason=args.reason)
    print(f"revoked serial {serial}")
    if not args.no_crl:
        kek = _kek(args.kek)
        with _opening_ca_key(Path(args.ca_dir), "--kek"):
            path = write_crl(Path(args.ca_dir), days=args.crl_days, kek=kek)
        print(f"CRL written: {path} (publish it to the coordinator's [tls] crl; nodes fetch it from there)")
    return 0


def _crl(args: argparse.Namespace) -> int:
    kek = _kek(args.kek)
    with _opening_ca_key(Path(args.ca_dir), "--kek"):
        path = write_crl(Path(args.ca_dir), days=args.days, kek=kek)
    crl = load_crl(path)
    print(f"CRL written: {path} ({len(crl.serials)} revoked, next update {crl.next_update})")
    return 0


def _show(args: argparse.Namespace) -> int:
    pem = Path(args.cert).read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    print(f"subject:    {cert.subject.rfc4514_string()}")
    print(f"issuer:     {cert.issuer.rfc4514_string()}")
    print(f"serial:     {cert.serial_number}")
    print(f"valid:      {cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()}")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        hosts += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        print(f"hosts:      {', '.join(hosts)}")
    except x509.ExtensionNotFound:
        pass
    try:
        print(f"identity:   {identity_from_cert(pem).name}")
    except Exception:
        print("identity:   (none: not a federation leaf certificate)")
    if args.ca:
        crl = load_crl(Path(args.crl), ca_pem=Path(args.ca).read_bytes()) if args.crl else None
        ident = verify_certificate(pem, Path(args.ca).read_bytes(), crl, now=dt.datetime.now(dt.UTC))
        print(f"verified:   OK against the CA{' and CRL' if crl else ''} ({ident.name})")
    return 0


def _gen_kek(args: argparse.Namespace) -> int:
    text = generate_kek_text()
    if args.out:
        atomic_write(Path(args.out), (text + "\n").encode("ascii"), mode=0o600)
        print(f"KEK written to {args.out} (mode 0600); use --kek file:{args.out}")
    else:
        print(text)
    return 0


def _fetch_crl(args: argparse.Namespace) -> int:
    from fedcheck.node.app import fetch_crl_once
    from fedcheck.node.config import load_node_config
    from fedcheck.trust.crlsync import CrlRefused

    cfg = load_node_config(args.config)
    try:
        decision = fetch_crl_once(cfg, timeout=args.timeout)
    except CrlRefused as exc:
        print(f"fedcheck: CRL from the coordinator refused: {exc.message} [{exc.reason}]", file=sys.stderr)
        return 1
    assert cfg.tls is not None
    if decision.updated:
        was = "none" if decision.previous_number is None else decision.previous_number
        nxt = f"{decision.next_update:%Y-%m-%d %H:%M:%S} UTC" if decision.next_update else "-"
        print(
            f"CRL updated: number {decision.number} (was {was}), {decision.revoked} revoked,"
            f" next update {nxt} -> {cfg.tls.crl}"
        )
    else:
        print(f"CRL unchanged: number {decision.number} ({cfg.tls.crl})")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "pki", help="federation CA: init-ca, issue, csr, sign-csr, revoke, crl, show, gen-kek, fetch-crl"
    )
    pki = parser.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    kek_help = "operator KEK sealing private keys: file:PATH or env:VAR"

    p = pki.add_parser("init-ca", help="create the federation CA")
    p.add_argument("--dir", required=True, help="CA directory (created)")
    p.add_argument("--federation", required=True, help="federation code, e.g. FED")
    p.add_argument("--days", type=_days(MAX_CERT_DAYS), default=3650, help=f"validity, 1..{MAX_CERT_DAYS}")
    p.add_argument("--kek", help=kek_help)
    p.set_defaults(func=_init_ca)

    p = pki.add_parser("issue", help="issue (or --rotate) a node/coordinator/evaluator certificate")
    p.add_argument("--ca-dir", required=True)
    p.add_argument("--out", required=True, help="output directory for <role>.<STATE>.crt.pem / .key*")
    p.add_argument("--role", required=True, choices=sorted(ROLES))
    p.add_argument("--state", required=True, help="State code, e.g. FRA")
    p.add_argument("--host", action="append", help="SAN host (repeatable; default localhost and 127.0.0.1)")
    p.add_argument(
        "--days", type=_days(MAX_CERT_DAYS), default=365,
        help=f"validity, 1..{MAX_CERT_DAYS} (capped at the CA's expiry)",
    )
    p.add_argument("--kek", help=kek_help + " (for the new key)")
    p.add_argument("--ca-kek", help="KEK of the CA key if different from --kek")
    p.add_argument(
        "--rotate", action="store_true", help="archive the current certificate and issue a new key"
    )
    p.add_argument("--revoke-previous", action="store_true", help="with --rotate: revoke the old certificate")
    p.set_defaults(func=_issue)

    p = pki.add_parser("csr", help="State side: generate a key locally and a CSR for the CA (recommended)")
    p.add_argument("--out", required=True, help="output directory for <role>.<STATE>.csr.pem / .key*")
    p.add_argument("--role", required=True, choices=sorted(ROLES))
    p.add_argument("--state", required=True, help="State code, e.g. FRA")
    p.add_argument(
        "--host",
        "--hosts",
        dest="host",
        action="extend",
        nargs="+",
        help="SAN host(s) (repeatable; default localhost and 127.0.0.1)",
    )
    p.add_argument("--kek", help="the State's own KEK sealing the new key: file:PATH or env:VAR")
    p.set_defaults(func=_csr)

    p = pki.add_parser("sign-csr", help="CA side: check a State's CSR and issue its certificate")
    p.add_argument("--ca", "--ca-dir", dest="ca_dir", required=True, help="CA directory")
    p.add_argument("--csr", required=True, help="the State's <role>.<STATE>.csr.pem")
    p.add_argument("--out", required=True, help="output directory for <role>.<STATE>.crt.pem and ca.crt.pem")
    p.add_argument(
        "--days", type=_days(MAX_CERT_DAYS), default=365,
        help=f"validity, 1..{MAX_CERT_DAYS} (capped at the CA's expiry)",
    )
    p.add_argument("--ca-kek", help="KEK of the CA key: file:PATH or env:VAR")
    p.set_defaults(func=_sign_csr)

    p = pki.add_parser("revoke", help="revoke a certificate by serial and rewrite the CRL")
    p.add_argument("--ca-dir", required=True)
    p.add_argument("--serial", required=True, help="decimal or 0x-hex serial (see 'pki show')")
    p.add_argument("--reason", default="unspecified")
    p.add_argument("--no-crl", action="store_true", help="record only; do not rewrite crl.pem")
    p.add_argument(
        "--crl-days", type=_days(MAX_CRL_DAYS), default=30, help=f"CRL validity, 1..{MAX_CRL_DAYS}"
    )
    p.add_argument("--kek", help="KEK of the CA key")
    p.set_defaults(func=_revoke)

    p = pki.add_parser("crl", help="(re)write the signed revocation list ca_dir/crl.pem")
    p.add_argument("--ca-dir", required=True)
    p.add_argument(
        "--days", type=_days(MAX_CRL_DAYS), default=30,
        help=f"validity, 1..{MAX_CRL_DAYS}; nodes fail closed on a stale CRL",
    )
    p.add_argument("--kek", help="KEK of the CA key")
    p.set_defaults(func=_crl)

    p = pki.add_parser("show", help="print a certificate; with --ca (and --crl) verify it")
    p.add_argument("cert")
    p.add_argument("--ca")
    p.add_argument("--crl")
    p.set_defaults(func=_show)

    p = pki.add_parser(
        "fetch-crl",
        help="node side: fetch the coordinator's CRL, verify it against the CA, install it when newer",
    )
    p.add_argument("--config", required=True, help="the node's node.toml ([coordinator] address, [tls] crl)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the coordinator")
    p.set_defaults(func=_fetch_crl)

    p = pki.add_parser("gen-kek", help="generate an operator key-encryption key (32 random bytes, hex)")
    p.add_argument("--out", help="write to this file with mode 0600 instead of stdout")
    p.set_defaults(func=_gen_kek)
