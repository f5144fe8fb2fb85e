"""OPRF/VOPRF correctness (RFC 9497 VOPRF, ristretto255-SHA512) judged with the suite's own blinding.

Why: the proof is what lets a querier trust a holder it cannot see; the suite checks that the node's answers
are
``k * B`` for the published key (the DLEQ proof verifies), that ``k`` is a fixed function of the epoch
(re-blinded inputs give the same outputs), and that a new epoch really brings a new key.
"""

from __future__ import annotations

import time

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck.conformance.cases._common import evaluate_inputs, own_inputs, verified_announcement
from fedcheck.conformance.model import CaseFailed, CaseSkipped, case, check
from fedcheck.conformance.session import Session
from fedcheck.crypto import oprf
from fedcheck.errors import FedcheckError

__all__: list[str] = []


@case("oprf.response_shape", title="one 32-byte evaluation per element, a 64-byte proof, the round's epoch",
      spec="common.proto BlindEvaluateResponse; RFC 9497 §2.2.1", needs=("partner",))
def response_shape(session: Session) -> str:
    """Response sizes depend only on request sizes: n valid 32-byte elements, a proof of 64 bytes, and the
    epoch the round was bound to."""
    ev = evaluate_inputs(session, own_inputs("shape", 5))
    r = ev.response
    check(all(len(e) == 32 for e in r.evaluated), "an evaluated element is not 32 bytes")
    check(len(r.proof) == oprf.PROOF_SIZE, f"proof is {len(r.proof)} bytes, expected {oprf.PROOF_SIZE}")
    check(r.epoch_id == session.info().epoch_id, f"evaluated under epoch {r.epoch_id!r}, round bound "
          f"{session.info().epoch_id!r}")
    for e in r.evaluated:
        try:
            oprf.deserialize_element(bytes(e))
        except FedcheckError:
            raise CaseFailed("an evaluated element is not a canonical non-identity element") from None
    return "5 elements, 64-byte proof"


@case("oprf.proof_verifies", title="the batched DLEQ proof verifies against the published epoch key",
      spec="RFC 9497 §3.3.2 (VOPRF), §2.2.2 VerifyProof; common.proto NodeInfo.epoch_public_key",
      needs=("partner",))
def proof_verifies(session: Session) -> str:
    """The suite blinds 16 inputs of its own; VerifyProof over (blinded, evaluated) with the key from
    GetNodeInfo must succeed."""
    ev = evaluate_inputs(session, own_inputs("proof", 16))
    ev.verified_outputs(bytes(session.info().epoch_public_key))
    return "proof verifies for 16 elements"


@case("oprf.proof_under_announced_key",
      title="the DLEQ proof verifies under the key of the node's verified epoch announcement",
      spec="docs/protocol.md Epoch announcements; RFC 9497 §2.2.2 VerifyProof; "
      "common.proto NodeInfo.epoch_announcement", needs=("partner",))
def proof_under_announced_key(session: Session) -> str:
    """What a querier does behind a relay: take the epoch key from the node's signed announcement (verified
    under the federation CA, and `--crl`) rather than from the unsigned NodeInfo field, and verify
    the proof over 8 inputs of the suite's own under that key. Skipped without `--ca`."""
    info = session.info()
    env = info.epoch_announcement if info.HasField("epoch_announcement") else None
    # the announced key, whatever NodeInfo.epoch_public_key says (version.epoch_announcement compares them)
    ann = verified_announcement(session, env, what="NodeInfo.epoch_announcement", epoch_id=info.epoch_id,
                                public_key=None)
    ev = evaluate_inputs(session, own_inputs("announced", 8))
    ev.verified_outputs(ann.epoch_public_key)
    return f"proof verifies for 8 elements under the key announced for epoch {ann.epoch_id}"


@case("oprf.proof_binds_key", title="the proof does not verify under another key",
      spec="RFC 9497 §2.2.2", needs=("partner",))
def proof_binds_key(session: Session) -> str:
    """Sanity of the verifier: the same proof must fail against a random key (guards against a node sending
    an empty or trivial proof that a lax verifier would accept)."""
    ev = evaluate_inputs(session, own_inputs("bind", 4))
    other = oprf.generate_key_pair().pk
    try:
        ev.verified_outputs(other)
    except CaseFailed:
        return "rejected under a random key"
    raise CaseFailed("the proof verified under an unrelated key")


@case("oprf.deterministic", title="re-blinded inputs give the same PRF outputs; distinct inputs differ",
      spec="RFC 9497 §3.3.2 Finalize", needs=("partner",))
def deterministic(session: Session) -> str:
    """Two evaluations of the same 8 inputs under independent blinds must finalise to the same outputs, and
    the
    8 outputs must be pairwise distinct: the node applies one fixed key, not per-call randomness."""
    pk = bytes(session.info().epoch_public_key)
    inputs = own_inputs("det", 8)
    a = evaluate_inputs(session, inputs).verified_outputs(pk)
    b = evaluate_inputs(session, inputs).verified_outputs(pk)
    same = sum(x == y for x, y in zip(a, b, strict=True))
    check(same == len(inputs), f"only {same}/{len(inputs)} outputs repeat under fresh blinds")
    check(len(set(a)) == len(a), "distinct inputs gave equal outputs")
    session.memo["oprf.outputs"] = (session.info().epoch_id, pk, inputs, a)
    return "8/8 outputs stable across blinds"


