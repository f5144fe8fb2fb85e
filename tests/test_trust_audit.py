"""Audit log: chain and signatures, every kind of edit, crash mid-append, retention, reports, event rules."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcheck.errors import ConfigError, IntegrityError, InvalidInput, VerificationError
from fedcheck.trust.atrest import KeyEncryptionKey
from fedcheck.trust.audit import (
    GENESIS_HASH,
    AuditLog,
    check_event,
    export_report,
    generate_signing_key,
    load_public_key,
    load_signing_key,
    read_entries,
    save_signing_key,
    verify_log,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key()


def _event(i: int, **kw: object) -> dict[str, object]:
    ev: dict[str, object] = {
        "type": "request",
        "partner": "DEU" if i % 2 else "ITA",
        "purpose": "border_control",
        "legal_basis": "Reg-2018/1862 art.36",
        "unit": "BORDER-CDG-T2",
        "official": "off-4711",
        "mode": "exact",
        "items": 10 + i,
        "outcome": "ok",
        "status": "OK",
        "duration_ms": 3,
    }
    ev.update(kw)
    return ev


def _make_log(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, KEY) as log:
        for i in range(n):
            log.append(_event(i))
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def test_append_and_verify(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    report = verify_log(path, PUB)
    assert report.ok, report.errors
    assert (report.entries, report.first_seq, report.last_seq, report.head_seq) == (6, 1, 6, 6)
    entries = list(read_entries(path))
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    # reopening continues the chain
    with AuditLog(path, KEY) as log:
        e = log.append(_event(7))
        assert e.seq == 7 and e.prev_hash == entries[-1].hash and log.head == (7, e.hash)
    assert verify_log(path, PUB).ok


def test_modify_detected(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    lines = _lines(path)
    doc = json.loads(lines[2])
    doc["event"]["purpose"] = "marketing"
    lines[2] = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    _write(path, lines)
    report = verify_log(path, PUB)
    assert not report.ok and any("seq 3" in e and "invalid" in e for e in report.errors)


def test_modify_with_recomputed_hash_detected(tmp_path: Path) -> None:
    from fedcheck.trust.audit import _entry_hash

    path = _make_log(tmp_path)
    lines = _lines(path)
    doc = json.loads(lines[4])
    doc["event"]["items"] = 1
    doc["hash"] = _entry_hash(doc["seq"], doc["time"], doc["prev_hash"], doc["event"])
    lines[4] = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    _write(path, lines)
    report = verify_log(path, PUB)
    assert not report.ok  # signature no longer matches; next entry's prev_hash breaks too
    assert len(report.errors) >= 2


def test_reorder_detected(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    _write(path, lines)
    report = verify_log(path, PUB)
    assert not report.ok and any("reordered" in e for e in report.errors)


def test_delete_middle_and_first_detected(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    lines = _lines(path)
    _write(path, lines[:3] + lines[4:])
    assert not verify_log(path, PUB).ok
    _write(path, lines[1:])
    report = verify_log(path, PUB)
    assert not report.ok and any("earlier entries deleted" in e for e in report.errors)


def test_insert_detected(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    lines = _lines(path)
    _write(path, [*lines[:3], lines[2], *lines[3:]])  # replayed entry
    assert not verify_log(path, PUB).ok
    # an entry forged under another key, chained correctly, is still caught by its signature
    other = tmp_path / "other"
    other.mkdir()
    forged_log = other / "audit.jsonl"
    with AuditLog(forged_log, Ed25519PrivateKey.generate()) as log:
        log.append(_event(0))
    _write(path, [_lines(forged_log)[0], *lines[1:]])
    assert not verify_log(path, PUB).ok


def test_truncate_tail_detected_by_head(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    lines = _lines(path)
    _write(path, lines[:-2])
    report = verify_log(path, PUB)
    assert not report.ok and any("truncated" in e for e in report.errors)
    with pytest.raises(IntegrityError) as err:
        AuditLog(path, KEY)
    assert err.value.reason == "audit_truncated"
    _write(path, [])
    assert not verify_log(path, PUB).ok


def test_head_deleted_or_forged_detected(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    head = path.with_name(path.name + ".head")
    saved = head.read_bytes()
    head.unlink()
    assert not verify_log(path, PUB).ok
    with pytest.raises(IntegrityError):
        AuditLog(path, KEY)
    doc = json.loads(saved)
    doc["seq"] = 3
    head.write_text(json.dumps(doc))
    assert not verify_log(path, PUB).ok
    with pytest.raises(IntegrityError):
        AuditLog(path, KEY)


def test_rollback_needs_external_anchor(tmp_path: Path) -> None:
    path = _make_log(tmp_path, n=3)
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    for f in tmp_path.glob("audit.jsonl*"):
        shutil.copy2(f, snapshot / f.name)
    with AuditLog(path, KEY) as log:
        log.append(_event(3))
        anchor = log.head
    for f in snapshot.iterdir():  # attacker restores an old consistent log + head
        shutil.copy2(f, tmp_path / f.name)
    assert verify_log(path, PUB).ok  # locally consistent...
    report = verify_log(path, PUB, expected_head=anchor)  # ...but not with the published head
    assert not report.ok and any("rolled back" in e for e in report.errors)
    assert verify_log(path, PUB, expected_head=(2, list(read_entries(path))[1].hash)).ok


def test_crash_mid_append_recovers_without_losing_acknowledged(tmp_path: Path) -> None:
    path = _make_log(tmp_path, n=4)
    acknowledged = [e.hash for e in read_entries(path)]
    # simulate a crash: the next entry's line only partly reached the disk
    partial = _lines(path)[-1][:37]
    with open(path, "ab") as fh:
        fh.write(partial)
    report = verify_log(path, PUB)
    assert report.ok and report.torn_tail
    with AuditLog(path, KEY) as log:
        e = log.append(_event(9))
    assert e.seq == 5
    assert [x.hash for x in read_entries(path)][:4] == acknowledged
    report = verify_log(path, PUB)
    assert report.ok and not report.torn_tail and report.last_seq == 5


def test_crash_after_line_before_head(tmp_path: Path) -> None:
    """Entry fsynced but head not yet replaced (not acknowledged): kept, and the head catches up."""
    path = _make_log(tmp_path, n=3)
    head = path.with_name(path.name + ".head")
    old_head = head.read_bytes()
    with AuditLog(path, KEY) as log:
        log.append(_event(3))
    head.write_bytes(old_head)
    report = verify_log(path, PUB)
    assert report.ok and report.unacknowledged == 1
    with AuditLog(path, KEY) as log:
        assert log.head[0] == 4
    assert verify_log(path, PUB).unacknowledged == 0


def test_crash_garbage_line_after_head(tmp_path: Path) -> None:
    path = _make_log(tmp_path, n=2)
    with open(path, "ab") as fh:
        fh.write(b'{"seq":3,"time":"x"\x00\x00\n\x00\x00')
    with AuditLog(path, KEY) as log:
        assert log.append(_event(5)).seq == 3
    assert verify_log(path, PUB).ok


def test_single_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, KEY), pytest.raises(ConfigError):
        AuditLog(path, KEY)


def test_retention_prune_keeps_verifiability(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    now = [dt.datetime(2022, 1, 1, tzinfo=dt.UTC).timestamp()]
    with AuditLog(path, KEY, retention_days=730, clock=lambda: now[0]) as log:
        for i in range(5):
            log.append(_event(i))
            now[0] += 200 * 86400  # 200 days apart
        archive = tmp_path / "archive.jsonl"
        removed = log.prune_expired(archive=archive)
        assert removed == 2  # entries older than 730 days
        log.append(_event(9))
    report = verify_log(path, PUB)
    assert report.ok, report.errors
    assert (report.first_seq, report.checkpoint_seq, report.last_seq) == (3, 2, 6)
    assert len(_lines(archive)) == 2
    # deleting a further entry at the new start, or the checkpoint, is detected
    lines = _lines(path)
    _write(path, lines[1:])
    assert not verify_log(path, PUB).ok
    _write(path, lines)
    cp = path.with_name(path.name + ".checkpoint")
    cp_bytes = cp.read_bytes()
    cp.unlink()
    assert not verify_log(path, PUB).ok
    cp.write_bytes(cp_bytes)
    assert verify_log(path, PUB).ok


def test_prune_crash_before_rewrite_still_verifies(tmp_path: Path) -> None:
    path = _make_log(tmp_path, n=4)
    full = path.read_bytes()
    with AuditLog(path, KEY) as log:
        assert log.prune(before=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)) == 4
    assert verify_log(path, PUB).ok  # everything pruned: head == checkpoint
    path.write_bytes(full)  # crash after the checkpoint, before the log was replaced
    assert verify_log(path, PUB).ok
    with AuditLog(path, KEY) as log:
        assert log.append(_event(1)).seq == 5


@pytest.mark.parametrize(
    "bad",
    [
        {"partner": "DEU"},  # no type
        {"type": "request", "full_name": "JOHN DOE"},  # identity field not allowed
        {"type": "request", "document_number": "X123"},
        {"type": "request", "note": "free text"},
        {"type": "request", "reason": "-----BEGIN PRIVATE KEY-----"},
        {"type": "request", "reason": "A" * 90},  # encoded blob
        {"type": "request", "reason": "x" * 300},
        {"type": "request", "items": b"bytes"},
        {"type": "request", "counts": {"a": {"b": 1}}},
        {"type": "request", "duration_ms": float("nan")},
    ],
)
def test_event_allow_list(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as err:
        check_event(bad)
    assert "JOHN" not in err.value.message and "X123" not in err.value.message


def test_event_values_accepted() -> None:
    ev = check_event(
        {
            "type": "round",
            "targets": ("DEU", "ITA"),
            "counts": {"ok": 2, "refused": 1},
            "reasons": ["narrowed_modes"],
            "index_digest": "ab" * 32,
            "narrowed": True,
            "budget_remaining": None,
        }
    )
    assert ev["targets"] == ["DEU", "ITA"]


def test_export_report(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, KEY) as log:
        for i in range(4):
            log.append(_event(i))
        log.append(_event(4, outcome="refused", status="RESOURCE_EXHAUSTED", reason="epoch_budget_exhausted"))
        log.append({"type": "refusal", "partner": "ESP", "status": "PERMISSION_DENIED",
                    "reasons": ["partner_not_allowed"], "purpose": "border_control"})
    doc = json.loads(export_report(path, PUB))
    assert doc["verification"]["ok"] and doc["entries_in_period"] == 6
    assert doc["counts"]["partner"] == {"DEU": 2, "ESP": 1, "ITA": 3}
    assert doc["counts"]["purpose"] == {"border_control": 6}
    assert [r["partner"] for r in doc["refusals"]] == ["ITA", "ESP"]
    assert doc["refusals"][1]["reason"] == "partner_not_allowed"
    csv_text = export_report(path, PUB, fmt="csv")
    assert "count_by_partner,DEU,2" in csv_text and "epoch_budget_exhausted" in csv_text
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert json.loads(export_report(path, PUB, since=future))["entries_in_period"] == 0
    with pytest.raises(InvalidInput):
        export_report(path, PUB, fmt="xml")


def test_signing_key_sealed(tmp_path: Path) -> None:
    kek = KeyEncryptionKey.generate()
    key = generate_signing_key()
    pub_path = save_signing_key(tmp_path / "audit.key", key, kek)
    assert b"PRIVATE" not in (tmp_path / "audit.key").read_bytes()
    loaded = load_signing_key(tmp_path / "audit.key", kek)
    assert loaded.public_key().public_bytes_raw() == load_public_key(pub_path).public_bytes_raw()
    with pytest.raises(VerificationError):
        load_signing_key(tmp_path / "audit.key", KeyEncryptionKey.generate())
    with pytest.raises(ConfigError):
        load_signing_key(tmp_path / "audit.key", None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_bit_flip_is_detected(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    base = tmp_path_factory.getbasetemp() / "flip"
    if not base.exists():
        base.mkdir()
        _make_log(base, n=3)
    path = base / "audit.jsonl"
    original = path.read_bytes()
    pos = data.draw(st.integers(0, len(original) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(original)
    flipped[pos] ^= 1 << bit
    path.write_bytes(bytes(flipped))
    try:
        assert not verify_log(path, PUB).ok
    finally:
        path.write_bytes(original)
