"""Exact and cardinality rounds for manifests larger than one holder batch: consecutive chunks, a round each.

A holder evaluates at most ``max_batch`` blinded elements per call (``[node] max_batch``, 4,096 by default,
advertised in its ``NodeInfo``), and the coordinator's wire check refuses more than 10,000. A manifest makes
about four match keys per traveller, so from about a thousand travellers one round no longer fits.
:func:`run_chunked` plans the manifest into consecutive chunks of whole travellers (a traveller is never
split across chunks) whose distinct match keys fit the smallest limit any target advertises, runs each chunk
as its own round (:meth:`QueryRunner.run`: own signed payload, own audit event in the querier's audit log,
round id ``<round_id>.c<k>``), and merges the chunk reports into one :class:`ScreenReport` in manifest order.

Merging: travellers concatenated; per-State status = the worst any chunk had (``ok (cached)`` < ``ok`` <
``not run`` < ``unavailable`` < ``timeout`` < ``refused``); details merged (counts summed, reason lists
unioned, ``retry_after_s`` the largest); timings summed; hits kept; cardinality counts summed per State.

Budget: a chunk refused with ``RESOURCE_EXHAUSTED`` (``epoch_budget_exhausted``, ``daily_budget_exhausted``,
a holder policy's ``batch_too_large``...) stops the run: the following chunks would be refused the same way,
and at other holders they would keep spending budget on a screening that cannot complete. The travellers of
the chunks not run stay in the report, in manifest order (callers such as the fuzzy round of ``--mode both``
index it by manifest position), without hits and with ``not_checked`` set for every target State (never
shown as "no hit"); every target State is marked ``not run (stopped_early)`` unless its status is already
worse, and ``details["chunks"]`` says which chunks ran, why the run stopped and how many travellers were not
screened.

The batch a holder receives is at most the chunk's distinct keys: keys already answered (querier cache) are
not sent, and the padding for travellers the querier's policy keeps away from a State restores exactly the
size of the unfiltered chunk (:meth:`QueryRunner._padding`), never more.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fedcheck.errors import InvalidInput
from fedcheck.node.querier import QueryOptions, QueryRunner
from fedcheck.progress import Progress
from fedcheck.records.keys import KeyType
from fedcheck.records.model import PersonRecord
from fedcheck.rpc import serde
from fedcheck.rpc.messages import NodeEntry
from fedcheck.screening.manifest import query_keys
from fedcheck.screening.report import ScreenReport, StateCount, TravellerResult

__all__ = [
    "DEFAULT_MAX_BATCH", "NOT_RUN", "WIRE_MAX_BATCH", "Chunk", "batch_limit", "chunk_round_ids",
    "merge_reports", "plan_chunks", "run_chunked", "status_rank",
]

_log = logging.getLogger("fedcheck.querier")

#: a holder's ``max_batch`` when no target advertises one (the node default, ``[node] max_batch``)
DEFAULT_MAX_BATCH = 4096
#: the coordinator's default wire limit on one target's batch (``[coordinator] max_batch``); not advertised
WIRE_MAX_BATCH = 10_000
#: the status of a State for the chunks not run after an early stop
NOT_RUN = "not run (stopped_early)"
#: the ``details`` entry describing the chunked run (not a State code: those are upper-case letters)
CHUNKS_DETAIL = "chunks"

#: per-State status classes, best first; the merged status of a State is the worst of its chunks'
_RANKS: tuple[tuple[str, int], ...] = (
    ("ok (cached)", 0),
    ("ok", 1),
    ("not run", 2),
    ("unavailable", 3),
    ("timeout", 4),
    ("refused", 5),
)
#: an unknown status text counts as a failure, worse than unavailable, not as bad as a refusal
_UNKNOWN_RANK = 4

LineProgress = Callable[[str], None]


@dataclass(frozen=True)
class Chunk:
    """Travellers ``manifest[start:stop]`` and the number of distinct match keys they make."""

    start: int
    stop: int
    keys: int

    def __len__(self) -> int:
        return self.stop - self.start


def status_rank(status: str) -> int:
    """How bad a per-State status is (higher = worse); see the module docstring for the order."""
    for prefix, rank in _RANKS:
        if status == prefix or status.startswith(prefix + " "):
            return rank
    return _UNKNOWN_RANK


def _key_types(options: QueryOptions) -> list[KeyType] | None:
    return [KeyType(k) for k in options.key_types] if options.key_types else None


def plan_chunks(
    manifest: Sequence[PersonRecord], limit: int, key_types: Sequence[KeyType] | None = None
) -> list[Chunk]:
    """Consecutive chunks of whole travellers whose distinct match keys (derived as :class:`QueryRunner` does,
    :func:`fedcheck.screening.manifest.query_keys`, nothing blinded) stay within ``limit``. A traveller whose
    keys alone exceed ``limit`` gets a chunk of their own (the holder will refuse it; nothing else is
    lost)."""
    if limit < 1:
        raise InvalidInput("max_batch must be at least 1", reason="bad_max_batch")
    if not manifest:
        return []
    qk = query_keys(manifest, key_types) if key_types is not None else query_keys(manifest)
    per: list[list[int]] = [[] for _ in manifest]
    for key, owner in zip(qk.pair_key.tolist(), qk.pair_owner.tolist(), strict=True):
        per[owner].append(key)
    chunks: list[Chunk] = []
    start, current = 0, set[int]()
    for i, keys in enumerate(per):
        new = set(keys) - current
        if i > start and len(current) + len(new) > limit:
            chunks.append(Chunk(start, i, len(current)))
            start, current = i, set(keys)
        else:
            current |= new
    chunks.append(Chunk(start, len(manifest), len(current)))
    return chunks


def _targets(runner: QueryRunner, options: QueryOptions, nodes: Sequence[NodeEntry]) -> list[str]:
    """The round's target States, as :meth:`QueryRunner.run` picks them."""
    own = str(getattr(runner, "_state", ""))
    return list(options.states) or sorted(e.state for e in nodes if e.state != own)


