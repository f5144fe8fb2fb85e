"""The querier side of a fuzzy (Paillier) round and of its follow-up (``fedcheck query --mode fuzzy``).

Steps: ask the coordinator which holders are up and advertise fuzzy mode; keep travellers the querier's own
policy protects away from their State of nationality; sign one ``RoundPayload`` (mode ``fuzzy``) binding
each holder's request by SHA-256; submit through the coordinator; decrypt only the hit bits. A hit is
reported with its State and the holder's round-scoped opaque reference.

Protected travellers: every target gets the *same* traveller set, count and layout. A traveller the policy
keeps away from a State is replaced, in that State's request only, by a dummy
(:data:`fedcheck.fuzzy.querier.DUMMY_TRAVELLER`): fresh ciphertexts of an all-zero encoding whose margin is
negative against every entry, so it never hits. Every target's request is encrypted on its own (fresh
ciphertexts under the sub-round's one Paillier key), so neither the request hashes in the signed payload nor
the bytes the coordinator relays show which States got a dummy. A dummy counts towards the holder's budget
like any traveller; it never hits, is never reported and never followed up.

The two-step principle: labels are fetched only by :meth:`FuzzyQueryRunner.follow_up`, a separate signed
request the coordinator relays to the one holder whose hits are followed up. Without it the holder never
learns that anything hit.

Size: a manifest larger than the wire and holder limits allow is split into **sub-rounds** (each its own
signed round id ``<round>.s<k>``, Paillier key, budget charge and audit entry at every holder). The layout is
trimmed to what the holders publish in ``NodeInfo.fuzzy`` (threshold table up to the list's largest |Y|, birth
years only over the listed window), which keeps every decision identical (docs/fuzzy.md "Request size").

Audit: every fuzzy round (one event for all its sub-rounds) and every follow-up (one event per holder) is
recorded in the querying node's own audit log when the runner has an audit sink
(:func:`fedcheck.node.querier.open_querier_audit`): counts, States and outcomes only; a run or follow-up that
fails for any reason is recorded as ``outcome: error`` (``reason: internal`` for an unexpected error).

A sub-round or follow-up the coordinator holds (``UNAVAILABLE audit_pending``: answered, not yet recorded in
its audit log) is resubmitted unchanged, as the exact runner does
(:func:`fedcheck.node.querier.collect_held`).

Follow-up later: each round's hits (traveller position, State, sub-round, reference, proof) and the traveller
ids/names are kept in :class:`FuzzyRoundStore`, sealed with the node's envelope sealer (never plaintext on
disk). The Paillier private key is *not* kept: the proofs are already decrypted, a follow-up needs no key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fedcheck.errors import FedcheckError, InvalidInput, NotFound, VerificationError
from fedcheck.fuzzy import FuzzyQuerier, HitClaim, LabelResponse, QuerierKey, ScoreRequest, ScoreResponse
from fedcheck.fuzzy.holder import CLAIMS_PER_TRAVELLER
from fedcheck.fuzzy.querier import DUMMY_TRAVELLER
from fedcheck.node import metrics
from fedcheck.node.fuzzyseal import KIND_RELEASE, KIND_SCORE, ReplyKey, verify_answer
from fedcheck.node.querier import (
    AuditSink,
    QueryOptions,
    QueryRunner,
    audit_failure,
    audit_reason,
    audit_run_failure,
    collect_held,
    failure_fields,
    round_event,
    write_audit,
)
from fedcheck.records.model import PersonRecord
from fedcheck.rpc import serde
from fedcheck.rpc.clients import CoordinatorTransport
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    FuzzyInfo,
    FuzzyReleasePayload,
    FuzzyReleaseRequest,
    HolderStatus,
    RoundPayload,
    RoundResult,
    RoundTarget,
    SignedEnvelope,
    SubmitFuzzyRoundRequest,
)
from fedcheck.screening.fuzzy import FACE_KEY_TYPE, FUZZY_KEY_TYPE, traveller_of
from fedcheck.screening.report import Hit, ScreenReport, TravellerResult, exclusion_reason, state_reason
from fedcheck.trust.atrest import Sealer
from fedcheck.trust.pki import RevocationList, sign_payload
from fedcheck.trust.policy import QuerierPolicy, exclusion_causes

__all__ = [
    "FuzzyHit", "FuzzyOptions", "FuzzyQueryRunner", "FuzzyRound", "FuzzyRoundStore", "plan_layout",
    "select_hits",
]

_log = logging.getLogger("fedcheck.querier")

#: gRPC message limit of every fedcheck channel (fedcheck.rpc.clients) and the part of it a sub-round's
#: encrypted payload may use (the rest: headers, the signed payload, certificates)
GRPC_MESSAGE_LIMIT = 32 * 1024 * 1024
WIRE_BUDGET = 30 * 1024 * 1024
#: what a holder that publishes no NodeInfo.fuzzy is assumed to accept (the historical defaults)
_DEFAULT_MAX_TRAVELLERS = 48
_YEARS = (1900, 2030)
#: how long round state is kept at the querier for a later follow-up (the longest a holder may keep a round
#: open is [fuzzy] release_ttl_seconds <= 86400)
STATE_RETENTION_SECONDS = 86400

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class FuzzyOptions:
    """Decision parameters the querier keeps to itself (the holder never learns θ or the years)."""

    threshold: str = "0.8"
    year_tolerance: int = 0
    key_bits: int = 2048
    #: 1 = per-pair blinding (the safe default); > 1 leaks score ratios (docs/threat-model.md)
    pack_size: int = 1
    workers: int | None = None
    #: "name" (bigram Dice + birth year) or "face" (travellers' face_embedding, cosine)
    kind: str = "name"
    #: birth years the DOB check covers (default 1900..2030), further narrowed to the holders' listed window;
    #: a listed year outside it is treated like an unknown year (no DOB penalty)
    year_window: tuple[int, int] | None = None
    #: travellers per sub-round; 0 = as many as the holders' limits and the 32 MB message limit allow
    sub_round_travellers: int = 0


@dataclass(frozen=True)
class FuzzyHit:
    """One fuzzy hit before follow-up: traveller (manifest position), holder State, opaque round-scoped
    reference, and the (sub-)round it belongs to."""

    traveller: int
    state: str
    claim: HitClaim
    round_id: str = ""
    fuzzy_round_id: bytes = b""

    @property
    def reference(self) -> str:
        """``fz-<traveller>.<n>``: unique within a round and State (``n``: a per-traveller shuffled slot)."""
        return f"fz-{self.traveller}.{self.claim.reference}"


@dataclass
class FuzzyRound:
    """What the querier keeps between the round and a follow-up (also sealed in :class:`FuzzyRoundStore`)."""

    round_id: str
    hits: list[FuzzyHit] = field(default_factory=list)
    sub_rounds: list[str] = field(default_factory=list)
    #: (record id, display name) per manifest position, for reporting a later follow-up
    travellers: list[tuple[str, str]] = field(default_factory=list)
    kind: str = "name"
    created_unix: float = 0.0
    #: per State, seconds the holder said it keeps a round open
    release_ttl: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps({
            "round_id": self.round_id, "sub_rounds": self.sub_rounds, "kind": self.kind,
            "created_unix": self.created_unix, "release_ttl": self.release_ttl,
            "travellers": [list(t) for t in self.travellers],
            "hits": [[h.traveller, h.state, h.round_id, h.fuzzy_round_id.hex(), h.claim.traveller,
                      h.claim.reference, h.claim.proof] for h in self.hits],
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> FuzzyRound:
        d = json.loads(data)
        hits = [FuzzyHit(int(t), str(st), HitClaim(int(ct), int(ref), int(pr)), str(rid), bytes.fromhex(fz))
                for t, st, rid, fz, ct, ref, pr in d["hits"]]
        return cls(str(d["round_id"]), hits, [str(x) for x in d["sub_rounds"]],
                   [(str(a), str(b)) for a, b in d["travellers"]], str(d.get("kind", "name")),
                   float(d.get("created_unix", 0.0)), {str(k): int(v) for k, v in d["release_ttl"].items()})


_STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS fuzzy_rounds (
    round_id TEXT PRIMARY KEY, created REAL NOT NULL, blob BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS fuzzy_sub_rounds (sub_id TEXT PRIMARY KEY, round_id TEXT NOT NULL);
"""


