"""Fuzzy (Paillier similarity) mode: judged only when a node advertises ``MODE_FUZZY`` in NodeInfo.modes.

Why crafted requests without encrypting: the holder validates ciphertexts by range and unit only (it cannot
tell a Paillier encryption from any other unit modulo n²), so a request whose ciphertexts are all 2 under a
fixed odd 2048-bit modulus is well-formed; the shape case checks the node scores it and answers with the
layout the contract defines, and the Paillier rows of ``bad_inputs.json`` replace one ciphertext with an
out-of-range or non-unit value.
"""

from __future__ import annotations

import hashlib
import math
import uuid

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck.conformance.model import CaseFailed, CaseSkipped, case
from fedcheck.conformance.session import Call, Session

__all__ = ["CONFORMANCE_N", "fuzzy_advertised", "fuzzy_request", "fuzzy_score"]

#: A fixed odd 2048-bit modulus (not an RSA modulus: nobody can decrypt under it, nobody needs to).
CONFORMANCE_N = (1 << 2047) | int.from_bytes(hashlib.sha512(b"fedcheck-conformance-n").digest(), "big") | 1


def fuzzy_advertised(session: Session) -> bool:
    """True when NodeInfo.modes carries MODE_FUZZY."""
    names = {pb.Mode.Name(m) for m in session.info().modes if m in pb.Mode.values()}
    return "MODE_FUZZY" in names


def fuzzy_request(first: str = "2") -> tuple[int, bytes]:
    """``(n, ScoreRequest bytes)`` for one traveller (name kind, default layout); the first ciphertext is
    ``first`` ("2", "0", "n", "n2", "n2+1"), every other one is 2."""
    from fedcheck.fuzzy import FuzzyParams, ScoreRequest
    from fedcheck.fuzzy.encoding import NAME_DIMS

    n = CONFORMANCE_N
    params = FuzzyParams(kind="name", dims=NAME_DIMS, size_table=128, year_base=1900, year_count=131,
                         pack_size=1, slot_bits=24)
    width = 2 * 2048 // 8
    values = {"2": 2, "0": 0, "n": n, "n2": n * n, "n2+1": n * n + 1}
    if first not in values:
        raise CaseFailed(f"bad_inputs.json: unsupported ciphertext expression {first!r}")
    rest = (2).to_bytes(width, "big") * (params.ciphertexts_per_pack - 1)
    blob = values[first].to_bytes(width, "big") + rest
    req = ScoreRequest(uuid.uuid4().bytes, n.to_bytes(256, "big"), params, 1, blob)
    return n, req.to_bytes()


def fuzzy_score(session: Session, data: bytes) -> Call:
    """A correctly signed and bound FuzzyScore for ``data`` (round with mode MODE_FUZZY, count 1)."""
    payload = session.round_payload([data], pb.MODE_FUZZY, target_count=1)
    env = session.sign(payload.SerializeToString())
    req = pb.FuzzyScoreRequest(header=session.header(round_id=payload.round_id), round=env,
                               score_request=data)
    return session.invoke(session.node.FuzzyScore, req)


@case("fuzzy.advertised_consistently", title="an advertised fuzzy mode scores a well-formed request",
      spec="common.proto Mode MODE_FUZZY, FuzzyScoreRequest/Response; issue #4 (similarity)", required=False)
def advertised(session: Session) -> str:
    """Skipped unless the node advertises MODE_FUZZY; then a 1-traveller request must be scored with the
    layout of fedcheck.fuzzy ScoreResponse (same round id, ceil(entries / blocks) 512-byte ciphertexts)."""
    if not fuzzy_advertised(session):
        raise CaseSkipped("the node does not advertise fuzzy matching (MODE_FUZZY)")
    session.require_partner()
    from fedcheck.errors import FedcheckError
    from fedcheck.fuzzy import ScoreRequest, ScoreResponse

    _, data = fuzzy_request()
    call = fuzzy_score(session, data)
    if not call.ok:
        raise CaseFailed(f"a well-formed FuzzyScore was refused: {call.describe()}")
    try:
        resp = ScoreResponse.from_bytes(call.response.score_response)
    except FedcheckError as exc:
        raise CaseFailed(f"score_response is not a ScoreResponse: {exc.reason}") from None
    if resp.round_id != ScoreRequest.from_bytes(data).round_id:
        raise CaseFailed("score_response answers another round id")
    if resp.entry_count <= 0:
        raise CaseFailed("the node scored against no entries")
    want = math.ceil(resp.entry_count / resp.blocks_per_ciphertext) * 512
    if len(resp.ciphertexts) != want:
        raise CaseFailed(
            f"score_response carries {len(resp.ciphertexts)} bytes of ciphertexts, expected {want}"
        )
    return f"{resp.entry_count} entries scored, {resp.blocks_per_ciphertext} per ciphertext"
