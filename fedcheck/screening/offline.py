"""The offline harness: the real exact-match protocol between an in-process holder and querier.

Why: evaluators, benchmarks and the first demo need the protocol without servers. Nothing is shortcut:
the holder builds its epoch index from match keys, the querier blinds, the holder blind-evaluates
(verifiably), the querier finalises, looks tags up and opens labels — the same roles the node and the
querier client drive over gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fedcheck.progress import Progress, track
from fedcheck.protocol.exact import EpochKey, ExactHolder, ExactQuerier, IndexEntry, Mode
from fedcheck.records import DEFAULT_KEY_TYPES, KeyType, PersonRecord, match_keys
from fedcheck.screening.manifest import query_keys
from fedcheck.screening.report import Hit, ScreenReport, StateCount, TravellerResult

__all__ = ["index_entries", "screen_exact"]


def index_entries(watchlist: Sequence[PersonRecord],
                  key_types: Sequence[KeyType] = DEFAULT_KEY_TYPES) -> list[IndexEntry]:
    """Holder side: every match key of every listed person, carrying the person's label."""
    entries = []
    for record in track(watchlist, total=len(watchlist), desc="match keys", unit="records"):
        label = record.label.to_dict()
        for mk in match_keys(record, key_types):
            entries.append(IndexEntry(mk.value, str(mk.key_type), label))
    return entries


def screen_exact(
    watchlist: Sequence[PersonRecord],
    manifest: Sequence[PersonRecord],
    *,
    state: str = "LOCAL",
    mode: Mode = Mode.EXACT,
    key_types: Sequence[KeyType] = DEFAULT_KEY_TYPES,
    workers: int | None = None,
) -> ScreenReport:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    holder = ExactHolder(EpochKey.generate("offline"))
    entries = index_entries(watchlist, key_types)
    with Progress(len({e.key for e in entries}), desc="index build (OPRF)", unit="keys") as bar:
        index = holder.build_index(entries, workers=workers, progress=bar.update)
    timings["index build"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    qk = query_keys(manifest, key_types)
    querier = ExactQuerier()
    batch = querier.blind(qk.keys, mode=mode)
    evaluation = holder.blind_evaluate(batch.blinded, mode=mode, verifiable=True)
    result = querier.finalize(batch, evaluation, public_key=index.public_key, index=index)
    timings["query"] = time.perf_counter() - t1

    travellers = [TravellerResult(r.record_id, r.names[0].full_name if r.names else "") for r in manifest]
    if mode is Mode.CARDINALITY:
        return ScreenReport(travellers, counts=[StateCount(state, str(mode), result.count)], timings=timings)
    owners = qk.owners_of([h.position for h in result.hits])
    for hit, who in zip(result.hits, owners, strict=True):
        for owner in who:
            travellers[owner].hits.append(Hit(state, "exact", hit.key_type, dict(hit.label)))
    return ScreenReport(travellers, timings=timings)
