"""Second operator walkthrough: a header-only CSV emptied a State's watchlist, KEK errors named neither
``node.kek`` nor the KEK file nor the keyring, ``audit verify --public-key`` did not say which file was wrong
or how, policy and coordinator-config typos got no "did you mean", the shipped configs' ``dev-secrets``
comment (and its default) left out DEU and a second run destroyed the KEKs of the first, ``... | head`` ended
in a ``BrokenPipeError`` traceback, and ``watchlist status`` had no ``--output json``.

Everything runs in-process through :func:`fedcheck.cli.main.main` except one closed-pipe check, which needs a
real process and a real pipe.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcheck.cli.main import EXIT_BROKEN_PIPE, main
from fedcheck.coordinator.config import load_coordinator_config
from fedcheck.errors import ConfigError
from fedcheck.node.config import load_node_config
from fedcheck.node.devfed import DEMO_STATES, DevFederation, write_federation
from fedcheck.trust.atrest import generate_kek_text
from fedcheck.trust.audit import AuditLog, generate_signing_key, load_signing_key, save_signing_key
from fedcheck.trust.policy import load_policy

REPO = Path(__file__).resolve().parents[1]

LIST_CSV = (
    "id,full_name,date_of_birth,nationality\n"
    "A1,John Smith,1980-01-01,FRA\n"
    "A2,Jane Doe,1970-02-02,FRA\n"
    "A3,Bob Roe,1960-03-03,KEN\n"
)


def _err_line(text: str) -> str:
    """The CLI's one-line error (no traceback)."""
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("fedcheck: error:")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> DevFederation:
    return write_federation(tmp_path_factory.mktemp("walk2"), ("FRA",), metrics=False)


@pytest.fixture()
def node(fed: DevFederation, tmp_path: Path) -> Iterator[Path]:
    """FRA's config with a fresh store holding LIST_CSV (3 records, source ``default``)."""
    text = fed.node_configs["FRA"].read_text(encoding="utf-8")
    kek = fed.root / "FRA" / "kek"
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        text.replace('data_dir = "data"', f'data_dir = "{tmp_path / "data"}"').replace(
            'kek = "file:kek"', f'kek = "file:{kek}"'
        ),
        encoding="utf-8",
    )
    lst = tmp_path / "list.csv"
    lst.write_text(LIST_CSV, encoding="utf-8")
    assert main(["watchlist", "import", "--config", str(cfg), str(lst)]) == 0
    yield cfg


def _status(cfg: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["watchlist", "status", "--config", str(cfg)]) == 0
    return dict(json.loads(capsys.readouterr().out))


# -- 1. an import that reads no record does not empty a non-empty source ------------------------------------


