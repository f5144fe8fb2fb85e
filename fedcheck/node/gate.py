"""The holder's security gate: the checks every signed request passes before a service looks at it.

Why one component: the exact holder service (:class:`fedcheck.node.service.NodeService`) and the fuzzy one
(:class:`fedcheck.node.fuzzy.FuzzyService`) accept the same signed envelopes from the same partners, so the
rules that decide *who* is asking -- signature and certificate against the CA and CRL, signer role, the TLS
hop's identity, the holder policy's evaluator rule -- and *whether the request may still be answered* -- the
round deadline and the signed ``issued_at`` within ``max_skew_seconds``, payload text the wire rules accept --
must not drift apart between them. Every refusal is audited here too, with the fallback to a reduced event
(nothing the caller wrote) when the full event cannot be appended, and counted in the refusal metric.

What stays with the services: the request-specific checks (targets, batch digests, modes, epochs), the
replay guard (the exact path answers duplicates again, the fuzzy path refuses every duplicate) and the budget.

The two services' refusals read differently in the audit log (audit readers and tests rely on both), so the
differences are data, :class:`RefusalStyle`, side by side here rather than code in two places.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fedcheck.errors import (
    Aborted,
    BudgetExhausted,
    FedcheckError,
    PolicyDenied,
    PreconditionFailed,
    Unauthenticated,
)
from fedcheck.node import metrics
from fedcheck.rpc.messages import FuzzyReleasePayload, RoundPayload, SignedEnvelope
from fedcheck.trust.pki import PeerIdentity, RevocationList, verify_payload
from fedcheck.trust.policy import HolderPolicy

__all__ = ["EXACT_REFUSALS", "FUZZY_REFUSALS", "SIGNER_ROLES", "GateAuditFn", "RefusalStyle", "RequestGate"]

#: Certificate roles that may sign round and index requests. An ``evaluator`` certificate (conformance suite,
#: ``fedcheck pki issue --role evaluator``) gets only what the holder's policy grants its code, and only if
#: that partner entry says ``evaluator = true`` (else ``PERMISSION_DENIED`` ``evaluator_not_allowed``: an
#: ``evaluator.FRA`` certificate is no stand-in for the member FRA); audit entries record
#: ``role = evaluator``.
SIGNER_ROLES: tuple[str, ...] = ("node", "evaluator")

#: Appends one audit event durably (fsynced) before returning; what it returns is the services' business
#: (the exact service hands the signed head back to the querier).
GateAuditFn = Callable[[dict[str, Any]], object]

_T = TypeVar("_T")


@dataclass(frozen=True)
class RefusalStyle:
    """How one service's refusals read in the audit log and the operator log."""

    #: logger and message of the one log line per refusal
    logger: logging.Logger
    message: str
    #: the refused event's ``type``; ``None`` keeps the request kind (``fuzzy_score``, ``fuzzy_release``)
    refusal_type: str | None
    #: what the fallback event keeps when the full one cannot be appended: nothing the caller wrote
    reduced_fields: tuple[str, ...]


#: Exact rounds and index downloads: refusals are ``type = refusal``; the reduced event keeps the verified
#: partner and role, the round id and the outcome.
EXACT_REFUSALS = RefusalStyle(
    logger=logging.getLogger("fedcheck.node"),
    message="request refused",
    refusal_type="refusal",
    reduced_fields=(
        "type", "partner", "role", "peer", "round_id", "epoch_id", "outcome", "status", "reason",
        "retry_after_s",
    ),
)

#: Fuzzy rounds and follow-ups: refusals keep their request type; the reduced event keeps the verified
#: partner and role too.
FUZZY_REFUSALS = RefusalStyle(
    logger=logging.getLogger("fedcheck.node.fuzzy"),
    message="fuzzy request refused",
    refusal_type=None,
    reduced_fields=(
        "type", "partner", "role", "peer", "round_id", "epoch_id", "outcome", "status", "reason",
        "retry_after_s",
    ),
)


