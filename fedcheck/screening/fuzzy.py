"""The offline fuzzy harness: the real Paillier similarity check between an in-process holder and querier.

Why: ``fedcheck screen --mode fuzzy|both`` lets an evaluator see what the encrypted name check finds that
exact keys miss (typos, dropped or swapped tokens) without starting servers. Nothing is shortcut: the querier
generates a Paillier key, encrypts its travellers, the holder scores every (traveller, list entry) pair on
ciphertexts (shuffled, blinded, re-randomised), the querier decrypts only the hit bits.

Difference from a federation round: here the harness **follows up every hit automatically** (it plays both
roles, so there is nobody to protect the two-step principle from), releasing each hit's label through the
holder's proof-checked :meth:`~fedcheck.fuzzy.FuzzyHolder.release`. Over gRPC the follow-up is a separate,
audited request the officer decides on (``fedcheck query --mode fuzzy --follow-up``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from fractions import Fraction

from fedcheck.fuzzy import (
    FuzzyHolder,
    FuzzyQuerier,
    HolderLimits,
    QuerierKey,
    Traveller,
    entries_from_records,
)
from fedcheck.fuzzy._paillier import ALLOWED_KEY_BITS
from fedcheck.records import PersonRecord
from fedcheck.screening.report import Hit, ScreenReport, TravellerResult

__all__ = ["FACE_KEY_TYPE", "FUZZY_KEY_TYPE", "screen_fuzzy_into", "traveller_of"]

#: ``Hit.key_type`` of a fuzzy hit (there is no match key: the decision is a similarity threshold).
FUZZY_KEY_TYPE = "name_similarity"
#: ``Hit.key_type`` of a fuzzy face hit (quantised cosine of ``face_embedding``s).
FACE_KEY_TYPE = "face_similarity"


def traveller_of(record: PersonRecord, kind: str = "name") -> Traveller:
    """What the querier encrypts for one manifest record: its first name and, if known exactly, its birth
    year (a range or no date leaves the year unknown, which agrees with every listed year); for
    ``kind="face"`` its ``face_embedding``."""
    if kind == "face":
        return Traveller(face=record.face_embedding)
    name = record.names[0].full_name if record.names else ""
    years = {y for bd in record.birth_dates for y in bd.years()}
    return Traveller(name=name, year=years.pop() if len(years) == 1 else None)


def screen_fuzzy_into(
    report: ScreenReport | None,
    watchlist: Sequence[PersonRecord],
    manifest: Sequence[PersonRecord],
    *,
    state: str = "LOCAL",
    threshold: str | float | Fraction = "0.8",
    year_tolerance: int = 0,
    key_bits: int = 2048,
    pack_size: int = 1,
    workers: int | None = None,
    kind: str = "name",
) -> ScreenReport:
    """Run a fuzzy name round of ``manifest`` against ``watchlist`` and add its hits to ``report``.

    ``report`` is an exact-mode report of the same manifest (``--mode both``: hits are merged per traveller)
    or ``None`` (a fresh report). Every fuzzy hit is followed up (see the module docstring) and appears as
    ``Hit(state, "fuzzy", "name_similarity", label)``. ``key_bits=1024`` is accepted for fast tests only.
    """
    if report is None:
        report = ScreenReport(
            [TravellerResult(r.record_id, r.names[0].full_name if r.names else "") for r in manifest]
        )
    elif len(report.travellers) != len(manifest):
        raise ValueError("report and manifest must describe the same travellers")
    timings = report.timings
    face = kind == "face"
    if face:  # faces: only records with an embedding of the list's (most common) dimension are compared
        listed = [r for r in watchlist if r.face_embedding is not None]
        dims_count: dict[int, int] = {}
        for r in listed:
            dims_count[len(r.face_embedding or ())] = dims_count.get(len(r.face_embedding or ()), 0) + 1
        face_dims = max(dims_count, key=lambda d: (dims_count[d], d)) if dims_count else 0
        watchlist = [r for r in listed if len(r.face_embedding or ()) == face_dims]
        named = [i for i, r in enumerate(manifest) if r.face_embedding is not None
                 and len(r.face_embedding) == face_dims]
    else:
        face_dims = 128
        named = [i for i, r in enumerate(manifest) if r.names]  # a traveller without a name cannot be scored
    if not named or not watchlist:
        return report
    t0 = time.perf_counter()
    key = QuerierKey.generate(key_bits)
    allowed = ALLOWED_KEY_BITS | ({key_bits} if key_bits == 1024 else set())
    holder = FuzzyHolder(
        entries_from_records(watchlist, kind=kind),
        kind=kind,
        face_dims=face_dims,
        workers=workers,
        limits=HolderLimits(
            max_travellers=max(1000, len(named)), max_packs=max(1000, len(named)),
            key_bits=frozenset(allowed),
            claims_per_traveller=10_000,  # one's own list: the querier is the holder, nothing to bound
        ),
    )
    querier = FuzzyQuerier(key, kind=kind, threshold=threshold, year_tolerance=year_tolerance,
                           pack_size=pack_size, workers=workers, face_dims=face_dims)
    timings["fuzzy setup"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    request = querier.build_request([traveller_of(manifest[i], kind) for i in named])
    timings["fuzzy encrypt"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    response = holder.score(request)
    timings["fuzzy score"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    result = querier.decide(request, response)
    released, record_ids = (holder.release_with_records(querier.follow_up(request.round_id, result.hits))
                            if result.hits else (None, ()))
    holder.close_round(request.round_id)
    timings["fuzzy decide+follow-up"] = time.perf_counter() - t3

    if released is not None:
        seen: set[tuple[int, str]] = set()
        for rel, record_id in zip(released.released, record_ids, strict=True):
            owner = named[rel.traveller]
            if (owner, record_id) in seen:  # several variants of one listed person hit
                continue
            seen.add((owner, record_id))
            label = {str(k): str(v) for k, v in rel.label.items()}
            key_type = FACE_KEY_TYPE if face else FUZZY_KEY_TYPE
            report.travellers[owner].hits.append(Hit(state, "fuzzy", key_type, label))
    return report
