"""The holder node's request handling (a :class:`fedcheck.rpc.handlers.NodeHandler`).

Order of checks for an evaluation, each refusal audited: querier signature and certificate (the querying State
comes from the certificate, never a field) -> the batch is the one signed for this State -> deadline
and freshness (signed ``issued_at`` within ``max_skew_seconds``) -> epoch still served -> holder policy ->
every blinded element valid -> replay guard (one evaluation per querier and round id; an exact duplicate is
answered again without charging) -> budget (charged only now, before evaluating) -> verifiable blind
evaluation -> audit entry durable -> answer carrying the signed audit head. Response sizes depend only on
request sizes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fedcheck.crypto.oprf import deserialize_element
from fedcheck.errors import (
    BudgetExhausted,
    FedcheckError,
    InvalidInput,
    PolicyDenied,
    PreconditionFailed,
    Unauthenticated,
)
from fedcheck.node import metrics
from fedcheck.node.epochs import EpochManager
from fedcheck.node.replay import ReplayGuard

if TYPE_CHECKING:
    from fedcheck.node.fuzzy import FuzzyService
from fedcheck.protocol.exact import Mode
from fedcheck.rpc import serde
from fedcheck.rpc.messages import (
    FUZZY_MODE,
    MODES,
    SUPPORTED_VERSIONS,
    BlindEvaluateRequest,
    Evaluation,
    FuzzyReleaseRequest,
    FuzzyScore,
    FuzzyScoreRequest,
    GetIndexRequest,
    IndexChunk,
    NodeInfo,
    SignedEnvelope,
)
from fedcheck.trust.audit import SignedHead
from fedcheck.trust.budget import BudgetLedger
from fedcheck.trust.pki import PeerIdentity, RevocationList, verify_payload
from fedcheck.trust.policy import HolderPolicy, RoundRequest

__all__ = ["AuditFn", "NodeService", "audience_key"]

_log = logging.getLogger("fedcheck.node")

#: Appends one audit event durably (fsynced) before returning; returns the signed head acknowledging it
#: (``None`` when the sink has no signed head, e.g. in tests).
AuditFn = Callable[[Mapping[str, Any]], SignedHead | None]


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
    ) -> None:
        self._state = state
        self._epochs = epochs
        self._policy = policy
        self._budget = budget
        self._audit = audit
        self._ca_pem = ca_pem
        self._crl = crl
        self._max_batch = max_batch
        self._chunk = index_chunk_bytes
        self._skew_ms = max_skew_seconds * 1000
        self._replay = replay
        #: fuzzy (Paillier) rounds; ``None`` when the node does not serve them (not advertised then)
        self.fuzzy = fuzzy

    @property
    def max_batch(self) -> int:
        return self._max_batch

    # -- common checks ---------------------------------------------------------------------------------------

    def _querier(self, peer: PeerIdentity, env: SignedEnvelope, kind: str = "request") -> PeerIdentity:
        try:
            querier = verify_payload(
                env.certificate_pem, self._ca_pem, self._crl(), env.payload, env.signature
            )
            if querier.role != "node":
                raise Unauthenticated("requests must be signed by a node certificate", reason="wrong_role")
            if peer.role == "node" and peer.state != querier.state:
                raise Unauthenticated("a node may only relay its own requests", reason="identity_mismatch")
        except FedcheckError as exc:
            # audited too: the TLS hop is verified, the signer is not (so only the hop is named)
            self._refuse({"type": kind, "peer": peer.name, "partner": peer.state}, exc)
            raise
        return querier

    def _fresh(self, issued_at_ms: int) -> None:
        now = time.time() * 1000
        if abs(now - issued_at_ms) > self._skew_ms:
            raise PreconditionFailed(
                "request is stale or from the future; check clocks", reason="stale_request"
            )

    def _refuse(self, event: dict[str, Any], exc: FedcheckError) -> None:
        partner = str(event.get("partner", "?"))
        metrics.REFUSALS.labels(partner=partner, reason=exc.reason).inc()
        event.update(type="refusal", outcome="refused", status=exc.status, reason=exc.reason)
        if isinstance(exc, BudgetExhausted):
            event["retry_after_s"] = exc.retry_after_s
        self._audit(event)
        _log.info(
            "request refused",
            extra={"round_id": event.get("round_id", ""), "partner": partner, "reason": exc.reason},
        )

    # -- handler interface -----------------------------------------------------------------------------------

    def node_info(self) -> NodeInfo:
        try:
            ep = self._epochs.current()
            epoch_id, pk, size, started = ep.epoch_id, ep.public_key, ep.size, ep.started_unix_ms
        except PreconditionFailed:
            epoch_id, pk, size, started = "", b"", 0, 0
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
        )

    def get_index(self, peer: PeerIdentity, request: GetIndexRequest) -> Iterator[IndexChunk]:
        querier = self._querier(peer, request.request, "index")
        req = serde.index_request_from_bytes(request.request.payload)
        event: dict[str, Any] = {"type": "index", "partner": querier.state, "peer": peer.name}
        try:
            if req.holder_state != self._state:
                raise InvalidInput("index request is for another State", reason="wrong_holder")
            self._fresh(req.issued_at_unix_ms)
            partner = self._policy.partner(querier.state)
            if partner is None:
                raise PolicyDenied("partner may not query this holder", reason="partner_not_allowed")
            epoch = self._epochs.get(req.epoch_id) if req.epoch_id else self._epochs.current()
            blob = epoch.index_for(audience_key(partner.audience_id, partner.modes))
            if request.offset > len(blob.data):
                raise InvalidInput("offset is beyond the end of the index", reason="offset_out_of_range")
        except FedcheckError as exc:
            self._refuse(event, exc)
            raise
        if request.offset == 0:
            event.update(
                outcome="ok",
                epoch_id=epoch.epoch_id,
                index_size=len(blob.data),
                index_digest=blob.sha256.hex(),
            )
            self._audit(event)
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
            )
            pos += len(data)
            if last:
                return

    def blind_evaluate(self, peer: PeerIdentity, request: BlindEvaluateRequest) -> Evaluation:
        t0 = time.perf_counter()
        querier = self._querier(peer, request.round)
        payload = serde.round_payload_from_bytes(request.round.payload)
        n = len(request.blinded)
        event: dict[str, Any] = {
            "type": "request",
            "round_id": payload.round_id,
            "partner": querier.state,
            "peer": peer.name,
            "unit": payload.unit,
            "official": payload.official,
            "purpose": payload.purpose,
            "legal_basis": payload.legal_basis,
            "mode": payload.mode,
            "items": n,
        }
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
            if time.time() * 1000 > payload.deadline_unix_ms:
                raise PreconditionFailed("the round's deadline has passed", reason="deadline_passed")
            self._fresh(payload.issued_at_unix_ms)
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
            fresh = (
                self._replay.claim(querier.state, payload.round_id, payload_sha)
                if self._replay is not None
                else True
            )
            if fresh:
                try:
                    remaining = self._budget.charge(
                        querier.state, n, epoch.epoch_id, epoch_ends_unix=self._epochs.epoch_ends_unix(epoch)
                    )
                except FedcheckError:
                    if self._replay is not None:
                        self._replay.release(querier.state, payload.round_id, payload_sha)
                    raise
            else:  # exact duplicate of an evaluated request: answer again, charge nothing
                remaining = self._budget.remaining(querier.state, epoch.epoch_id)
                event["replayed"] = True
        except FedcheckError as exc:
            self._refuse(event, exc)
            raise
        result = epoch.holder.blind_evaluate(list(request.blinded), mode=Mode(payload.mode), verifiable=True)
        left = remaining.items
        metrics.ITEMS_EVALUATED.labels(partner=querier.state).inc(n)
        metrics.BATCH_SIZE.labels(method="BlindEvaluate").observe(n)
        metrics.BUDGET_REMAINING.labels(partner=querier.state).set(-1 if left is None else left)
        ms = round((time.perf_counter() - t0) * 1000, 1)
        event.update(outcome="ok", duration_ms=ms, budget_remaining=left)
        if decision.narrowed:
            event["narrowed"] = [r for r in decision.reasons if r.startswith("narrowed_")]
        head = self._audit(event)
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
        )

    # -- fuzzy (Paillier) rounds: see fedcheck.node.fuzzy ----------------------------------------------------

    def _fuzzy(self) -> FuzzyService:
        if self.fuzzy is None:
            raise PreconditionFailed("this node does not serve fuzzy rounds", reason="fuzzy_not_served")
        return self.fuzzy

    def fuzzy_score(self, peer: PeerIdentity, request: FuzzyScoreRequest) -> FuzzyScore:
        return self._fuzzy().score(peer, request)

    def fuzzy_release(self, peer: PeerIdentity, request: FuzzyReleaseRequest) -> bytes:
        return self._fuzzy().release(peer, request)
