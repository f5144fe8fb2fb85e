"""Bad input, data-driven: every row of ``bad_inputs.json`` becomes one case ``bad_input.<name>``.

Why data: the malformed and adversarial messages (non-canonical encodings, the identity element, wrong
lengths,
oversized batches, wrong protocol versions, tampered signatures, broken round bindings, impossible resume
offsets)
and the status each must get are reviewable and reusable without reading Python. This module only knows how to
turn a row into a request; it decides nothing about what is expected.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck.conformance._certs import foreign_identity
from fedcheck.conformance.bad_inputs import BadInput, load_bad_inputs
from fedcheck.conformance.cases._common import valid_blinded
from fedcheck.conformance.cases.fuzzy import fuzzy_advertised, fuzzy_request, fuzzy_score
from fedcheck.conformance.model import CaseFailed, CaseSkipped, case
from fedcheck.conformance.session import Call, IndexUnavailable, Session

__all__: list[str] = []

_COUNT = re.compile(r"^(?:(\d+)\*)?max_batch(?:\+(\d+))?$")
#: ``batch_at_limit`` spends max_batch items of budget; beyond this it is skipped.
_AT_LIMIT_MAX = 2048
_SPEC = {
    "BlindedElement": ("RFC 9497 §3.3 (DeserializeElement, identity), RFC 9496 §4.3.1; "
                       "common.proto BlindEvaluateRequest"),
    "BatchSize": "common.proto Limits.max_batch; issue #3 (batched blind evaluation with size limits)",
    "ProtocolVersion": "common.proto RequestHeader.protocol_version (FAILED_PRECONDITION)",
    "RoundBinding": "common.proto RoundPayload/RoundTarget/SignedEnvelope",
    "IndexRequest": "common.proto GetIndexRequest/IndexRequestPayload",
    "PaillierCiphertext": "issue #4 (holder validates ciphertexts); errors.InvalidCiphertext",
}


def _count(expr: str, max_batch: int) -> int:
    if expr.isdigit():
        return int(expr)
    m = _COUNT.match(expr)
    if not m:
        raise CaseFailed(f"bad_inputs.json: unsupported count expression {expr!r}")
    return int(m.group(1) or 1) * max_batch + int(m.group(2) or 0)


def _rel(value: Any, now_ms: int) -> int:
    s = str(value)
    return now_ms + int(s) if s[:1] in "+-" else int(s)


def _flip(sig: bytes) -> bytes:
    return sig[:-1] + bytes([sig[-1] ^ 1]) if sig else b"\x01"


def _envelope(session: Session, payload: bytes, mut: dict[str, Any]) -> pb.SignedEnvelope:
    if mut.get("payload") == "garbage":
        payload = b"\xff\xfe not a protobuf message \x00"
    if mut.get("signer") == "self_signed":
        key, cert = foreign_identity(state=_partner_state(session))
        env = session.sign(payload, cert_pem=cert, key_pem=key)
    else:
        env = session.sign(payload)
    if mut.get("signature") == "flip":
        env.signature = _flip(env.signature)
    elif mut.get("signature") == "empty":
        env.signature = b""
    if mut.get("certificate") == "garbage":
        env.certificate_pem = b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"
    return env


def _partner_state(session: Session) -> str:
    if session.partner_cert_pem is None:
        return "EVA"
    from fedcheck.trust.pki import identity_from_cert

    return identity_from_cert(session.partner_cert_pem).state


def _blinded_element(session: Session, t: BadInput) -> Call:
    values = t.data["blinded"]
    fresh = iter(valid_blinded(sum(v == "$valid" for v in values)))
    blinded = [next(fresh) if v == "$valid" else bytes.fromhex(v) for v in values]
    return session.blind_evaluate(blinded)


def _batch_size(session: Session, t: BadInput) -> Call:
    max_batch = session.info().limits.max_batch
    n = _count(str(t.data["count"]), max_batch)
    if t.name == "batch_at_limit" and n > _AT_LIMIT_MAX:
        raise CaseSkipped(f"max_batch={max_batch} is above {_AT_LIMIT_MAX}; not spending that much budget")
    one = valid_blinded(1)
    return session.blind_evaluate(one * n)


def _version(session: Session, t: BadInput) -> Call:
    version = t.data["protocol_version"]
    if t.rpc == "GetNodeInfo":
        req = pb.NodeInfoRequest()
        if version is not None:
            req.header.CopyFrom(session.header(int(version)))
        return session.invoke(session.node.GetNodeInfo, req)
    session.require_partner()
    if t.rpc == "GetIndex":
        ireq = session.index_request(version=int(version or 0))
        if version is None:
            ireq.ClearField("header")
        _, call = session.invoke_stream(session.node.GetIndex, ireq)
        return call
    return session.blind_evaluate(valid_blinded(1), version=int(version or 0),
                                  with_header=version is not None)


def _round(session: Session, t: BadInput) -> Call:
    mut: dict[str, Any] = t.data["mutation"]
    blinded = valid_blinded(2)
    now = int(time.time() * 1000)
    over: dict[str, Any] = {}
    for k, v in mut.items():
        if k == "target_count":
            over[k] = len(blinded) + int(v)
        elif k == "target_batch_sha256":
            over[k] = bytes.fromhex(v)
        elif k in ("target_state", "target_epoch_id"):
            over[k] = v
        elif k in ("issued_at_unix_ms", "deadline_unix_ms"):
            over[k] = _rel(v, now)
    payload = session.round_payload(blinded, int(mut.get("mode", pb.MODE_EXACT)), **over)
    if mut.get("envelope") == "missing":
        req = pb.BlindEvaluateRequest(header=session.header(round_id=payload.round_id), blinded=blinded)
        return session.invoke(session.node.BlindEvaluate, req)
    raw = payload.SerializeToString()
    env = _envelope(session, raw, mut)
    if mut.get("payload") == "tamper":
        changed = pb.RoundPayload.FromString(raw)
        changed.purpose = "conformance-tampered"
        env.payload = changed.SerializeToString()
    return session.blind_evaluate(blinded, payload=payload, envelope=env)


def _index(session: Session, t: BadInput) -> Call:
    mut: dict[str, Any] = t.data["mutation"]
    now = int(time.time() * 1000)
    offset = 0
    if "offset" in mut:
        if mut["offset"] == "total+1":
            try:
                offset = session.download_index().total_bytes + 1
            except IndexUnavailable as exc:
                raise CaseSkipped(f"needs the index size: {exc.call.describe()}") from None
        else:
            offset = int(mut["offset"])
    payload = pb.IndexRequestPayload(
        holder_state=mut.get("holder_state", session.info().state),
        epoch_id=mut.get("epoch_id", ""),
        issued_at_unix_ms=_rel(mut.get("issued_at_unix_ms", "+0"), now),
    )
    env = _envelope(session, payload.SerializeToString(), mut)
    _, call = session.invoke_stream(session.node.GetIndex, session.index_request(offset=offset, envelope=env))
    return call


def _paillier(session: Session, t: BadInput) -> Call:
    """One well-formed 1-traveller FuzzyScore whose first ciphertext is the row's value ("0", "n", "n2", ...).

    The modulus is a fixed odd 2048-bit number (the holder cannot and need not check it is an RSA modulus),
    every other ciphertext is 2 (in range, a unit), so only the row's value can make the node refuse."""
    _, data = fuzzy_request(str(t.data["ciphertext"]))
    return fuzzy_score(session, data)