def batch_limit(nodes: Sequence[NodeEntry], targets: Iterable[str]) -> int:
    """The smallest ``max_batch`` the targets advertise in their ``NodeInfo`` (unreachable targets, and those
    advertising none, are skipped; :data:`DEFAULT_MAX_BATCH` when none does), within the coordinator's wire
    limit :data:`WIRE_MAX_BATCH`."""
    wanted = set(targets)
    limits = [
        e.info.max_batch
        for e in nodes
        if e.state in wanted and e.reachable and e.info is not None and e.info.max_batch > 0
    ]
    return min(min(limits) if limits else DEFAULT_MAX_BATCH, WIRE_MAX_BATCH)


def chunk_round_ids(round_id: str, count: int) -> list[str]:
    """``<round_id>.c1`` ... ``<round_id>.c<count>`` (a new UUID as ``round_id`` when empty); every id is
    checked up front (1-64 characters of ``[A-Za-z0-9._:-]``), so a too long base id fails before any round
    is sent."""
    base = round_id or str(uuid.uuid4())
    ids = [f"{base}.c{k}" for k in range(1, count + 1)]
    for rid in ids:
        try:
            serde.validate_round_id(rid)
        except InvalidInput:
            raise InvalidInput(
                f"round id {base!r} leaves no room for the chunk suffix '.c{count}' of a manifest run in"
                f" {count} rounds: round ids are 1-64 characters of [A-Za-z0-9._:-]",
                reason="invalid_round_id",
            ) from None
    return ids


# -- merging ------------------------------------------------------------------------------------------------


def _union(a: Iterable[Any], b: Iterable[Any]) -> list[Any]:
    out = list(a)
    out.extend(x for x in b if x not in out)
    return out


