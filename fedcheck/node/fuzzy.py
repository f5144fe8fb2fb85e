"""The holder node's fuzzy (Paillier) handling: ``FuzzyScore`` and the audited ``FuzzyRelease`` follow-up.

Why a separate service next to :class:`fedcheck.node.service.NodeService`: the exact path is built around
epoch indexes and OPRF keys; the fuzzy path scores encrypted travellers against the *records* of the epoch's
list and keeps per-round secrets (shuffles, blinding factors) for a follow-up. Both share identity, policy,
budget and audit; the signer, freshness and refusal checks are one :class:`fedcheck.node.gate.RequestGate`.

Order of checks for a score, each refusal audited: querier signature and certificate (State from the
certificate, never a field) -> mode is fuzzy and the request is the one signed for this State (count and
SHA-256) -> deadline and freshness -> epoch still served -> holder policy (mode ``fuzzy`` allowed for the
partner, purpose, legal basis, batch size) -> the whole request validated (key size, layout, every
ciphertext) -> replay guard -> budget charged -> scoring -> audit entry durable -> answer.

Decisions documented in docs/fuzzy.md ("Integration"):

* **Budget is charged per traveller** (one item each, from the same ledger as exact items): a traveller is
  one probe of the whole list whatever the list's size, so travellers are what bounds what a querier can
  learn; pairs would make the price depend on the holder's own list size.
* **Audience**: the holder's entries for a partner leave out the partner's withheld references and carry only
  the label fields disclosed to it, exactly like its exact index.
* **Follow-up**: only the round's signer can follow it up, within ``release_ttl_seconds``; the holder keeps
  no more than ``max_open_rounds`` rounds, shared equally by the partners allowed fuzzy mode: a partner's
  new round forgets only *that partner's* oldest round once it holds its share, so no partner can push
  another's open rounds out with many cheap ones. The holder learns of a hit only here.
* **Holder data**: a listed face that cannot be scored is left out (``entries_from_records`` counts it and
  warns); a list that cannot be prepared at all is FAILED_PRECONDITION ``holder_list_unusable``, never an
  INVALID_ARGUMENT that would blame the querier.
* Scoring runs one round at a time per node (the scoring kernel forks workers over module state and uses all
  cores anyway); a queued round still respects its deadline.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcheck.errors import (
    FedcheckError,
    IntegrityError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    PolicyDenied,
    PreconditionFailed,
    Unavailable,
)
from fedcheck.fuzzy import FuzzyHolder, HolderLimits, LabelRequest, ScoreRequest, entries_from_records
from fedcheck.fuzzy._paillier import ALLOWED_KEY_BITS
from fedcheck.fuzzy.encoding import MAX_BIGRAMS
from fedcheck.fuzzy.holder import CLAIMS_PER_TRAVELLER, HolderEntry
from fedcheck.node import metrics
from fedcheck.node.epochs import EpochManager
from fedcheck.node.fuzzyseal import KIND_RELEASE, KIND_SCORE, AnswerSigner, seal_labels
from fedcheck.node.gate import FUZZY_REFUSALS, RequestGate
from fedcheck.node.replay import ReplayGuard, fuzzy_key, release_key
from fedcheck.records.model import PersonRecord
from fedcheck.rpc import serde
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    FuzzyInfo,
    FuzzyReleaseReply,
    FuzzyReleaseRequest,
    FuzzyScore,
    FuzzyScoreRequest,
)
from fedcheck.storage.base import WatchlistStore
from fedcheck.trust.audit import SignedHead
from fedcheck.trust.budget import BudgetLedger
from fedcheck.trust.pki import PeerIdentity, RevocationList
from fedcheck.trust.policy import HolderPolicy, PartnerPolicy, RoundRequest

__all__ = ["FuzzyService", "FuzzySettings"]

_log = logging.getLogger("fedcheck.node.fuzzy")

#: Appends one audit event durably before returning (the node's audit log); returns the signed head
#: acknowledging it (``None`` when the sink has no signed head, e.g. in tests), which travels with the answer.
AuditFn = Callable[[dict[str, Any]], SignedHead | None]

#: Claims one follow-up request may carry: the most one round can ever accept (CLAIMS_PER_TRAVELLER x the
#: largest [fuzzy] max_travellers), and the bound of the audit event's ``references`` (fedcheck.trust.audit)
MAX_RELEASE_CLAIMS = CLAIMS_PER_TRAVELLER * 1000

#: Rounds a FuzzyHolder keeps beyond the node's cap on open rounds: a round is scored (kept by the holder)
#: just before the node registers it and trims the partner's own rounds, so the holder's own
#: oldest-first limit must never be what forgets a round (it does not know partners).
_HOLDER_ROUND_SLACK = 64


@dataclass(frozen=True)
class FuzzySettings:
    """The ``[fuzzy]`` table of a node's TOML (docs/operator-guide.md)."""

    enabled: bool = True
    #: travellers per FuzzyScore (one request is ~0.5 MB per traveller with 2048-bit keys; gRPC caps at 32 MB)
    max_travellers: int = 48
    #: how long a round's shuffle and blinding stay available for a follow-up
    release_ttl_seconds: int = 600
    #: rounds kept open for follow-ups, split equally between the partners allowed fuzzy mode (a partner's
    #: oldest forgotten first once it holds its share); bounds memory
    max_open_rounds: int = 64
    #: Paillier modulus sizes accepted; only 2048 and 3072 in production (1024 exists for fast tests)
    key_bits: frozenset[int] = field(default_factory=lambda: frozenset(ALLOWED_KEY_BITS))
    #: scoring processes; 0 = all cores
    workers: int = 0
    #: travellers per Paillier plaintext; > 1 shares blinding within a pack, which leaks margins and voids
    #: the follow-up proof (docs/threat-model.md): only for a trusted partner
    max_pack_size: int = 1

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> FuzzySettings:
        from fedcheck.errors import ConfigError

        table = doc.get("fuzzy", {})
        if not isinstance(table, dict):
            raise ConfigError("[fuzzy] must be a table", reason="config_type")
        unknown = sorted(set(table) - {"enabled", "max_travellers", "release_ttl_seconds", "max_open_rounds",
                                       "key_bits", "workers", "max_pack_size"})
        if unknown:
            raise ConfigError(f"fuzzy: unknown key(s) {unknown}", reason="config_unknown_key")
        base = cls()

        def num(key: str, default: int, lo: int, hi: int) -> int:
            v = table.get(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"fuzzy.{key} must be an integer in {lo}..{hi}", reason="config_limits")
            return v

        bits = table.get("key_bits", sorted(base.key_bits))
        if not isinstance(bits, list) or not bits or any(b not in (1024, 2048, 3072) for b in bits):
            raise ConfigError("fuzzy.key_bits must list 2048 and/or 3072 (1024: tests only)",
                              reason="config_limits")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError("fuzzy.enabled must be true or false", reason="config_type")
        return cls(
            enabled=enabled,
            max_travellers=num("max_travellers", base.max_travellers, 1, 1000),
            release_ttl_seconds=num("release_ttl_seconds", base.release_ttl_seconds, 10, 86400),
            max_open_rounds=num("max_open_rounds", base.max_open_rounds, 1, 10_000),
            key_bits=frozenset(bits),
            workers=num("workers", base.workers, 0, 1024),
            max_pack_size=num("max_pack_size", base.max_pack_size, 1, 256),
        )