_RUNNERS: dict[str, Callable[[Session, BadInput], Call]] = {
    "BlindedElement": _blinded_element,
    "BatchSize": _batch_size,
    "ProtocolVersion": _version,
    "RoundBinding": _round,
    "IndexRequest": _index,
    "PaillierCiphertext": _paillier,
}


def _make(t: BadInput) -> Callable[[Session], str]:
    def run(session: Session) -> str:
        if "fuzzy" in t.needs and not fuzzy_advertised(session):
            raise CaseSkipped("the node does not advertise fuzzy matching")
        # rows needing "tls" judge request signatures: a node verifies them against the federation CA even
        # in insecure-dev mode (plain-text transport only), so they run whenever the suite can sign
        if "tls" in t.needs and not session.tls and session.partner_cert_pem is None:
            raise CaseSkipped("signature checks need the test partner's certificate and key")
        if not (t.group == "ProtocolVersion" and t.rpc == "GetNodeInfo"):
            session.require_partner()
        call = _RUNNERS[t.group](session, t)
        got = call.status
        if got not in t.expected:
            raise CaseFailed(f"tcId {t.tc_id} ({t.comment}): expected {'/'.join(t.expected)}, node answered "
                             f"{call.describe()}", tc_id=t.tc_id, expected=list(t.expected), got=got,
                             reason=call.trailing.get("fedcheck-reason", ""))
        reason = call.trailing.get("fedcheck-reason")
        return f"tcId {t.tc_id}: {got}" + (f" [{reason}]" if reason else "")

    run.__doc__ = t.comment
    return run


for _t in load_bad_inputs():
    case(
        f"bad_input.{_t.name}",
        title=_t.comment,
        spec=f"bad_inputs.json tcId {_t.tc_id}; {_SPEC[_t.group]}",
        required=_t.group != "PaillierCiphertext",
        needs=_t.needs,
    )(_make(_t))