def _merge_detail(into: dict[str, Any], new: Mapping[str, Any], *, worse: bool) -> None:
    """Merge one chunk's per-State details: counts summed, lists unioned, ``retry_after_s`` the largest,
    ``code`` of the worst chunk, anything else the latest value."""
    for key, value in new.items():
        if key not in into:
            into[key] = list(value) if isinstance(value, list | tuple) else (
                dict(value) if isinstance(value, Mapping) else value)
            continue
        old = into[key]
        if key == "retry_after_s":
            into[key] = max(int(old), int(value))
        elif key == "code":
            if worse or not old:
                into[key] = value
        elif isinstance(value, bool) or isinstance(old, bool):
            into[key] = value
        elif isinstance(value, int) and isinstance(old, int):
            into[key] = old + value
        elif isinstance(value, Mapping) and isinstance(old, Mapping):
            merged = dict(old)  # e.g. excluded_causes: {cause: travellers}
            for k, v in value.items():
                prev = merged.get(k)
                summable = isinstance(v, int) and isinstance(prev, int) and not isinstance(v, bool)
                merged[k] = prev + v if summable else v
            into[key] = merged
        elif isinstance(value, list | tuple) and isinstance(old, list | tuple):
            into[key] = _union(old, value)
        else:
            into[key] = value


def merge_reports(reports: Sequence[ScreenReport]) -> ScreenReport:
    """One report of consecutive chunk reports (see the module docstring)."""
    travellers: list[TravellerResult] = []
    statuses: dict[str, str] = {}
    details: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    counts: dict[tuple[str, str], int] = {}
    for rep in reports:
        travellers.extend(rep.travellers)
        worse: set[str] = set()
        for state, status in rep.statuses.items():
            old = statuses.get(state)
            if old is None or status_rank(status) > status_rank(old):
                statuses[state] = status
                worse.add(state)
        for state, d in rep.details.items():
            _merge_detail(details.setdefault(state, {}), d, worse=state in worse)
        for name, seconds in rep.timings.items():
            timings[name] = timings.get(name, 0.0) + seconds
        for c in rep.counts:
            counts[(c.state, c.mode)] = counts.get((c.state, c.mode), 0) + c.hits
    return ScreenReport(
        travellers,
        counts=[StateCount(s, m, n) for (s, m), n in counts.items()],
        statuses=statuses,
        timings=timings,
        details=details,
    )


def _stop_reason(report: ScreenReport) -> tuple[str, str] | None:
    """``(State, reason)`` when a holder refused the chunk for budget or another resource limit
    (``RESOURCE_EXHAUSTED``): the next chunks would be refused too, so the run stops."""
    for state, status in sorted(report.statuses.items()):
        if status_rank(status) != status_rank("refused"):
            continue
        d = report.details.get(state, {})
        reasons = [str(r) for r in d.get("reasons", ())]
        reason = status.partition("(")[2].rstrip(")") or (reasons[0] if reasons else "refused")
        if d.get("code") == "RESOURCE_EXHAUSTED" or any("budget" in r for r in [*reasons, reason]):
            return state, reason
    return None


# -- the run ------------------------------------------------------------------------------------------------


