"""Helpers shared by the case modules: the suite's own OPRF client side and screening of the profile.

Why the suite does its own blinding: known answers must not come from the node. The suite blinds inputs with
its
own scalars (:mod:`fedcheck.crypto.oprf`), so it knows what the unblinded evaluation of each input must be
once the proof checks out, and can recognise a permutation of its own batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck.conformance.model import CaseFailed, CaseSkipped
from fedcheck.conformance.session import Call, Session
from fedcheck.crypto import oprf
from fedcheck.errors import FedcheckError

if TYPE_CHECKING:
    from fedcheck.rpc.messages import EpochAnnouncement

__all__ = [
    "Evaluated",
    "evaluate_inputs",
    "expect_ok",
    "own_inputs",
    "valid_blinded",
    "verified_announcement",
]

MODE = oprf.OprfMode.VOPRF


def own_inputs(tag: str, n: int) -> list[bytes]:
    """``n`` distinct OPRF inputs that are on no list (domain-separated by ``tag``)."""
    return [f"fedcheck-conformance/{tag}/{i}".encode() for i in range(n)]


def valid_blinded(n: int) -> list[bytes]:
    """``n`` freshly blinded elements of throw-away inputs."""
    if n == 0:
        return []
    _, blinded = oprf.blind(own_inputs("filler", 1) * n, MODE, blinds=[oprf.random_scalar()] * n)
    return blinded


def expect_ok(call: Call, what: str) -> pb.BlindEvaluateResponse:
    """The response of a call that a conformant node must answer; otherwise the case fails with the status."""
    if not call.ok:
        raise CaseFailed(f"{what}: node answered {call.describe()}", status=call.status,
                         reason=call.trailing.get("fedcheck-reason", ""))
    resp: pb.BlindEvaluateResponse = call.response
    return resp


@dataclass(frozen=True)
class Evaluated:
    """An evaluation of the suite's own inputs, with what the suite needs to judge it."""

    inputs: list[bytes]
    blinds: list[bytes]
    blinded: list[bytes]
    response: pb.BlindEvaluateResponse

    @property
    def evaluated(self) -> list[bytes]:
        return [bytes(e) for e in self.response.evaluated]

    def unblinded(self) -> list[bytes]:
        """``k * H(x_i)`` per position (raises CaseFailed when an element is invalid)."""
        try:
            return oprf.unblind(self.blinds, self.evaluated)
        except FedcheckError:
            raise CaseFailed("an evaluated element is not a valid non-identity group element") from None

    def verified_outputs(self, public_key: bytes) -> list[bytes]:
        """VOPRF Finalize against ``public_key``; CaseFailed when the DLEQ proof does not verify."""
        try:
            return oprf.verify_finalize(public_key, self.inputs, self.blinds, self.evaluated, self.blinded,
                                        bytes(self.response.proof))
        except FedcheckError:
            raise CaseFailed("the VOPRF proof does not verify against the node's published epoch key",
                             public_key=public_key.hex()) from None


def evaluate_inputs(session: Session, inputs: Sequence[bytes], *, mode: int = pb.MODE_EXACT,
                    common_blind: bool = False, what: str = "BlindEvaluate",
                    epoch_id: str | None = None) -> Evaluated:
    """Blind ``inputs`` (fresh scalar each, or one shared scalar as a cardinality querier does), send them in
    one signed round, and return the evaluation; fails the case unless the node answers OK with the right
    number of elements."""
    session.require_partner()
    limit = session.info().limits.max_batch or len(inputs)
    if len(inputs) > limit:
        raise CaseSkipped(f"needs a batch of {len(inputs)} but the node's max_batch is {limit}")
    blinds_in = [oprf.random_scalar()] * len(inputs) if common_blind else None
    blinds, blinded = oprf.blind(list(inputs), MODE, blinds=blinds_in)
    payload = None if epoch_id is None else session.round_payload(blinded, mode, target_epoch_id=epoch_id)
    resp = expect_ok(session.blind_evaluate(blinded, mode, payload=payload), what)
    if len(resp.evaluated) != len(blinded):
        raise CaseFailed(f"{what}: sent {len(blinded)} elements, got {len(resp.evaluated)} back")
    return Evaluated(list(inputs), blinds, blinded, resp)


def _describe_announcement(env: pb.SignedEnvelope) -> str:
    """What a refused announcement says and who signed it (evidence only: nothing here is trusted)."""
    from fedcheck.rpc import serde
    from fedcheck.trust.pki import identity_from_cert

    try:
        signer = identity_from_cert(bytes(env.certificate_pem)).name
    except Exception:  # a garbage certificate is itself the evidence
        signer = "an unreadable certificate"
    try:
        ann = serde.epoch_announcement_from_bytes(bytes(env.payload))
    except FedcheckError:
        return f"signed by {signer}; the payload is not an epoch announcement"
    return (f"signed by {signer}: state={ann.state!r} epoch_id={ann.epoch_id!r} "
            f"key={ann.epoch_public_key.hex()[:16]}… index_sha256={ann.index_sha256.hex()[:16] or '-'} "
            f"partner_state={ann.partner_state!r} valid {ann.valid_from_unix_ms}..{ann.valid_until_unix_ms}")


def verified_announcement(
    session: Session,
    env: pb.SignedEnvelope | None,
    *,
    what: str,
    epoch_id: str,
    public_key: bytes | None,
    index_sha256: bytes | None = None,
    partner_state: str | None = None,
) -> EpochAnnouncement:
    """``env`` verified exactly as a querier verifies it (:func:`fedcheck.node.announce.verify_announcement`:
    CA and ``--crl``, signer role ``node`` of the node's own State, the given epoch id, and key, digest and
    partner when given, inside its validity window); CaseFailed with what the announcement says otherwise,
    CaseSkipped without ``--ca``."""
    from fedcheck.node.announce import verify_announcement
    from fedcheck.rpc.messages import SignedEnvelope

    ca = session.ca_pem
    if ca is None:
        raise CaseSkipped("needs the federation CA (--ca) to verify the node's signed epoch announcements")
    claimed = session.info().state
    expected = session.config.expect_state or claimed
    if expected != claimed:  # NodeInfo is unsigned: a node could claim another member's State
        raise CaseFailed(f"{what}: NodeInfo claims State {claimed!r}, the evaluator expects {expected!r}")
    if env is None:
        raise CaseFailed(f"{what} carries no signed epoch announcement: a querier refuses this holder "
                         "(announcement_invalid)")
    try:
        return verify_announcement(
            SignedEnvelope(bytes(env.payload), bytes(env.signature), bytes(env.certificate_pem)),
            ca_pem=ca, crl=lambda: session.crl, state=expected, epoch_id=epoch_id,
            public_key=public_key, index_sha256=index_sha256, partner_state=partner_state,
        )
    except FedcheckError:
        raise CaseFailed(
            f"{what}: the signed epoch announcement does not verify for state={expected!r} "
            f"epoch_id={epoch_id!r}"
            + (f" key={public_key.hex()[:16]}…" if public_key is not None else "")
            + (f" index_sha256={index_sha256.hex()[:16]}…" if index_sha256 is not None else "")
            + (f" partner_state={partner_state!r}" if partner_state is not None else "")
            + f" (CA{' and CRL' if session.crl is not None else ''}); it is "
            + _describe_announcement(env)
        ) from None
