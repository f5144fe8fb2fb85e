"""The holder node's request handling (a :class:`fedcheck.rpc.handlers.NodeHandler`).

Order of checks for an evaluation, each refusal audited: querier signature and certificate (the querying State
comes from the certificate, never a field) -> the batch is the one signed for this State -> deadline
and freshness (signed ``issued_at`` within ``max_skew_seconds``) -> epoch still served -> holder policy ->
every blinded element valid -> replay guard (one evaluation per querier and round id; an exact duplicate is
answered again without charging, at most ``max_replays`` times) -> budget (charged only now, before
evaluating) -> verifiable blind evaluation -> audit entry durable -> answer carrying the signed audit head.
Response sizes depend only on request sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fedcheck.core.index import index_entry_count
from fedcheck.crypto.oprf import deserialize_element
from fedcheck.errors import (
    FedcheckError,
    InvalidInput,
    PolicyDenied,
    PreconditionFailed,
)
from fedcheck.node import metrics
from fedcheck.node.announce import AnnouncementSigner
from fedcheck.node.epochs import Epoch, EpochManager
from fedcheck.node.gate import EXACT_REFUSALS, SIGNER_ROLES, RequestGate
from fedcheck.node.replay import Claim, ReplayGuard, ReplayLimitExceeded

if TYPE_CHECKING:
    from fedcheck.node.fuzzy import FuzzyService
from fedcheck.protocol.exact import Evaluation as ExactEvaluation
from fedcheck.protocol.exact import Mode
from fedcheck.rpc import serde
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    MODES,
    SUPPORTED_VERSIONS,
    BlindEvaluateRequest,
    Evaluation,
    FuzzyReleaseReply,
    FuzzyReleaseRequest,
    FuzzyScore,
    FuzzyScoreRequest,
    GetIndexRequest,
    IndexChunk,
    NodeInfo,
    RoundPayload,
    SignedEnvelope,
)
from fedcheck.trust.audit import SignedHead
from fedcheck.trust.budget import BudgetLedger, BudgetRemaining
from fedcheck.trust.pki import PeerIdentity, RevocationList
from fedcheck.trust.policy import Decision, HolderPolicy, RoundRequest

__all__ = ["SIGNER_ROLES", "AuditFn", "NodeService", "audience_key"]

_log = logging.getLogger("fedcheck.node")
#: Appends one audit event durably (fsynced) before returning; returns the signed head acknowledging it
#: (``None`` when the sink has no signed head, e.g. in tests).
AuditFn = Callable[[Mapping[str, Any]], SignedHead | None]


def _encode_answer(ev: ExactEvaluation) -> bytes:
    """A stored answer for identical duplicates: u16 proof length | proof | evaluated elements (32 bytes)."""
    proof = ev.proof or b""
    return len(proof).to_bytes(2, "big") + proof + b"".join(ev.evaluated)


def _decode_answer(blob: bytes) -> ExactEvaluation:
    plen = int.from_bytes(blob[:2], "big")
    proof, rest = blob[2 : 2 + plen], blob[2 + plen :]
    return ExactEvaluation([rest[i : i + 32] for i in range(0, len(rest), 32)], proof or None)


def audience_key(audience_id: str, modes: tuple[str, ...]) -> str:
    """Index shape key: the policy's audience id, plus tag-only for partners without exact mode."""
    return audience_id if "exact" in modes else audience_id + "-tags"


