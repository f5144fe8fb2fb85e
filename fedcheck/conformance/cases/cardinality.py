"""Cardinality mode: the querier learns how many, not which (common.proto Mode MODE_CARDINALITY).

Why: the mode's privacy rests entirely on the holder shuffling its answers; a node that returns them in order
turns cardinality into exact mode. The suite recognises the order of its own batch: it learns ``k * H(x_i)``
for its inputs in exact mode first, then sends them in cardinality mode under one shared blind, unblinds the
answers and reads off the permutation the node applied.
"""

from __future__ import annotations

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck.conformance.cases._common import evaluate_inputs, expect_ok, own_inputs
from fedcheck.conformance.model import CaseFailed, CaseSkipped, case, check
from fedcheck.conformance.session import IndexUnavailable, Session
from fedcheck.crypto import oprf
from fedcheck.errors import FedcheckError
from fedcheck.records import match_keys

__all__: list[str] = []

#: Batch whose order the suite recognises; 48 elements make a chance identity permutation impossible in
#: practice.
_N = 48
#: A uniform random permutation has on average one fixed point; P(>= 8) is below 1e-5.
_MAX_FIXED = 8


def _require_mode(session: Session) -> None:
    session.require_partner()
    if pb.MODE_CARDINALITY not in session.info().modes:
        raise CaseSkipped("the node does not advertise MODE_CARDINALITY")


def _permutation(session: Session, inputs: list[bytes], reference: list[bytes]) -> list[int]:
    ev = evaluate_inputs(session, inputs, mode=pb.MODE_CARDINALITY, common_blind=True,
                         what="cardinality-mode BlindEvaluate")
    position = {n: i for i, n in enumerate(reference)}
    perm: list[int] = []
    for n in ev.unblinded():
        if n not in position:
            raise CaseFailed("a cardinality-mode evaluation is not k*H(x) of any element sent")
        perm.append(position[n])
    check(sorted(perm) == list(range(len(inputs))), "cardinality-mode answers are not a permutation of the "
          "batch (duplicates or omissions)")
    return perm


@case("cardinality.shuffled", title="cardinality-mode evaluations are shuffled",
      spec="common.proto BlindEvaluateResponse.evaluated (shuffled in cardinality mode); protocol/exact",
      needs=("partner",))
def shuffled(session: Session) -> str:
    """Two cardinality batches of the same 48 inputs: each answer order must be far from the request order
    (< 8 fixed points) and the two orders must differ (no fixed permutation such as a reversal)."""
    _require_mode(session)
    inputs = own_inputs("order", _N)
    pk = bytes(session.info().epoch_public_key)
    ref = evaluate_inputs(session, inputs)
    ref.verified_outputs(pk)
    reference = ref.unblinded()
    p1 = _permutation(session, inputs, reference)
    p2 = _permutation(session, inputs, reference)
    fixed = [sum(i == j for i, j in enumerate(p)) for p in (p1, p2)]
    check(max(fixed) < _MAX_FIXED, f"answers kept request order ({fixed[0]} and {fixed[1]} of {_N} elements "
          "in place): evaluations are not shuffled", fixed_points=fixed)
    check(p1 != p2, "both batches came back in the same permutation: the order is fixed, not shuffled",
          permutation=p1[:12])
    return f"fixed points {fixed[0]}, {fixed[1]} of {_N}; permutations differ"


@case("cardinality.proof", title="the cardinality-mode proof verifies (over the batch sums)",
      spec="common.proto BlindEvaluateResponse.proof (cardinality mode: proof over the sums ΣC, ΣD); "
      "protocol/exact module docstring; RFC 9497 §2.2",
      needs=("partner",))
def proof(session: Session) -> str:
    """The node's proof must verify as a DLEQ proof of ``(sum B_i, sum E_i)`` under the published key."""
    _require_mode(session)
    pk = bytes(session.info().epoch_public_key)
    ev = evaluate_inputs(session, own_inputs("cproof", 12), mode=pb.MODE_CARDINALITY, common_blind=True)
    try:
        oprf.verify_proof(oprf.GENERATOR, pk, [oprf.sum_elements(ev.blinded)],
                          [oprf.sum_elements(ev.evaluated)], bytes(ev.response.proof))
    except FedcheckError:
        raise CaseFailed("the cardinality-mode proof does not verify under the published key") from None
    return "proof over the sums verifies"


@case("cardinality.count", title="cardinality mode counts the profile's hits",
      spec="common.proto Mode MODE_CARDINALITY; protocol/exact", needs=("partner",))
def count(session: Session) -> str:
    """Screening the profile's probes in cardinality mode must count exactly the distinct probe keys that are
    on
    the list."""
    _require_mode(session)
    from fedcheck.protocol.exact import Evaluation, ExactIndex, ExactQuerier, Mode

    prof = session.profile
    listed = {k.value for r in prof.watchlist for k in match_keys(r, prof.key_types)}
    keys = list(dict.fromkeys(q.key.value for q in prof.query_keys()))
    want = len(set(keys) & listed)
    try:
        index = ExactIndex.from_bytes(session.download_index().data)
    except IndexUnavailable as exc:
        raise CaseFailed(f"the test partner cannot download the index: {exc.call.describe()}") from None
    except FedcheckError as exc:
        raise CaseFailed(f"the index does not parse: {exc.message}") from None
    pk = bytes(session.info().epoch_public_key)
    limit = max(1, session.info().limits.max_batch)
    querier = ExactQuerier()
    got = 0
    for start in range(0, len(keys), limit):
        batch = querier.blind(keys[start:start + limit], mode=Mode.CARDINALITY)
        resp = expect_ok(session.blind_evaluate(batch.blinded, pb.MODE_CARDINALITY),
                         "cardinality BlindEvaluate")
        try:
            got += querier.finalize(batch, Evaluation(list(resp.evaluated), bytes(resp.proof)), public_key=pk,
                                    index=index).count
        except FedcheckError as exc:
            raise CaseFailed(f"finalising the cardinality batch failed: {exc.message} "
                             f"[{exc.reason}]") from None
    check(got == want, f"count {got}, expected {want} of {len(keys)} distinct keys")
    return f"count {got} of {len(keys)} keys, as expected"
