"""Labeled unbalanced PSI (fedcheck.protocol.exact + fedcheck.core.index) against plain set intersection."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcheck.core.index import ExactIndex, lookup_ranges
from fedcheck.crypto import oprf
from fedcheck.errors import (
    FormatError,
    IntegrityError,
    InvalidElement,
    InvalidInput,
    PreconditionFailed,
    UnsupportedVersion,
    VerificationError,
)
from fedcheck.protocol import exact
from fedcheck.protocol.exact import (
    EpochKey,
    Evaluation,
    ExactHolder,
    ExactQuerier,
    ExactResult,
    IndexEntry,
    Mode,
)

KEY = EpochKey.derive(b"\x07" * 32, "test-epoch")
HOLDER = ExactHolder(KEY)  # shared so hypothesis examples reuse cached evaluations


def _entries(keys: Sequence[bytes]) -> list[IndexEntry]:
    return [IndexEntry(k, "document", {"category": "c", "reference": k.hex()}) for k in keys]


def _round(
    holder: ExactHolder, index: ExactIndex, keys: Sequence[bytes], mode: Mode, *, verifiable: bool = True
) -> ExactResult:
    q = ExactQuerier()
    batch = q.blind(keys, mode=mode)
    ev = holder.blind_evaluate(batch.blinded, mode=mode, verifiable=verifiable)
    return q.finalize(batch, ev, public_key=holder.public_key, index=index, verify=verifiable)


keys_st = st.lists(st.binary(min_size=0, max_size=6), max_size=25)


@settings(max_examples=25, deadline=None)
@given(holder_keys=keys_st, querier_keys=keys_st, verifiable=st.booleans())
def test_matches_set_intersection(
    holder_keys: list[bytes], querier_keys: list[bytes], verifiable: bool
) -> None:
    holder_keys = [b"h" + k for k in holder_keys]  # index keys are non-empty
    querier_keys = [b"h" + k for k in querier_keys]
    hs = set(holder_keys)
    index = HOLDER.build_index(_entries(holder_keys))
    assert len(index) == len(hs)
    res = _round(HOLDER, index, querier_keys, Mode.EXACT, verifiable=verifiable)
    expected_positions = [i for i, k in enumerate(querier_keys) if k in hs]
    # duplicate holder entries for one key are merged into a single label listing both
    per_key = {k: holder_keys.count(k) for k in hs}
    assert sorted({h.position for h in res.hits}) == expected_positions
    assert len(res.hits) == sum(per_key[querier_keys[p]] for p in expected_positions)
    assert res.count == len(expected_positions) and res.unopened == 0
    for h in res.hits:
        assert h.label == {"category": "c", "reference": querier_keys[h.position].hex()}
        assert h.key_type == "document"
    tag_only = HOLDER.build_index(_entries(holder_keys), with_labels=False)
    card = _round(HOLDER, tag_only, querier_keys, Mode.CARDINALITY, verifiable=verifiable)
    assert card.hits == [] and card.count == len(set(querier_keys) & hs)


def test_empty_sets() -> None:
    empty = HOLDER.build_index([])
    assert len(empty) == 0 and ExactIndex.from_bytes(empty.to_bytes()).digest == empty.digest
    for mode in Mode:
        assert _round(HOLDER, empty, [b"a", b"b"], mode).count == 0
        idx = HOLDER.build_index(_entries([b"a"]), with_labels=mode is Mode.EXACT)
        assert _round(HOLDER, idx, [], mode) == ExactResult(hits=[], count=0)


def test_hundred_thousand_items() -> None:
    rng = random.Random(1)
    holder_keys = [rng.randbytes(12) for _ in range(100_000)]
    members = rng.sample(holder_keys, 300)
    querier_keys = members + [rng.randbytes(12) for _ in range(700)] + members[:20]  # duplicates too
    rng.shuffle(querier_keys)
    holder = ExactHolder(EpochKey.generate("big"))
    index = holder.build_index(_entries(holder_keys))
    assert len(index) == 100_000
    # 8 (tag) + 8 (offset) + 16 (Poly1305) + label JSON padded to 32 bytes (here 96) + amortised header
    assert 128 <= index.bytes_per_entry < 128.01
    index = ExactIndex.from_bytes(index.to_bytes())
    hs = set(holder_keys)
    res = _round(holder, index, querier_keys, Mode.EXACT)
    assert [h.position for h in res.hits] == [i for i, k in enumerate(querier_keys) if k in hs]
    assert res.count == 320
    tag_only = holder.build_index(_entries(holder_keys), with_labels=False)  # cached: no re-evaluation
    assert _round(holder, tag_only, querier_keys, Mode.CARDINALITY).count == 300


def test_label_tamper_is_dropped_not_trusted() -> None:
    keys = [b"k%d" % i for i in range(10)]
    index = HOLDER.build_index(_entries(keys))
    blob = bytearray(index.blob)
    blob[int(index.offsets[3]) + 2] ^= 0x01  # tamper with one sealed label; the tamperer fixes the digest
    tampered = ExactIndex.from_bytes(dataclasses.replace(index, blob=bytes(blob)).to_bytes())
    res = _round(HOLDER, tampered, keys, Mode.EXACT)
    assert res.count == 9 and res.unopened == 1
    # moving a label to another entry (swap) fails too: the AAD binds the tag
    a, b = index.label(0), index.label(1)
    if len(a) == len(b):
        swapped = b + a + index.blob[len(a) + len(b) :]
        res = _round(HOLDER, dataclasses.replace(index, blob=swapped), keys, Mode.EXACT)
        assert res.count == 8 and res.unopened == 2


def test_label_opens_only_in_its_epoch_and_index() -> None:
    from fedcheck.crypto.labels import open_label, seal_label

    sealed = seal_label(b"y" * 64, "e1", b"s" * 16, b"t" * 8, b"{}")
    assert open_label(b"y" * 64, "e1", b"s" * 16, b"t" * 8, sealed).strip() == b"{}"
    assert len(sealed) % 16 == 0
    for args in (
        (b"z" * 64, "e1", b"s" * 16, b"t" * 8),
        (b"y" * 64, "e2", b"s" * 16, b"t" * 8),
        (b"y" * 64, "e1", b"S" * 16, b"t" * 8),
        (b"y" * 64, "e1", b"s" * 16, b"T" * 8),
    ):
        with pytest.raises(VerificationError):
            open_label(*args, sealed)


def test_index_serialisation_and_corruption() -> None:
    index = HOLDER.build_index(_entries([b"a", b"b", b"c"]))
    data = index.to_bytes()
    back = ExactIndex.from_bytes(data)
    assert back.digest == index.digest and len(back) == 3 and back.epoch_id == "test-epoch"
    assert back.public_key == KEY.public_key and np.array_equal(back.tags, index.tags)
    assert back.bytes_per_entry == len(data) / 3
    for pos in (10, len(data) // 2, len(data) - 40, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises((IntegrityError, FormatError)):
            ExactIndex.from_bytes(bytes(bad))
    with pytest.raises((IntegrityError, FormatError)):
        ExactIndex.from_bytes(data[:-5])
    with pytest.raises(FormatError):
        ExactIndex.from_bytes(b"XXXX" + data[4:])
    with pytest.raises(UnsupportedVersion):
        ExactIndex.from_bytes(data[:4] + b"\x09\x00" + data[6:])
    with pytest.raises(FormatError):  # unsorted tags are refused even with a valid digest
        dataclasses.replace(index, tags=index.tags[::-1].copy())


def test_short_tags_collide_and_labels_remove_false_positives(monkeypatch: pytest.MonkeyPatch) -> None:
    """With b-bit tags a non-member hits with probability ~ n / 2^b; label opening must drop every one."""
    bits = 10
    real = exact.tags_from_bytes
    monkeypatch.setattr(exact, "tags_from_bytes", lambda d: real(d) >> np.uint64(64 - bits))
    holder = ExactHolder(EpochKey.generate("short"))
    holder_keys = [b"h%d" % i for i in range(1000)]
    index = holder.build_index(_entries(holder_keys))
    querier_keys = [b"q%d" % i for i in range(400)] + holder_keys[:25]
    res = _round(holder, index, querier_keys, Mode.EXACT)
    assert res.count == 25 and {h.position for h in res.hits} == set(range(400, 425))
    # expected false (item, entry) tag pairs: (400 * 1000 + 25 * 999) / 2^10 ~ 415; all dropped as unopenable
    assert 330 < res.unopened < 500


def test_tag_false_positive_rate_formula() -> None:
    """Documented: P(false tag hit per querier item) = n / 2^64, i.e. the index really uses 64-bit tags.

    The formula in docs/protocol.md holds only if tags are 8 bytes and compared in full; shrink either and
    this fails (the short-tag test above shows the rate scales as n / 2^b).
    """
    from fedcheck.crypto.labels import TAG_SIZE

    assert TAG_SIZE == 8
    holder = ExactHolder(EpochKey.generate("fp"))
    index = holder.build_index(_entries([b"k%d" % i for i in range(64)]))
    assert index.tags.dtype == np.uint64 and len(np.unique(index.tags)) == 64
    # all 64 bits carry entropy: every bit position is set in some tag and clear in another
    bits = np.unpackbits(index.tags.view(np.uint8)).reshape(64, 64)
    assert bits.any(axis=0).all() and (~bits.astype(bool)).any(axis=0).all()


def test_lookup_ranges_handles_duplicate_tags() -> None:
    tags = np.array([1, 3, 3, 3, 7], dtype=np.uint64)
    qpos, ent = lookup_ranges(tags, np.array([3, 5, 7, 1, 3], dtype=np.uint64))
    assert list(zip(qpos.tolist(), ent.tolist(), strict=True)) == [
        (0, 1),
        (0, 2),
        (0, 3),
        (2, 4),
        (3, 0),
        (4, 1),
        (4, 2),
        (4, 3),
    ]


def test_proof_under_other_key_is_refused() -> None:
    keys = [b"a", b"b", b"x"]
    index = HOLDER.build_index(_entries(keys[:2]))
    impostor = ExactHolder(EpochKey.generate("test-epoch"))
    for mode in Mode:
        q = ExactQuerier()
        batch = q.blind(keys, mode=mode)
        ev = impostor.blind_evaluate(batch.blinded, mode=mode)
        with pytest.raises(VerificationError):
            q.finalize(batch, ev, public_key=HOLDER.public_key, index=index)
        with pytest.raises(VerificationError):  # proof stripped
            q.finalize(batch, Evaluation(ev.evaluated, None), public_key=HOLDER.public_key, index=index)
    with pytest.raises(PreconditionFailed):
        q.finalize(batch, ev, public_key=impostor.public_key, index=index)


def test_exact_mode_reordering_detected() -> None:
    q = ExactQuerier()
    index = HOLDER.build_index(_entries([b"a"]))
    batch = q.blind([b"a", b"b", b"c"], mode=Mode.EXACT)
    ev = HOLDER.blind_evaluate(batch.blinded, mode=Mode.EXACT)
    swapped = Evaluation([ev.evaluated[1], ev.evaluated[0], ev.evaluated[2]], ev.proof)
    with pytest.raises(VerificationError):
        q.finalize(batch, swapped, public_key=HOLDER.public_key, index=index)


def test_cardinality_shuffles_and_uses_one_blind() -> None:
    q = ExactQuerier()
    keys = [b"c%d" % i for i in range(60)] + [b"c1", b"c2"]
    batch = q.blind(keys, mode=Mode.CARDINALITY)
    assert len(batch.blinded) == 60 and len(set(batch.blinds)) == 1  # deduplicated, common blind
    plain = oprf.blind_evaluate(KEY._sk, batch.blinded)
    ev = HOLDER.blind_evaluate(batch.blinded, mode=Mode.CARDINALITY)
    assert sorted(ev.evaluated) == sorted(plain) and ev.evaluated != plain


def test_invalid_blinded_element_rejected_by_holder() -> None:
    for bad in (oprf.IDENTITY, b"\xff" * 32, b"short"):
        for mode in Mode:
            with pytest.raises(InvalidElement):
                HOLDER.blind_evaluate([oprf.GENERATOR, bad], mode=mode)


def test_exact_mode_needs_labels_and_cardinality_index_has_none() -> None:
    idx = HOLDER.build_index(_entries([b"a"]), with_labels=False)
    assert idx.blob == b"" and not idx.has_labels
    with pytest.raises(PreconditionFailed):
        _round(HOLDER, idx, [b"a"], Mode.EXACT)


def test_audience_indexes_and_incremental_rebuild_reuse_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    holder = ExactHolder(EpochKey.generate("aud"))
    calls: list[int] = []
    orig = holder._eval_chunk
    monkeypatch.setattr(holder, "_eval_chunk", lambda ks: calls.append(len(ks)) or orig(ks))
    keys = [b"p%d" % i for i in range(50)]
    full = holder.build_index(_entries(keys))
    assert sum(calls) == 50
    partner = holder.build_index(_entries(keys[10:]), label_fields=["category"])  # withholds 10, hides refs
    grown = holder.build_index(_entries([*keys, b"new1", b"new2"]))  # list changed: 2 new keys only
    assert sum(calls) == 52
    assert full.salt != partner.salt  # fresh label keys per index: no key/nonce reuse across audiences
    res = _round(holder, partner, keys[:12], Mode.EXACT)
    assert [h.position for h in res.hits] == [10, 11]
    assert res.hits[0].label == {"category": "c"}
    assert _round(holder, grown, [b"new2"], Mode.EXACT).count == 1
    holder.retain([b"new1"])
    assert holder.cache_size == 1


def test_epoch_key_serialisation_and_repr() -> None:
    k = EpochKey.derive(b"\x01" * 32, "2025-W01")
    assert EpochKey.derive(b"\x01" * 32, "2025-W01").public_key == k.public_key
    assert EpochKey.derive(b"\x01" * 32, "2025-W02").public_key != k.public_key
    back = EpochKey.from_bytes(k.to_bytes())
    assert back.public_key == k.public_key and back.epoch_id == k.epoch_id
    assert k._sk.hex() not in repr(k) and k._sk.hex()[:16] not in repr(k)
    for bad in (b"", b"FCEK\x01\x00\x01\x00x" + b"\x00" * 32, k.to_bytes()[:-1]):
        with pytest.raises(InvalidInput):
            EpochKey.from_bytes(bad)
    idx = HOLDER.build_index(_entries([b"a"]))
    assert "salt" not in repr(idx) and "tags" not in repr(idx)


@pytest.mark.parametrize("workers", [1, 2])
def test_build_index_reports_progress_of_new_evaluations(workers: int) -> None:
    """Progress counts exactly the keys evaluated now (duplicates merged, cached keys not re-reported)."""
    holder = ExactHolder(EpochKey.generate("progress"))
    keys = [b"p%d" % i for i in range(5000)]
    seen: list[int] = []
    holder.build_index(_entries(keys + keys[:10]), workers=workers, progress=seen.append)
    assert sum(seen) == 5000 and len(seen) > 1
    again: list[int] = []
    holder.build_index(_entries([*keys[:100], b"new"]), workers=workers, progress=again.append)
    assert sum(again) == 1