class FuzzyRoundStore:
    """The querier node's fuzzy round state for later follow-ups, sealed at rest (AEAD, AAD = round id).

    Holds hits with their proofs and the travellers' ids and names; no Paillier key. Rows older than
    ``retention_seconds`` (default 24 h, the longest a holder keeps a round open) are deleted on every write.
    """

    def __init__(
        self, path: Path, sealer: Sealer, *, retention_seconds: int = STATE_RETENTION_SECONDS
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sealer = sealer
        self._retention = retention_seconds
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_STORE_SCHEMA)

    @staticmethod
    def _aad(round_id: str) -> bytes:
        return b"fedcheck-fuzzy-round/" + round_id.encode()

    def put(self, rnd: FuzzyRound) -> None:
        blob = self._sealer.seal(rnd.to_json(), self._aad(rnd.round_id))
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            old = [r[0] for r in self._db.execute(
                "SELECT round_id FROM fuzzy_rounds WHERE created < ?", (now - self._retention,))]
            for rid in old:
                self._db.execute("DELETE FROM fuzzy_sub_rounds WHERE round_id=?", (rid,))
                self._db.execute("DELETE FROM fuzzy_rounds WHERE round_id=?", (rid,))
            self._db.execute("INSERT OR REPLACE INTO fuzzy_rounds VALUES (?,?,?)",
                             (rnd.round_id, rnd.created_unix or now, blob))
            self._db.executemany("INSERT OR REPLACE INTO fuzzy_sub_rounds VALUES (?,?)",
                                 [(sid, rnd.round_id) for sid in rnd.sub_rounds])
            self._db.execute("COMMIT")

    def get(self, round_id: str) -> FuzzyRound:
        """The round with this id or with this sub-round id; ``NotFound`` if unknown or pruned."""
        with self._lock:
            row = self._db.execute(
                "SELECT round_id FROM fuzzy_sub_rounds WHERE sub_id=?", (round_id,)).fetchone()
            base = str(row[0]) if row is not None else round_id
            # never a round older than the retention, even if no write has pruned it yet
            got = self._db.execute("SELECT blob FROM fuzzy_rounds WHERE round_id=? AND created >= ?",
                                   (base, time.time() - self._retention)).fetchone()
        if got is None:
            raise NotFound(f"no fuzzy round {round_id!r} kept at this node (unknown, or older than "
                           f"{self._retention // 3600} h)", reason="unknown_round")
        return FuzzyRound.from_json(self._sealer.open(bytes(got[0]), self._aad(base)))

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class Layout:
    """What one sub-round sends: table sizes, year window, travellers per sub-round and the byte estimates."""

    size_table: int
    year_base: int
    year_count: int
    face_dims: int
    per_round: int
    request_bytes_per_traveller: int
    response_bytes_per_traveller: int


