"""The querier side of a fuzzy (Paillier) round and of its follow-up (``fedcheck query --mode fuzzy``).

Steps: ask the coordinator which holders are up and advertise fuzzy mode; keep travellers the querier's own
policy protects away from their State of nationality (so different holders may get different traveller
sets; each distinct set is encrypted once under one fresh Paillier key); sign one ``RoundPayload`` (mode
``fuzzy``) binding each holder's request by SHA-256; submit through the coordinator; decrypt only the hit
bits. A hit is reported with its State and the holder's round-scoped opaque reference.

The two-step principle: labels are fetched only by :meth:`FuzzyQueryRunner.follow_up`, a separate signed
request the coordinator relays to the one holder whose hits are followed up. Without it the holder never
learns that anything hit.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedcheck.errors import FedcheckError
from fedcheck.fuzzy import FuzzyQuerier, HitClaim, LabelResponse, QuerierKey, ScoreRequest, ScoreResponse
from fedcheck.node import metrics
from fedcheck.node.querier import QueryOptions, QueryRunner
from fedcheck.records.model import PersonRecord
from fedcheck.rpc import serde
from fedcheck.rpc.clients import CoordinatorTransport
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    FuzzyReleasePayload,
    FuzzyReleaseRequest,
    HolderStatus,
    RoundPayload,
    RoundResult,
    RoundTarget,
    SignedEnvelope,
    SubmitFuzzyRoundRequest,
)
from fedcheck.screening.fuzzy import FUZZY_KEY_TYPE, traveller_of
from fedcheck.screening.report import Hit, ScreenReport, TravellerResult
from fedcheck.trust.pki import sign_payload
from fedcheck.trust.policy import QuerierPolicy

__all__ = ["FuzzyHit", "FuzzyOptions", "FuzzyQueryRunner", "FuzzyRound"]

_log = logging.getLogger("fedcheck.querier")


@dataclass(frozen=True)
class FuzzyOptions:
    """Decision parameters the querier keeps to itself (the holder never learns θ or the years)."""

    threshold: str = "0.8"
    year_tolerance: int = 0
    key_bits: int = 2048
    #: 1 = per-pair blinding (the safe default); > 1 leaks score ratios (docs/threat-model.md)
    pack_size: int = 1
    workers: int | None = None


@dataclass(frozen=True)
class FuzzyHit:
    """One fuzzy hit before follow-up: traveller position, holder State, opaque round-scoped reference."""

    traveller: int
    state: str
    claim: HitClaim

    @property
    def reference(self) -> str:
        return f"fz-{self.claim.reference}"


@dataclass
class _Sent:
    request: ScoreRequest
    positions: list[int]  # request traveller index -> manifest position


@dataclass
class FuzzyRound:
    """What the querier keeps between the round and a follow-up (in memory only)."""

    round_id: str
    hits: list[FuzzyHit] = field(default_factory=list)
    sent: dict[str, _Sent] = field(default_factory=dict)


class FuzzyQueryRunner:
    """Runs fuzzy rounds and follow-ups for a querying node."""

    def __init__(
        self,
        *,
        state: str,
        coordinator: CoordinatorTransport,
        cert_pem: bytes,
        key_pem: bytes,
        policy: QuerierPolicy | None = None,
    ) -> None:
        self._state = state
        self._coord = coordinator
        self._cert = cert_pem
        self._key = key_pem
        self._policy = policy or QuerierPolicy()
        self.last_round: RoundResult | None = None
        self.last_fuzzy: FuzzyRound | None = None

    @classmethod
    def for_runner(cls, runner: QueryRunner) -> FuzzyQueryRunner:
        """Same identity, coordinator connection and querier policy as an exact :class:`QueryRunner`."""
        return cls(state=runner._state, coordinator=runner._coord, cert_pem=runner._cert,
                   key_pem=runner._key, policy=runner._policy)

    def _sign(self, payload: bytes) -> SignedEnvelope:
        return SignedEnvelope(payload, sign_payload(self._key, payload), self._cert)

    def run(
        self,
        manifest: Sequence[PersonRecord],
        options: QueryOptions,
        fuzzy: FuzzyOptions = FuzzyOptions(),
        *,
        report: ScreenReport | None = None,
        follow_up: bool = False,
    ) -> ScreenReport:
        """One fuzzy round; hits are added to ``report`` (a fresh one if ``None``, else e.g. the exact
        report of the same manifest). With ``follow_up`` every hit is then followed up (labels released)."""
        t_start = time.perf_counter()
        if report is None:
            report = ScreenReport(
                [TravellerResult(r.record_id, r.names[0].full_name if r.names else "") for r in manifest]
            )
        timings = report.timings
        statuses = report.statuses
        both = any(not k.endswith("(fuzzy)") for k in statuses)  # exact statuses already there

        def tag(state: str) -> str:
            return f"{state} (fuzzy)" if both else state

        nodes = {e.state: e for e in self._coord.list_nodes(timeout=10.0)}
        targets = list(options.states) or sorted(s for s in nodes if s != self._state)
        groups: dict[tuple[int, ...], list[str]] = {}
        epochs: dict[str, str] = {}
        for state in targets:
            entry = nodes.get(state)
            if entry is None or not entry.reachable or entry.info is None or not entry.info.epoch_id:
                statuses[tag(state)] = "unavailable" if entry is not None else "unavailable (not a member)"
                continue
            if FUZZY_MODE not in entry.info.modes:
                statuses[tag(state)] = "refused (fuzzy_not_served)"
                continue
            kept, _excluded = self._policy.filter_manifest(manifest, [state])
            kept_ids = {id(r) for r in kept}
            positions = tuple(i for i, r in enumerate(manifest) if id(r) in kept_ids and r.names)
            if not positions:
                statuses[tag(state)] = "ok (nothing to send)"
                continue
            groups.setdefault(positions, []).append(state)
            epochs[state] = entry.info.epoch_id
        t0 = time.perf_counter()
        querier: FuzzyQuerier | None = None
        rnd = FuzzyRound(options.round_id or str(uuid.uuid4()))
        requests: dict[str, bytes] = {}
        if groups:
            querier = FuzzyQuerier(
                QuerierKey.generate(fuzzy.key_bits), kind="name", threshold=fuzzy.threshold,
                year_tolerance=fuzzy.year_tolerance, pack_size=fuzzy.pack_size, workers=fuzzy.workers,
            )
            for positions, states in groups.items():
                req = querier.build_request([traveller_of(manifest[i]) for i in positions])
                data = req.to_bytes()
                for state in states:
                    rnd.sent[state] = _Sent(req, list(positions))
                    requests[state] = data
        timings["fuzzy encrypt"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        result: RoundResult | None = None
        if requests:
            now_ms = int(time.time() * 1000)
            payload = RoundPayload(
                round_id=rnd.round_id,
                purpose=options.purpose,
                legal_basis=options.legal_basis,
                mode=FUZZY_MODE,
                targets=tuple(
                    RoundTarget(s, epochs[s], rnd.sent[s].request.traveller_count,
                                hashlib.sha256(data).digest())
                    for s, data in requests.items()
                ),
                deadline_unix_ms=now_ms + int(options.deadline_seconds * 1000),
                issued_at_unix_ms=now_ms,
                unit=options.unit,
                official=options.official,
            )
            env = self._sign(serde.round_payload_to_bytes(payload))
            result = self._coord.submit_fuzzy_round(
                SubmitFuzzyRoundRequest(env, requests, rnd.round_id), timeout=options.deadline_seconds + 10
            )
            self.last_round = result
        timings["fuzzy round"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        by_state = result.by_state() if result is not None else {}
        for state, sent in rnd.sent.items():
            hr = by_state.get(state)
            if hr is None or hr.status is not HolderStatus.OK or hr.fuzzy is None:
                status = str(hr.status) if hr is not None else "unavailable"
                statuses[tag(state)] = status + (f" ({hr.reason})" if hr is not None and hr.reason else "")
                metrics.ROUNDS.labels(role="querier", state=state, status=status).inc()
                continue
            assert querier is not None
            try:
                decided = querier.decide(sent.request, ScoreResponse.from_bytes(hr.fuzzy.score_response))
            except FedcheckError as exc:
                statuses[tag(state)] = f"refused ({exc.reason})"
                continue
            statuses[tag(state)] = "ok"
            metrics.ROUNDS.labels(role="querier", state=state, status="ok").inc()
            for claim in decided.hits:
                rnd.hits.append(FuzzyHit(sent.positions[claim.traveller], state, claim))
        timings["fuzzy decide"] = time.perf_counter() - t2
        self.last_fuzzy = rnd

        released: dict[tuple[str, int, int], dict[str, str]] = {}
        if follow_up and rnd.hits:
            t3 = time.perf_counter()
            for state in sorted({h.state for h in rnd.hits}):
                try:
                    released.update(self.follow_up(rnd, state, options))
                except FedcheckError as exc:
                    statuses[tag(state)] = f"ok; follow-up refused ({exc.reason})"
            timings["fuzzy follow-up"] = time.perf_counter() - t3
        seen: set[tuple[int, str, str]] = set()
        for h in rnd.hits:
            label = released.get((h.state, h.claim.traveller, h.claim.reference))
            if label is None:
                label = {"category": "follow-up needed", "reference": h.reference}
            key = (h.traveller, h.state, label.get("reference", ""))
            if key in seen:  # several name/year variants of one listed person
                continue
            seen.add(key)
            review = label.get("category") != "follow-up needed" and self._policy.requires_human_review(
                h.state, label, record_flags=manifest[h.traveller].flags
            )
            report.travellers[h.traveller].hits.append(Hit(h.state, "fuzzy", FUZZY_KEY_TYPE, label, review))
        timings["fuzzy total"] = time.perf_counter() - t_start
        _log.info("fuzzy query finished", extra={"round_id": rnd.round_id, "states": dict(statuses),
                                                  "count": len(rnd.hits)})
        return report

    def follow_up(
        self, rnd: FuzzyRound, state: str, options: QueryOptions, hits: Sequence[FuzzyHit] | None = None
    ) -> dict[tuple[str, int, int], dict[str, str]]:
        """Ask ``state`` (only) for the labels of ``hits`` (default: all of this round's hits at ``state``).

        Returns ``(state, request traveller index, reference) -> label`` for the claims the holder verified.
        """
        chosen = [h for h in (hits if hits is not None else rnd.hits) if h.state == state]
        sent = rnd.sent[state]
        label_request = FuzzyQuerier.follow_up(sent.request.round_id, [h.claim for h in chosen])
        data = label_request.to_bytes()
        payload = FuzzyReleasePayload(
            round_id=rnd.round_id,
            holder_state=state,
            label_request_sha256=hashlib.sha256(data).digest(),
            issued_at_unix_ms=int(time.time() * 1000),
            purpose=options.purpose,
            legal_basis=options.legal_basis,
            unit=options.unit,
            official=options.official,
        )
        env = self._sign(serde.fuzzy_release_payload_to_bytes(payload))
        raw = self._coord.fuzzy_release(
            state, FuzzyReleaseRequest(env, data), timeout=options.deadline_seconds
        )
        response = LabelResponse.from_bytes(raw)
        return {
            (state, r.traveller, r.reference): {str(k): str(v) for k, v in r.label.items()}
            for r in response.released
        }