class RequestGate:
    """Signer identity, freshness and refusal auditing for one holder service; thread-safe (stateless)."""

    def __init__(
        self,
        *,
        ca_pem: bytes,
        crl: Callable[[], RevocationList | None],
        policy: HolderPolicy,
        audit: GateAuditFn,
        style: RefusalStyle,
        max_skew_seconds: int = 600,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._ca_pem = ca_pem
        self._crl = crl
        self._policy = policy
        self._audit = audit
        self._style = style
        self._skew_ms = max_skew_seconds * 1000
        #: ``None``: ``time.time`` looked up at each call
        self._clock = clock

    def now(self) -> float:
        return time.time() if self._clock is None else self._clock()

    # -- events ----------------------------------------------------------------------------------------------

    @staticmethod
    def signer_event(kind: str, peer: PeerIdentity, querier: PeerIdentity) -> dict[str, Any]:
        """The audit event of a request whose signer is verified but whose payload is not (yet) trusted."""
        return {"type": kind, "partner": querier.state, "role": querier.role, "peer": peer.name}

    @staticmethod
    def request_event(
        kind: str,
        peer: PeerIdentity,
        querier: PeerIdentity,
        payload: RoundPayload | FuzzyReleasePayload,
        mode: str,
    ) -> dict[str, Any]:
        """The audit event of a parsed round or follow-up: who asked (verified) and what they declared."""
        return {
            "type": kind,
            "round_id": payload.round_id,
            "partner": querier.state,
            "role": querier.role,
            "peer": peer.name,
            "unit": payload.unit,
            "official": payload.official,
            "purpose": payload.purpose,
            "legal_basis": payload.legal_basis,
            "mode": mode,
        }

    # -- checks ----------------------------------------------------------------------------------------------

    def querier(self, peer: PeerIdentity, env: SignedEnvelope, kind: str) -> PeerIdentity:
        """The verified signer of ``env`` (its State comes from the certificate, never a field); refusals
        audited."""
        try:
            querier = verify_payload(
                env.certificate_pem, self._ca_pem, self._crl(), env.payload, env.signature
            )
            if querier.role not in SIGNER_ROLES:
                raise Unauthenticated(
                    "requests must be signed by a node or evaluator certificate", reason="wrong_role"
                )
            # only the coordinator relays other States' requests; a node or an evaluator talking to the
            # holder directly may only send requests signed for its own State
            if peer.role != "coordinator" and peer.state != querier.state:
                raise Unauthenticated("a caller may only send its own requests", reason="identity_mismatch")
        except FedcheckError as exc:
            # audited too: the TLS hop is verified, the signer is not (so only the hop is named)
            self.refuse({"type": kind, "peer": peer.name, "partner": peer.state}, exc)
            raise
        # an evaluator.FRA certificate is no stand-in for the member FRA: only a partner entry marked
        # ``evaluator = true`` (a dedicated code such as EVA) accepts evaluator signers. The signer is
        # verified by now, so the refusal names it (partner, role), with the TLS hop (for a relayed request
        # the coordinator) as peer -- the same for exact and fuzzy requests
        if self._policy.evaluator_refused(querier.role, querier.state):
            denied = PolicyDenied(
                "evaluator certificates of this State are not accepted", reason="evaluator_not_allowed"
            )
            self.refuse(self.signer_event(kind, peer, querier), denied)
            raise denied
        return querier

    def parse(
        self, peer: PeerIdentity, querier: PeerIdentity, kind: str, parse: Callable[[bytes], _T], data: bytes
    ) -> _T:
        """Parse a signed payload; a payload the wire rules refuse (e.g. text the audit log would refuse) is
        a refusal like any other, audited with the verified signer and nothing from the payload."""
        try:
            return parse(data)
        except FedcheckError as exc:
            self.refuse(self.signer_event(kind, peer, querier), exc)
            raise

    def check_deadline(self, deadline_unix_ms: int) -> None:
        """Refuse work on a round whose signed deadline has passed (checked again after queueing)."""
        if self.now() * 1000 > deadline_unix_ms:
            raise PreconditionFailed("the round's deadline has passed", reason="deadline_passed")

    def check_fresh(self, issued_at_ms: int) -> None:
        """Refuse a request signed more than ``max_skew_seconds`` ago or ahead (bounds the replay window)."""
        if abs(self.now() * 1000 - issued_at_ms) > self._skew_ms:
            raise PreconditionFailed(
                "request is stale or from the future; check clocks", reason="stale_request"
            )

    # -- refusals --------------------------------------------------------------------------------------------

    def count(self, partner: str, reason: str) -> None:
        """Count a refusal without auditing it (only for refusals whose first occurrence was audited)."""
        metrics.REFUSALS.labels(partner=partner, reason=reason).inc()

    def refuse(self, event: dict[str, Any], exc: FedcheckError) -> None:
        """Audit ``event`` as refused with ``exc`` (updated in place), counted and logged."""
        style = self._style
        partner = str(event.get("partner", "?"))
        self.count(partner, exc.reason)
        if style.refusal_type is not None:
            event["type"] = style.refusal_type
        event.update(outcome="refused", status=exc.status, reason=exc.reason)
        if isinstance(exc, (BudgetExhausted, Aborted)):
            event["retry_after_s"] = exc.retry_after_s
        try:
            self._audit(event)
        except FedcheckError as audit_exc:
            # a refusal is never left unaudited: if the full event is rejected (or the append failed), record
            # the reduced event that carries no caller-supplied text
            reduced = {k: event[k] for k in style.reduced_fields if k in event}
            reduced["reasons"] = [exc.reason, "audit_reduced", audit_exc.reason]
            self._audit(reduced)
        style.logger.info(
            style.message,
            extra={"round_id": event.get("round_id", ""), "partner": partner, "reason": exc.reason},
        )
