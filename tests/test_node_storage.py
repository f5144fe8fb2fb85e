"""Watchlist store: transactional imports, idempotence, sealing at rest, epoch persistence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcheck.errors import VerificationError
from fedcheck.records.model import Label, PersonName, PersonRecord
from fedcheck.storage import EpochRecord, SqliteWatchlistStore
from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey


def _records(n: int, tag: str = "") -> list[PersonRecord]:
    return [
        PersonRecord(f"R{i}", (PersonName(f"PERSON{tag} NUMBER{i}"),), label=Label("cat", f"ref-{i}"))
        for i in range(n)
    ]


def _store(path: Path, kek: KeyEncryptionKey) -> SqliteWatchlistStore:
    return SqliteWatchlistStore(path / "w.sqlite", EnvelopeSealer.open_or_create(path / "keyring.json", kek))


def test_import_is_idempotent_and_replaces(tmp_path: Path) -> None:
    kek = KeyEncryptionKey.generate()
    store = _store(tmp_path, kek)
    r1 = store.replace_list(_records(10))
    assert (r1.added, r1.updated, r1.removed) == (10, 0, 0)
    v1 = store.list_version()
    r2 = store.replace_list(_records(10))
    assert not r2.changed and r2.unchanged == 10 and store.list_version() == v1
    r3 = store.replace_list(_records(8, "X"))
    assert (r3.updated, r3.removed) == (8, 2) and store.list_version() != v1
    assert next(r.names[0].full_name for r in store.iter_records()).startswith("PERSONX")


def test_interrupted_import_leaves_previous_list(tmp_path: Path) -> None:
    store = _store(tmp_path, KeyEncryptionKey.generate())
    store.replace_list(_records(5))
    version = store.list_version()

    def exploding() -> Iterator[PersonRecord]:
        yield from _records(3, "NEW")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.replace_list(exploding())
    assert store.count() == 5 and store.list_version() == version
    assert all("NEW" not in r.names[0].full_name for r in store.iter_records())


def test_records_sealed_at_rest(tmp_path: Path) -> None:
    store = _store(tmp_path, KeyEncryptionKey.generate())
    store.replace_list(_records(3))
    store.close()
    raw = (tmp_path / "w.sqlite").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("w.sqlite-*"))
    assert b"PERSON" not in raw and b"NUMBER1" not in raw
    with pytest.raises(VerificationError):
        _store(tmp_path, KeyEncryptionKey.generate())


def test_epochs_persist_sealed_and_pruned(tmp_path: Path) -> None:
    kek = KeyEncryptionKey.generate()
    store = _store(tmp_path, kek)
    for i in range(3):
        store.save_epoch(EpochRecord(f"E{i}", 1000 + i, "v", b"secret-key-%d" % i, {"a": b"index"}))
    store.close()
    store = _store(tmp_path, kek)
    epochs = store.load_epochs()
    assert [e.epoch_id for e in epochs] == ["E2", "E1"]
    assert epochs[0].key_bytes == b"secret-key-2" and epochs[0].indexes == {"a": b"index"}
    assert b"secret-key" not in (tmp_path / "w.sqlite").read_bytes()


def test_stored_face_refused_by_this_version_is_dropped_not_fatal(tmp_path: Path) -> None:
    """A row written by an earlier version with a zero face embedding (now refused by the model) must not make
    the whole list unreadable: the face is ignored, every other field and record survives (upgrade path)."""
    import json

    kek = KeyEncryptionKey.generate()
    store = _store(tmp_path, kek)
    store.replace_list(_records(3))
    row = store._db.execute("SELECT source, record_id, blob FROM records WHERE record_id='R1'").fetchone()
    source, rid, blob = row[0], row[1], bytes(row[2])
    doc = json.loads(store._sealer.open(blob, store._aad(source, rid)))
    doc["face"] = [0.0] * 128  # what an earlier version stored
    tampered = store._sealer.seal(json.dumps(doc).encode(), store._aad(source, rid))
    store._db.execute("UPDATE records SET blob=? WHERE record_id='R1'", (tampered,))
    recs = {r.record_id: r for r in store.iter_records()}
    assert sorted(recs) == ["R0", "R1", "R2"]
    assert recs["R1"].face_embedding is None and recs["R1"].label.reference == "ref-1"
    doc["face"] = ["not a number"]  # anything else invalid is still corruption
    store._db.execute("UPDATE records SET blob=? WHERE record_id='R1'",
                      (store._sealer.seal(json.dumps(doc).encode(), store._aad(source, rid)),))
    from fedcheck.errors import IntegrityError

    with pytest.raises(IntegrityError):
        list(store.iter_records())


def test_policy_change_starts_a_new_epoch_on_restart(tmp_path: Path) -> None:
    """Partners cache finalised outputs per holder epoch: a restart under a changed holder policy (partner
    removed, entry withheld) must not restore the epoch built under the old one; the same policy restores
    it."""
    from fedcheck.node.app import policy_digest
    from fedcheck.node.epochs import Audience, EpochManager

    kek = KeyEncryptionKey.generate()
    old = {"policy": {"holder": {"partners": {"DEU": {"modes": ["exact"]}, "KEN": {"modes": ["exact"]}}}}}
    new = {"policy": {"holder": {"partners": {"DEU": {"modes": ["exact"]}}}}}
    assert policy_digest(old) != policy_digest(new)
    assert policy_digest(old) == policy_digest({"policy": {"holder": {"partners": {
        "KEN": {"modes": ["exact"]}, "DEU": {"modes": ["exact"]}}}}})  # canonical: key order is irrelevant

    def manager(raw: dict[str, object]) -> EpochManager:
        store = _store(tmp_path, kek)
        store.replace_list(_records(5))
        return EpochManager(store, "FRA", epoch_seconds=3600, workers=1, policy_digest=policy_digest(raw),
                            audiences=lambda: [Audience("all", lambda e: e)])

    first = manager(old)
    built = first.rebuild_now().epoch_id
    same = manager(old)
    same._restore()
    assert same.current().epoch_id == built
    changed = manager(new)
    changed._restore()
    with pytest.raises(Exception, match="not ready"):
        changed.current()  # nothing served from the old policy's epoch
    assert changed.rebuild_now().epoch_id != built