class NodeService:
    """Holder-side handler; thread-safe (the epoch manager and the ledger lock internally)."""

    def __init__(
        self,
        *,
        state: str,
        epochs: EpochManager,
        policy: HolderPolicy,
        budget: BudgetLedger,
        audit: AuditFn,
        ca_pem: bytes,
        crl: Callable[[], RevocationList | None],
        max_batch: int,
        index_chunk_bytes: int,
        max_skew_seconds: int = 600,
        replay: ReplayGuard | None = None,
        fuzzy: FuzzyService | None = None,
        announcer: AnnouncementSigner | None = None,
    ) -> None:
        self._state = state
        self._epochs = epochs
        self._policy = policy
        self._budget = budget
        self._audit = audit
        self._max_batch = max_batch
        self._chunk = index_chunk_bytes
        #: signer identity, freshness and refusal auditing, shared with the fuzzy service (fedcheck.node.gate)
        self._gate = RequestGate(
            ca_pem=ca_pem, crl=crl, policy=policy, audit=audit, style=EXACT_REFUSALS,
            max_skew_seconds=max_skew_seconds,
        )
        self._replay = replay
        #: signs epoch announcements with the node certificate key (NodeInfo, last index chunk); without it
        #: queriers refuse this holder (they cannot tell its key from a relay's)
        self._announcer = announcer
        #: fuzzy (Paillier) rounds; ``None`` when the node does not serve them (not advertised then)
        self.fuzzy = fuzzy

    @property
    def max_batch(self) -> int:
        return self._max_batch

    # -- handler interface -----------------------------------------------------------------------------------

    def _announce(
        self, epoch: Epoch, index_sha256: bytes = b"", partner_state: str = "", audience: str = ""
    ) -> SignedEnvelope | None:
        if self._announcer is None:
            return None
        ends_ms = int(self._epochs.epoch_ends_unix(epoch) * 1000)
        # served as the current epoch until ends_ms, then (at most about one more epoch) as the previous one
        until_ms = ends_ms + max(0, ends_ms - epoch.started_unix_ms)
        return self._announcer.sign(
            epoch.epoch_id, epoch.public_key, index_sha256, epoch.started_unix_ms, until_ms,
            partner_state=partner_state, audience=audience,
        )

    def _audience_size(self, epoch: Epoch, peer: PeerIdentity | None) -> int:
        """Entries of the caller's own audience index (0 for the coordinator, which relays to everyone)."""
        if peer is None or peer.role not in SIGNER_ROLES:
            return 0
        if self._policy.evaluator_refused(peer.role, peer.state):  # no stand-in for a member State
            return 0
        partner = self._policy.partner(peer.state)
        if partner is None:
            return 0
        try:
            return index_entry_count(epoch.index_for(audience_key(partner.audience_id, partner.modes)).data)
        except FedcheckError:
            return 0

    def node_info(self, peer: PeerIdentity | None = None) -> NodeInfo:
        """The node's description as ``peer`` may see it: ``index_size`` is the size of the caller's own
        audience index (0 when the coordinator asks, as its answer is relayed to every partner), never the
        whole list's, so no partner learns how many keys are withheld from it."""
        ann: SignedEnvelope | None = None
        try:
            ep = self._epochs.current()
            epoch_id, pk, started = ep.epoch_id, ep.public_key, ep.started_unix_ms
            size = self._audience_size(ep, peer)
            ann = self._announce(ep)
        except PreconditionFailed:
            epoch_id, pk, size, started = "", b"", 0, 0
        prev = self._epochs.previous()
        return NodeInfo(
            self._state,
            SUPPORTED_VERSIONS,
            MODES + ((FUZZY_MODE,) if self.fuzzy is not None else ()),
            epoch_id,
            pk,
            size,
            self._max_batch,
            self._chunk,
            started,
            self._epochs.building,
            previous_epoch_id=prev.epoch_id if prev is not None else "",
            previous_epoch_public_key=prev.public_key if prev is not None else b"",
            fuzzy=self.fuzzy.info(peer) if self.fuzzy is not None else None,
            epoch_announcement=ann,
            previous_epoch_announcement=self._announce(prev) if prev is not None else None,
        )

    def get_index(self, peer: PeerIdentity, request: GetIndexRequest) -> Iterator[IndexChunk]:
        querier = self._gate.querier(peer, request.request, "index")
        req = self._gate.parse(
            peer, querier, "index", serde.index_request_from_bytes, request.request.payload
        )
        event = self._gate.signer_event("index", peer, querier)
        try:
            if req.holder_state != self._state:
                raise InvalidInput("index request is for another State", reason="wrong_holder")
            self._gate.check_fresh(req.issued_at_unix_ms)
            partner = self._policy.partner(querier.state)
            if partner is None:
                raise PolicyDenied("partner may not query this holder", reason="partner_not_allowed")
            epoch = self._epochs.get(req.epoch_id) if req.epoch_id else self._epochs.current()
            audience = audience_key(partner.audience_id, partner.modes)
            blob = epoch.index_for(audience)
            if request.offset > len(blob.data):
                raise InvalidInput("offset is beyond the end of the index", reason="offset_out_of_range")
        except FedcheckError as exc:
            self._gate.refuse(event, exc)
            raise
        # every download start is audited, resumed ones too (offset > 0), so downloads cannot hide in resumes
        event.update(
            outcome="ok",
            epoch_id=epoch.epoch_id,
            index_size=len(blob.data),
            index_digest=blob.sha256.hex(),
            offset=request.offset,
        )
        self._audit(event)
        # bound to the verified requesting partner and its audience: a relay cannot hand this (holder-signed)
        # index to another partner, who refuses an announcement not made for its own State
        announcement = self._announce(epoch, blob.sha256, querier.state, audience)
        total = len(blob.data)
        pos = request.offset
        while True:
            data = blob.data[pos : pos + self._chunk]
            last = pos + len(data) >= total
            yield IndexChunk(
                epoch.epoch_id,
                pos,
                data,
                hashlib.sha256(data).digest(),
                total,
                blob.sha256,
                last,
                epoch.public_key,
                announcement if last else None,
            )
            pos += len(data)
            if last:
                return

    def refuse_malformed(self, peer: PeerIdentity, kind: str, exc: FedcheckError) -> None:
        """Audit (and count) a request refused while its message was parsed — too many elements, empty,
        malformed — before its signature could be checked: the partner is the verified TLS peer's State."""
        self._gate.refuse({"type": kind, "partner": peer.state, "role": peer.role, "peer": peer.name}, exc)

    def blind_evaluate(self, peer: PeerIdentity, request: BlindEvaluateRequest) -> Evaluation:
        t0 = time.perf_counter()
        querier = self._gate.querier(peer, request.round, "request")
        payload = self._gate.parse(
            peer, querier, "request", serde.round_payload_from_bytes, request.round.payload
        )
        n = len(request.blinded)
        event = self._gate.request_event("request", peer, querier, payload, payload.mode)
        event["items"] = n
        try:
            if request.round_id and request.round_id != payload.round_id:
                raise InvalidInput(
                    "header round_id differs from the signed round", reason="round_id_mismatch"
                )
            if payload.mode == FUZZY_MODE:
                raise InvalidInput("fuzzy rounds are scored by FuzzyScore", reason="invalid_mode")
            target = payload.target(self._state)
            if target is None:
                raise InvalidInput("the signed round does not target this State", reason="not_a_target")
            digest = hashlib.sha256(b"".join(request.blinded)).digest()
            if target.count != n or digest != target.batch_sha256:
                raise InvalidInput(
                    "blinded batch differs from the one the querier signed", reason="batch_mismatch"
                )
            self._gate.check_deadline(payload.deadline_unix_ms)
            self._gate.check_fresh(payload.issued_at_unix_ms)
            epoch = self._epochs.get(target.epoch_id)
            event["epoch_id"] = epoch.epoch_id
            decision = self._policy.decide(
                RoundRequest(
                    partner=querier.state,
                    modes=(payload.mode,),
                    purpose=payload.purpose,
                    legal_basis=payload.legal_basis,
                    batch_size=n,
                    key_types=payload.key_types,
                    label_fields=payload.label_fields,
                    unit=payload.unit,
                    official=payload.official,
                )
            )
            event.update(decision=decision.status, reasons=list(decision.reasons))
            if payload.key_types:
                event["key_types"] = list(payload.key_types)
            decision.raise_for_status()
            for element in request.blinded:  # validate every element before anything is charged
                deserialize_element(element)
            payload_sha = hashlib.sha256(request.round.payload).hexdigest()
            # pending until answered: a concurrent duplicate waits for the outcome (or gets ABORTED), and is
            # answered without a charge only once this request was charged, evaluated and audited
            claim = (
                self._replay.begin(querier.state, payload.round_id, payload_sha)
                if self._replay is not None
                else Claim(True)
            )
            fresh = claim.fresh
            stored: ExactEvaluation | None = None
            if fresh:
                try:
                    remaining = self._budget.charge(
                        querier.state, n, epoch.epoch_id, epoch_ends_unix=self._epochs.epoch_ends_unix(epoch)
                    )
                except BaseException:
                    self._release(querier.state, payload.round_id, claim)
                    raise
            else:  # exact duplicate of an answered request: the stored answer again, charge nothing
                stored = _decode_answer(claim.answer or b"")
                remaining = self._budget.remaining(querier.state, epoch.epoch_id)
                event["replayed"] = True
        except FedcheckError as exc:
            if isinstance(exc, ReplayLimitExceeded) and not exc.first:
                # the first refusal beyond the replay cap was audited; more duplicates only count
                self._gate.count(querier.state, exc.reason)
                raise
            self._gate.refuse(event, exc)
            raise
        try:  # charged from here on: every failure is audited, mapped to a status, and the claim released
            return self._evaluate_charged(
                t0, event, querier, payload, request, epoch, decision, remaining, claim, stored
            )
        except Exception as exc:
            if fresh:
                self._release(querier.state, payload.round_id, claim)
            err = (
                exc
                if isinstance(exc, FedcheckError)
                else FedcheckError("evaluation failed after the charge", reason="evaluation_failed")
            )
            if not isinstance(exc, FedcheckError):
                _log.error("evaluation failed after charge", exc_info=exc)
            with contextlib.suppress(FedcheckError):  # the audit sink may be what failed
                self._gate.refuse(event, err)
            if err is exc:
                raise
            raise err from None

    def _release(self, partner: str, round_id: str, claim: Claim) -> None:
        if self._replay is not None and claim.fresh:
            self._replay.release(partner, round_id, claim.token)

    def _evaluate_charged(
        self,
        t0: float,
        event: dict[str, Any],
        querier: PeerIdentity,
        payload: RoundPayload,
        request: BlindEvaluateRequest,
        epoch: Epoch,
        decision: Decision,
        remaining: BudgetRemaining,
        claim: Claim,
        stored: ExactEvaluation | None,
    ) -> Evaluation:
        n = len(request.blinded)
        fresh = claim.fresh
        result = stored or epoch.holder.blind_evaluate(
            list(request.blinded), mode=Mode(payload.mode), verifiable=True
        )
        left = remaining.items
        metrics.ITEMS_EVALUATED.labels(partner=querier.state).inc(n)
        metrics.BATCH_SIZE.labels(method="BlindEvaluate").observe(n)
        metrics.BUDGET_REMAINING.labels(partner=querier.state).set(-1 if left is None else left)
        ms = round((time.perf_counter() - t0) * 1000, 1)
        event.update(outcome="ok", duration_ms=ms, budget_remaining=left)
        if decision.narrowed:
            event["narrowed"] = [r for r in decision.reasons if r.startswith("narrowed_")]
        head = self._audit(event)
        if fresh and self._replay is not None:
            self._replay.complete(querier.state, payload.round_id, claim.token, _encode_answer(result))
        _log.info(
            "batch evaluated",
            extra={
                "round_id": payload.round_id,
                "partner": querier.state,
                "items": n,
                "ms": ms,
                "mode": payload.mode,
            },
        )
        return Evaluation(
            epoch.epoch_id,
            tuple(result.evaluated),
            result.proof or b"",
            0 if left is None else int(left),
            audit_seq=head.seq if head else 0,
            audit_hash=head.hash if head else "",
            audit_signature=head.signature if head else b"",
            narrowed=tuple(r for r in decision.reasons if r.startswith("narrowed_")),
            effective_key_types=decision.effective_key_types,
            effective_label_fields=decision.effective_label_fields,
            replayed=not fresh,
            budget_limited=left is not None,
        )

    # -- fuzzy (Paillier) rounds: see fedcheck.node.fuzzy ----------------------------------------------------

    def _fuzzy(self) -> FuzzyService:
        if self.fuzzy is None:
            raise PreconditionFailed("this node does not serve fuzzy rounds", reason="fuzzy_not_served")
        return self.fuzzy

    def fuzzy_score(self, peer: PeerIdentity, request: FuzzyScoreRequest) -> FuzzyScore:
        return self._fuzzy().score(peer, request)

    def fuzzy_release(self, peer: PeerIdentity, request: FuzzyReleaseRequest) -> FuzzyReleaseReply:
        return self._fuzzy().release(peer, request)
