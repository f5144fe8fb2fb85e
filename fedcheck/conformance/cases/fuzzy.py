"""Fuzzy (Paillier similarity) mode: run only when a node advertises it.

Why a placeholder group: the wire contract (fedcheck.v1) has no fuzzy mode or RPC yet; when it gains one, its
cases go here and the Paillier rows of ``bad_inputs.json`` (out-of-range ciphertexts) become runnable.
"""

from __future__ import annotations

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck.conformance.model import CaseSkipped, case
from fedcheck.conformance.session import Session

__all__ = ["fuzzy_advertised"]


def fuzzy_advertised(session: Session) -> bool:
    """True when NodeInfo.modes carries a mode value this suite does not know as exact/cardinality and the
    contract names it fuzzy (none does in fedcheck.v1)."""
    names = {pb.Mode.Name(m) for m in session.info().modes if m in pb.Mode.values()}
    return "MODE_FUZZY" in names


@case("fuzzy.advertised_consistently", title="fuzzy mode is judged only when advertised",
      spec="common.proto Mode; issue #4 (similarity)", required=False)
def advertised(session: Session) -> str:
    """Skipped unless the node advertises fuzzy matching; fedcheck.v1 defines no fuzzy mode yet."""
    if not fuzzy_advertised(session):
        raise CaseSkipped("the node does not advertise fuzzy matching (fedcheck.v1 has no MODE_FUZZY)")
    raise CaseSkipped("fuzzy cases are not written for this contract version")
