"""Protocol version and capabilities: what GetNodeInfo advertises (common.proto NodeInfo).

Why: callers size their requests and pick modes from NodeInfo, and the epoch key published here is the one
every
proof is checked against; a node that advertises nonsense breaks every caller.
"""

from __future__ import annotations

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck.conformance.cases._common import verified_announcement
from fedcheck.conformance.model import CaseFailed, case, check
from fedcheck.conformance.session import PROTOCOL_VERSION, Session
from fedcheck.crypto import oprf
from fedcheck.errors import FedcheckError

__all__: list[str] = []


@case("version.node_info", title="GetNodeInfo answers with protocol version 1",
      spec="common.proto NodeInfoRequest/RequestHeader; node.proto GetNodeInfo")
def node_info(session: Session) -> str:
    """GetNodeInfo with a version-1 header must succeed and name a State."""
    call = session.get_info()
    if not call.ok:
        raise CaseFailed(f"GetNodeInfo answered {call.describe()}")
    info: pb.NodeInfo = call.response
    check(bool(info.state), "NodeInfo.state is empty")
    return f"state={info.state}"


@case("version.speaks_v1", title="NodeInfo.protocol_versions includes 1",
      spec="common.proto NodeInfo.protocol_versions")
def speaks_v1(session: Session) -> str:
    """The node must list protocol version 1 (the version this suite speaks)."""
    versions = list(session.info().protocol_versions)
    check(PROTOCOL_VERSION in versions, f"protocol_versions={versions}")
    return f"protocol_versions={versions}"


@case("version.modes", title="NodeInfo.modes advertises exact mode and only defined modes",
      spec="common.proto Mode, NodeInfo.modes")
def modes(session: Session) -> str:
    """Exact mode is mandatory; MODE_UNSPECIFIED or undefined values must never be advertised."""
    got = list(session.info().modes)
    check(pb.MODE_EXACT in got, f"modes={got} lacks MODE_EXACT")
    bad = [m for m in got if m not in pb.Mode.values() or m == pb.MODE_UNSPECIFIED]
    check(not bad, f"modes={got} advertises undefined values {bad}")
    return "modes=" + ",".join(pb.Mode.Name(m) for m in got)


@case("version.epoch", title="NodeInfo names an epoch and a valid VOPRF public key",
      spec="common.proto NodeInfo.epoch_id/epoch_public_key; RFC 9497 §3.2, RFC 9496 §4.3.1")
def epoch(session: Session) -> str:
    """The epoch id must be non-empty and the public key a canonical, non-identity ristretto255 element."""
    info = session.info()
    check(bool(info.epoch_id), "NodeInfo.epoch_id is empty (no index ready?)")
    pk = bytes(info.epoch_public_key)
    try:
        oprf.deserialize_element(pk)
    except FedcheckError:
        raise CaseFailed(f"epoch_public_key ({len(pk)} bytes) is not a valid non-identity element",
                         public_key=pk.hex()) from None
    return f"epoch_id={info.epoch_id} pk={pk.hex()[:16]}…"


@case("version.epoch_announcement",
      title="NodeInfo carries the node's signed announcement of the advertised epoch and key",
      spec="docs/protocol.md Epoch announcements; common.proto NodeInfo.epoch_announcement/"
      "previous_epoch_announcement, EpochAnnouncementPayload")
def epoch_announcement(session: Session) -> str:
    """``NodeInfo.epoch_announcement`` must verify as a querier verifies it: signed by a ``node`` certificate
    of the node's own State under the federation CA (and `--crl`), for the advertised epoch id and public key,
    inside its validity window. When NodeInfo names a previous epoch, ``previous_epoch_announcement`` must
    verify likewise for that epoch and key. Without it a querier refuses the holder (relayed keys cannot be
    told from a coordinator's own). Skipped without `--ca`."""
    info = session.info()
    env = info.epoch_announcement if info.HasField("epoch_announcement") else None
    ann = verified_announcement(session, env, what="NodeInfo.epoch_announcement", epoch_id=info.epoch_id,
                                public_key=bytes(info.epoch_public_key))
    done = f"epoch {ann.epoch_id} announced by node.{ann.state}"
    if info.previous_epoch_id:
        prev = info.previous_epoch_announcement if info.HasField("previous_epoch_announcement") else None
        verified_announcement(session, prev, what="NodeInfo.previous_epoch_announcement",
                              epoch_id=info.previous_epoch_id,
                              public_key=bytes(info.previous_epoch_public_key))
        done += f", previous epoch {info.previous_epoch_id} too"
    return done + ("" if session.crl is not None else " (no --crl: revocation not checked)")


@case("version.limits", title="NodeInfo.limits are set", spec="common.proto Limits")
def limits(session: Session) -> str:
    """max_batch and index_chunk_bytes must be positive so callers can size requests."""
    lim = session.info().limits
    check(lim.max_batch > 0, f"limits.max_batch={lim.max_batch}")
    check(lim.index_chunk_bytes > 0, f"limits.index_chunk_bytes={lim.index_chunk_bytes}")
    return f"max_batch={lim.max_batch} index_chunk_bytes={lim.index_chunk_bytes}"