def test_header_only_import_keeps_the_list(node: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "export.csv"
    empty.write_text("id,full_name\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["watchlist", "import", "--config", str(node), str(empty)]) == 2
    err = _err_line(capsys.readouterr().err)
    assert err.endswith("[empty_import]"), err
    assert "NOT replaced" in err and "--allow-empty" in err and "3 records" in err and "'default'" in err
    assert _status(node, capsys)["records"] == 3

    # JSON report: not replaced, and why (for scripts)
    assert main(["watchlist", "import", "--config", str(node), str(empty), "--output", "json"]) == 2
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["replaced"] is False and doc["read"] == 0 and doc["held"] == 3
    assert "[empty_import]" in out.err

    # every row rejected, rejections allowed: still no record, still refused
    bad = tmp_path / "bad.csv"
    bad.write_text("id,full_name\nB1,\nB2,\n", encoding="utf-8")
    assert main(["watchlist", "import", "--config", str(node), str(bad), "--allow-rejected"]) == 2
    err = _err_line(capsys.readouterr().err)
    assert "2 rows, all rejected" in err and "[empty_import]" in err
    assert _status(node, capsys)["records"] == 3

    # nothing into an empty (new) source is no loss: allowed
    assert main(["watchlist", "import", "--config", str(node), str(empty), "--source", "other"]) == 0
    assert "read 0" in capsys.readouterr().out

    # deliberately: --allow-empty empties it
    assert main(["watchlist", "import", "--config", str(node), str(empty), "--allow-empty"]) == 0
    assert "removed 3" in capsys.readouterr().out
    assert _status(node, capsys)["records"] == 0


# -- 2. KEK errors name node.kek, the config file, the KEK file/variable and the keyring --------------------


def _with_kek(cfg: Path, spec: str, tmp_path: Path, name: str) -> Path:
    text = cfg.read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    out = tmp_path / name
    text = text.replace(f'kek = "{doc["node"]["kek"]}"', f"kek = {json.dumps(spec)}")
    out.write_text(text, encoding="utf-8")
    return out


def test_wrong_kek_names_setting_config_kek_file_and_keyring(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.kek"
    other.write_text(generate_kek_text())
    other.chmod(0o600)
    cfg = _with_kek(node, f"file:{other}", tmp_path, "wrong.toml")
    keyring = tmp_path / "data" / "keyring.json"
    lst = tmp_path / "list.csv"
    for argv in (["watchlist", "status", "--config", str(cfg)],
                 ["watchlist", "import", "--config", str(cfg), str(lst)]):
        capsys.readouterr()
        assert main(argv) == 2
        err = _err_line(capsys.readouterr().err)
        assert err.endswith("[keyring_unsealable]"), err
        for needle in ("node.kek", str(cfg), str(other), f"store keyring {keyring}", "rotate-kek",
                       "must name the new KEK"):
            assert needle in err, (needle, err)
        assert "verification failed" not in err


def test_bad_kek_values_name_setting_config_and_source(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = tmp_path / "garbage.kek"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    real_key = generate_kek_text()
    monkeypatch.setenv("WALK2_KEK", "short")
    cases = [
        (f"file:{garbage}", "garbage.toml", "bad_kek", [f"KEK file {garbage}", "node.kek", "64 hex digits"]),
        ("env:WALK2_KEK", "env.toml", "bad_kek", ["KEK environment variable WALK2_KEK", "node.kek"]),
        ("env:WALK2_UNSET", "unset.toml", "bad_kek_spec", ["WALK2_UNSET", "node.kek", "not set"]),
        (f"file:{tmp_path / 'nope.kek'}", "missing.toml", "bad_kek_spec", [str(tmp_path / "nope.kek"),
                                                                            "missing or unreadable"]),
        ("var/FRA/kek", "noscheme.toml", "bad_kek_spec", ["node.kek", "'file:PATH' or 'env:VAR'",
                                                          "no 'file:' or 'env:' prefix"]),
        (real_key, "inline.toml", "bad_kek_spec", ["node.kek", "looks like the key itself"]),
    ]
    for spec, name, reason, needles in cases:
        cfg = _with_kek(node, spec, tmp_path, name)
        capsys.readouterr()
        assert main(["watchlist", "status", "--config", str(cfg)]) == 2, name
        err = _err_line(capsys.readouterr().err)
        assert err.endswith(f"[{reason}]"), err
        for needle in (*needles, str(cfg)):
            assert needle in err, (needle, err)
        assert real_key not in err  # a key pasted into the config is never echoed


# -- 3. audit verify --public-key: which file, and what is wrong with it -------------------------------------


def test_audit_public_key_problems_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "audit.key"
    pub = save_signing_key(key, generate_signing_key(), None)
    log = tmp_path / "audit.jsonl"
    with AuditLog(log, load_signing_key(key, None)) as alog:
        alog.append({"type": "request", "partner": "DEU", "outcome": "ok"})
    kek_file = tmp_path / "kek"
    kek_file.write_text(generate_kek_text())
    kek_file.chmod(0o600)
    sealed = tmp_path / "sealed.key"
    assert main(["audit", "keygen", "--out", str(sealed), "--kek", f"file:{kek_file}"]) == 0
    notpem = tmp_path / "list.csv"
    notpem.write_text(LIST_CSV)
    cases = [
        (tmp_path / "missing.pem", "key_unreadable", "does not exist"),
        (key, "key_format", "is a private key"),
        (sealed, "key_format", "is a sealed private key"),
        (notpem, "key_format", "is not PEM"),
        (tmp_path, "key_unreadable", "is a directory"),
    ]
    for path, reason, what in cases:
        capsys.readouterr()
        assert main(["audit", "verify", "--log", str(log), "--public-key", str(path)]) == 2, path
        err = _err_line(capsys.readouterr().err)
        assert err.endswith(f"[{reason}]"), err
        assert f"--public-key: audit public key {path}" in err and what in err, err
        assert "missing or not PEM" not in err
    assert main(["audit", "verify", "--log", str(log), "--public-key", str(pub)]) == 0


# -- 4. policy and coordinator-config typos get "did you mean" -----------------------------------------------


def _node_with_policy(fed: DevFederation, tmp_path: Path, policy: str) -> Path:
    text = fed.node_configs["FRA"].read_text(encoding="utf-8")
    cfg = tmp_path / "policy-node.toml"
    kek = fed.root / "FRA" / "kek"
    cfg.write_text(text.replace('kek = "file:kek"', f'kek = "file:{kek}"') + "\n" + policy, encoding="utf-8")
    return cfg


@pytest.mark.parametrize(
    ("policy", "needles"),
    [
        ('[policy.holder.partners.KEN]\npurpose = ["border-screening"]\n',
         ["unknown key(s) ['purpose']", "did you mean policy.holder.partners.KEN.purposes?"]),
        ('[policy.holder.partner.KEN]\nmodes = ["exact"]\n',
         ["policy.holder: unknown key(s) ['partner']", "did you mean policy.holder.partners?"]),
        ("[policy.querier]\nprotected_flag = []\n",
         ["did you mean policy.querier.protected_flags?"]),
        ("[policy.holder.partners.KEN]\nzzz = 1\n", ["'zzz': known keys are", "budget_per_day"]),
    ],
    ids=["purpose", "partner", "querier", "no-near-miss"],
)
def test_policy_unknown_keys_suggest(fed: DevFederation, tmp_path: Path, policy: str,
                                     needles: list[str]) -> None:
    cfg = _node_with_policy(fed, tmp_path, policy)
    with pytest.raises(ConfigError) as exc:
        load_node_config(cfg)
    assert exc.value.reason == "policy_unknown_key"
    for needle in needles:
        assert needle in exc.value.message, (needle, exc.value.message)


def test_policy_defaults_typo_and_file(fed: DevFederation, tmp_path: Path) -> None:
    # the walkthrough's case: [policy.holder.defaults] purpose = [...] (the generated config has a
    # [policy.holder.defaults] table already, so write a policy-only file)
    path = tmp_path / "policy.toml"
    path.write_text('[policy.holder.defaults]\npurpose = ["border-screening"]\nevaluator = true\n')
    with pytest.raises(ConfigError) as exc:
        load_policy(path)
    text = exc.value.message
    assert exc.value.reason == "policy_unknown_key"
    assert str(path) in text
    assert "did you mean policy.holder.defaults.purposes?" in text
    assert "evaluator is set per partner only" in text


ADDRESS = 'address = "127.0.0.1:1"\n'


def _coordinator(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coordinator.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_coordinator_lower_case_member_suggests_upper_case(tmp_path: Path) -> None:
    path = _coordinator(tmp_path, f'[coordinator]\ninsecure_dev = true\n[nodes.bel]\n{ADDRESS}')
    with pytest.raises(ConfigError) as exc:
        load_coordinator_config(path)
    assert exc.value.reason == "config_state"
    assert "did you mean [nodes.BEL]?" in exc.value.message and str(path) in exc.value.message


def test_coordinator_misspelt_table(tmp_path: Path) -> None:
    path = _coordinator(tmp_path, f'[coordinater]\ninsecure_dev = true\n[nodes.BEL]\n{ADDRESS}')
    with pytest.raises(ConfigError) as exc:
        load_coordinator_config(path)
    text = exc.value.message
    assert exc.value.reason == "config_missing_table"
    assert "needs a [coordinator] table" in text and str(path) in text
    assert "unknown table [coordinater] (did you mean [coordinator]?)" in text
    # next to a real [coordinator] table it is refused as unknown, not ignored
    path = _coordinator(
        tmp_path,
        f'[coordinator]\ninsecure_dev = true\n[coordinater]\nmax_batch = 5\n[nodes.BEL]\n{ADDRESS}',
    )
    with pytest.raises(ConfigError) as exc:
        load_coordinator_config(path)
    assert exc.value.reason == "config_unknown_key"
    assert "unknown table [coordinater] (did you mean [coordinator]?)" in exc.value.message


# -- 5. dev-secrets: all four demo States by default; a second run refuses and destroys nothing -------------


def test_shipped_configs_and_dev_secrets_default_agree() -> None:
    nodes = REPO / "nodes"
    shipped = {p.parent.name for p in nodes.glob("*/node.toml")}
    assert shipped == set(DEMO_STATES)
    coordinator = tomllib.loads((nodes / "coordinator" / "coordinator.toml").read_text())
    assert set(coordinator["nodes"]) <= set(DEMO_STATES)
    for path in [*nodes.glob("*/node.toml"), nodes / "coordinator" / "coordinator.toml"]:
        text = path.read_text(encoding="utf-8")
        header = "".join(ln for ln in text.splitlines() if ln.startswith("#"))
        assert "dev-secrets --out var --states FRA,KEN,UNX,DEU" in header.replace("# ", ""), path


def test_dev_secrets_defaults_to_all_demo_states_and_refuses_a_second_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "var"
    assert main(["node", "dev-secrets", "--out", str(out)]) == 0
    made = json.loads(capsys.readouterr().out)
    assert set(made) == {*DEMO_STATES, "coordinator"}
    keks = {p: p.read_bytes() for p in out.rglob("*kek")}
    assert out / "DEU" / "kek" in keks and out / "pki" / "ca.kek" in keks
    assert main(["node", "dev-secrets", "--out", str(out), "--states", "FRA"]) == 2
    err = _err_line(capsys.readouterr().err)
    assert err.endswith("[ca_exists]") and str(out / "pki" / "ca") in err and "--out" in err
    assert {p: p.read_bytes() for p in out.rglob("*kek")} == keks  # no KEK replaced


# -- 6. a reader that closes stdout early ends the command quietly ------------------------------------------


class _ClosedPipe(io.TextIOBase):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")


@pytest.fixture()
def audit_log(tmp_path: Path) -> Path:
    key = tmp_path / "audit.key"
    save_signing_key(key, generate_signing_key(), None)
    log = tmp_path / "audit.jsonl"
    with AuditLog(log, load_signing_key(key, None)) as alog:
        for _ in range(3):
            alog.append({"type": "request", "partner": "DEU", "outcome": "ok"})
    return log


def test_broken_pipe_in_process(audit_log: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["audit", "tail", "--log", str(audit_log)]) == EXIT_BROKEN_PIPE
    monkeypatch.undo()
    assert capsys.readouterr().err == ""


def test_broken_pipe_real_process(audit_log: Path) -> None:
    """``fedcheck audit tail ... | head -c0``: the reader is gone before the first write."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fedcheck", "audit", "tail", "--log", str(audit_log)],
            stdout=w, stderr=subprocess.PIPE, text=True, timeout=60,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
    finally:
        os.close(w)
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


# -- 7. watchlist status --output json|text, newline-terminated ----------------------------------------------


def test_watchlist_status_output(node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["watchlist", "status", "--config", str(node), "--output", "json"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("}\n") and out.count("\n") == 1
    doc = json.loads(out)
    assert doc["state"] == "FRA" and doc["records"] == 3
    assert main(["watchlist", "status", "--config", str(node)]) == 0  # json stays the default
    assert json.loads(capsys.readouterr().out) == doc
    assert main(["watchlist", "status", "--config", str(node), "--output", "text"]) == 0
    assert capsys.readouterr().out == f"FRA: 3 records, list version {doc['version']}\n"


def test_empty_import_guard_refuses_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    """The guard counts the source's records read-only; an unreadable store must refuse the import rather than
    count 0 (which would skip the guard and let an empty file wipe the list)."""
    import sqlite3

    from fedcheck.cli.watchlist import _source_size
    from fedcheck.errors import StorageUnavailable

    assert _source_size(tmp_path / "absent.sqlite", "default") == 0
    fresh = tmp_path / "fresh.sqlite"
    sqlite3.connect(fresh).close()
    assert _source_size(fresh, "default") == 0  # created, never imported into
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageUnavailable):
        _source_size(broken, "default")


@pytest.mark.parametrize("bad", ["-5", "0", "601", "soon"])
def test_query_deadline_out_of_range_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--deadline 0 or negative would time every State out; above 600 s it would be silently capped."""
    from fedcheck.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["query", "--config", "nodes/DEU/node.toml", "--manifest", "x.csv", "--deadline", bad])
    assert exc.value.code == 2
    assert "--deadline" in capsys.readouterr().err