def plan_layout(infos: Sequence[FuzzyInfo | None], fuzzy: FuzzyOptions, groups: int = 1) -> Layout:
    """Trim the request to what the target holders need, and size sub-rounds to the limits.

    * threshold table: up to the largest ``name_size_table`` any target publishes (128 if one publishes none);
    * birth years: the union of the targets' listed windows within ``fuzzy.year_window`` (default 1900..2030);
      years outside every listed window can never carry a penalty, so decisions are unchanged;
    * travellers per sub-round: within every target's ``max_travellers``, and such that the request
      (``groups`` distinct encrypted requests in one submission: one per target, whatever the querier's
      policy excludes) and the combined responses fit ``WIRE_BUDGET``.
    """
    lo, hi = fuzzy.year_window or _YEARS
    if not 1800 <= lo <= hi <= 2100 or hi - lo + 1 > 256:
        raise InvalidInput("year window: FROM:TO within 1800..2100, at most 256 years",
                           reason="bad_year_window")
    face = fuzzy.kind == "face"
    size_table = 1 if face else max((i.name_size_table if i and i.name_size_table else 128) for i in infos)
    size_table = max(1, min(size_table, 128)) if not face else 1
    windows = []
    for i in infos:
        if i is None:
            windows.append((lo, hi))
        elif i.year_min and i.year_max:
            a, b = max(lo, i.year_min), min(hi, i.year_max)
            if a <= b:
                windows.append((a, b))
    if face or not windows:
        year_base, year_count = 1900, 0
    else:
        year_base = min(a for a, _ in windows)
        year_count = max(b for _, b in windows) - year_base + 1
    dims_seen = [i.face_dims for i in infos if i is not None and i.face_dims]
    face_dims = max(set(dims_seen), key=dims_seen.count) if dims_seen else 128
    dims = face_dims if face else 729
    width = 2 * fuzzy.key_bits // 8
    w = 32 if face else 24
    per_pack = dims + size_table + year_count
    req_per = math.ceil(per_pack * width / fuzzy.pack_size)
    blocks = max(1, (fuzzy.key_bits - 2) // (fuzzy.pack_size * w))
    resp_per = 0
    for i in infos:
        entries = (i.face_entries if face else i.name_entries) if i is not None else 0
        resp_per += math.ceil(math.ceil(entries / blocks) * width / fuzzy.pack_size)
    limit = min((i.max_travellers if i is not None and i.max_travellers else _DEFAULT_MAX_TRAVELLERS)
                for i in infos) if infos else _DEFAULT_MAX_TRAVELLERS
    limit = min(limit, WIRE_BUDGET // (req_per * max(1, groups)))
    if resp_per:
        limit = min(limit, WIRE_BUDGET // resp_per)
    if fuzzy.sub_round_travellers:
        limit = min(limit, fuzzy.sub_round_travellers)
    limit = max(1, limit // fuzzy.pack_size * fuzzy.pack_size or fuzzy.pack_size)
    return Layout(size_table, year_base, year_count, face_dims, limit, req_per, resp_per)


def _sub_round_id(base: str, k: int, total: int) -> str:
    if total == 1:
        return base
    suffix = f".s{k + 1}"
    if len(base) + len(suffix) <= 64:
        return base + suffix
    # a long round id: truncated plus a digest of the whole id, so two long ids never share sub-round ids
    return base[: 64 - len(suffix) - 9] + "-" + hashlib.sha256(base.encode()).hexdigest()[:8] + suffix


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
        store: FuzzyRoundStore | None = None,
        ca_pem: bytes | None = None,
        crl: Callable[[], RevocationList | None] | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self._state = state
        #: the querier's own audit log (one event per fuzzy round and per follow-up); None = not audited here
        self.audit: AuditSink | None = audit
        self._coord = coordinator
        self._cert = cert_pem
        self._key = key_pem
        #: federation CA and CRL: every holder answer must carry the holder's node signature (fuzzyseal);
        #: without a CA no answer can be verified, so every holder is reported ``answer_unverified``
        self._ca = ca_pem
        self._crl: Callable[[], RevocationList | None] = crl or (lambda: None)
        self._policy = policy or QuerierPolicy()
        self.store = store
        self.last_round: RoundResult | None = None
        self.last_fuzzy: FuzzyRound | None = None
        self._round_audited = False

    @classmethod
    def for_runner(cls, runner: QueryRunner) -> FuzzyQueryRunner:
        """Same identity, coordinator connection and querier policy as an exact :class:`QueryRunner`; round
        state is kept sealed next to its querier cache (``querier-fuzzy.sqlite``)."""
        cache = getattr(runner, "_cache", None)
        store = None
        if cache is not None and getattr(cache, "path", None) is not None:
            store = FuzzyRoundStore(cache.path.with_name("querier-fuzzy.sqlite"), cache.sealer)
        return cls(state=runner._state, coordinator=runner._coord, cert_pem=runner._cert,
                   key_pem=runner._key, policy=runner._policy, store=store,
                   ca_pem=getattr(runner, "_ca", None), crl=getattr(runner, "_crl", None),
                   audit=getattr(runner, "audit", None))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

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
        progress: ProgressFn | None = None,
    ) -> ScreenReport:
        """One fuzzy round (split into sub-rounds when the limits require); hits are added to ``report`` (a
        fresh one if ``None``, else e.g. the exact report of the same manifest). With ``follow_up`` every hit
        is then followed up (labels released). ``progress`` receives one line per sub-round.

        With an audit sink the round is recorded in the querier's audit log once its sub-rounds are decided
        (before any follow-up, each of which is recorded on its own); a round that fails midway is recorded
        as ``outcome: error`` with its reason, then re-raised."""
        t_start = time.perf_counter()
        if fuzzy.kind not in ("name", "face"):
            raise InvalidInput("fuzzy kind: 'name' or 'face'", reason="bad_kind")
        round_id = options.round_id or str(uuid.uuid4())
        self._round_audited = False
        try:
            return self._run(manifest, options, fuzzy, report, follow_up, progress, round_id, t_start)
        except Exception as exc:
            if not self._round_audited:
                audit_run_failure(self.audit, exc, options, round_id=round_id, mode=FUZZY_MODE,
                                  travellers=len(manifest), started=t_start,
                                  key_types=[_key_type(fuzzy.kind)])
            raise

    def _run(
        self,
        manifest: Sequence[PersonRecord],
        options: QueryOptions,
        fuzzy: FuzzyOptions,
        report: ScreenReport | None,
        follow_up: bool,
        progress: ProgressFn | None,
        round_id: str,
        t_start: float,
    ) -> ScreenReport:
        if report is None:
            report = ScreenReport(
                [TravellerResult(r.record_id, r.names[0].full_name if r.names else "") for r in manifest]
            )
        timings = report.timings
        statuses = report.statuses
        both = any(not k.endswith("(fuzzy)") for k in statuses)  # exact statuses already there
        face = fuzzy.kind == "face"

        def tag(state: str) -> str:
            return f"{state} (fuzzy)" if both else state

        def usable(r: PersonRecord) -> bool:
            return r.face_embedding is not None if face else bool(r.names)

        def unusable(i: int) -> str:
            """Why traveller ``i`` (not excluded) could not be compared."""
            if not usable(manifest[i]):
                return "no face embedding" if face else "no name to compare"
            return "face embedding of another dimension than the States list"

        nodes = {e.state: e for e in self._coord.list_nodes(timeout=10.0)}
        targets = list(options.states) or sorted(s for s in nodes if s != self._state)
        excluded_by_state: dict[str, int] = {}
        eligible: dict[str, tuple[int, ...]] = {}
        epochs: dict[str, str] = {}
        infos: dict[str, FuzzyInfo | None] = {}
        for state in targets:
            entry = nodes.get(state)
            if entry is None or not entry.reachable or entry.info is None or not entry.info.epoch_id:
                statuses[tag(state)] = "unavailable" if entry is not None else "unavailable (not a member)"
                continue
            if FUZZY_MODE not in entry.info.modes:
                statuses[tag(state)] = "refused (fuzzy_not_served)"
                continue
            info = entry.info.fuzzy
            if face and info is not None and not info.face_dims:
                statuses[tag(state)] = "ok (no faces listed)"
                continue
            # every target is sent every usable traveller (the same set, count and layout whatever the
            # policy excludes); ``eligible`` marks the ones that are real for this State, the rest are dummies
            if not any(usable(r) for r in manifest):
                statuses[tag(state)] = "ok (nothing to send)"
                for i in range(len(manifest)):
                    report.travellers[i].not_checked.setdefault(tag(state), unusable(i))
                continue
            kept, excluded = self._policy.filter_manifest(manifest, [state])
            kept_ids = {id(r) for r in kept}
            if excluded:
                excluded_by_state[state] = len(excluded)
                report.details.setdefault(tag(state), {}).update(
                    excluded=len(excluded), excluded_causes=exclusion_causes(excluded))
                # the excluded records in manifest order (filter_manifest keeps it): a dummy in their place
                for i, excl in zip((i for i, r in enumerate(manifest) if id(r) not in kept_ids), excluded,
                                   strict=True):
                    report.travellers[i].not_checked[tag(state)] = exclusion_reason(excl.cause_text)
            eligible[state] = tuple(i for i, r in enumerate(manifest) if id(r) in kept_ids and usable(r))
            epochs[state] = entry.info.epoch_id
            infos[state] = info
        # one request per target (each encrypted on its own): the layout depends on the targets only
        layout = plan_layout(list(infos.values()), fuzzy, len(infos))

        def dims_ok(i: int) -> bool:
            return not face or len(manifest[i].face_embedding or ()) == layout.face_dims

        everyone = [i for i, r in enumerate(manifest) if usable(r) and dims_ok(i)]
        if face:  # only embeddings of the dimension the holders list can be compared
            for state in list(eligible):
                info = infos[state]
                if info is not None and info.face_dims != layout.face_dims:
                    statuses[tag(state)] = "refused (face_dims_mismatch)"
                    del eligible[state]
            if not everyone:
                for state in list(eligible):
                    statuses[tag(state)] = "ok (nothing to send)"
                    for i in range(len(manifest)):
                        report.travellers[i].not_checked.setdefault(tag(state), unusable(i))
                    del eligible[state]
            for state, pos in list(eligible.items()):
                eligible[state] = tuple(i for i in pos if dims_ok(i))
        if not eligible:
            everyone = []
        chunks = [everyone[i : i + layout.per_round] for i in range(0, len(everyone), layout.per_round)]
        rnd = FuzzyRound(round_id, kind=fuzzy.kind, created_unix=time.time(),
                         travellers=[(r.record_id, r.names[0].full_name if r.names else "")
                                     for r in manifest])
        rnd.sub_rounds = [_sub_round_id(rnd.round_id, k, len(chunks)) for k in range(len(chunks))]
        sent_bytes = received_bytes = 0
        sub_status: dict[str, list[str]] = {s: [] for s in eligible}
        for state, pos in eligible.items():  # usable by no target of this State: never compared there
            mine = set(pos)
            for i in range(len(manifest)):
                if i not in mine:
                    report.travellers[i].not_checked.setdefault(tag(state), unusable(i))
        t_encrypt = t_round = t_decide = 0.0
        for k, chunk in enumerate(chunks):
            t_sub = time.perf_counter()
            sub_id = rnd.sub_rounds[k]
            t0 = time.perf_counter()
            querier = FuzzyQuerier(
                QuerierKey.generate(fuzzy.key_bits), kind=fuzzy.kind, threshold=fuzzy.threshold,
                year_tolerance=fuzzy.year_tolerance, pack_size=fuzzy.pack_size, workers=fuzzy.workers,
                size_table=layout.size_table, year_base=layout.year_base, year_count=layout.year_count,
                face_dims=layout.face_dims,
            )
            sent: dict[str, tuple[ScoreRequest, tuple[int | None, ...]]] = {}
            requests: dict[str, bytes] = {}
            sub_bytes = 0
            real = {i: traveller_of(manifest[i], kind=fuzzy.kind) for i in chunk}
            for state, pos in eligible.items():
                # the whole chunk for every target; a traveller kept away from this State is a dummy here
                # (position None), and every target's request is encrypted afresh (no shared ciphertexts)
                mine = set(pos)
                positions = tuple(i if i in mine else None for i in chunk)
                req = querier.build_request(
                    [DUMMY_TRAVELLER if i is None else real[i] for i in positions])
                data = req.to_bytes()
                sub_bytes += len(data)
                sent[state] = (req, positions)
                requests[state] = data
            sent_bytes += sub_bytes
            t_encrypt += time.perf_counter() - t0
            t1 = time.perf_counter()
            now_ms = int(time.time() * 1000)
            payload = RoundPayload(
                round_id=sub_id,
                purpose=options.purpose,
                legal_basis=options.legal_basis,
                mode=FUZZY_MODE,
                targets=tuple(
                    RoundTarget(s, epochs[s], sent[s][0].traveller_count, hashlib.sha256(data).digest())
                    for s, data in requests.items()
                ),
                deadline_unix_ms=now_ms + int(options.deadline_seconds * 1000),
                issued_at_unix_ms=now_ms,
                unit=options.unit,
                official=options.official,
            )
            env = self._sign(serde.round_payload_to_bytes(payload))
            submitted = SubmitFuzzyRoundRequest(env, requests, sub_id)
            result = collect_held(  # a held answer: the unchanged request, never a re-signed one
                partial(self._coord.submit_fuzzy_round, submitted, timeout=options.deadline_seconds + 10),
                round_id=sub_id,
            )
            self.last_round = result
            t_round += time.perf_counter() - t1
            t2 = time.perf_counter()
            by_state = result.by_state()
            hits_here = 0
            for state, (req, positions) in sent.items():
                hr = by_state.get(state)
                if hr is None or hr.status is not HolderStatus.OK or hr.fuzzy is None:
                    status = str(hr.status) if hr is not None else "unavailable"
                    why = f" ({hr.reason})" if hr is not None and hr.reason else ""
                    sub_status[state].append(status + why)
                    _not_checked(report, chunk, tag(state), status + why)
                    metrics.ROUNDS.labels(role="querier", state=state, status=status).inc()
                    continue
                received_bytes += len(hr.fuzzy.score_response)
                if hr.fuzzy.audit_hash:  # the holder's signed audit head after this (latest) sub-round
                    report.details.setdefault(tag(state), {})["audit_head"] = (
                        f"{hr.fuzzy.audit_seq}:{hr.fuzzy.audit_hash}")
                try:
                    # the holder's signature over exactly this answer to exactly this signed round: a relay
                    # cannot substitute an all-miss or a forged answer (fedcheck.node.fuzzyseal)
                    verify_answer(hr.fuzzy.attestation, ca_pem=self._ca, crl=self._crl, kind=KIND_SCORE,
                                  holder_state=state, querier_state=self._state, round_id=sub_id,
                                  request_payload=env.payload, answer=hr.fuzzy.score_response)
                    decided = querier.decide(req, ScoreResponse.from_bytes(hr.fuzzy.score_response))
                except FedcheckError as exc:
                    sub_status[state].append(f"refused ({exc.reason})")
                    _not_checked(report, chunk, tag(state), f"refused ({exc.reason})")
                    continue
                sub_status[state].append("ok")
                rnd.release_ttl[state] = hr.fuzzy.release_ttl_seconds
                metrics.ROUNDS.labels(role="querier", state=state, status="ok").inc()
                for claim in decided.hits:
                    at = positions[claim.traveller]
                    if at is None:  # a dummy cannot hit an honest holder's list: never kept, never reported
                        _log.warning("fuzzy hit on a dummy traveller ignored",
                                     extra={"round_id": sub_id, "state": state})
                        continue
                    rnd.hits.append(FuzzyHit(at, state, claim, sub_id, req.round_id))
                    hits_here += 1
            t_decide += time.perf_counter() - t2
            if self.store is not None:
                self.store.put(rnd)  # sealed after every sub-round: a later follow-up survives a crash too
            if progress is not None:
                progress(f"fuzzy sub-round {k + 1}/{len(chunks)} {sub_id}: {len(chunk)} travellers -> "
                         f"{','.join(sorted(sent))}, {sub_bytes / 1e6:.1f} MB sent, {hits_here} hits, "
                         f"{time.perf_counter() - t_sub:.1f} s")
        for state, subs in sub_status.items():
            bad = [(i, v) for i, v in enumerate(subs) if v != "ok"]
            if not bad:
                statuses[tag(state)] = "ok"
            else:
                v = bad[0][1]
                statuses[tag(state)] = v if len(subs) == 1 else f"{v} in {len(bad)}/{len(subs)} sub-rounds"
        for state in targets:  # a State that was not asked at all (down, refused before the round)
            if state in sub_status:
                continue  # asked: the sub-rounds it failed already marked their own travellers
            st = statuses.get(tag(state), "unavailable")
            if not st.startswith("ok"):
                _not_checked(report, range(len(manifest)), tag(state), st)
        timings["fuzzy encrypt"] = t_encrypt
        timings["fuzzy round"] = t_round
        timings["fuzzy decide"] = t_decide
        report.details.setdefault("fuzzy", {}).update(
            round_id=rnd.round_id, sub_rounds=len(chunks), travellers_per_sub_round=layout.per_round,
            travellers=len(everyone), request_bytes=sent_bytes, response_bytes=received_bytes,
            hits=len(rnd.hits), kind=fuzzy.kind, size_table=layout.size_table,
            years=(f"{layout.year_base}..{layout.year_base + layout.year_count - 1}"
                   if layout.year_count else ""),
            stored=self.store is not None,
        )
        self.last_fuzzy = rnd
        hits_by_state = {s: len({h.traveller for h in rnd.hits if h.state == s})
                         for s in sorted({h.state for h in rnd.hits})}  # travellers with a hit, per State
        write_audit(self.audit, round_event(
            options, round_id=rnd.round_id, mode=FUZZY_MODE, targets=targets,
            statuses={s: statuses.get(tag(s), "unavailable") for s in targets}, travellers=len(manifest),
            # what each holder received: dummies included (as exact rounds log the padded batch size)
            items_by_state={s: len(everyone) for s in eligible}, hits_by_state=hits_by_state,
            excluded_by_state=excluded_by_state, epochs=epochs, started=t_start,
            key_types=[_key_type(fuzzy.kind)], sub_rounds=len(chunks),
        ))
        self._round_audited = True

        released: dict[tuple[str, str, int, int], dict[str, str]] = {}
        if follow_up and rnd.hits:
            t3 = time.perf_counter()
            for state in sorted({h.state for h in rnd.hits}):
                try:
                    released.update(self.follow_up(rnd, state, options))
                except FedcheckError as exc:
                    statuses[tag(state)] = f"ok; follow-up refused ({exc.reason})"
            timings["fuzzy follow-up"] = time.perf_counter() - t3
        self.add_hits(report, rnd, released, manifest)
        timings["fuzzy total"] = time.perf_counter() - t_start
        _log.info("fuzzy query finished", extra={"round_id": rnd.round_id, "states": dict(statuses),
                                                  "count": len(rnd.hits)})
        return report

    def add_hits(
        self,
        report: ScreenReport,
        rnd: FuzzyRound,
        released: dict[tuple[str, str, int, int], dict[str, str]],
        manifest: Sequence[PersonRecord] | None = None,
        hits: Sequence[FuzzyHit] | None = None,
    ) -> None:
        """Add ``hits`` (default: all of the round's) to ``report``: the label when released, else the
        reference a later ``fedcheck query follow-up`` can name."""
        key_type = FACE_KEY_TYPE if rnd.kind == "face" else FUZZY_KEY_TYPE
        seen: set[tuple[int, str, str]] = set()
        for h in hits if hits is not None else rnd.hits:
            label = released.get((h.state, h.round_id, h.claim.traveller, h.claim.reference))
            if label is None:
                label = {"category": "follow-up needed", "reference": h.reference, "round": h.round_id}
            key = (h.traveller, h.state, label.get("reference", ""))
            if key in seen:  # several name/year variants of one listed person
                continue
            seen.add(key)
            flags = manifest[h.traveller].flags if manifest is not None else ()
            review = label.get("category") != "follow-up needed" and self._policy.requires_human_review(
                h.state, label, record_flags=flags
            )
            report.travellers[h.traveller].hits.append(Hit(h.state, "fuzzy", key_type, label, review))

    def follow_up(
        self, rnd: FuzzyRound, state: str, options: QueryOptions, hits: Sequence[FuzzyHit] | None = None
    ) -> dict[tuple[str, str, int, int], dict[str, str]]:
        """Ask ``state`` (only) for the labels of ``hits`` (default: all of this round's hits at ``state``),
        one signed follow-up per sub-round.

        Returns ``(state, sub-round id, request traveller index, reference) -> label`` for the claims the
        holder verified. With an audit sink, recorded in the querier's audit log (one event: claims sent,
        labels released, outcome) before the labels are returned; a refusal is recorded, then re-raised.
        """
        t_start = time.perf_counter()
        counts = {"claims": 0, "requests": 0}
        try:
            out = self._follow_up(rnd, state, options, hits, counts)
        except Exception as exc:
            if self.audit is not None:
                event = self._follow_up_event(rnd, state, options, counts, 0, t_start)
                if isinstance(exc, FedcheckError):
                    refused = exc.status in ("PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED")
                    reason = audit_reason(exc)
                    event.update(outcome="refused" if refused else "error", status=exc.status,
                                 reason=reason, statuses={state: f"follow-up refused ({reason})"})
                else:
                    event.update(failure_fields(exc), statuses={state: "follow-up failed (internal)"})
                audit_failure(self.audit, event)
            raise
        write_audit(self.audit, self._follow_up_event(rnd, state, options, counts, len(out), t_start))
        return out

    def _follow_up_event(
        self, rnd: FuzzyRound, state: str, options: QueryOptions, counts: dict[str, int], released: int,
        t_start: float,
    ) -> dict[str, Any]:
        return round_event(
            options, event_type="query_follow_up", round_id=rnd.round_id, mode="follow-up", targets=[state],
            statuses={state: "ok"}, travellers=len(rnd.travellers),
            items_by_state={state: counts["claims"]}, hits_by_state={state: released}, excluded_by_state={},
            epochs={}, started=t_start, holder=state, sub_rounds=counts["requests"],
            key_types=[_key_type(rnd.kind)],
        )

    def _follow_up(
        self, rnd: FuzzyRound, state: str, options: QueryOptions, hits: Sequence[FuzzyHit] | None,
        counts: dict[str, int],
    ) -> dict[tuple[str, str, int, int], dict[str, str]]:
        chosen = [h for h in (hits if hits is not None else rnd.hits) if h.state == state]
        by_sub: dict[tuple[str, bytes], list[FuzzyHit]] = {}
        per_traveller: dict[tuple[str, int], int] = {}
        for h in chosen:
            # the holder accepts CLAIMS_PER_TRAVELLER claims per traveller of a round: more hits of one
            # traveller (aliases of one listed person, usually) stay "follow-up needed"
            n = per_traveller.get((h.round_id, h.claim.traveller), 0)
            if n >= CLAIMS_PER_TRAVELLER:
                continue
            per_traveller[(h.round_id, h.claim.traveller)] = n + 1
            by_sub.setdefault((h.round_id or rnd.round_id, h.fuzzy_round_id), []).append(h)
        out: dict[tuple[str, str, int, int], dict[str, str]] = {}
        for (sub_id, fz_id), group in by_sub.items():
            counts["claims"] += len(group)
            counts["requests"] += 1
            label_request = FuzzyQuerier.follow_up(fz_id, [h.claim for h in group])
            reply_key = ReplyKey()  # fresh per follow-up: the holder seals the labels to it
            data = label_request.to_bytes()
            payload = FuzzyReleasePayload(
                round_id=sub_id,
                holder_state=state,
                label_request_sha256=hashlib.sha256(data).digest(),
                issued_at_unix_ms=int(time.time() * 1000),
                purpose=options.purpose,
                legal_basis=options.legal_basis,
                unit=options.unit,
                official=options.official,
                reply_public_key=reply_key.public,
            )
            env = self._sign(serde.fuzzy_release_payload_to_bytes(payload))
            release = FuzzyReleaseRequest(env, data)
            reply = collect_held(  # a held reply: the unchanged follow-up (the holder releases once)
                partial(self._coord.fuzzy_release, state, release, timeout=options.deadline_seconds),
                round_id=sub_id,
            )
            # signed by that holder over this answer to this follow-up, then opened with the reply key: the
            # relay neither reads nor alters the labels (a failure raises answer_unverified, nothing accepted)
            verify_answer(reply.attestation, ca_pem=self._ca, crl=self._crl, kind=KIND_RELEASE,
                          holder_state=state, querier_state=self._state, round_id=sub_id,
                          request_payload=env.payload, answer=reply.sealed_label_response)
            response = LabelResponse.from_bytes(reply_key.open(
                reply.sealed_label_response, querier_state=self._state, holder_state=state, round_id=sub_id))
            if response.round_id != fz_id:
                raise VerificationError("follow-up answer is for another round", reason="answer_unverified")
            out.update({
                (state, sub_id, r.traveller, r.reference): {str(k): str(v) for k, v in r.label.items()}
                for r in response.released
            })
        return out


def _not_checked(report: ScreenReport, positions: Sequence[int], state: str, status: str) -> None:
    """``state`` answered nothing usable for the travellers at ``positions`` (a sub-round, or all)."""
    for i in positions:
        report.travellers[i].not_checked.setdefault(state, state_reason(status))


def _key_type(kind: str) -> str:
    return FACE_KEY_TYPE if kind == "face" else FUZZY_KEY_TYPE


def select_hits(
    rnd: FuzzyRound, round_id: str, references: Sequence[str], states: Sequence[str]
) -> list[FuzzyHit]:
    """The hits a later follow-up names: by sub-round (when ``round_id`` is one), State and reference.

    A reference is unique within a (sub-)round and State; one that matches hits at several States needs
    ``states`` to say which (never silently release more than the officer named).
    """
    hits = [h for h in rnd.hits if round_id in (rnd.round_id, h.round_id)]
    if states:
        hits = [h for h in hits if h.state in states]
    if not references:
        return hits
    out: list[FuzzyHit] = []
    for ref in references:
        match = [h for h in hits if h.reference == ref]
        if not match:
            raise NotFound(f"reference {ref!r}: no hit of round {round_id!r} has it",
                           reason="unknown_reference")
        if len({(h.state, h.round_id) for h in match}) > 1:
            raise InvalidInput(f"reference {ref!r} matches hits at several States; name one with --states",
                               reason="ambiguous_reference")
        out.extend(match)
    return out