def run_chunked(
    runner: QueryRunner,
    manifest: Sequence[PersonRecord],
    options: QueryOptions,
    *,
    progress: Progress | LineProgress | None = None,
) -> ScreenReport:
    """Screen ``manifest`` in as many exact/cardinality rounds as the targets' batch limits need.

    A manifest whose distinct match keys fit the smallest ``max_batch`` the targets advertise (through the
    coordinator's ``ListNodes``; :func:`batch_limit`) runs as the one round :meth:`QueryRunner.run` would,
    under ``options.round_id`` unchanged. Otherwise chunk ``k`` of ``n`` (:func:`plan_chunks`) runs as round
    ``<round_id>.c<k>`` (:func:`chunk_round_ids`) and the reports are merged (:func:`merge_reports`);
    ``details["chunks"]`` records the plan (``rounds``, ``round_id``, ``round_ids``, ``max_batch``,
    ``completed``, and after an early stop ``stopped_by``, ``stop_reason``, ``not_screened`` (a count),
    ``not_run_round_ids``).

    ``progress``: a :class:`fedcheck.progress.Progress` to drive (its total is set to ``n``), a callable
    receiving one line per round (no bar then), or None for a bar on stderr (interactive terminals only;
    silent in CI). Errors of a chunk's round propagate (with a note naming the chunk); the chunks before it
    were audited and their results cached, so a re-run answers them from the cache.
    """
    if options.mode not in ("exact", "cardinality"):
        raise InvalidInput("run_chunked runs exact or cardinality rounds", reason="bad_mode")
    if not manifest:
        return runner.run(manifest, options)
    coordinator = runner._coord  # the coordinator the runner itself asks (ListNodes)
    nodes = coordinator.list_nodes(timeout=10.0)
    limit = batch_limit(nodes, _targets(runner, options, nodes))
    chunks = plan_chunks(manifest, limit, _key_types(options))
    if len(chunks) <= 1:
        return runner.run(manifest, options)

    n = len(chunks)
    round_ids = chunk_round_ids(options.round_id, n)
    base = round_ids[0].rsplit(".c", 1)[0]
    _log.info(
        "manifest split into rounds",
        extra={"round_id": base, "rounds": n, "max_batch": limit, "travellers": len(manifest)},
    )
    line = progress if callable(progress) and not isinstance(progress, Progress) else None
    # lines replace the bar (both on one terminal would garble it)
    bar = progress if isinstance(progress, Progress) else Progress(
        n, desc="exact rounds", unit="round", enabled=False if line is not None else None)
    bar.total = n
    reports: list[ScreenReport] = []
    stopped: tuple[str, str] | None = None
    with bar:
        for k, (chunk, rid) in enumerate(zip(chunks, round_ids, strict=True), start=1):
            bar.desc = f"round {k}/{n}"
            if line is not None:
                line(f"exact round {k}/{n} {rid}: {len(chunk)} travellers, {chunk.keys} keys")
            try:
                report = runner.run(manifest[chunk.start:chunk.stop], replace(options, round_id=rid))
            except Exception as exc:
                exc.add_note(f"in round {k}/{n} ({rid}) of a manifest split into {n} rounds")
                raise
            reports.append(report)
            bar.update(1)
            stopped = _stop_reason(report)
            if stopped is not None:
                break

    merged = merge_reports(reports)
    done = len(reports)
    info: dict[str, Any] = {
        "rounds": n, "round_id": base, "round_ids": round_ids[:done], "max_batch": limit, "completed": done,
    }
    if stopped is not None and done < n:
        why = f"not screened: rounds stopped early ({stopped[0]} refused, {stopped[1]})"
        not_screened = [r for c in chunks[done:] for r in manifest[c.start:c.stop]]
        for r in not_screened:
            tr = TravellerResult(r.record_id, r.names[0].full_name if r.names else "")
            tr.not_checked.update((state, why) for state in merged.statuses)
            merged.travellers.append(tr)
        for state in merged.statuses:
            if status_rank(merged.statuses[state]) < status_rank(NOT_RUN):
                merged.statuses[state] = NOT_RUN
        info.update(stopped_by=stopped[0], stop_reason=stopped[1], not_screened=len(not_screened),
                    not_run_round_ids=round_ids[done:])
        _log.warning(
            "rounds stopped early: a holder refused for budget; the remaining travellers were not screened",
            extra={"round_id": base, "state": stopped[0], "reason": stopped[1],
                   "rounds": n, "completed": done},
        )
        if line is not None:
            line(f"stopped after round {done}/{n}: {stopped[0]} refused ({stopped[1]});"
                 f" {len(not_screened)} travellers not screened")
    merged.details[CHUNKS_DETAIL] = info
    runner.last_round_id = round_ids[done - 1]
    return merged
