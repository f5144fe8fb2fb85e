"""Holder policy as the test partner sees it (issue #5 "Policies").

Why: a node's policy is its State's law in code; the suite checks the refusals that the conformance profile's
partner configuration (docs/conformance.md) makes certain: an unaccepted purpose, a missing legal basis, and a
federation member that is not a partner at all.
"""

from __future__ import annotations

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import node_pb2_grpc as node_grpc
from fedcheck.conformance.cases._common import valid_blinded
from fedcheck.conformance.model import CaseSkipped, case, check
from fedcheck.conformance.session import Call, Session

__all__: list[str] = []

REASON_KEY = "fedcheck-reason"


def _refused(session: Session, **overrides: str) -> Call:
    session.require_partner()
    blinded = valid_blinded(1)
    return session.blind_evaluate(blinded, payload=session.round_payload(blinded, pb.MODE_EXACT, **overrides))


@case("policy.purpose_refused", title="a purpose the holder does not accept is refused",
      spec="issue #5 (accepted purpose codes); errors.PolicyDenied", needs=("partner",))
def purpose_refused(session: Session) -> str:
    """A round with purpose ``conformance-unlisted-purpose`` must get PERMISSION_DENIED."""
    call = _refused(session, purpose="conformance-unlisted-purpose")
    check(call.status == "PERMISSION_DENIED", f"expected PERMISSION_DENIED, got {call.describe()}")
    session.memo["policy.refusal"] = call
    return f"PERMISSION_DENIED [{call.trailing.get(REASON_KEY, '')}]"


@case("policy.legal_basis_required", title="a round without a legal-basis reference is refused",
      spec="issue #5 (requirement of a legal-basis reference)", needs=("partner",))
def legal_basis_required(session: Session) -> str:
    """With the profile's policy (``require_legal_basis = true``) an empty legal basis gets
    PERMISSION_DENIED."""
    call = _refused(session, legal_basis="")
    check(call.status == "PERMISSION_DENIED", f"expected PERMISSION_DENIED, got {call.describe()}")
    return f"PERMISSION_DENIED [{call.trailing.get(REASON_KEY, '')}]"


@case("policy.refusal_reason", title="refusals carry a machine-readable reason code",
      spec="rpc/errors.py REASON_KEY (fedcheck-reason trailing metadata); issue #5 (refused and why)",
      required=False, needs=("partner",))
def refusal_reason(session: Session) -> str:
    """A policy refusal should carry ``fedcheck-reason`` in its trailing metadata, naming no identity."""
    call = session.memo.get("policy.refusal")
    if not isinstance(call, Call):
        call = _refused(session, purpose="conformance-unlisted-purpose")
    reason = call.trailing.get(REASON_KEY, "")
    check(bool(reason), "no fedcheck-reason trailing metadata on a refusal")
    return f"reason={reason}"


@case("policy.stranger_refused", title="a federation member that is not a partner is refused",
      spec="issue #5 (which partners may query; default deny)", needs=("stranger",))
def stranger_refused(session: Session) -> str:
    """Signed and connected as a valid federation member (evaluator or node) the holder's policy does not list
    (``--stranger-cert/--stranger-key``), BlindEvaluate and GetIndex must get PERMISSION_DENIED."""
    cert, key = session.stranger_cert_pem, session.stranger_key_pem
    if cert is None or key is None:
        raise CaseSkipped("needs --stranger-cert/--stranger-key (an evaluator or node certificate of a "
                            "non-partner State)")
    channel = session.open_channel(client_pair=(key, cert))
    try:
        stub = node_grpc.NodeStub(channel)
        blinded = valid_blinded(1)
        payload = session.round_payload(blinded, pb.MODE_EXACT)
        env = session.sign(payload.SerializeToString(), cert_pem=cert, key_pem=key)
        req = pb.BlindEvaluateRequest(header=session.header(round_id=payload.round_id), round=env,
                                      blinded=blinded)
        md = session.dev_metadata(cert)  # insecure-dev: the hop names the stranger, like its signature
        ev = session.invoke(stub.BlindEvaluate, req, metadata=md)
        ipayload = pb.IndexRequestPayload(holder_state=session.info().state,
                                          issued_at_unix_ms=payload.issued_at_unix_ms)
        ienv = session.sign(ipayload.SerializeToString(), cert_pem=cert, key_pem=key)
        _, ix = session.invoke_stream(stub.GetIndex, session.index_request(envelope=ienv), metadata=md)
    finally:
        channel.close()
    check(ev.status == "PERMISSION_DENIED", f"BlindEvaluate by a non-partner: {ev.describe()}")
    check(ix.status == "PERMISSION_DENIED", f"GetIndex by a non-partner: {ix.describe()}")
    return "BlindEvaluate and GetIndex: PERMISSION_DENIED"