def _wait_new_epoch(session: Session, old_epoch: str) -> pb.NodeInfo | None:
    hook = session.config.rotate_hook
    if hook is not None:
        hook()
    deadline = time.monotonic() + session.config.epoch_wait_s
    while True:
        info = session.info(refresh=True)
        if info.epoch_id != old_epoch:
            return info
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))


def _judge_previous(session: Session, info: pb.NodeInfo, inputs: list[bytes]) -> str:
    """Rotation judged from NodeInfo.previous_epoch_id/_public_key: both epochs are still served, so the same
    inputs are evaluated under each (rounds bound to each epoch) and must verify under each key and differ."""
    prev_id, prev_pk = info.previous_epoch_id, bytes(info.previous_epoch_public_key)
    cur_id, cur_pk = info.epoch_id, bytes(info.epoch_public_key)
    check(prev_id != cur_id, f"previous_epoch_id equals the current epoch id {cur_id!r}")
    check(len(prev_pk) == 32, f"previous_epoch_public_key is {len(prev_pk)} bytes")
    check(prev_pk != cur_pk, f"epoch {prev_id!r} -> {cur_id!r} kept the same public key "
          f"({cur_pk.hex()[:16]}…): the key is reused across epochs", old_epoch=prev_id, new_epoch=cur_id)
    old_out = evaluate_inputs(session, inputs, epoch_id=prev_id,
                              what=f"BlindEvaluate bound to the previous epoch {prev_id!r}"
                              ).verified_outputs(prev_pk)
    out = evaluate_inputs(session, inputs).verified_outputs(cur_pk)
    same = sum(x == y for x, y in zip(out, old_out, strict=True))
    check(same == 0, f"{same}/{len(inputs)} outputs unchanged across epochs: the key is reused")
    return f"previous epoch {prev_id} -> {cur_id}: new key, proofs verify under each, outputs changed"


@case("epoch.key_rotation", title="a new epoch brings a new key and new outputs",
      spec="issue #3 (publishes its VOPRF public key per epoch); common.proto NodeInfo.epoch_id, "
      "NodeInfo.previous_epoch_id/previous_epoch_public_key",
      needs=("partner",))
def epoch_rotation(session: Session) -> str:
    """When the node announces a new epoch id (seen during the run, or within ``--epoch-wait`` seconds), its
    public key must differ, proofs must verify under the new key, the same inputs must give new outputs, and
    NodeInfo must name the replaced epoch and its key as ``previous_epoch_*``. Without a new epoch, a node
    that advertises ``previous_epoch_id`` is judged on that pair at once (no waiting). Also fails when the key
    changed while the epoch id did not."""
    first = session.info_history[0] if session.info_history else session.info()
    for seen in session.info_history:
        if seen.epoch_id == first.epoch_id and seen.epoch_public_key != first.epoch_public_key:
            raise CaseFailed(f"epoch {first.epoch_id!r} was announced with two different keys")
    memo = session.memo.get("oprf.outputs")
    if memo is None:
        pk = bytes(session.info().epoch_public_key)
        inputs = own_inputs("det", 8)
        memo = (session.info().epoch_id, pk, inputs, evaluate_inputs(session, inputs).verified_outputs(pk))
    old_epoch, old_pk, inputs, old_out = memo
    now = session.info(refresh=True)
    if now.epoch_id == old_epoch and now.previous_epoch_id and session.config.rotate_hook is None:
        return _judge_previous(session, now, inputs)
    new = _wait_new_epoch(session, old_epoch)
    if new is None:
        raise CaseSkipped(f"no new epoch observed (epoch {old_epoch!r}) and the node names no previous epoch "
                          "(NodeInfo.previous_epoch_id); use --epoch-wait to wait for one")
    new_pk = bytes(new.epoch_public_key)
    check(new_pk != old_pk, f"epoch {old_epoch!r} -> {new.epoch_id!r} kept the same public key "
          f"({new_pk.hex()[:16]}…): the key is reused across epochs", old_epoch=old_epoch,
          new_epoch=new.epoch_id)
    out = evaluate_inputs(session, inputs).verified_outputs(new_pk)
    same = sum(x == y for x, y in zip(out, old_out, strict=True))
    check(same == 0, f"{same}/{len(inputs)} outputs unchanged across epochs: the key is reused")
    if new.previous_epoch_id:  # optional field; when present it must name what was just replaced
        check(new.previous_epoch_id == old_epoch and bytes(new.previous_epoch_public_key) == old_pk,
              f"after {old_epoch!r} -> {new.epoch_id!r}, NodeInfo names previous epoch "
              f"{new.previous_epoch_id!r} with key {bytes(new.previous_epoch_public_key).hex()[:16]}…")
    return f"{old_epoch} -> {new.epoch_id}: new key, proofs verify, outputs changed"