@dataclass
class _OpenRound:
    holder: FuzzyHolder
    fuzzy_round_id: bytes
    epoch_id: str
    expires: float
    travellers: int


class FuzzyService:
    """Fuzzy scoring and follow-up for one holder node; thread-safe."""

    def __init__(
        self,
        *,
        state: str,
        store: WatchlistStore,
        epochs: EpochManager,
        policy: HolderPolicy,
        budget: BudgetLedger,
        audit: AuditFn,
        ca_pem: bytes,
        crl: Callable[[], RevocationList | None],
        settings: FuzzySettings = FuzzySettings(),
        max_skew_seconds: int = 600,
        replay: ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
        signer: AnswerSigner | None = None,
    ) -> None:
        self._state = state
        self._store = store
        self._epochs = epochs
        self._policy = policy
        self._budget = budget
        self._audit = audit
        self.settings = settings
        self._replay = replay
        self._clock = clock
        #: signer identity, freshness and refusal auditing, shared with the exact service (fedcheck.node.gate)
        self._gate = RequestGate(
            ca_pem=ca_pem, crl=crl, policy=policy, audit=audit, style=FUZZY_REFUSALS,
            max_skew_seconds=max_skew_seconds, clock=clock,
        )
        #: signs every answer with the node certificate key (fedcheck.node.fuzzyseal); without it queriers
        #: refuse this holder's answers (they cannot tell them from a relay's)
        self._signer = signer
        self._lock = threading.Lock()  # holders cache and open rounds
        self._score_lock = threading.Lock()  # one scoring at a time (see module docstring)
        self._records: tuple[str, list[PersonRecord]] | None = None  # (list version, records)
        self._holders: dict[tuple[str, str, str], FuzzyHolder] = {}  # (epoch, audience, kind) -> holder
        self._infos: dict[str, tuple[str, FuzzyInfo]] = {}  # audience ("*": relayed) -> (list version, info)
        self._refs: tuple[str, dict[str, str]] | None = None  # (list version, record id -> list reference)
        self._open: OrderedDict[tuple[str, str], _OpenRound] = OrderedDict()  # (querier, round id)

    # -- helpers -------------------------------------------------------------------------------------------

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, r in self._open.items() if r.expires < now]:
            rnd = self._open.pop(key)
            rnd.holder.close_round(rnd.fuzzy_round_id)

    def _load_records(self) -> list[PersonRecord]:
        version = self._store.list_version()
        with self._lock:
            if self._records is None or self._records[0] != version:
                self._records = (version, list(self._store.iter_records()))
            return self._records[1]

    def info(self, peer: PeerIdentity | None = None) -> FuzzyInfo:
        """Public layout hints for NodeInfo (cached per list version and audience), rounded to say little.

        ``name_size_table`` covers every |Y| (rounded up to 16), the year window every birth year (decades)
        of the *audience's* entries, so a querier that sends only these tables gets decisions identical to the
        full 128/131 tables. A partner asking directly gets the hints of its own audience (never counting
        entries withheld from it); the coordinator -- whose answer is relayed to every partner -- and an
        unidentified caller get the hints of the union of the audiences of partners allowed fuzzy mode
        (valid for each of them; they count no entry withheld from every partner).
        """
        partner = None
        if (
            peer is not None
            and peer.role != "coordinator"
            and not self._policy.evaluator_refused(peer.role, peer.state)  # no stand-in for a member
        ):
            partner = self._policy.partner(peer.state)
        key = partner.audience_id if partner is not None else "*"
        version = self._store.list_version()
        with self._lock:
            cached = self._infos.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
        records = self._load_records()
        if partner is not None:
            records = [r for r in records if r.label.reference not in partner.withheld]
        else:
            fuzzy_partners = self._fuzzy_partner_policies()
            records = [r for r in records if any(r.label.reference not in p.withheld for p in fuzzy_partners)]
        names = entries_from_records(records, kind="name")
        max_y = max((len(e.dims) for e in names), default=0)
        years = [e.year for e in names if e.year is not None]
        dims = _face_dims(records)
        faces = sum(1 for r in records if r.face_embedding is not None and len(r.face_embedding) == dims)
        info = FuzzyInfo(
            max_travellers=self.settings.max_travellers,
            name_size_table=min(MAX_BIGRAMS + 1, (max_y // 16 + 1) * 16),
            year_min=min(years) // 10 * 10 if years else 0,
            year_max=max(years) // 10 * 10 + 9 if years else 0,
            name_entries=_round_up(len(names), 1024),
            face_dims=dims,
            face_entries=_round_up(faces, 1024) if dims else 0,
            release_ttl_seconds=self.settings.release_ttl_seconds,
        )
        with self._lock:
            if len(self._infos) > 256:
                self._infos.clear()
            self._infos[key] = (version, info)
        return info

    def _reference(self, record_id: str) -> str:
        """The list reference of a released record, for the holder's own audit log."""
        version = self._store.list_version()
        cached = self._refs
        if cached is None or cached[0] != version:
            refs = {r.record_id: (r.label.reference or r.record_id) for r in self._load_records()}
            cached = (version, refs)
            self._refs = cached
        ref = cached[1].get(record_id)
        token = re.sub(r"[^A-Za-z0-9._:/#-]", "_", str(ref or record_id))[:64]
        return token if token[:1].isalnum() else "r" + token[:63]

    def holder_for(self, epoch_id: str, partner: PartnerPolicy, kind: str = "name") -> FuzzyHolder:
        """The partner's audience of this epoch's list as scored entries (built once, then cached).

        Withheld references are left out (indistinguishable from absence) and labels carry only the fields
        disclosed to the partner. Records come from the store; they are re-read when the list changes.
        """
        key = (epoch_id, partner.audience_id, kind)
        with self._lock:
            holder = self._holders.get(key)
            if holder is not None:
                return holder
        records = self._load_records()
        kept = [r for r in records if r.label.reference not in partner.withheld]
        dims = 128
        listed_faces = 0
        if kind == "face":  # one embedding dimension per list (the most common one); others are not scored
            listed_faces = sum(1 for r in kept if r.face_embedding is not None)
            dims = _face_dims(records) or 128
            kept = [r for r in kept if r.face_embedding is not None and len(r.face_embedding) == dims]
        fields = frozenset(partner.label_fields)
        try:  # the holder's own list: whatever goes wrong here is not the querier's fault
            listed = entries_from_records(kept, kind=kind)  # unusable faces left out, counted and logged
            if kind == "face" and listed_faces and not listed:  # faces are listed, but none can be scored
                raise IntegrityError("no listed face embedding can be scored", reason="no_usable_faces")
            entries: list[HolderEntry] = [
                replace(e, label={k: v for k, v in e.label.items() if k in fields}) for e in listed
            ]
            holder = FuzzyHolder(
                entries,
                kind=kind,
                face_dims=dims,
                workers=self.settings.workers or None,
                mp_context="forkserver",  # never fork the threaded gRPC server process
                limits=HolderLimits(
                    max_travellers=self.settings.max_travellers,
                    max_packs=self.settings.max_travellers,
                    key_bits=self.settings.key_bits,
                    max_pack_size=self.settings.max_pack_size,
                    max_open_rounds=self._round_capacity() + _HOLDER_ROUND_SLACK,
                ),
            )
        except FedcheckError as exc:
            _log.error("the watchlist cannot be prepared for fuzzy %s screening (%s); check the list data",
                       kind, exc.reason)
            raise PreconditionFailed(
                f"this holder's watchlist cannot be prepared for fuzzy {kind} screening: a data problem at "
                "the holder (its operator must correct the list), not in your request",
                reason="holder_list_unusable",
            ) from None
        with self._lock:
            # holders of epochs no longer served and without open rounds are dropped (open rounds keep theirs)
            keep = {epoch_id} | {r.epoch_id for r in self._open.values()}
            for k in [k for k in self._holders if k[0] not in keep and not self._served(k[0])]:
                del self._holders[k]
            return self._holders.setdefault(key, holder)

    def _fuzzy_partner_policies(self) -> list[PartnerPolicy]:
        """The partners allowed fuzzy mode."""
        return [p for p in self._policy.partners.values() if FUZZY_MODE in p.modes]

    def _fuzzy_partners(self) -> int:
        return max(1, len(self._fuzzy_partner_policies()))

    def _round_share(self) -> int:
        """Open rounds one partner may hold: an equal share of ``max_open_rounds`` (at least one)."""
        return max(1, self.settings.max_open_rounds // self._fuzzy_partners())

    def _round_capacity(self) -> int:
        """The most open rounds all partners together hold (``max_open_rounds``, or one per partner when
        more partners are allowed fuzzy mode than that)."""
        return max(self.settings.max_open_rounds, self._fuzzy_partners())

    def _open_round(self, key: tuple[str, str], rnd: _OpenRound) -> None:
        """Register a scored round (caller holds ``_lock``); forget the partner's oldest beyond its share.

        Never another partner's round: a partner running many cheap rounds only forgets its own. No global
        trim is needed: policy and settings are fixed at construction, only the P partners allowed fuzzy
        mode open rounds (``decide`` refuses the others) and each holds at most its share, so all of them
        together hold at most P x max(1, max_open_rounds // P) <= max(max_open_rounds, P), the
        :meth:`_round_capacity` the holders are sized for.
        """
        self._expire()
        old = self._open.pop(key, None)
        if old is not None:
            old.holder.close_round(old.fuzzy_round_id)
        mine = [k for k in self._open if k[0] == key[0]]  # oldest first
        for k in mine[: max(0, len(mine) + 1 - self._round_share())]:
            dropped = self._open.pop(k)
            dropped.holder.close_round(dropped.fuzzy_round_id)
        self._open[key] = rnd

    def _served(self, epoch_id: str) -> bool:
        try:
            self._epochs.get(epoch_id)
        except PreconditionFailed:
            return False
        return True

    # -- FuzzyScore ----------------------------------------------------------------------------------------

    def score(self, peer: PeerIdentity, request: FuzzyScoreRequest) -> FuzzyScore:
        t0 = time.perf_counter()
        querier = self._gate.querier(peer, request.round, "fuzzy_score")
        payload = self._gate.parse(
            peer, querier, "fuzzy_score", serde.round_payload_from_bytes, request.round.payload
        )
        event = self._gate.request_event("fuzzy_score", peer, querier, payload, payload.mode)
        try:
            if payload.mode != FUZZY_MODE:
                raise InvalidInput("FuzzyScore needs a round signed with mode fuzzy", reason="invalid_mode")
            if request.round_id and request.round_id != payload.round_id:
                raise InvalidInput(
                    "header round_id differs from the signed round", reason="round_id_mismatch"
                )
            target = payload.target(self._state)
            if target is None:
                raise InvalidInput("the signed round does not target this State", reason="not_a_target")
            if hashlib.sha256(request.score_request).digest() != target.batch_sha256:
                raise InvalidInput("score request differs from the one the querier signed",
                                   reason="batch_mismatch")
            self._gate.check_deadline(payload.deadline_unix_ms)
            self._gate.check_fresh(payload.issued_at_unix_ms)
            epoch = self._epochs.get(target.epoch_id)
            event["epoch_id"] = epoch.epoch_id
            req = ScoreRequest.from_bytes(request.score_request)
            event.update(items=req.traveller_count, batch_size=len(request.score_request))
            if target.count != req.traveller_count:
                raise InvalidInput("traveller count differs from the signed count", reason="batch_mismatch")
            decision = self._policy.decide(RoundRequest(
                partner=querier.state, modes=(FUZZY_MODE,), purpose=payload.purpose,
                legal_basis=payload.legal_basis, batch_size=req.traveller_count, unit=payload.unit,
                official=payload.official,
            ))
            event.update(decision=decision.status, reasons=list(decision.reasons))
            decision.raise_for_status()
            partner = self._policy.partner(querier.state)
            assert partner is not None  # decide() refuses unknown partners
            if req.params.kind not in partner.effective_fuzzy_kinds:  # docs/policy.md ("Fuzzy kinds")
                raise PolicyDenied(f"fuzzy {req.params.kind} similarity is not allowed for this partner",
                                   reason="fuzzy_kind_not_allowed")
            holder = self.holder_for(epoch.epoch_id, partner, req.params.kind)
            holder.validate(req)  # everything checked before anything is charged
            payload_sha = hashlib.sha256(request.round.payload).hexdigest()
            if self._replay is not None and not self._replay.claim(
                querier.state, fuzzy_key(payload.round_id), payload_sha
            ):  # a fuzzy answer is fresh randomness per round: a duplicate is refused, never re-scored
                raise PreconditionFailed("this fuzzy round was already scored", reason="round_id_reused")
            try:
                remaining = self._budget.charge(querier.state, req.traveller_count, epoch.epoch_id,
                                                epoch_ends_unix=self._epochs.epoch_ends_unix(epoch))
            except FedcheckError:
                if self._replay is not None:
                    self._replay.release(querier.state, fuzzy_key(payload.round_id), payload_sha)
                raise
        except FedcheckError as exc:
            self._gate.refuse(event, exc)
            raise
        # charged from here on: any failure is audited (the budget stays charged: the items were spent on an
        # attempt) and frees the round id for a retry; the holder forgets the half-scored round
        try:
            with self._score_lock:
                self._gate.check_deadline(payload.deadline_unix_ms)  # waited behind another round
                response = holder.score(req)
            data = response.to_bytes()
            attestation = (None if self._signer is None else self._signer.sign(
                KIND_SCORE, querier.state, payload.round_id, request.round.payload, data))
        except Exception as exc:
            holder.close_round(req.round_id)
            if self._replay is not None:
                self._replay.release(querier.state, fuzzy_key(payload.round_id), payload_sha)
            err = exc if isinstance(exc, FedcheckError) else Unavailable(
                "scoring failed at the holder; run the round again", reason="scoring_failed")
            if not isinstance(exc, FedcheckError):
                _log.exception("fuzzy scoring failed", extra={"round_id": payload.round_id})
            event["counts"] = {"charged": req.traveller_count}
            self._gate.refuse(event, err)
            raise err from None
        with self._lock:
            expires = self._clock() + self.settings.release_ttl_seconds
            self._open_round((querier.state, payload.round_id),
                             _OpenRound(holder, req.round_id, epoch.epoch_id, expires, req.traveller_count))
        left = remaining.items
        metrics.ITEMS_EVALUATED.labels(partner=querier.state).inc(req.traveller_count)
        metrics.BATCH_SIZE.labels(method="FuzzyScore").observe(req.traveller_count)
        metrics.BUDGET_REMAINING.labels(partner=querier.state).set(-1 if left is None else left)
        ms = round((time.perf_counter() - t0) * 1000, 1)
        event.update(
            outcome="ok", duration_ms=ms, budget_remaining=left, evaluated=req.traveller_count * len(holder),
            modes=[FUZZY_MODE, req.params.kind],
            counts={"entries": len(holder), "key_bits": len(req.public_key) * 8,
                    "pack_size": req.params.pack_size, "response_bytes": len(data)},
        )
        head = self._audit(event)  # the answer carries the head acknowledging this very entry
        _log.info("fuzzy round scored", extra={"round_id": payload.round_id, "partner": querier.state,
                                                "items": req.traveller_count, "ms": ms, "mode": FUZZY_MODE})
        return FuzzyScore(epoch.epoch_id, data, 0 if left is None else int(left),
                          self.settings.release_ttl_seconds, attestation,
                          audit_seq=head.seq if head else 0, audit_hash=head.hash if head else "",
                          audit_signature=head.signature if head else b"")

    # -- FuzzyRelease --------------------------------------------------------------------------------------

    def release(self, peer: PeerIdentity, request: FuzzyReleaseRequest) -> FuzzyReleaseReply:
        """Release the labels of proven hits of the signer's own round: the LabelResponse sealed to the
        querier's reply key, with this node's signature over the answer (fedcheck.node.fuzzyseal).

        Order: signer -> payload -> addressed here, label request as signed, fresh, reply key usable ->
        policy -> label request parsed and within :data:`MAX_RELEASE_CLAIMS` -> the signer's open round ->
        the round's claim cap -> replay guard (a replayed follow-up is refused, nothing charged or consumed)
        -> budget charged -> claims checked -> answer sealed and signed -> audit entry durable."""
        t0 = time.perf_counter()
        querier = self._gate.querier(peer, request.release, "fuzzy_release")
        payload = self._gate.parse(
            peer, querier, "fuzzy_release", serde.fuzzy_release_payload_from_bytes, request.release.payload
        )
        event = self._gate.request_event("fuzzy_release", peer, querier, payload, FUZZY_MODE)
        payload_sha = hashlib.sha256(request.release.payload).hexdigest()
        replay_key = release_key(payload_sha)
        try:
            if payload.holder_state != self._state:
                raise InvalidInput("the follow-up is addressed to another State", reason="wrong_holder")
            if hashlib.sha256(request.label_request).digest() != payload.label_request_sha256:
                raise InvalidInput("label request differs from the one the querier signed",
                                   reason="batch_mismatch")
            self._gate.check_fresh(payload.issued_at_unix_ms)
            if len(payload.reply_public_key) != 32:  # labels never cross the relay in clear
                raise InvalidInput("the follow-up needs the querier's X25519 reply key",
                                   reason="reply_key_required")
            _check_reply_key(payload.reply_public_key)  # before anything is charged or consumed
            decision = self._policy.decide(RoundRequest(
                partner=querier.state, modes=(FUZZY_MODE,), purpose=payload.purpose,
                legal_basis=payload.legal_basis, unit=payload.unit, official=payload.official,
            ))
            event.update(decision=decision.status, reasons=list(decision.reasons))
            decision.raise_for_status()
            label_request = LabelRequest.from_bytes(request.label_request)
            event["items"] = len(label_request.claims)
            if len(label_request.claims) > MAX_RELEASE_CLAIMS:
                raise LimitExceeded(f"at most {MAX_RELEASE_CLAIMS} claims per follow-up",
                                    reason="too_many_claims")
            with self._lock:
                self._expire()
                rnd = self._open.get((querier.state, payload.round_id))
            # another State's round, an unknown or an expired one all look the same to the caller
            if rnd is None or rnd.fuzzy_round_id != label_request.round_id:
                raise NotFound(
                    "no open fuzzy round of yours with this id: expired (open for "
                    f"{self.settings.release_ttl_seconds} s after scoring), never scored here, or forgotten "
                    "by a restart of this node (open rounds are kept in memory only); run a new round",
                    reason="unknown_round")
            rnd.holder.check_claims(label_request.round_id, len(label_request.claims))  # before charging
            if self._replay is not None and not self._replay.claim(querier.state, replay_key, payload_sha):
                raise PreconditionFailed("this follow-up was already answered", reason="release_replayed")
            # a follow-up costs budget like a probe: one item per claim (a forging querier pays per guess)
            try:
                try:
                    epoch_ends: float | None = self._epochs.epoch_ends_unix(self._epochs.get(rnd.epoch_id))
                except PreconditionFailed:  # the round's epoch is no longer served: still its ledger
                    epoch_ends = None
                remaining = self._budget.charge(querier.state, len(label_request.claims), rnd.epoch_id,
                                                epoch_ends_unix=epoch_ends)
            except FedcheckError:
                if self._replay is not None:
                    self._replay.release(querier.state, replay_key, payload_sha)
                raise
            event["budget_remaining"] = remaining.items
        except FedcheckError as exc:
            self._gate.refuse(event, exc)
            raise
        # charged from here on: a failure is audited with its status (the replay claim is kept: the signed
        # follow-up was spent; the querier signs a new one)
        try:
            response, record_ids = rnd.holder.release_with_records(label_request)
            if response.rejected:  # the holder closed the round: any wrong claim ends its follow-ups
                with self._lock:
                    if self._open.get((querier.state, payload.round_id)) is rnd:
                        del self._open[(querier.state, payload.round_id)]
            sealed = seal_labels(response.to_bytes(), payload.reply_public_key, querier_state=querier.state,
                                 holder_state=self._state, round_id=payload.round_id)
            attestation = (None if self._signer is None else self._signer.sign(
                KIND_RELEASE, querier.state, payload.round_id, request.release.payload, sealed))
            references = sorted({self._reference(r) for r in record_ids})
        except Exception as exc:
            err = exc if isinstance(exc, FedcheckError) else Unavailable(
                "the follow-up failed at the holder; sign a new one", reason="release_failed")
            if not isinstance(exc, FedcheckError):
                _log.exception("fuzzy follow-up failed", extra={"round_id": payload.round_id})
            event["counts"] = {"charged": len(label_request.claims)}
            self._gate.refuse(event, err)
            raise err from None
        ms = round((time.perf_counter() - t0) * 1000, 1)
        event.update(outcome="ok", duration_ms=ms, hits=len(response.released), epoch_id=rnd.epoch_id,
                     # a release is a disclosure: which list entries went out (list references, never names)
                     references=references,
                     counts={"claims": len(label_request.claims), "released": len(response.released),
                             "rejected": response.rejected, "round_closed": int(response.rejected > 0)})
        head = self._audit(event)
        _log.info("fuzzy follow-up", extra={"round_id": payload.round_id, "partner": querier.state,
                                             "count": len(response.released), "ms": ms})
        return FuzzyReleaseReply(sealed, attestation, audit_seq=head.seq if head else 0,
                                 audit_hash=head.hash if head else "",
                                 audit_signature=head.signature if head else b"")


def _check_reply_key(raw: bytes) -> None:
    """Refuse (``bad_reply_key``) a reply key the answer could not be sealed to: not an X25519 point, or a
    low-order one (the exchange gives the all-zero secret, which ``cryptography`` refuses). A trial exchange
    with a throw-away key, the same one :func:`fedcheck.node.fuzzyseal.seal_labels` makes after the charge."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise InvalidInput("reply_public_key is not a usable X25519 key", reason="bad_reply_key") from None


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step if value else 0


def _face_dims(records: list[PersonRecord]) -> int:
    """The embedding dimension most listed faces have (0: no faces); only 16..1024 can be scored."""
    counts: dict[int, int] = {}
    for r in records:
        if r.face_embedding is not None and 16 <= len(r.face_embedding) <= 1024:
            counts[len(r.face_embedding)] = counts.get(len(r.face_embedding), 0) + 1
    return max(counts, key=lambda d: (counts[d], d)) if counts else 0
